"""A reusable, resumable training loop on ``accelerate``.

The ``Trainer`` knows nothing about ClueNet: it trains any torch model given

* ``loss_fn(model, batch) -> (loss, metrics)`` -- a scalar loss tensor and a dict of floats;
* a map-style dataset (``__getitem__`` may raise ``ClueNetError`` or return ``None``
  for an unreadable sample) and a ``collate_fn`` for a list of good items;
* a ``TrainConfig`` and an ``OptimConfig`` (``training.config``).

Recipes (``training/stage1.py`` ...) build the model and data and call::

    trainer = Trainer(model, loss_fn, dataset, train=cfg.train, optim=cfg.optim,
                      collate_fn=collate, lengths=lengths, run_config=cfg)
    trainer.setup()          # accelerator, optimizer, schedule, run folder, resume
    trainer.train()          # until train.max_steps; checkpoints every save_every
    trainer.cleanup()

Single process on CPU or one GPU as is; DDP / DeepSpeed / FSDP through
``accelerate launch --config_file training/accelerate/<x>.yaml RECIPE ...``.

Guarantees (tested on CPU single process, 2-process gloo DDP, and one CUDA GPU):

* **Exact resume.** The data order depends only on (seed, epoch); the checkpoint
  stores weights, optimizer, schedule, RNG states and the number of batches consumed,
  so a run resumed from ``checkpoint-k`` logs the same per-step losses, bit for bit,
  as the uninterrupted run, mid-epoch included.
* **Non-finite losses.** A NaN/inf loss (or gradient norm) in any micro-batch on any
  process skips that optimizer step on every process (no update, counted);
  ``train.max_nonfinite`` such steps in a row raise ``TrainingAborted``.
* **Unreadable samples** are dropped from their batch and counted; once more than
  ``train.max_skip_fraction`` of the dataset's distinct items proved unreadable the run
  raises ``TrainingAborted``. A step whose micro-batch lost every sample is skipped.

Semantics: ``step`` counts optimizer-step attempts (skipped ones included, so
``max_steps`` bounds the work); the learning-rate schedule advances only on applied
updates. Gradient accumulation averages micro-batch losses (each micro-batch's loss is
already a mean over its samples).

Not covered: DeepSpeed performs the optimizer step inside ``backward`` at the
accumulation boundary, so there a non-finite micro-batch late in a window cannot
undo the earlier ones' contribution; it is still counted and logged. DeepSpeed and
FSDP checkpoints delegate optimizer state to ``accelerator.save_state`` (not
exercised by the tests: DeepSpeed is not installed here).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DistributedType, send_to_device, set_seed
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from cluenet.errors import ClueNetError, ConfigError

from . import checkpoint as ckpt
from .batching import LengthGroupedBatchSampler
from .config import OptimConfig, TrainConfig, save_resolved, to_dict

METRICS_FILE = "metrics.jsonl"
ACCELERATE_STATE_DIR = "accelerate_state"
_SHARDED_TYPES = (DistributedType.DEEPSPEED, DistributedType.FSDP)

LossFn = Callable[[torch.nn.Module, Any], "tuple[torch.Tensor, dict[str, float]]"]


class TrainingAborted(ClueNetError):
    """Training stopped because a robustness limit was exceeded (non-finite losses, bad samples)."""


@dataclass
class TrainerState:
    """Counters saved in every checkpoint (``trainer_state.json``)."""

    step: int = 0  # optimizer-step attempts done
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of this epoch consumed by this process
    updates: int = 0  # optimizer steps actually applied
    skipped_steps: int = 0
    nonfinite_steps: int = 0
    nonfinite_in_row: int = 0
    skipped_samples: int = 0  # unreadable sample draws (all processes)
    bad_items: int = 0  # distinct unreadable dataset items (all processes)
    bad_indices: list[int] = field(default_factory=list)  # this process's distinct bad items


@dataclass(frozen=True)
class StepResult:
    """What one optimizer-step attempt did."""

    step: int
    loss: float  # mean over micro-batches and processes; nan when the step was skipped before a loss
    lr: float
    grad_norm: float | None
    skipped: bool
    reason: str = ""  # "nonfinite", "empty_batch" or ""
    metrics: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- data wrappers
class _SafeItems(Dataset):
    """Wraps a dataset so that an unreadable item becomes ``(index, None)`` instead of an exception."""

    def __init__(self, data: Dataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[int, Any]:
        try:
            return index, self.data[index]
        except ClueNetError:  # a bad file or record the user can fix; anything else is a bug
            return index, None


class _SkipCollate:
    """Collates the readable items of a batch; returns ``(batch or None, bad indices)``."""

    def __init__(self, collate_fn: Callable[[list[Any]], Any] | None) -> None:
        self.collate_fn = collate_fn

    def __call__(self, pairs: list[tuple[int, Any]]) -> tuple[Any, list[int]]:
        good = [item for _, item in pairs if item is not None]
        bad = [i for i, item in pairs if item is None]
        if not good:
            return None, bad
        return (self.collate_fn(good) if self.collate_fn else torch.utils.data.default_collate(good)), bad


def lr_lambda(optim: OptimConfig, max_steps: int) -> Callable[[int], float]:
    """Multiplier of ``optim.lr`` after ``n`` applied updates: linear warmup, then the schedule."""
    warmup, floor = optim.warmup_steps, optim.min_lr_ratio

    def factor(n: int) -> float:
        if n < warmup:
            return (n + 1) / warmup
        if optim.schedule == "constant":
            return 1.0
        progress = min(1.0, (n - warmup) / max(1, max_steps - warmup))
        if optim.schedule == "linear":
            return floor + (1.0 - floor) * (1.0 - progress)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


# ----------------------------------------------------------------------------- trainer
class Trainer:
    """Train ``model`` with ``loss_fn`` on ``train_data``; see the module docstring.

    Args:
        model: a torch module whose trainable parameters have ``requires_grad``.
        loss_fn: ``loss_fn(model, batch) -> (loss, metrics)``.
        train_data: map-style dataset of examples.
        train, optim: loop and optimizer settings.
        collate_fn: list of items -> batch (default: torch's ``default_collate``).
        lengths: one length per item for length grouping (default: ``train_data.lengths``
            if present, else plain shuffled batches).
        eval_data: optional dataset for ``evaluate``.
        run_config: the full recipe config, saved as ``config.yaml`` in the run folder
            and in every checkpoint.
        accelerator: an existing ``Accelerator`` (default: one built from ``train``).
        num_workers: DataLoader worker processes.
        lr_by_prefix: parameter-name prefix -> learning rate for those parameters (e.g. a
            from-scratch head beside a pretrained backbone); the schedule scales every rate alike.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: LossFn,
        train_data: Dataset,
        *,
        train: TrainConfig,
        optim: OptimConfig,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        lengths: Sequence[int] | None = None,
        eval_data: Dataset | None = None,
        run_config: Any = None,
        accelerator: Accelerator | None = None,
        num_workers: int = 0,
        lr_by_prefix: dict[str, float] | None = None,
    ) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.train_data = train_data
        self.eval_data = eval_data
        self.cfg = train
        self.optim_cfg = optim
        self.collate = _SkipCollate(collate_fn)
        self.lengths = lengths if lengths is not None else getattr(train_data, "lengths", None)
        self.run_config = run_config
        self.accelerator = accelerator
        self.num_workers = num_workers
        self.lr_by_prefix = dict(lr_by_prefix or {})
        self.run_dir = Path(train.output_dir)
        self.state = TrainerState()
        self.history: list[StepResult] = []
        self.resumed_from: Path | None = None
        self._batches: Any = None
        self._bad_seen: set[int] = set()
        self._is_setup = False

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Build the accelerator, optimizer, schedule and sampler; write the config; resume if possible."""
        cfg = self.cfg
        if self.accelerator is None:
            self.accelerator = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum)
        else:
            self.accelerator.gradient_accumulation_steps = cfg.grad_accum
        acc = self.accelerator
        set_seed(cfg.seed, device_specific=True)  # each process its own dropout stream
        if acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if self.run_config is not None:
                save_resolved(self.run_config, self.run_dir)
        self.optimizer = self._build_optimizer()
        # The schedule is not passed through accelerate.prepare: AcceleratedScheduler steps
        # num_processes times per call, which would make the schedule depend on world size.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(self.optim_cfg, cfg.max_steps))
        self.model, self.optimizer = acc.prepare(self.model, self.optimizer)
        self.sampler = LengthGroupedBatchSampler(
            self.lengths if cfg.length_grouping else None, cfg.batch_size, size=len(self.train_data),
            seed=cfg.seed, mega_batch=cfg.mega_batch, num_replicas=acc.num_processes, rank=acc.process_index)
        self._is_setup = True
        latest = ckpt.latest_complete(self.run_dir) if cfg.resume else None
        if latest is not None:
            self.resume(latest)
        acc.wait_for_everyone()

    def _build_optimizer(self) -> torch.optim.Optimizer:
        params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if not params:
            raise ConfigError("the model has no trainable parameters (nothing has requires_grad=True)")
        o = self.optim_cfg

        def lr_of(name: str) -> float:
            return next((lr for prefix, lr in self.lr_by_prefix.items() if name.startswith(prefix)), o.lr)

        groups = []
        for lr in dict.fromkeys([o.lr, *self.lr_by_prefix.values()]):
            mine = [(n, p) for n, p in params if lr_of(n) == lr]
            # no weight decay on biases and norm scales (1-D), the usual AdamW practice
            groups += [{"params": [p for _, p in mine if p.ndim >= 2], "weight_decay": o.weight_decay, "lr": lr},
                       {"params": [p for _, p in mine if p.ndim < 2], "weight_decay": 0.0, "lr": lr}]
        groups = [g for g in groups if g["params"]]
        return torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)

    # ------------------------------------------------------------------ data
    def _loader(self) -> DataLoader:
        self.sampler.set_epoch(self.state.epoch, self.state.batch_in_epoch)
        # A private generator: creating a DataLoader iterator must not draw from the
        # global torch RNG, or a resumed run's dropout stream would shift by one draw.
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.state.epoch)
        return DataLoader(_SafeItems(self.train_data), batch_sampler=self.sampler, collate_fn=self.collate,
                          num_workers=self.num_workers, generator=gen)

    def _next_batch(self) -> tuple[Any, list[int]]:
        """Next (batch or None, bad indices) in the deterministic order, rolling over epochs."""
        if self._batches is None:
            self._batches = iter(self._loader())
        try:
            item = next(self._batches)
        except StopIteration:
            self.state.epoch += 1
            self.state.batch_in_epoch = 0
            self._batches = iter(self._loader())
            item = next(self._batches)
        self.state.batch_in_epoch += 1
        batch, bad = item
        return (None if batch is None else send_to_device(batch, self.accelerator.device)), bad

    def _count_bad(self, bad: list[int]) -> int:
        """Record unreadable items; return how many are new to this process."""
        new = [i for i in bad if i not in self._bad_seen]
        self._bad_seen.update(new)
        return len(new)

    def _check_bad_fraction(self) -> None:
        limit = self.cfg.max_skip_fraction * len(self.train_data)
        if self.state.bad_items > limit:
            raise TrainingAborted(
                f"{self.state.bad_items} of {len(self.train_data)} training items are unreadable "
                f"({self.state.bad_items / len(self.train_data):.1%}), limit train.max_skip_fraction="
                f"{self.cfg.max_skip_fraction:g}; fix or drop them (they raise ClueNetError or return None)")

    # ------------------------------------------------------------------ one step
    def train_step(self) -> StepResult:
        """One optimizer-step attempt over ``grad_accum`` micro-batches (skipped on any bad micro-batch)."""
        acc, cfg = self.accelerator, self.cfg
        self.model.train()
        losses: list[float] = []
        metrics: dict[str, list[float]] = {}
        reason = ""
        for _ in range(cfg.grad_accum):
            batch, bad = self._next_batch()
            # always enter accumulate(): its counter decides when gradients sync
            with acc.accumulate(self.model):
                reason = self._micro_step(batch, bad, losses, metrics, reason)
        return self._finish_step(losses, metrics, reason)

    def _micro_step(self, batch: Any, bad: list[int], losses: list[float], metrics: dict[str, list[float]],
                    reason: str) -> str:
        """Forward + backward of one micro-batch unless this step is already lost; returns the skip reason."""
        acc = self.accelerator
        status = torch.tensor([0.0 if batch is None else 1.0, len(bad), self._count_bad(bad)], device=acc.device)
        have, n_bad, n_new = acc.reduce(status, reduction="sum").tolist()
        self.state.skipped_samples += int(n_bad)
        self.state.bad_items += int(n_new)
        self._check_bad_fraction()
        if reason:  # the step is already lost: consume the data, skip the work
            return reason
        if have < acc.num_processes:  # some process has no readable sample: all skip together
            return "empty_batch"
        with acc.autocast():
            loss, m = self.loss_fn(self.model, batch)
        finite = acc.reduce(torch.isfinite(loss.detach()).float().reshape(1), reduction="sum").item()
        if finite < acc.num_processes:
            return "nonfinite"
        acc.backward(loss)
        losses.append(acc.reduce(loss.detach().float().reshape(1), reduction="mean").item())
        for k, v in m.items():
            metrics.setdefault(k, []).append(float(v))
        return ""

    def _finish_step(self, losses: list[float], metrics: dict[str, list[float]], reason: str) -> StepResult:
        acc, st = self.accelerator, self.state
        grad_norm = None
        if not reason:
            max_norm = self.optim_cfg.max_grad_norm or float("inf")
            norm = acc.clip_grad_norm_(self.model.parameters(), max_norm)
            grad_norm = None if norm is None else float(norm)
            if grad_norm is not None and not math.isfinite(grad_norm):
                reason = "nonfinite"
                if acc.scaler is not None:
                    self.optimizer.step()  # lets the fp16 scaler skip the update and lower its scale
        if not reason:
            self.optimizer.step()
            self.scheduler.step()
            st.updates += 1
            st.nonfinite_in_row = 0
        else:
            st.skipped_steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        st.step += 1
        result = StepResult(step=st.step, loss=sum(losses) / len(losses) if losses and not reason else float("nan"),
                            lr=self.scheduler.get_last_lr()[0], grad_norm=grad_norm, skipped=bool(reason),
                            reason=reason, metrics={k: sum(v) / len(v) for k, v in metrics.items()})
        if reason == "nonfinite":
            self._count_nonfinite()
        return result

    def _count_nonfinite(self) -> None:
        st, k = self.state, self.cfg.max_nonfinite
        st.nonfinite_steps += 1
        st.nonfinite_in_row += 1
        if st.nonfinite_in_row >= k:
            raise TrainingAborted(
                f"{st.nonfinite_in_row} optimizer steps in a row had a non-finite loss or gradient "
                f"(last at step {st.step}), limit train.max_nonfinite={k}; lower optim.lr, check the data, "
                f"or switch train.mixed_precision")

    # ------------------------------------------------------------------ train
    def train(self, stop_after: int | None = None) -> list[StepResult]:
        """Run steps until ``train.max_steps`` (or ``stop_after`` steps in total, without a final save).

        Saves a checkpoint every ``save_every`` steps and at the end, evaluates every
        ``eval_every`` steps, appends one line per step to ``metrics.jsonl``.
        Returns the results of the steps run by this call.
        """
        if not self._is_setup:
            self.setup()
        cfg, st = self.cfg, self.state
        end = cfg.max_steps if stop_after is None else min(cfg.max_steps, stop_after)
        results: list[StepResult] = []
        bar = tqdm(total=cfg.max_steps, initial=st.step, desc="train", disable=not self.accelerator.is_main_process)
        try:
            while st.step < end:
                t0 = time.perf_counter()
                res = self.train_step()
                results.append(res)
                self.history.append(res)
                self._log(res, time.perf_counter() - t0)
                bar.update(1)
                bar.set_postfix(loss=f"{res.loss:.4f}", lr=f"{res.lr:.2e}", skipped=st.skipped_steps)
                if cfg.eval_every and st.step % cfg.eval_every == 0 and self.eval_data is not None:
                    self._log_eval(self.evaluate())
                if st.step % cfg.save_every == 0 or st.step == cfg.max_steps:
                    self.save_checkpoint()
        finally:
            bar.close()
        return results

    # ------------------------------------------------------------------ evaluate
    @torch.no_grad()
    def evaluate(self, data: Dataset | None = None, batch_size: int | None = None) -> dict[str, float]:
        """Mean loss (and mean metrics) over ``data`` (default ``eval_data``), split over processes.

        The unwrapped model is used so that uneven shards need no DDP collectives per
        batch; unreadable items are skipped and counted in ``eval_skipped``.
        """
        data = self.eval_data if data is None else data
        if data is None:
            return {}
        acc = self.accelerator
        model = acc.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        bs = batch_size or self.cfg.batch_size
        mine = list(range(acc.process_index, len(data), acc.num_processes))
        loader = DataLoader(_SafeItems(data), batch_sampler=[mine[i:i + bs] for i in range(0, len(mine), bs)],
                            collate_fn=self.collate, num_workers=self.num_workers,
                            generator=torch.Generator().manual_seed(self.cfg.seed))  # keep the global RNG untouched
        sums, names = self._eval_sums(model, loader)
        model.train(was_training)
        total = acc.reduce(sums, reduction="sum").tolist()
        n = max(total[1], 1.0)
        out = {"eval_loss": total[0] / n, "eval_items": total[1], "eval_skipped": total[2]}
        out.update({f"eval_{k}": total[3 + i] / n for i, k in enumerate(names)})
        return out

    def _eval_sums(self, model: torch.nn.Module, loader: DataLoader) -> tuple[torch.Tensor, list[str]]:
        """[loss*n, n, skipped, metric*n...] summed over this process's batches."""
        acc = self.accelerator
        loss_sum, count, skipped = 0.0, 0, 0
        metric_sums: dict[str, float] = {}
        for batch, bad in loader:
            skipped += len(bad)
            if batch is None:
                continue
            n = _batch_len(batch)
            with acc.autocast():
                loss, m = self.loss_fn(model, send_to_device(batch, acc.device))
            loss_sum += float(loss) * n
            count += n
            for k, v in m.items():
                metric_sums[k] = metric_sums.get(k, 0.0) + float(v) * n
        # metric names must agree across processes for the reduce; loss_fn returns fixed keys
        names = sorted(metric_sums)
        vals = [loss_sum, count, skipped] + [metric_sums[k] for k in names]
        return torch.tensor(vals, dtype=torch.float64, device=acc.device), names

    # ------------------------------------------------------------------ save / resume
    def save_checkpoint(self) -> Path:
        """Write ``checkpoint-<step>`` atomically (all processes call; see ``training.checkpoint``)."""
        acc = self.accelerator
        sharded = acc.distributed_type in _SHARDED_TYPES
        return ckpt.save_checkpoint(
            self.run_dir, self.state.step, model=self.model, trainer_state=self._state_dict(),
            optimizer=None if sharded else self.optimizer, scheduler=self.scheduler, scaler=acc.scaler,
            config_yaml=self._config_yaml(), keep_last=self.cfg.keep_last, accelerator=acc,
            extra=(lambda d: acc.save_state(str(d / ACCELERATE_STATE_DIR))) if sharded else None)

    def resume(self, path: str | Path) -> None:
        """Restore weights, optimizer, schedule, RNG, counters and data position from ``path``."""
        acc = self.accelerator
        sharded = acc.distributed_type in _SHARDED_TYPES
        # RNG last: nothing below may draw random numbers after it is restored
        saved = ckpt.load_checkpoint(path, model=self.model, optimizer=None if sharded else self.optimizer,
                                     scheduler=self.scheduler, scaler=acc.scaler, accelerator=acc,
                                     restore_rng=not sharded)
        if sharded:
            acc.load_state(str(Path(path) / ACCELERATE_STATE_DIR))
        self._load_state_dict(saved)
        self.resumed_from = Path(path)
        if acc.is_main_process:
            self._truncate_metrics(self.state.step)

    def _state_dict(self) -> dict[str, Any]:
        st = self.state
        st.bad_indices = sorted(self._bad_seen)
        return {**asdict(st), "seed": self.cfg.seed, "num_processes": self.accelerator.num_processes,
                "sampler": self.sampler.state_dict(consumed=st.batch_in_epoch)}

    def _load_state_dict(self, saved: dict[str, Any]) -> None:
        if saved["num_processes"] != self.accelerator.num_processes:
            raise ConfigError(f"checkpoint was written by {saved['num_processes']} processes, this run has "
                              f"{self.accelerator.num_processes}; resume with the same number of processes")
        self.sampler.load_state_dict(saved["sampler"])
        fields = set(TrainerState.__dataclass_fields__)
        self.state = TrainerState(**{k: v for k, v in saved.items() if k in fields})
        self._bad_seen = set(self.state.bad_indices) if self.accelerator.is_main_process else set()
        self._batches = None

    def _config_yaml(self) -> str | None:
        if self.run_config is None:
            return None
        return yaml.safe_dump(to_dict(self.run_config), sort_keys=False)

    # ------------------------------------------------------------------ metrics log
    def _log(self, res: StepResult, seconds: float) -> None:
        off_beat = res.step % self.cfg.log_every != 0 and not res.skipped  # skipped steps are always logged
        if not self.accelerator.is_main_process or off_beat:
            return
        st = self.state
        row = {"step": res.step, "epoch": st.epoch, "loss": res.loss, "lr": res.lr, "grad_norm": res.grad_norm,
               "skipped": res.skipped, "reason": res.reason, "skipped_steps": st.skipped_steps,
               "skipped_samples": st.skipped_samples, "seconds": round(seconds, 4), **res.metrics}
        self._append(row)

    def _log_eval(self, result: dict[str, float]) -> None:
        if self.accelerator.is_main_process:
            self._append({"step": self.state.step, **result})

    def _append(self, row: dict[str, Any]) -> None:
        # json.dumps writes NaN for nan; readers in this project use json.loads, which accepts it
        with open(self.run_dir / METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def _truncate_metrics(self, step: int) -> None:
        """Drop log lines of steps after ``step``: an interrupted run logged them, the resumed run redoes them."""
        path = self.run_dir / METRICS_FILE
        if not path.exists():
            return
        keep = [line for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")

    # ------------------------------------------------------------------ cleanup
    def cleanup(self) -> None:
        """Wait for every process and drop the data iterator (the caller owns the process group)."""
        self._batches = None
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``run_dir/metrics.jsonl``."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _batch_len(batch: Any) -> int:
    """Items in a collated batch: the first dim of the first tensor found (1 if none)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for x in batch:
            if isinstance(x, (torch.Tensor, dict, list, tuple)):
                return _batch_len(x)
    return 1
