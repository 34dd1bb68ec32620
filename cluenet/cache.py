"""A bounded in-memory LRU cache for sampled clips and their vision features.

Keys are tuples built by the pipeline: (file sha256 or frame digest, sampling
parameters) for frames, plus the backbone's identity for vision features, so a
second question on the same clip neither decodes the file nor runs the vision
encoder again.  The budget is in bytes (numpy arrays and torch tensors are
measured; other values count a fixed overhead); the least recently used entries are
evicted first.  An entry larger than the whole budget is not stored.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import fields, is_dataclass
from typing import Any, Hashable

import numpy as np

DEFAULT_BUDGET_BYTES = 512 * 1024 * 1024  # ~64 clips of 16 frames at 720p, or their features
OBJECT_OVERHEAD_BYTES = 64  # what a non-array leaf is counted as


def nbytes(value: Any) -> int:
    """Approximate memory of a value: arrays and tensors exactly, containers recursively."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if hasattr(value, "element_size") and hasattr(value, "numel"):  # torch.Tensor without importing torch
        return int(value.element_size() * value.numel())
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values()) + OBJECT_OVERHEAD_BYTES
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value) + OBJECT_OVERHEAD_BYTES
    if is_dataclass(value) and not isinstance(value, type):
        return sum(nbytes(getattr(value, f.name)) for f in fields(value)) + OBJECT_OVERHEAD_BYTES
    return OBJECT_OVERHEAD_BYTES


def frames_digest(frames: np.ndarray) -> str:
    """sha256 of the frame pixels and shape: the key of an in-memory clip with no file."""
    h = hashlib.sha256(str(frames.shape).encode())
    h.update(np.ascontiguousarray(frames).tobytes())
    return h.hexdigest()


class ClipCache:
    """LRU mapping with a byte budget; ``hits`` / ``misses`` count lookups."""

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES):
        if budget_bytes < 0:
            raise ValueError(f"budget_bytes must be >= 0, got {budget_bytes}")
        self.budget_bytes = int(budget_bytes)
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self.used_bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any | None:
        """The value for ``key`` (marked most recently used), or None."""
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item[0]

    def put(self, key: Hashable, value: Any, size: int | None = None) -> bool:
        """Store ``value``; evicts least recently used entries to fit.  False if it cannot fit at all.

        ``size`` overrides the measured size (for values ``nbytes`` cannot see into)."""
        size = nbytes(value) if size is None else int(size)
        self.pop(key)
        if size > self.budget_bytes:
            return False
        while self.used_bytes + size > self.budget_bytes and self._items:
            _, (_, old) = self._items.popitem(last=False)
            self.used_bytes -= old
        self._items[key] = (value, size)
        self.used_bytes += size
        return True

    def pop(self, key: Hashable) -> Any | None:
        item = self._items.pop(key, None)
        if item is None:
            return None
        self.used_bytes -= item[1]
        return item[0]

    def keys(self) -> list[Hashable]:
        """Keys from least to most recently used (does not touch the order)."""
        return list(self._items)

    def clear(self) -> None:
        self._items.clear()
        self.used_bytes = 0

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)
