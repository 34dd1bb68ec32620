"""Length-grouped, seeded, resumable batch sampling.

``LengthGroupedBatchSampler`` yields lists of dataset indices:

1. a permutation of all indices, drawn from ``(seed, epoch)`` only;
2. cut into mega-batches of ``mega_batch * batch_size`` indices, each sorted by length
   (longest first) so that a batch holds samples of similar length and padding
   stays small;
3. every mega-batch cut into batches; the batch order is shuffled again from
   ``(seed, epoch)``; the batch holding the longest sample goes first so that an
   out-of-memory shows up on step one, not hours later;
4. with ``num_replicas > 1`` the list of global batches is padded (by repeating
   batches from its start, as ``torch.utils.data.DistributedSampler`` does) to a
   multiple of ``num_replicas`` and rank ``r`` takes batches ``r, r+W, r+2W, ...`` so every
   process runs the same number of steps.

The order depends on nothing but ``(seed, epoch, lengths, batch_size, mega_batch,
num_replicas)``, so a resumed run sees exactly the batches an uninterrupted run
would: ``set_epoch(epoch, start=k)`` skips the first ``k`` batches of this rank.
The sampler never advances itself (a ``DataLoader`` with workers prefetches ahead of
what training consumed); the trainer counts consumed batches and saves that.

No packing collator is provided, on purpose. Packing several samples into one
row is unsafe for the multimodal backbones this project trains: Qwen2-VL/2.5-VL/3-VL
compute 3-D (M-RoPE) position ids per row from ``video_grid_thw`` and the text
around the video tokens (``get_rope_index`` assumes one sample per row), and the
eager/SDPA attention paths cannot block attention between packed neighbours.
Packed rows would silently see each other's frames with wrong positions. Length
grouping gets most of packing's padding savings without that risk.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from cluenet.errors import ConfigError

# Different streams for the index permutation and the batch shuffle of one epoch.
_PERM_STREAM = 0
_BATCH_STREAM = 1


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of indices with similar ``lengths``, deterministic from ``seed`` and the epoch.

    Args:
        lengths: one length (e.g. token count) per dataset item; ``None`` or equal
            lengths give plain shuffled batches.
        batch_size: items per batch (per process).
        seed: base seed; the epoch is mixed in by ``set_epoch``.
        mega_batch: batches per length-sorted group; larger groups give more
            homogeneous batches and a less random order.
        num_replicas, rank: data-parallel world size and this process's rank.
        size: number of items when ``lengths`` is ``None``.
    """

    def __init__(
        self,
        lengths: Sequence[int] | None,
        batch_size: int,
        *,
        seed: int = 0,
        mega_batch: int = 50,
        num_replicas: int = 1,
        rank: int = 0,
        size: int | None = None,
    ) -> None:
        if lengths is None:
            if size is None:
                raise ConfigError("LengthGroupedBatchSampler: got neither lengths nor size")
            lengths = [0] * size
        if len(lengths) == 0:
            raise ConfigError("LengthGroupedBatchSampler: got an empty dataset, expected at least one item")
        if batch_size < 1 or mega_batch < 1:
            raise ConfigError(f"batch_size and mega_batch must be >= 1, got {batch_size} and {mega_batch}")
        if not 0 <= rank < num_replicas:
            raise ConfigError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.seed = seed
        self.mega_batch = mega_batch
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch to iterate and skip its first ``start`` batches (for resume)."""
        if not 0 <= start <= len(self):
            raise ConfigError(f"start batch must be in [0, {len(self)}], got {start}")
        self.epoch = epoch
        self.start = start

    def global_batches(self, epoch: int) -> list[list[int]]:
        """All batches of ``epoch`` for every rank, in order, before sharding and padding."""
        perm = np.random.default_rng([self.seed, epoch, _PERM_STREAM]).permutation(len(self.lengths))
        group = self.mega_batch * self.batch_size
        batches: list[list[int]] = []
        for lo in range(0, len(perm), group):
            chunk = perm[lo:lo + group]
            # stable sort keeps the random order among equal lengths
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches.extend(chunk[i:i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size))
        order = np.random.default_rng([self.seed, epoch, _BATCH_STREAM]).permutation(len(batches))
        batches = [batches[i] for i in order]
        longest = int(np.argmax([self.lengths[b].max() for b in batches]))
        batches.insert(0, batches.pop(longest))
        return batches

    def rank_batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of ``epoch`` (padded so that every rank has the same count)."""
        batches = self.global_batches(epoch)
        pad = (-len(batches)) % self.num_replicas
        batches = batches + [batches[i % len(batches)] for i in range(pad)]
        return batches[self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.rank_batches(self.epoch)[self.start:]

    def __len__(self) -> int:
        """Batches per epoch for this rank (independent of ``start``)."""
        n_batches = sum(-(-min(self.mega_batch * self.batch_size, len(self.lengths) - lo) // self.batch_size)
                        for lo in range(0, len(self.lengths), self.mega_batch * self.batch_size))
        return -(-n_batches // self.num_replicas)

    def state_dict(self, consumed: int | None = None) -> dict[str, int]:
        """Position to resume from: ``consumed`` batches of this epoch (default: ``start``)."""
        return {"epoch": self.epoch, "start": self.start if consumed is None else consumed,
                "seed": self.seed, "num_replicas": self.num_replicas, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore a position saved by ``state_dict``; the seed and shape must match."""
        for key in ("seed", "num_replicas", "batch_size"):
            if int(state[key]) != getattr(self, key):
                raise ConfigError(f"cannot resume the data order: checkpoint has {key}={state[key]}, "
                                  f"this run has {key}={getattr(self, key)} (they must match)")
        self.set_epoch(int(state["epoch"]), int(state["start"]))
