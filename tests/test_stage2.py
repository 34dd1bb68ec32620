"""Stage 2 recipe: refusing a bad stage-1 output, the resumable self-clue cache, utility labels, outputs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cluenet.data.jsonl import read_samples
from cluenet.errors import ConfigError
from cluenet.filter import FilterHead
from cluenet.schema import Clue, Step
from training import common, stage1, stage2
from training import data as tdata

from recipe_helpers import FRAMES, stage1_config, stage2_config, tiny_split


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    return tiny_split(tmp_path_factory.mktemp("cw2") / "train", n=4, seed=21)


@pytest.fixture(scope="module")
def stage1_out(split, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("s1")
    stage1.run(stage1_config(split, out, steps=2))
    return out / "final"


def _write_stage(folder: Path, **info) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    common.write_stage(folder, {"stage": 1, "recipe": "stage1", "base": "tiny:qwen2_vl", "finetune": "full",
                                "num_frames": FRAMES, **info})
    return folder


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing", "does not exist; run training.stage1 first"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "has no stage.json: not a finished training.stage1 output"),
    (lambda d: _write_stage(d / "s2", stage=2, recipe="stage2"), "is a stage-2 .stage2. output, expected stage 1"),
    (lambda d: _write_stage(d / "frames", num_frames=32), "trained with 32 frames, this run has data.num_frames=10"),
    (lambda d: _write_stage(d / "style", option_style="letter_last"),
     "trained with data.option_style=letter_last, this run has data.option_style=letter_first"),
    (lambda d: _write_stage(d / "lora", finetune="lora", base="Qwen/Qwen2.5-VL-3B-Instruct"),
     "trained on 'Qwen/Qwen2.5-VL-3B-Instruct', this run's model.name_or_path is 'tiny:qwen2_vl'"),
])
def test_stage2_refuses_a_missing_or_mismatched_stage1_output(split, tmp_path, make, message):
    cfg = stage2_config(split, tmp_path / "out", make(tmp_path))
    with pytest.raises(ConfigError, match=message):
        stage2.run(cfg)
    assert not (tmp_path / "out" / "self_clues.jsonl").exists()  # refused before any work


def test_stage2_refuses_an_empty_init_adapter(split, tmp_path):
    with pytest.raises(ConfigError, match="model.init_adapter is empty"):
        stage2.run(stage2_config(split, tmp_path / "out", ""))


def _dataset(split: Path, stage1_out: Path):
    model, processor, fam = common.load_output(stage1_out, stage2_config(split, split, stage1_out).model)
    samples = read_samples(split)
    frames = common.frame_source(stage2_config(split, split, stage1_out).data, samples, str(split))
    return model, processor, tdata.RowDataset(samples, processor, fam, frames, build=None)


def test_self_clue_cache_resumes_without_redoing_finished_samples(split, stage1_out, tmp_path, monkeypatch):
    model, processor, ds = _dataset(split, stage1_out)
    path = tmp_path / "self_clues.jsonl"
    seen: list[list[str]] = []
    real = stage2.generate_clues

    def counting(m, p, prefixes, *a, **k):
        seen.append([pre.ids[-1] for pre in prefixes])
        return real(m, p, prefixes, *a, **k)

    monkeypatch.setattr(stage2, "generate_clues", counting)
    stage2.build_cache(model, processor, ds, path, delta=0.1, batch=2)
    first = path.read_text().splitlines()
    assert [json.loads(x)["id"] for x in first] == [s.id for s in ds.samples] and sum(map(len, seen)) == 4
    # a run killed mid-write: two finished rows and a torn third line
    path.write_text(first[0] + "\n" + first[1] + "\n" + first[2][: len(first[2]) // 2])
    seen.clear()
    rows = stage2.build_cache(model, processor, ds, path, delta=0.1, batch=2)
    assert sum(map(len, seen)) == 2  # only the two unfinished samples were generated again
    again = path.read_text().splitlines()
    assert again[:2] == first[:2] and len(again) == 4
    assert [json.loads(x) for x in again] == [json.loads(x) for x in first]  # greedy: same clues, same labels
    assert set(rows) == {s.id for s in ds.samples}
    seen.clear()
    stage2.build_cache(model, processor, ds, path, delta=0.1, batch=2)
    assert seen == []  # a finished cache does no work


def test_utility_labels_keep_both_signals(split, stage1_out):
    model, processor, ds = _dataset(split, stage1_out)
    sample = ds.samples[0]
    prefix = ds.prefix(sample, "cluenet")
    noise = Clue("c9", 0.0, 0.5, "the purple ring leaves to the top")
    row = stage2.label_sample(model, processor, prefix, sample, [*sample.clues, noise], delta=0.1)
    cited = {c for s in sample.chain for c in s.cites}
    assert row["relevant"] == [c.id in cited for c in sample.clues] + [False]
    assert len(row["loo_drop"]) == len(sample.clues) + 1 and all(isinstance(x, float) for x in row["loo_drop"])
    assert row["useful"] == [r or d > 0.1 for r, d in zip(row["relevant"], row["loo_drop"])]
    strict = stage2.label_sample(model, processor, prefix, sample, [*sample.clues, noise], delta=1e9)
    assert strict["useful"] == strict["relevant"]  # with a huge delta only the matching signal remains


def test_repoint_chain_and_filtered_context():
    gold = (Clue("c1", 0.0, 0.5, "the red circle enters from the left"), Clue("c2", 1.0, 1.5, "the red circle stops"))
    kept = [Clue("c3", 1.0, 1.5, "the red circle stops")]
    chain = (Step("it stops", ("c2",)), Step("it entered, so the answer is A", ("c1", "c2")))
    assert [s.cites for s in stage2.repoint_chain(chain, gold, kept)] == [("c3",), ("c3",)]
    row = {"clues": [c.to_dict() for c in gold], "useful": [False, False], "loo_drop": [0.01, 0.2]}
    clues, keep = stage2.filtered_context(row)
    assert keep == [False, True]  # none useful: the largest drop is kept


def test_stage2_run_writes_model_filter_head_and_config(split, stage1_out, tmp_path):
    cfg = stage2_config(split, tmp_path / "s2", stage1_out, steps=2, **{"stage2.filter_lr": 0.05})
    trainer = stage2.run(cfg)
    head_ids = {id(p) for p in trainer.accelerator.unwrap_model(trainer.model).head.parameters()}
    rates = {g["initial_lr"] for g in trainer.optimizer.param_groups if {id(p) for p in g["params"]} & head_ids}
    assert rates == {0.05} and cfg.optim.lr != 0.05  # the head at stage2.filter_lr, the backbone at optim.lr
    final = tmp_path / "s2" / "final"
    info = json.loads((final / "stage.json").read_text())
    assert info["stage"] == 2 and info["stage1"] == str(stage1_out) and info["steps"] == 2
    head = FilterHead.load(final / "filter_head.safetensors", hidden_size=128)
    assert head.mlp_hidden == cfg.filter.hidden
    assert (tmp_path / "s2" / "self_clues.jsonl").is_file() and (final / "model.safetensors").is_file()
    assert all(torch.isfinite(torch.tensor(r.loss)) for r in trainer.history)
    from cluenet.model import ClueNet

    net = ClueNet.from_pretrained(final)
    assert net.filter_head is not None and net.num_frames == FRAMES
