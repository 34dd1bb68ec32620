"""Atomic, pruned, verifiable training checkpoints.

A checkpoint is written into a hidden temporary folder of the run folder, every
file is fsync'ed, the manifest is written *last*, and only then is the folder
renamed to ``checkpoint-<step>`` (``os.rename`` within one file system is atomic).
A crash or SIGKILL at any moment therefore leaves either no new checkpoint or a
complete one; ``latest_complete`` ignores temporary folders and any folder whose
manifest is missing, unreadable, or lists a file that is absent or has the wrong size.

Weights are safetensors (never pickle). Optimizer / scheduler / scaler / RNG states
are ``torch.save``'d dicts of tensors and numbers and are read back with
``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.

In a distributed run every process calls ``save_checkpoint`` (they all must: each
writes its own RNG state); the main process writes everything else and does the
rename, the others wait at barriers. The run folder must be on a file system that
every process sees (as with ``accelerate``'s own ``save_state``).

Guards not covered: a disk that lies about fsync, and two *runs* writing into the
same run folder at once.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from cluenet.errors import ModelError

CHECKPOINT_PREFIX = "checkpoint-"
TMP_PREFIX = ".tmp-checkpoint-"
TRASH_PREFIX = ".trash-checkpoint-"
MANIFEST = "manifest.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
SCALER_FILE = "scaler.pt"
STATE_FILE = "trainer_state.json"
CONFIG_FILE = "config.yaml"
FORMAT_VERSION = 1
STEP_DIGITS = 7  # zero-padded so that folder names sort by step
_CKPT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")
_HASH_CHUNK = 1 << 20


def rng_file(rank: int) -> str:
    """Name of the RNG-state file of process ``rank``."""
    return f"rng-rank{rank}.pt"


# ----------------------------------------------------------------------------- save
def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model: torch.nn.Module,
    trainer_state: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    config_yaml: str | None = None,
    keep_last: int | None = None,
    accelerator: Any = None,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``run_dir/checkpoint-<step>`` atomically, prune to ``keep_last``, return its path.

    Layout written::

        run_dir/
          checkpoint-0000200/
            model.safetensors     trainable parameters only (requires_grad), by name
            optimizer.pt          optimizer.state_dict()            (weights_only load)
            scheduler.pt          scheduler.state_dict()            (if a scheduler)
            scaler.pt             grad-scaler state                 (if fp16)
            rng-rank0.pt ...      python / numpy / torch / cuda RNG of each process
            trainer_state.json    step, epoch, data position, counters, seeds (``trainer_state``)
            config.yaml           the resolved run config           (if given)
            manifest.json         written last: step, file names, sizes, sha256
          .tmp-checkpoint-0000300/   an interrupted save: ignored, removed by the next save

    ``extra(tmp_folder)``, if given, runs on every process before the manifest is
    written (e.g. ``accelerator.save_state`` for sharded DeepSpeed/FSDP optimizer state);
    its files are listed in the manifest too.

    Frozen weights are not saved: the recipe rebuilds them from the same source
    (base model name, tiny config + seed) before loading.
    """
    run_dir = Path(run_dir)
    name = f"{step:0{STEP_DIGITS}d}"
    tmp, final = run_dir / f"{TMP_PREFIX}{name}", run_dir / f"{CHECKPOINT_PREFIX}{name}"
    main = accelerator is None or accelerator.is_main_process
    rank = 0 if accelerator is None else accelerator.process_index
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # leftover of an earlier interrupted save
        tmp.mkdir()
    _barrier(accelerator)
    _write(tmp / rng_file(rank), lambda p: torch.save(capture_rng(), p))
    state_dict = trainable_state_dict(model, accelerator)
    if extra is not None:
        extra(tmp)
    _barrier(accelerator)
    if main:
        _write_main_files(tmp, step, state_dict, trainer_state, optimizer, scheduler, scaler, config_yaml)
        _publish(tmp, final)
        if keep_last is not None:
            prune(run_dir, keep_last)
    _barrier(accelerator)
    return final


def _write_main_files(tmp: Path, step: int, state_dict: dict[str, torch.Tensor], trainer_state: dict[str, Any],
                      optimizer: Any, scheduler: Any, scaler: Any, config_yaml: str | None) -> None:
    _write(tmp / MODEL_FILE, lambda p: save_file(state_dict, str(p), metadata={"step": str(step)}))
    if optimizer is not None:
        _write(tmp / OPTIMIZER_FILE, lambda p: torch.save(optimizer.state_dict(), p))
    if scheduler is not None:
        _write(tmp / SCHEDULER_FILE, lambda p: torch.save(scheduler.state_dict(), p))
    if scaler is not None:
        _write(tmp / SCALER_FILE, lambda p: torch.save(scaler.state_dict(), p))
    _write(tmp / STATE_FILE, lambda p: p.write_text(json.dumps(trainer_state, indent=2), encoding="utf-8"))
    if config_yaml is not None:
        _write(tmp / CONFIG_FILE, lambda p: p.write_text(config_yaml, encoding="utf-8"))
    files = {f.relative_to(tmp).as_posix(): {"bytes": f.stat().st_size, "sha256": _sha256(f)}
             for f in sorted(tmp.rglob("*")) if f.is_file()}
    manifest = {"format": FORMAT_VERSION, "step": step, "files": files}
    # the manifest is the completeness marker, so it goes last
    _write(tmp / MANIFEST, lambda p: p.write_text(json.dumps(manifest, indent=2), encoding="utf-8"))
    _fsync_dir(tmp)


def _publish(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; an existing ``final`` (same step, older run) is replaced."""
    trash = None
    if final.exists():
        trash = final.with_name(TRASH_PREFIX + final.name[len(CHECKPOINT_PREFIX):])
        shutil.rmtree(trash, ignore_errors=True)
        os.rename(final, trash)
    os.rename(tmp, final)
    _fsync_dir(final.parent)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def _write(path: Path, writer: Any) -> None:
    """Run ``writer(path)`` and fsync the file so its bytes are on disk before the rename."""
    writer(path)
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _barrier(accelerator: Any) -> None:
    if accelerator is not None:
        accelerator.wait_for_everyone()


def trainable_state_dict(model: torch.nn.Module, accelerator: Any = None) -> dict[str, torch.Tensor]:
    """CPU copies of the parameters that require grad, keyed by their unwrapped names."""
    if accelerator is not None:
        unwrapped = accelerator.unwrap_model(model)
        if accelerator.distributed_type.value in ("DEEPSPEED", "FSDP"):  # sharded: gather (all ranks call)
            names = {n for n, p in unwrapped.named_parameters() if p.requires_grad}
            full = accelerator.get_state_dict(model)
            return {n: t.detach().to("cpu", copy=True).contiguous() for n, t in full.items() if n in names}
        model = unwrapped
    return {n: p.detach().to("cpu", copy=True).contiguous() for n, p in model.named_parameters() if p.requires_grad}


# ----------------------------------------------------------------------------- find / prune
def checkpoint_step(path: str | Path) -> int | None:
    """Step of a ``checkpoint-<step>`` folder name, else ``None``."""
    m = _CKPT_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def is_complete(path: str | Path) -> bool:
    """True when ``path`` has a readable manifest and every listed file with its listed size."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
        return manifest.get("format") == FORMAT_VERSION and all(
            (path / n).stat().st_size == int(meta["bytes"]) for n, meta in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def list_complete(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of ``run_dir``, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(checkpoint_step(p), p) for p in run_dir.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return [p for _, p in sorted(found) if is_complete(p)]


def latest_complete(run_dir: str | Path) -> Path | None:
    """Newest complete checkpoint of ``run_dir`` (temporary and partial folders ignored), or ``None``."""
    done = list_complete(run_dir)
    return done[-1] if done else None


def prune(run_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` complete checkpoints; return what was deleted.

    Incomplete ``checkpoint-*`` folders and temporary folders older than the newest
    complete checkpoint are deleted too: nothing can resume from them.
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    run_dir = Path(run_dir)
    done = list_complete(run_dir)
    doomed = done[:-keep_last]
    newest = checkpoint_step(done[-1]) if done else None
    for p in run_dir.iterdir():
        step = checkpoint_step(p)
        tmp_step = p.name[len(TMP_PREFIX):]
        stale_tmp = p.name.startswith(TMP_PREFIX) and tmp_step.isdigit() and newest is not None \
            and int(tmp_step) < newest
        if (step is not None and p not in done) or stale_tmp:
            doomed.append(p)
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)
    return doomed


# ----------------------------------------------------------------------------- load
def load_checkpoint(
    path: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    accelerator: Any = None,
    restore_rng: bool = True,
    verify: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint written by ``save_checkpoint`` into the given objects; return its trainer state.

    Raises:
        ModelError: incomplete or corrupted folder (size or sha256 mismatch), or the
            trainable parameters do not match the model's (names or shapes).
    """
    path = Path(path)
    if not is_complete(path):
        raise ModelError(f"checkpoint {path} is incomplete (no valid {MANIFEST}); cannot resume from it")
    if verify:
        _verify_hashes(path)
    _load_weights(path / MODEL_FILE, model, accelerator)
    if optimizer is not None:
        optimizer.load_state_dict(_torch_load(path / OPTIMIZER_FILE))
    if scheduler is not None and (path / SCHEDULER_FILE).exists():
        scheduler.load_state_dict(_torch_load(path / SCHEDULER_FILE))
    if scaler is not None and (path / SCALER_FILE).exists():
        scaler.load_state_dict(_torch_load(path / SCALER_FILE))
    if restore_rng:
        _restore_rank_rng(path, 0 if accelerator is None else accelerator.process_index)
    return json.loads((path / STATE_FILE).read_text(encoding="utf-8"))


def _verify_hashes(path: Path) -> None:
    manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    for name, meta in manifest["files"].items():
        got = _sha256(path / name)
        if got != meta["sha256"]:
            raise ModelError(f"checkpoint file {path / name} is corrupted: sha256 {got[:12]}..., "
                             f"manifest says {meta['sha256'][:12]}...")


def _load_weights(file: Path, model: torch.nn.Module, accelerator: Any) -> None:
    if accelerator is not None:
        model = accelerator.unwrap_model(model)
    saved = load_file(str(file))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(saved) != set(params):
        missing, extra = sorted(set(params) - set(saved)), sorted(set(saved) - set(params))
        raise ModelError(f"checkpoint {file} does not match the model's trainable parameters: "
                         f"missing {missing[:5]}, unexpected {extra[:5]}")
    with torch.no_grad():
        for n, p in params.items():
            if saved[n].shape != p.shape:
                raise ModelError(f"checkpoint {file}: {n} has shape {tuple(saved[n].shape)}, "
                                 f"model has {tuple(p.shape)}")
            p.copy_(saved[n])


def _torch_load(file: Path) -> Any:
    return torch.load(file, map_location="cpu", weights_only=True)


def _restore_rank_rng(path: Path, rank: int) -> None:
    file = path / rng_file(rank)
    if not file.exists():
        # resumed with more processes than saved: this rank keeps its fresh seed
        warnings.warn(f"{file} missing: RNG of rank {rank} not restored; the run is not bit-identical")
        return
    restore_rng(_torch_load(file))


# ----------------------------------------------------------------------------- RNG
def capture_rng() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states as tensors/lists that ``weights_only`` loads."""
    version, py_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(py_state), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng``."""
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
