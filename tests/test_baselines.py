"""Baselines: same data and frames as ClueNet, only the target (and the instruction line) differ."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluenet import backbones, prompts
from cluenet.data.jsonl import read_samples
from cluenet.errors import ConfigError
from training import baselines, common
from training import data as tdata
from training.config import LossConfig

from recipe_helpers import WORLD, baseline_config, stage1_config, tiny_split


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    return tiny_split(tmp_path_factory.mktemp("cwb") / "train", n=4, seed=31)


@pytest.mark.parametrize("kind", ["direct", "cot"])
def test_baseline_rows_share_the_clip_and_question_and_target_only_the_answer_part(split, tokenizer, kind):
    proc = backbones.get_family("qwen2_vl").tiny_processor(tokenizer)
    fam = backbones.get_family("qwen2_vl")
    sample = read_samples(split)[0]
    frames, times = common.frame_source(stage1_config(split, split).data, [sample], str(split))(sample)
    ours = tdata.make_prefix(proc, fam, sample, frames, times, "cluenet")
    theirs = tdata.make_prefix(proc, fam, sample, frames, times, kind)
    assert theirs.vision["pixel_values_videos"].equal(ours.vision["pixel_values_videos"])
    row = tdata.baseline_row(tokenizer, theirs, sample, kind, LossConfig(answer_weight=2.0))
    target = tokenizer.decode([t for t in row.labels if t != tdata.IGNORE_INDEX])
    letter = "ABCDE"[sample.answer]
    if kind == "direct":
        assert target == f"<answer>{letter}</answer><|im_end|>"
    else:
        assert target.startswith("<chain>") and target.endswith(f"<answer>{letter}</answer><|im_end|>")
        assert "<clues>" not in tokenizer.decode(row.input_ids)
        assert any(step.cites for step in sample.chain)  # the gold chain cites clues ...
        assert all(f"({','.join(step.cites)})" not in target for step in sample.chain if step.cites)  # ... cot cannot
        assert all(" ".join(step.text.split()) in target for step in sample.chain)
    assert prompts.system_prompt(kind) in tokenizer.decode(row.input_ids)
    assert row.weights.count(2.0) == (1 if kind == "direct" else 2)  # the answer letter (and the chain's closing one)


def test_direct_baseline_trains_and_saves_a_loadable_output(split, tmp_path):
    trainer = baselines.run(baseline_config("direct", split, tmp_path / "direct", steps=2))
    info = json.loads((tmp_path / "direct" / "final" / "stage.json").read_text())
    assert info["recipe"] == "baseline-direct" and info["kind"] == "direct" and info["steps"] == 2
    assert len(trainer.history) == 2
    from training.evaluate import load_model

    net = load_model(str(tmp_path / "direct" / "final"))
    assert net.filter_head is None


def test_unknown_baseline_kind_is_refused(split, tmp_path):
    with pytest.raises(ConfigError, match="kind: got 'clues', expected one of"):
        baseline_config("clues", split, tmp_path)


@pytest.mark.integration
def test_direct_baseline_can_fit_its_training_questions(split, tmp_path):
    """The plumbing check behind the default model's chance-level `direct` baseline: with the letter
    target where it belongs, four questions are fitted, teacher-forced and free-running (~3 min)."""
    from training.evaluate import load_model, run_one

    samples = read_samples(split)
    assert len({s.answer for s in samples}) > 1  # a constant answer would not show anything
    cfg = baseline_config("direct", split, tmp_path / "direct", steps=60, **{"train.batch_size": 4, "optim.lr": 3e-3,
                                                                          "train.save_every": 1000})
    trainer = baselines.run(cfg)
    assert [h.metrics["answer_acc"] for h in trainer.history[-3:]] == [1.0, 1.0, 1.0]
    net = load_model(str(tmp_path / "direct" / "final"))
    assert [run_one(net, s, "direct", WORLD).answer for s in samples] == [s.answer for s in samples]
