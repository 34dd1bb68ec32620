"""LengthGroupedBatchSampler: coverage, homogeneity, determinism, resume, sharding."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluenet.errors import ConfigError
from training.batching import LengthGroupedBatchSampler


def lengths_of(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(1, 500) for _ in range(n)]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), bs=st.integers(1, 17), mega=st.integers(1, 8), seed=st.integers(0, 10**6),
       epoch=st.integers(0, 5))
def test_every_index_exactly_once_per_epoch(n, bs, mega, seed, epoch):
    s = LengthGroupedBatchSampler(lengths_of(n, seed), bs, seed=seed, mega_batch=mega)
    s.set_epoch(epoch)
    batches = list(s)
    assert sorted(i for b in batches for i in b) == list(range(n))
    assert len(batches) == len(s)
    assert all(1 <= len(b) <= bs for b in batches)


def test_batches_are_length_homogeneous():
    lengths = lengths_of(2000)
    grouped = LengthGroupedBatchSampler(lengths, 16, seed=1, mega_batch=50)
    plain = LengthGroupedBatchSampler(None, 16, seed=1, size=len(lengths))

    def padding(sampler) -> float:  # fraction of padded positions
        total = sum(max(lengths[i] for i in b) * len(b) for b in sampler)
        return 1 - sum(lengths) / total

    # uniform lengths in [1, 500]: random batches of 16 pad about half; grouped ones almost nothing
    assert padding(grouped) < 0.05 < 0.4 < padding(plain)
    first = next(iter(grouped))
    assert max(lengths[i] for i in first) == max(lengths)  # longest batch first (early OOM)


def test_deterministic_per_seed_and_epoch():
    lengths = lengths_of(500)
    a = LengthGroupedBatchSampler(lengths, 8, seed=7)
    b = LengthGroupedBatchSampler(lengths, 8, seed=7)
    c = LengthGroupedBatchSampler(lengths, 8, seed=8)
    assert list(a) == list(b)
    assert list(a) != list(c)
    a.set_epoch(1)
    b.set_epoch(0)
    assert list(a) != list(b)


def test_resume_from_a_position_continues_the_same_order():
    lengths = lengths_of(300)
    s = LengthGroupedBatchSampler(lengths, 8, seed=3)
    s.set_epoch(2)
    full = list(s)
    state = s.state_dict(consumed=11)
    fresh = LengthGroupedBatchSampler(lengths, 8, seed=3)
    fresh.load_state_dict(state)
    assert fresh.epoch == 2 and list(fresh) == full[11:]


def test_resume_with_different_shape_is_refused():
    s = LengthGroupedBatchSampler(lengths_of(50), 8, seed=3)
    other = LengthGroupedBatchSampler(lengths_of(50), 4, seed=3)
    with pytest.raises(ConfigError, match="checkpoint has batch_size=8, this run has batch_size=4"):
        other.load_state_dict(s.state_dict(consumed=2))


@pytest.mark.parametrize("n,bs,world", [(100, 4, 2), (101, 4, 3), (7, 4, 4)])
def test_shards_cover_everything_with_equal_counts(n, bs, world):
    lengths = lengths_of(n)
    shards = [list(LengthGroupedBatchSampler(lengths, bs, seed=0, num_replicas=world, rank=r)) for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # every process runs the same number of steps
    seen = [i for s in shards for b in s for i in b]
    assert set(seen) == set(range(n))
    # only padding repeats items, and fewer than `world` batches of it
    assert len(seen) - n < world * bs


def test_bad_arguments_are_named():
    with pytest.raises(ConfigError, match="empty dataset"):
        LengthGroupedBatchSampler([], 4)
    with pytest.raises(ConfigError, match=r"rank must be in \[0, 2\), got 2"):
        LengthGroupedBatchSampler([1, 2], 1, num_replicas=2, rank=2)
    with pytest.raises(ConfigError, match=r"start batch must be in \[0, 1\], got 5"):
        LengthGroupedBatchSampler([1, 2], 2).set_epoch(0, start=5)
