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


def test_pretrain_runs_and_vision_init_loads_its_output(clueworld_store, tmp_path, capsys):
    from training.config import ModelConfig
    from training.model_build import build

    out = tmp_path / "vision"
    assert main(["--train", str(clueworld_store), "--out", str(out), "--steps", "6", "--batch", "4", "--every", "3"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["step"] for r in rows] == [3, 6] and rows[-1]["loss"] < rows[0]["loss"] * 2
    assert sorted(f.name for f in out.iterdir()) == ["vision.safetensors", "vision_pretrain.json"]  # no .tmp left
    report = json.loads((out / "vision_pretrain.json").read_text())
    assert set(report["held_out"]) == {k + s for k in TARGETS for s in ("", "_occupied")}

    plain = build(ModelConfig(name_or_path="small:qwen2_vl", finetune="full"), seed=0)
    loaded = build(ModelConfig(name_or_path="small:qwen2_vl", finetune="full", freeze_vision=True,
                               vision_init=str(out / WEIGHTS_NAME)), seed=0)
    a, b = (m.family.vision_module(m.model).state_dict() for m in (plain, loaded))
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the pretrained weights replaced the seeded init
    assert not any(p.requires_grad for p in loaded.family.vision_module(loaded.model).parameters())


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
