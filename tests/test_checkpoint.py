"""Checkpoints: round trip, atomicity under failure and SIGKILL, keep-N pruning, corrupt folders ignored."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cluenet.errors import ModelError
from training import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[1]


def model_and_optim(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    model[0].bias.requires_grad_(False)  # a frozen parameter: not saved
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda n: 1.0 / (n + 1))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step()
    return model, opt, sched


def save(run_dir: Path, step: int, model, opt=None, sched=None, keep_last=None) -> Path:
    return ckpt.save_checkpoint(run_dir, step, model=model, optimizer=opt, scheduler=sched,
                                trainer_state={"step": step, "epoch": 0}, config_yaml="a: 1\n", keep_last=keep_last)


def test_round_trip_restores_weights_optimizer_schedule_and_rng(tmp_path):
    model, opt, sched = model_and_optim(0)
    path = save(tmp_path, 3, model, opt, sched)
    assert path.name == "checkpoint-0000003" and ckpt.is_complete(path)
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng-rank0.pt",
                                      "trainer_state.json", "config.yaml"}
    expected = (random.random(), np.random.rand(), torch.rand(1).item())  # draws right after the save

    other, opt2, sched2 = model_and_optim(1)
    frozen_before = other[0].bias.detach().clone()
    state = ckpt.load_checkpoint(path, model=other, optimizer=opt2, scheduler=sched2)
    assert state == {"step": 3, "epoch": 0}
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    for (n, a), b in zip(model.named_parameters(), other.parameters()):
        assert torch.equal(a, b) or n == "0.bias"
    assert torch.equal(other[0].bias, frozen_before)  # frozen weights are not in the checkpoint
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], opt2.state_dict()["state"][0]["exp_avg"])
    assert sched2.state_dict()["last_epoch"] == 1


def test_failure_in_the_middle_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, opt, sched = model_and_optim()
    save(tmp_path, 1, model, opt, sched)

    real_save = torch.save

    def fail_on_optimizer(obj, path, *a, **k):
        if Path(path).name == "optimizer.pt":
            raise OSError("disk full")
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(ckpt.torch, "save", fail_on_optimizer)  # model.safetensors is written, optimizer.pt fails
    with pytest.raises(OSError, match="disk full"):
        save(tmp_path, 2, model, opt, sched)
    monkeypatch.undo()
    assert (tmp_path / ".tmp-checkpoint-0000002" / "model.safetensors").exists()
    assert not (tmp_path / "checkpoint-0000002").exists()
    assert ckpt.latest_complete(tmp_path).name == "checkpoint-0000001"
    save(tmp_path, 2, model, opt, sched)  # a retry replaces the leftover temp folder
    assert ckpt.latest_complete(tmp_path).name == "checkpoint-0000002"
    assert not (tmp_path / ".tmp-checkpoint-0000002").exists()


def test_sigkill_mid_save_leaves_previous_checkpoint_loadable(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / 'tests')!r})
        from test_checkpoint import model_and_optim, save
        from training import checkpoint as ckpt
        model, opt, sched = model_and_optim()
        save(ckpt.Path({str(tmp_path)!r}), 1, model, opt, sched)
        real = ckpt.save_file
        def write_then_die(*a, **k):
            real(*a, **k)
            os.kill(os.getpid(), signal.SIGKILL)  # the process dies with the weights half-published
        ckpt.save_file = write_then_die
        save(ckpt.Path({str(tmp_path)!r}), 2, model, opt, sched)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (tmp_path / ".tmp-checkpoint-0000002").is_dir()
    latest = ckpt.latest_complete(tmp_path)
    assert latest is not None and latest.name == "checkpoint-0000001"
    model, opt, sched = model_and_optim(5)
    assert ckpt.load_checkpoint(latest, model=model, optimizer=opt, scheduler=sched)["step"] == 1


def test_keep_last_prunes_oldest(tmp_path):
    model, opt, sched = model_and_optim()
    for step in (10, 20, 30, 40, 50):
        save(tmp_path, step, model, opt, sched, keep_last=2)
    assert [p.name for p in ckpt.list_complete(tmp_path)] == ["checkpoint-0000040", "checkpoint-0000050"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-0000040", "checkpoint-0000050"]


def test_partial_and_corrupt_folders_are_ignored(tmp_path):
    model, opt, sched = model_and_optim()
    good = save(tmp_path, 1, model, opt, sched)
    truncated = save(tmp_path, 2, model, opt, sched)
    no_manifest = save(tmp_path, 3, model, opt, sched)
    garbage = save(tmp_path, 4, model, opt, sched)
    (tmp_path / "checkpoint-0000009").mkdir()  # empty folder with a checkpoint name
    (tmp_path / ".tmp-checkpoint-0000010").mkdir()
    with open(truncated / "optimizer.pt", "r+b") as f:
        f.truncate(10)
    (no_manifest / "manifest.json").unlink()
    (garbage / "manifest.json").write_text("{not json")
    assert ckpt.list_complete(tmp_path) == [good]
    assert ckpt.latest_complete(tmp_path) == good
    with pytest.raises(ModelError, match="incomplete"):
        ckpt.load_checkpoint(truncated, model=model)


def test_same_size_corruption_is_caught_on_load(tmp_path):
    model, opt, sched = model_and_optim()
    path = save(tmp_path, 1, model, opt, sched)
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF  # flip bits in the last weight: size unchanged
    (path / "model.safetensors").write_bytes(bytes(data))
    assert ckpt.is_complete(path)  # the cheap check cannot see it
    with pytest.raises(ModelError, match=r"model.safetensors is corrupted: sha256"):
        ckpt.load_checkpoint(path, model=model)


def test_mismatched_model_is_a_clear_error(tmp_path):
    model, _, _ = model_and_optim()
    path = save(tmp_path, 1, model)
    wider = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2))
    wider[0].bias.requires_grad_(False)
    with pytest.raises(ModelError, match=r"0.weight has shape \(5, 3\), model has \(6, 3\)"):
        ckpt.load_checkpoint(path, model=wider)
    with pytest.raises(ModelError, match="missing"):
        ckpt.load_checkpoint(path, model=nn.Sequential(nn.Linear(3, 5)))


def test_optimizer_state_loads_under_weights_only(tmp_path):
    model, opt, sched = model_and_optim()
    path = save(tmp_path, 1, model, opt, sched)
    # torch refuses pickled non-tensor objects with weights_only=True: this must not raise
    state = torch.load(path / "optimizer.pt", weights_only=True)
    assert "state" in state and "param_groups" in state
    rng = torch.load(path / "rng-rank0.pt", weights_only=True)
    assert set(rng) >= {"python", "numpy", "torch"}
