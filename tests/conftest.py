"""Shared, session-scoped fixtures: the shipped tokenizer, tiny random models of both
backbone families, a tiny in-memory clip and a tiny clip file.  All cheap (< 1 s each)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

TINY_FRAMES = 4  # two temporal patches for Qwen-VL
TINY_SIDE = 56


@pytest.fixture(scope="session")
def tokenizer():
    from cluenet import tokenizer

    return tokenizer.load()


def _tiny(family: str, tokenizer):
    from cluenet import backbones

    return backbones.tiny_model(family, tokenizer, seed=0)


@pytest.fixture(scope="session")
def tiny_qwen(tokenizer):
    """(model, processor) of a tiny random Qwen2.5-VL."""
    return _tiny("qwen2_5_vl", tokenizer)


@pytest.fixture(scope="session")
def tiny_qwen2_vl(tokenizer):
    """(model, processor) of a tiny random Qwen2-VL, the family of the small ClueWorld model."""
    return _tiny("qwen2_vl", tokenizer)


@pytest.fixture(scope="session")
def tiny_llava(tokenizer):
    """(model, processor) of a tiny random LLaVA-OneVision."""
    return _tiny("llava_onevision", tokenizer)


def make_frames(seed: int = 0, n: int = TINY_FRAMES, side: int = TINY_SIDE) -> np.ndarray:
    """Coloured squares moving on grey: deterministic uint8 [n, side, side, 3]."""
    frames = np.full((n, side, side, 3), 90, np.uint8)
    rng = np.random.default_rng(seed)
    colour = rng.integers(0, 255, 3, dtype=np.uint8)
    for t in range(n):
        x = 4 + t * (side - 24) // max(1, n - 1)
        frames[t, 20:40, x:x + 20] = colour
    return frames


@pytest.fixture(scope="session")
def tiny_clip():
    """An in-memory sampled clip (frames + real times), as ``video.sample`` returns."""
    frames = make_frames()
    return SimpleNamespace(frames=frames, times=tuple(0.25 + 0.5 * i for i in range(len(frames))), name="tiny.mp4")


@pytest.fixture(scope="session")
def tiny_video_file(tmp_path_factory):
    """A 2 s, 56x56, 8 fps H.264 file written with PyAV."""
    from cluenet.video import write_video

    path = tmp_path_factory.mktemp("clips") / "tiny.mp4"
    write_video(path, list(make_frames(1, n=16)), fps=8)
    return path


@pytest.fixture(scope="session")
def clueworld_store(tmp_path_factory):
    """12 ClueWorld samples (seed 5, no video files) with their vision store; the JSONL's path."""
    from cluenet import backbones
    from cluenet.data import clueworld as cw
    from cluenet.data.jsonl import read_samples
    from training import data as tdata
    from training.make_default_model import _processor_fn

    folder = tmp_path_factory.mktemp("clueworld_store")
    cw.generate(folder, 12, seed=5, write_video=False)
    tdata.VisionStore.build(folder / "vision_store", read_samples(folder / cw.JSONL_NAME), _processor_fn,
                            backbones.get_family("qwen2_vl"), tdata.ClueWorldFrames())
    return folder / cw.JSONL_NAME
