"""The Trainer: exact resume, non-finite skipping, bad-sample skipping, artifacts, DDP agreement.

Tiny MLP with dropout (so the RNG state matters for resume) on a synthetic
regression set; every run takes well under a second per Trainer on CPU.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from cluenet.errors import InputError
from training import checkpoint as ckpt
from training.config import OptimConfig, Stage1RunConfig, TrainConfig, load_config
from training.loop import Trainer, TrainingAborted, lr_lambda, read_metrics

ROOT = Path(__file__).resolve().parents[1]


class TinyData(torch.utils.data.Dataset):
    """y = sum(w * x) + noise, deterministic per index; chosen indices are broken on purpose."""

    def __init__(self, n: int, *, raise_at=(), none_at=(), nan_at=(), crash_at=()) -> None:
        g = torch.Generator().manual_seed(1234)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(n, generator=g)
        self.lengths = [int(i % 7) + 1 for i in range(n)]
        self.raise_at, self.none_at, self.nan_at, self.crash_at = set(raise_at), set(none_at), set(nan_at), set(crash_at)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        if i in self.raise_at:
            raise InputError(f"sample {i} is unreadable")
        if i in self.crash_at:
            raise RuntimeError("a bug, not bad data")
        if i in self.none_at:
            return None
        x = self.x[i] * float("nan") if i in self.nan_at else self.x[i]
        return x, self.y[i]


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.2), nn.ReLU(), nn.Linear(16, 1))


def mse(model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
    x, y = batch
    pred = model(x).squeeze(-1)
    loss = torch.mean((pred - y) ** 2)
    return loss, {"abs_err": float(torch.mean(torch.abs(pred.detach() - y)))}


def make_trainer(out: Path, data=None, model_seed: int = 0, **train_kw) -> Trainer:
    kw = dict(output_dir=str(out), seed=3, batch_size=4, grad_accum=2, max_steps=12, save_every=5,
              keep_last=2, mega_batch=2, max_nonfinite=3, max_skip_fraction=0.1)
    kw.update(train_kw)
    run_cfg = Stage1RunConfig(train=TrainConfig(**kw), optim=OptimConfig(lr=1e-2, warmup_steps=2))
    trainer = Trainer(tiny_model(model_seed), mse, data if data is not None else TinyData(30),
                      train=run_cfg.train, optim=run_cfg.optim, run_config=run_cfg)
    trainer.setup()
    return trainer


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.accelerator.unwrap_model(trainer.model).state_dict().items()}


def test_resume_mid_epoch_gives_identical_losses_and_weights(tmp_path):
    full = make_trainer(tmp_path / "full")
    full.train()
    full_losses = [r.loss for r in full.history]
    assert len(full_losses) == 12 and all(math.isfinite(x) for x in full_losses)

    # 30 items / batch 4 = 8 batches per epoch, 2 per step: checkpoint 5 sits mid-epoch 1
    part = make_trainer(tmp_path / "part")
    part.train(stop_after=7)  # "crash" after step 7: steps 6-7 are lost, checkpoint-5 survives
    assert ckpt.latest_complete(tmp_path / "part").name == "checkpoint-0000005"
    resumed = make_trainer(tmp_path / "part", model_seed=99)  # different init: the weights must come from disk
    assert resumed.resumed_from is not None and resumed.state.step == 5
    assert resumed.state.epoch == 1 and resumed.state.batch_in_epoch == 2
    resumed.train()

    assert [r.loss for r in resumed.history] == full_losses[5:]  # exact equality, not approx
    w_full, w_res = weights(full), weights(resumed)
    assert all(torch.equal(w_full[k], w_res[k]) for k in w_full)
    # the metrics log has each step once, with the uninterrupted run's losses
    rows = [r for r in read_metrics(tmp_path / "part") if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert [r["loss"] for r in rows] == [r["loss"] for r in read_metrics(tmp_path / "full")]


def test_run_folder_artifacts(tmp_path):
    trainer = make_trainer(tmp_path / "run")
    before = weights(trainer)
    trainer.train()
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == ["checkpoint-0000010", "checkpoint-0000012", "config.yaml", "metrics.jsonl"]
    last = tmp_path / "run" / "checkpoint-0000012"
    assert sorted(p.name for p in last.iterdir()) == sorted(
        ["model.safetensors", "optimizer.pt", "scheduler.pt", "rng-rank0.pt", "trainer_state.json",
         "config.yaml", "manifest.json"])
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["step"] == 12 and state["updates"] == 12 and state["seed"] == 3
    assert state["sampler"] == {"epoch": 2, "start": 8, "seed": 3, "num_replicas": 1, "batch_size": 4}
    assert load_config(Stage1RunConfig, tmp_path / "run" / "config.yaml") == trainer.run_config
    after = weights(trainer)
    assert all(not torch.equal(before[k], after[k]) for k in before)  # every parameter trained
    assert trainer.history[-1].loss < trainer.history[0].loss


def test_nan_loss_skips_update_and_is_counted(tmp_path):
    trainer = make_trainer(tmp_path / "nan", data=TinyData(30, nan_at={0}), grad_accum=1, max_steps=8)
    skipped = 0
    for _ in range(8):  # item 0 comes once per epoch of 8 batches
        before = weights(trainer)
        res = trainer.train_step()
        changed = any(not torch.equal(before[k], v) for k, v in weights(trainer).items())
        assert changed != res.skipped
        skipped += res.skipped
        if res.skipped:
            assert res.reason == "nonfinite" and math.isnan(res.loss)
    assert skipped == 1
    assert trainer.state.skipped_steps == 1 and trainer.state.nonfinite_steps == 1
    assert trainer.state.updates == 7 and trainer.state.nonfinite_in_row == 0
    assert all(torch.isfinite(v).all() for v in weights(trainer).values())


def test_k_nonfinite_steps_in_a_row_abort(tmp_path):
    trainer = make_trainer(tmp_path / "allnan", data=TinyData(30, nan_at=range(30)))
    with pytest.raises(TrainingAborted, match=r"3 optimizer steps in a row .* limit train.max_nonfinite=3"):
        trainer.train()
    assert trainer.state.step == 3 and trainer.state.updates == 0


def test_unreadable_samples_skipped_and_counted(tmp_path):
    data = TinyData(30, raise_at={1}, none_at={2})  # 2 of 30 = 6.7 % <= 10 %
    trainer = make_trainer(tmp_path / "bad", data=data, max_steps=8)  # 16 batches = 2 epochs
    trainer.train()
    assert trainer.state.bad_items == 2
    assert trainer.state.skipped_samples == 4  # each bad item drawn once per epoch
    assert trainer.state.updates == 8


def test_too_many_unreadable_samples_abort(tmp_path):
    data = TinyData(30, raise_at={1, 2, 3}, none_at={4})  # 4 of 30 > 10 %
    trainer = make_trainer(tmp_path / "worse", data=data)
    with pytest.raises(TrainingAborted, match=r"4 of 30 training items are unreadable .*limit train.max_skip_fraction=0.1"):
        trainer.train()


def test_other_dataset_errors_are_not_swallowed(tmp_path):
    trainer = make_trainer(tmp_path / "bug", data=TinyData(30, crash_at=set(range(30))))
    with pytest.raises(RuntimeError, match="a bug"):
        trainer.train_step()


def test_batch_with_no_readable_sample_skips_the_step(tmp_path):
    data = TinyData(8, none_at=range(4, 8))
    data.lengths = [1] * 4 + [100] * 4  # length grouping puts the four bad items in one batch
    trainer = make_trainer(tmp_path / "empty", data=data, batch_size=4, grad_accum=1, max_skip_fraction=0.5)
    results = [trainer.train_step() for _ in range(2)]  # one batch of good items, one of bad
    assert sorted(r.reason for r in results) == ["", "empty_batch"]
    assert trainer.state.skipped_steps == 1 and trainer.state.nonfinite_steps == 0


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    # no dropout, batches of equal length items: 2 x 4 accumulated == 1 x 8 mathematically
    def run(bs: int, accum: int) -> dict[str, torch.Tensor]:
        run_cfg = Stage1RunConfig(train=TrainConfig(output_dir=str(tmp_path / f"ga{bs}"), seed=1, batch_size=bs,
                                                    grad_accum=accum, max_steps=1, length_grouping=False),
                                  optim=OptimConfig(lr=1e-2))
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        torch.manual_seed(0)
        for p in model.parameters():
            nn.init.normal_(p, std=0.3)
        data = TinyData(8)
        # one epoch's order is the same for both: a single mega-batch, shuffled per seed
        t = Trainer(model, mse, data, train=run_cfg.train, optim=run_cfg.optim)
        t.setup()
        t.train()
        return weights(t)

    a, b = run(8, 1), run(4, 2)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_periodic_evaluation_is_logged_and_keeps_train_mode(tmp_path):
    trainer = make_trainer(tmp_path / "ev", max_steps=4, eval_every=2)
    trainer.eval_data = TinyData(10, none_at={3})
    trainer.train()
    evals = [r for r in read_metrics(tmp_path / "ev") if "eval_loss" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert all(r["eval_items"] == 9 and r["eval_skipped"] == 1 and math.isfinite(r["eval_loss"]) for r in evals)
    assert evals[1]["eval_loss"] < evals[0]["eval_loss"]  # it is learning
    assert trainer.model.training


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one process-wide state; a different mixed precision needs a reset (before and after)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def test_bf16_autocast_trains(tmp_path, fresh_accelerate_state):
    trainer = make_trainer(tmp_path / "bf16", max_steps=6, mixed_precision="bf16")
    assert trainer.accelerator.mixed_precision == "bf16"
    trainer.train()
    losses = [r.loss for r in trainer.history]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    # weights stay fp32 (autocast computes in bf16, the master copy does not change dtype)
    assert all(v.dtype == torch.float32 for v in weights(trainer).values())


def test_warmup_cosine_schedule():
    f = lr_lambda(OptimConfig(warmup_steps=4, schedule="cosine", min_lr_ratio=0.1), max_steps=14)
    assert [f(n) for n in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(9) == pytest.approx(0.55) and f(14) == pytest.approx(0.1) and f(100) == pytest.approx(0.1)


def test_lr_by_prefix_gives_those_parameters_their_own_rate_under_the_same_schedule(tmp_path):
    run_cfg = Stage1RunConfig(train=TrainConfig(output_dir=str(tmp_path), batch_size=4, max_steps=6, save_every=6),
                              optim=OptimConfig(lr=1e-2, warmup_steps=2, weight_decay=0.1))
    model = tiny_model()
    trainer = Trainer(model, mse, TinyData(30), train=run_cfg.train, optim=run_cfg.optim, run_config=run_cfg,
                      lr_by_prefix={"3.": 0.5})
    trainer.setup()
    head = {id(p) for p in model[3].parameters()}
    by_lr: dict[float, set[int]] = {}
    for g in trainer.optimizer.param_groups:
        by_lr.setdefault(g["initial_lr"], set()).update(id(p) for p in g["params"])
        assert g["weight_decay"] == (0.1 if g["params"][0].ndim >= 2 else 0.0)
    assert by_lr[0.5] == head and by_lr[1e-2] == {id(p) for p in model.parameters()} - head
    # warm-up step 1 of 2 halves both rates
    assert sorted(g["lr"] for g in trainer.optimizer.param_groups) == pytest.approx([5e-3, 5e-3, 0.25, 0.25])
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train()
    assert all(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))


def _nan_to_none(xs: list[float]) -> list[float | None]:
    return [None if math.isnan(x) else x for x in xs]  # nan != nan would fail list equality


@pytest.mark.integration
def test_two_process_ddp_agrees_and_resumes(tmp_path):
    """Two CPU processes (gloo DDP) through training/accelerate/cpu_2proc.yaml: ranks agree; resume is exact.

    Note: plain ``accelerate launch --num_processes 2 --cpu`` starts ONE process in
    accelerate 1.15 when mpirun is absent; the config's torchrun launcher starts two
    (asserted below through the world size each process reports).
    """
    script = ROOT / "tests" / "ddp_tiny_train.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "ACCELERATE_USE_CPU": "true"}

    def launch(out: Path, *extra: str) -> list[dict]:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "training" / "accelerate" / "cpu_2proc.yaml"), str(script), str(out), *extra]
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return [json.loads((out / f"result-rank{r}.json").read_text()) for r in (0, 1)]

    full = launch(tmp_path / "full")
    launch(tmp_path / "part", "--stop-after", "5")
    part = launch(tmp_path / "part")  # resumes from checkpoint-4
    assert [r["world"] for r in full] == [2, 2]
    assert full[0]["weights"] == full[1]["weights"]  # DDP kept the replicas identical
    assert _nan_to_none(full[0]["losses"]) == _nan_to_none(full[1]["losses"])  # cross-process means
    # the NaN item sits in one rank's batch; both ranks skipped those steps together
    assert full[0]["skipped_steps"] == full[1]["skipped_steps"] >= 1
    assert sum(math.isnan(x) for x in full[0]["losses"]) == full[0]["skipped_steps"]
    assert part[0]["resumed_from"].endswith("checkpoint-0000004")
    assert _nan_to_none(part[0]["losses"]) == _nan_to_none(full[0]["losses"][4:])
    assert part[0]["weights"] == full[0]["weights"] == part[1]["weights"]
