"""Helpers of the recipe tests: a tiny ClueWorld split and tiny recipe configs (CPU, seconds)."""
from __future__ import annotations

from pathlib import Path

from cluenet.data import clueworld
from training.config import BaselineRunConfig, Stage1RunConfig, Stage2RunConfig, load_config

FRAMES = 10  # the generator's minimum; at 64 px the tiny processor makes 5 x 4 video tokens
WORLD = clueworld.WorldConfig(frames=FRAMES, fps=4.0, size=64, objects=(2, 3), distractors=(0, 1))
TINY_MODEL = "tiny:qwen2_vl"


def tiny_split(folder: Path, n: int = 6, seed: int = 11) -> Path:
    """A ClueWorld JSONL (no video files: clips re-render from their ids)."""
    return clueworld.generate(folder, n, seed, WORLD, write_video=False)


def overrides(train_path: Path, out: Path, steps: int = 4, **extra: object) -> list[str]:
    base = {"model.name_or_path": TINY_MODEL, "data.train_path": train_path, "data.num_frames": FRAMES,
            "train.output_dir": out, "train.max_steps": steps, "train.batch_size": 2, "train.save_every": 2,
            "train.length_grouping": False, "optim.lr": 1e-3, "optim.warmup_steps": 0, "train.seed": 3,
            "loss.answer_weight": 2.0, **extra}
    return [f"{k}={v}" for k, v in base.items()]


def stage1_config(train_path: Path, out: Path, steps: int = 4, **extra: object) -> Stage1RunConfig:
    return load_config(Stage1RunConfig, None, overrides(train_path, out, steps, **extra))


def stage2_config(train_path: Path, out: Path, stage1: Path, steps: int = 2, **extra: object) -> Stage2RunConfig:
    return load_config(Stage2RunConfig, None, overrides(train_path, out, steps, **{"model.init_adapter": stage1, **extra}))


def baseline_config(kind: str, train_path: Path, out: Path, steps: int = 2, **extra: object) -> BaselineRunConfig:
    return load_config(BaselineRunConfig, None, [f"kind={kind}", *overrides(train_path, out, steps, **extra)])
