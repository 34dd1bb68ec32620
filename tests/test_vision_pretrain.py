"""Stage 0 (training.vision_pretrain): the dense cell labels, their token order, a tiny run
end to end, and model.vision_init loading its output."""
import json

import numpy as np
import pytest
import torch

from cluenet.data import clueworld as cw
from training.vision_pretrain import TARGETS, WEIGHTS_NAME, main, slot_targets


def _cells(frame: np.ndarray) -> np.ndarray:
    """[G, G, cell, cell, 3] view of one rendered frame."""
    side = frame.shape[0] // cw.GRID
    return frame.reshape(cw.GRID, side, cw.GRID, side, 3).transpose(0, 2, 1, 3, 4)


@pytest.mark.parametrize("index", range(6))
def test_cell_states_agree_with_the_rendered_pixels(index):
    frames, _, _ = cw.make_episode(cw.clip_rng(7, index))
    states = cw.cell_states(cw.clip_rng(7, index))
    palette = np.array([cw.BACKGROUND, *cw.COLOURS.values()])
    assert states["colour"].shape == (len(frames), cw.GRID, cw.GRID)
    for f, frame in enumerate(frames):
        cells = _cells(frame)
        for r in range(cw.GRID):
            for c in range(cw.GRID):
                present = {int(np.abs(palette - px).sum(1).argmin()) for px in cells[r, c].reshape(-1, 3)}
                label = states["colour"][f, r, c]
                if label == 0:
                    assert present == {0}, (f, r, c)  # nothing drawn where the label says empty
                else:
                    assert label in present, (f, r, c)  # the labelled colour is drawn there
                    assert states["shape"][f, r, c] > 0 and states["motion"][f, r, c] > 0


def test_cell_states_see_the_entering_mover_move():
    frames, _, sample = cw.make_episode(cw.clip_rng(1, 0))
    states = cw.cell_states(cw.clip_rng(1, 0))
    enter = next(c for c in sample.clues if "enters from the bottom" in c.text)
    f = int(round(enter.start * cw.WorldConfig().fps))
    assert (states["motion"][f] == 5).any()  # up: entering from the bottom
    assert set(np.unique(states["motion"])) <= set(range(TARGETS["motion"]))


def test_slot_targets_follow_the_merged_token_order():
    t, g = 4, cw.GRID
    states = {k: np.arange(t * g * g).reshape(t, g, g) + 1000 * j for j, k in enumerate(TARGETS)}
    out = slot_targets(states)
    assert out.shape == (t // 2 * g * g, 2 * len(TARGETS))
    row = 1 * g * g + 2 * g + 3  # slot 1, grid row 2, column 3
    assert out[row].tolist() == [states[k][f, 2, 3] for f in (2, 3) for k in TARGETS]


@pytest.mark.parametrize("index", range(8))
def test_cell_events_hold_every_gold_clue_in_its_subjects_cell(index):
    """Each gold clue is found in one cell's columns: its slot, subject and word (clashes aside)."""
    sample = cw.make_sample(cw.clip_rng(7, index))
    events = cw.cell_events(cw.clip_rng(7, index))
    col = {k: j for j, k in enumerate(cw.EVENT_TARGETS)}
    fps, verbs = cw.WorldConfig().fps, {"enters": "enter", "hits": "hit", "stops": "stop", "turns": "turn",
                                        "leaves": "leave"}
    assert events.shape == (cw.GRID * cw.GRID, len(cw.EVENT_TARGETS))
    for j, n in enumerate(cw.EVENT_TARGETS.values()):
        assert 0 <= events[:, j].min() and events[:, j].max() < n
    found = 0
    for clue in sample.clues:
        words = clue.text.split()  # "the red diamond enters from the left"
        kind, colour, shape = verbs[words[3]], words[1], words[2]
        rows = events[events[:, col[f"{kind}_slot"]] == 1 + int(round(clue.start * fps)) // 2]
        rows = rows[(rows[:, col[f"{kind}_colour"]] == 1 + cw.COLOUR_NAMES.index(colour))
                    & (rows[:, col[f"{kind}_shape"]] == 1 + cw.SHAPES.index(shape))]
        if kind in ("enter", "leave"):
            rows = rows[rows[:, col[f"{kind}_side"]] == 1 + cw.SIDES.index(words[-1])]
        elif kind == "turn":
            rows = rows[rows[:, col["turn_colour_to"]] == 1 + cw.COLOUR_NAMES.index(words[-1])]
        elif kind == "hit":
            rows = rows[rows[:, col["hit_other_colour"]] == 1 + cw.COLOUR_NAMES.index(words[-2])]
        found += len(rows) == 1
    assert found >= len(sample.clues) - 1  # two events of one kind in one cell keep the earlier


def test_regroup_temporal_matches_the_processor_both_ways():
    import transformers

    from training.data import regroup_temporal

    frames, _, _ = cw.make_episode(cw.clip_rng(7, 0))
    kw = dict(patch_size=14, merge_size=2, size={"shortest_edge": 56 * 56, "longest_edge": 4 * 112 * 112})
    out = {t: transformers.Qwen2VLVideoProcessor(temporal_patch_size=t, **kw)(
        videos=[frames], return_tensors="pt", do_sample_frames=False)["pixel_values_videos"] for t in (2, 16)}
    assert torch.equal(regroup_temporal(out[2], 64, 2, 16), out[16])
    assert torch.equal(regroup_temporal(out[16], 64, 16, 2), out[2])
    with pytest.raises(ValueError, match="cannot regroup"):
        regroup_temporal(out[2], 64, 2, 5)


def test_a_vision_store_serves_another_temporal_patch_size(clueworld_store):
    from cluenet import backbones
    from cluenet import tokenizer as tokmod
    from training import data as tdata
    from training import model_build
    from training.make_default_model import _processor_fn

    written = tdata.VisionStore(clueworld_store.parent / "vision_store", _processor_fn())
    tok = tokmod.load()
    config = model_build.small_config("qwen2_vl", tok, model_build.parse_sizes('{"temporal_patch": 16}'))
    whole = model_build.small_processor(backbones.get_family("qwen2_vl"), tok, config)  # one patch: the whole clip
    other = tdata.VisionStore(clueworld_store.parent / "vision_store", whole)
    assert written.temporal_patch == 2 and other.temporal_patch == 16
    assert other.extras["video_grid_thw"].tolist() == [[1, 8, 8]] and 8 * other.num_tokens == written.num_tokens
    sid = next(iter(written.row))
    frames, _, _ = cw.make_episode(cw.clip_rng(*(int(x) for x in sid[2:].split("-"))))
    direct = whole.video_processor(videos=[frames], return_tensors="pt", do_sample_frames=False)["pixel_values_videos"]
    assert torch.allclose(other.pixel_values(sid), direct, atol=2e-3)  # float16 storage


def test_pretrain_runs_and_vision_init_loads_its_output(clueworld_store, tmp_path, capsys):
    from training.config import ModelConfig
    from training.model_build import build

    out = tmp_path / "vision"
    assert main(["--train", str(clueworld_store), "--out", str(out), "--steps", "6", "--batch", "4", "--every", "3"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["step"] for r in rows] == [3, 6] and rows[-1]["loss"] < rows[0]["loss"] * 2
    assert sorted(f.name for f in out.iterdir()) == ["vision.safetensors", "vision_pretrain.json"]  # no .tmp left
    report = json.loads((out / "vision_pretrain.json").read_text())
    assert report["targets"] == "cells"  # two frames a temporal patch: per-frame cell states
    assert set(report["held_out"]) == {k + s for k in TARGETS for s in ("", "_occupied")} | {"all"}

    plain = build(ModelConfig(name_or_path="small:qwen2_vl", finetune="full"), seed=0)
    loaded = build(ModelConfig(name_or_path="small:qwen2_vl", finetune="full", freeze_vision=True,
                               vision_init=str(out / WEIGHTS_NAME)), seed=0)
    a, b = (m.family.vision_module(m.model).state_dict() for m in (plain, loaded))
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the pretrained weights replaced the seeded init
    assert not any(p.requires_grad for p in loaded.family.vision_module(loaded.model).parameters())


def test_pretrain_of_a_whole_clip_tower_learns_cell_events(clueworld_store, tmp_path):
    from training.config import ModelConfig
    from training.model_build import build

    out, sizes = tmp_path / "vision16", '{"temporal_patch": 16}'
    assert main(["--train", str(clueworld_store), "--out", str(out), "--steps", "2", "--batch", "4", "--sizes", sizes]) == 0
    report = json.loads((out / "vision_pretrain.json").read_text())
    assert report["targets"] == "events"
    assert set(report["held_out"]) == {k + s for k in cw.EVENT_TARGETS for s in ("", "_occupied")} | {"all"}
    model = build(ModelConfig(name_or_path="small:qwen2_vl", finetune="full", sizes=sizes,
                              vision_init=str(out / WEIGHTS_NAME)))
    assert model.processor.video_processor.temporal_patch_size == 16
    with pytest.raises(SystemExit, match="whole clip in one temporal patch"):
        main(["--train", str(clueworld_store), "--out", str(out), "--steps", "2", "--batch", "4", "--targets", "events"])


def test_model_sizes_are_checked():
    from cluenet.errors import ConfigError
    from training.config import ModelConfig

    with pytest.raises(ConfigError, match="unknown key 'temporal_pach'"):
        ModelConfig(name_or_path="small:qwen2_vl", sizes='{"temporal_pach": 16}')
    with pytest.raises(ConfigError, match="positive integer"):
        ModelConfig(name_or_path="small:qwen2_vl", sizes='{"temporal_patch": 0}')
    with pytest.raises(ConfigError, match="JSON object"):
        ModelConfig(name_or_path="small:qwen2_vl", sizes="temporal_patch=16")
    with pytest.raises(ConfigError, match="sizes"):
        ModelConfig(name_or_path="tiny:clueworld", sizes='{"temporal_patch": 16}')


def test_vision_init_refuses_a_missing_or_foreign_file(tmp_path):
    from safetensors.torch import save_file

    from cluenet.errors import ConfigError
    from training.config import ModelConfig
    from training.model_build import build

    with pytest.raises(ConfigError, match="no file"):
        build(ModelConfig(name_or_path="small:qwen2_vl", finetune="full", vision_init=str(tmp_path / "x.safetensors")))
    save_file({"blocks.0.norm1.weight": torch.ones(3)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ConfigError, match="does not fit"):
        build(ModelConfig(name_or_path="small:qwen2_vl", finetune="full",
                          vision_init=str(tmp_path / "foreign.safetensors")))
    with pytest.raises(ConfigError, match="vision_init"):
        ModelConfig(vision_init="weights.bin")
