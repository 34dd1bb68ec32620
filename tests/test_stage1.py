"""Stage 1 recipe: the packed E+R row, the weighted loss, resume with identical losses, the output folder."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cluenet import backbones, prompts
from cluenet.data.jsonl import read_samples
from training import common, stage1
from training import data as tdata
from training.config import LossConfig
from training.loop import read_metrics

from recipe_helpers import stage1_config, tiny_split


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    return tiny_split(tmp_path_factory.mktemp("cw") / "train")


@pytest.fixture(scope="module")
def tiny(tiny_qwen2_vl):
    return (*tiny_qwen2_vl, backbones.get_family("qwen2_vl"))


def _prefix(split: Path, tiny, index: int = 0):
    model, proc, fam = tiny
    sample = read_samples(split)[index]
    frames, times = common.frame_source(stage1_config(split, split.parent / "x").data, [sample], str(split))(sample)
    return sample, tdata.make_prefix(proc, fam, sample, frames, times, "cluenet")


def test_stage1_row_labels_only_targets_and_weights_the_decisive_letters(split, tiny):
    _, proc, _ = tiny
    sample, prefix = _prefix(split, tiny)
    row = tdata.stage1_row(proc.tokenizer, prefix, sample, LossConfig(answer_weight=3.0, extraction_weight=0.5))
    n = len(prefix.ids)
    assert row.input_ids[:n] == prefix.ids and all(x == tdata.IGNORE_INDEX for x in row.labels[:n])
    text = proc.tokenizer.decode([t for t in row.labels if t != tdata.IGNORE_INDEX])
    assert text.startswith("<clues>") and "</clues>" in text and text.endswith("</answer><|im_end|>")
    assert "\n<chain>" not in text  # the "\n" between the blocks is context, not a target
    clue_len = len(prompts.encode_text(proc.tokenizer, prompts.clues_target(sample.clues)))
    assert set(row.weights[n:n + clue_len]) == {0.5}
    letter_pos = [i for i, w in enumerate(row.weights) if w == 3.0]  # the chain's closing letter, the answer
    letters = [proc.tokenizer.decode([row.input_ids[p]]).strip() for p in letter_pos]
    assert letters == ["ABCDE"[sample.answer]] * 2
    closing = proc.tokenizer.decode(row.input_ids[letter_pos[0] - 3:letter_pos[0] + 1])
    last_word = sample.options[sample.answer].split()[-1]
    assert closing.endswith(f"{last_word} {'ABCDE'[sample.answer]}"), closing  # "... the blue ring A"


def _token_ce(model, row: tdata.Row, collate) -> torch.Tensor:
    batch = collate([[row]])
    logits = model(**tdata.model_inputs(batch)).logits[0, :-1]
    labels = batch["labels"][0, 1:]
    ce = torch.nn.functional.cross_entropy(logits, labels.clamp(min=0), reduction="none")
    return ce[labels != tdata.IGNORE_INDEX]


@torch.no_grad()
def test_packed_row_equals_separate_e_and_r_rows(split, tiny):
    """Under the causal mask one E+R row gives the same per-token losses as the two tasks apart."""
    model, proc, _ = tiny
    sample, prefix = _prefix(split, tiny, 1)
    tok, collate = proc.tokenizer, common.collator(proc)
    packed = _token_ce(model.eval(), tdata.stage1_row(tok, prefix, sample, LossConfig()), collate)
    e = _token_ce(model, tdata.extraction_row(tok, prefix, sample, 1.0), collate)
    r = _token_ce(model, tdata.reasoning_row(tok, prefix, sample.clues, sample.chain, sample.answer, LossConfig()), collate)
    assert torch.allclose(packed, torch.cat([e, r]), atol=1e-4)


def test_weighted_loss_upweights_answers():
    logits = torch.zeros(1, 4, 5)
    logits[0, 0, 1] = 5.0  # predicts token 1 after position 0, uniform elsewhere
    batch = {"labels": torch.tensor([[-100, 1, 2, 3]]), "weights": torch.tensor([[0.0, 1.0, 1.0, 4.0]])}
    loss, m = common.weighted_lm_loss(logits, batch)
    ce = torch.nn.functional.cross_entropy(logits[0, :3], torch.tensor([1, 2, 3]), reduction="none")
    assert loss.item() == pytest.approx(float((ce * torch.tensor([1.0, 1.0, 4.0])).sum() / 3))
    assert m["answer_acc"] == 0.0


def test_stage1_resume_gives_identical_losses(split, tmp_path):
    full = stage1.run(stage1_config(split, tmp_path / "full", steps=4))
    ref = [r["loss"] for r in read_metrics(tmp_path / "full")]
    assert len(ref) == 4 and all(map(torch.isfinite, torch.tensor(ref)))
    # an interrupted run: 2 steps then the process "dies" after checkpoint-2
    cfg = stage1_config(split, tmp_path / "cut", steps=4)
    t = stage1.setup(cfg)
    t.setup()
    t.train(stop_after=2)
    assert (tmp_path / "cut" / "checkpoint-0000002").is_dir() and not (tmp_path / "cut" / "final").exists()
    resumed = stage1.run(cfg)
    assert resumed.resumed_from.name == "checkpoint-0000002"
    assert [r["loss"] for r in read_metrics(tmp_path / "cut")] == ref
    final = tmp_path / "cut" / "final"
    info = json.loads((final / "stage.json").read_text())
    assert info["stage"] == 1 and info["steps"] == 4 and info["num_frames"] == cfg.data.num_frames
    assert {"config.json", "model.safetensors", "tokenizer.json", "cluenet.json"} <= {p.name for p in final.iterdir()}
    a, b = load_file(str(final / "model.safetensors")), load_file(str(tmp_path / "full" / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    trained = backbones.load_pretrained(str(final), device="cpu", dtype=torch.float32)[0].state_dict()
    init = backbones.tiny_model("qwen2_vl", full.built.processor.tokenizer, seed=cfg.train.seed)[0].state_dict()
    assert trained.keys() == init.keys()
    changed = [k for k in init if not torch.equal(trained[k], init[k])]
    assert len(changed) > len(init) // 2  # full training: most tensors moved


def test_a_sample_without_clues_is_refused_with_a_clear_message(split, tiny):
    from dataclasses import replace

    from cluenet.errors import InputError

    _, proc, _ = tiny
    sample, prefix = _prefix(split, tiny)
    with pytest.raises(InputError, match="0 clues .* stage 1 needs both"):
        tdata.stage1_row(proc.tokenizer, prefix, replace(sample, clues=()), LossConfig())


@pytest.mark.integration
def test_stage1_runs_under_accelerate_launch_with_two_cpu_processes(split, tmp_path):
    """accelerate launch (2 processes, DDP over gloo on CPU) -m training.stage1 --config ..."""
    import os
    import subprocess
    import sys

    import yaml

    from training.config import to_dict

    root = Path(__file__).resolve().parents[1]
    cfg = stage1_config(split, tmp_path / "ddp", steps=2)
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(root / "training" / "accelerate" / "cpu_2proc.yaml"), "-m", "training.stage1", "--config", str(path)]
    res = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    state = json.loads((tmp_path / "ddp" / "checkpoint-0000002" / "trainer_state.json").read_text())
    assert state["num_processes"] == 2 and state["step"] == 2
    assert json.loads((tmp_path / "ddp" / "final" / "stage.json").read_text())["steps"] == 2


def test_vision_store_gives_the_processor_s_prefix(split, tiny, tmp_path):
    """Precomputed pixels (float16) + re-tokenized text == running the processor on the clip."""
    _, proc, fam = tiny
    samples = read_samples(split)[:3]
    frames = common.frame_source(stage1_config(split, tmp_path).data, samples, str(split))
    store = tdata.VisionStore.build(tmp_path / "store", samples, lambda: proc, fam, frames, workers=1)
    for s in samples:
        f, t = frames(s)
        for mode in ("cluenet", "direct"):
            ref, got = tdata.make_prefix(proc, fam, s, f, t, mode), store.prefix(s, mode)
            assert got.ids == ref.ids
            assert torch.equal(got.vision["video_grid_thw"], ref.vision["video_grid_thw"])
            diff = (got.vision["pixel_values_videos"] - ref.vision["pixel_values_videos"]).abs()
            assert float(diff.max()) < 2e-3  # float16 rounding of values in about [-2, 2.2]
        assert store.prefix_ids(s, "cot").ids == tdata.make_prefix(proc, fam, s, f, t, "cot").ids
