"""training.make_default_model: its data splits, and phases (overrides switched on part-way through a run)."""
from __future__ import annotations

import json
import sys

import pytest

from recipe_helpers import overrides, tiny_split
from training import make_default_model as mdm


def test_a_phase_splits_the_run_and_its_overrides_hold_from_its_step_on():
    a, b = ["loss.lookup_rows=8"], ["loss.copy_ov=true"]
    assert mdm.segments(3000, []) == [(3000, [])]
    assert mdm.segments(3000, [(2000, b), (1500, a)]) == [(1500, []), (2000, a), (3000, a + b)]
    assert mdm.segments(1000, [(1500, a)]) == [(1000, [])]  # a phase after the end never starts
    assert mdm.segments(3000, [(1500, a), (1500, b)]) == [(1500, []), (3000, a + b)]


def test_phase_text_is_parsed_and_bad_ones_are_refused():
    assert mdm.parse_phase("1500:loss.lookup_rows=8  loss.copy_prev_on_task=true") == (
        1500, ["loss.lookup_rows=8", "loss.copy_prev_on_task=true"])
    for bad in ("loss.a=1", "1500:", "0:loss.a=1", "x:loss.a=1", "1500:loss.a", "1500:train.max_steps=9"):
        with pytest.raises(SystemExit, match="--phase"):
            mdm.parse_phase(bad)


def test_a_phased_run_resumes_each_segment_with_the_phase_overrides(tmp_path):
    train = tiny_split(tmp_path / "data")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "training.stage1", "--config", str(mdm.CONFIGS / "stage1_clueworld.yaml"),
           *[o for o in overrides(train, out) if not o.startswith("train.max_steps=")], "train.log_every=1",
           "data.num_workers=0", "loss.grounding_weight=0"]
    run = mdm.Phased(cmd, 4, [(2, ["loss.copy_weight=1"])], tmp_path / "stage1.log", threads="1")
    assert run.wait() == 0, (tmp_path / "stage1.log").read_text()[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # the second segment went on from step 2, not from 0
    assert ["copy_loss" in r for r in rows] == [False, False, True, True]
    assert (out / "final" / "model.safetensors").is_file()
    assert (tmp_path / "stage1.log").read_text().count("Traceback") == 0


def test_validation_and_test_splits_use_their_own_seeds(tmp_path):
    def splits(out, **n):
        store = out / "data" / "train" / "vision_store"
        store.mkdir(parents=True)
        (store / "index.json").write_text("{}")  # a training split already made: only val and test are generated
        mdm.make_data(out, 0, 0, workers=1, **n)
        return {f.parent.name: [json.loads(line)["id"] for line in f.open()]
                for f in sorted((out / "data").glob("*/clueworld.jsonl"))}

    assert splits(tmp_path / "a", n_test=3, n_val=4) == {"val": [f"cw{mdm.VAL_SEED}-{i:06d}" for i in range(4)],
                                                        "test": [f"cw{mdm.TEST_SEED}-{i:06d}" for i in range(3)]}
    assert len({mdm.TRAIN_SEED, mdm.VAL_SEED, mdm.TEST_SEED}) == 3
    assert list(splits(tmp_path / "b", n_test=2)) == ["test"]  # --val 0: no validation split
