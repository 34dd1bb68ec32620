"""Stage 0c (training.ground_pretrain): the object sheets agree with the clues, a tiny run end to
end, and model.text_init loading its output."""
import json
import random

import numpy as np
import pytest
import torch

from cluenet.data import clueworld as cw
from training.ground_pretrain import MOTION_WORDS, REPORT_NAME, WEIGHTS_NAME, clip_objects, main, object_sheet


@pytest.mark.parametrize("index", range(8))
def test_sheets_say_what_the_clues_say(index):
    _, _, sample = cw.make_episode(cw.clip_rng(7, index))
    objects = clip_objects(cw.cell_states(cw.clip_rng(7, index)))
    seen = {cw.SHAPES[k - 1]: (cw.COLOUR_NAMES[c - 1], MOTION_WORDS[m]) for k, c, m in objects}
    for clue in sample.clues:
        _, colour, shape, verb, *rest = clue.text.split()
        assert seen[shape][0] == colour, clue.text  # objects are named by the colour they first show
        if verb == "enters":
            assert seen[shape][1] == rest[-1], clue.text  # entering from the left: first seen moving right
    sheet = object_sheet(objects, list(range(len(objects)))[::-1])
    k, c, m = objects[-1]
    assert sheet.split(", ")[0] == f"{cw.SHAPES[k - 1]} {cw.COLOUR_NAMES[c - 1]} {MOTION_WORDS[m]}"  # order as asked


def test_clip_objects_take_each_objects_first_look():
    t, g = 3, cw.GRID
    states = {k: np.zeros((t, g, g), dtype=np.int64) for k in ("colour", "shape", "motion")}
    states["shape"][:, 0, 1:3], states["colour"][:, 0, 1:3], states["motion"][:, 0, 1:3] = 2, 3, 2  # a mover on two cells
    states["motion"][2, 0, 1:3] = 1  # stopped
    states["shape"][1:, 2, 0], states["colour"][1:, 2, 0], states["motion"][1:, 2, 0] = 5, 1, 1  # appears in frame 1
    states["colour"][2, 2, 0] = 4  # and turns
    assert clip_objects(states) == [(2, 3, 2), (5, 1, 1)]
    assert object_sheet(clip_objects(states), [1, 0]) == (
        f"{cw.SHAPES[4]} {cw.COLOUR_NAMES[0]} still, {cw.SHAPES[1]} {cw.COLOUR_NAMES[2]} left")


def test_sheet_rows_draw_a_new_order_each_time():
    from training.ground_pretrain import Sheets

    sheets = Sheets.__new__(Sheets)
    sheets.rng, sheets.objects = random.Random(0), {"x": [(k, k, 1) for k in range(1, 7)]}
    assert len({sheets.sheet("x") for _ in range(8)}) > 1


def test_pretrain_runs_and_text_init_loads_its_output(clueworld_store, tmp_path, capsys):
    from training.config import ModelConfig
    from training.model_build import build, save_weights

    seeded = build(ModelConfig(name_or_path="small:qwen2_vl", finetune="full"), seed=3)
    vision = tmp_path / "vision.safetensors"
    save_weights(seeded.family.vision_module(seeded.model).state_dict(), str(vision))
    out = tmp_path / "ground"
    assert main(["--train", str(clueworld_store), "--vision", str(vision), "--out", str(out), "--steps", "4",
                 "--batch", "2", "--every", "2", "--until", "1.0"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["step"] for r in rows] == [2, 4]
    assert set(rows[-1]["held_out"]) == {"colour", "shape", "motion", "all"}
    assert sorted(f.name for f in out.iterdir()) == [REPORT_NAME, WEIGHTS_NAME]  # no .tmp left
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["reached"] is False and len(report["checks"]) == 2

    plain = build(ModelConfig(name_or_path="small:qwen2_vl", finetune="full"), seed=0)
    loaded = build(ModelConfig(name_or_path="small:qwen2_vl", finetune="full", text_init=str(out / WEIGHTS_NAME)),
                   seed=0)
    a, b = plain.model.state_dict(), loaded.model.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a if "visual" not in k)  # the trained LM replaced the seeded one


def test_pretrain_refuses_bad_arguments_before_any_work(clueworld_store, tmp_path):
    args = ["--train", str(clueworld_store), "--vision", str(tmp_path / "v.safetensors"), "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit, match="need at least"):
        main([*args, "--batch", "64"])
    with pytest.raises(SystemExit, match="--until"):
        main([*args, "--until", "0"])
    assert not (tmp_path / "o").exists()
