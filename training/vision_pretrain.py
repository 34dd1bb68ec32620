"""Stage 0 for the from-scratch ClueWorld model: pretrain its vision encoder on dense cell labels.

    python -m training.vision_pretrain --train runs/default/data/train/clueworld.jsonl \\
        --out runs/default/vision [--steps 300 --batch 16 --lr 3e-3 --seed 0 --model small:qwen2_vl]

Real video-language models start from a pretrained vision encoder (Qwen2-VL's ViT, SigLIP).
The shipped ClueWorld model has none: trained from scratch next to a language model that
still ignores the clip, its tower lost the clip's colours within a few hundred steps, while
frozen random features kept them (README, "Default model").  This recipe gives the small
model what a real backbone brings: an encoder whose output tokens already say what is where.

The real Qwen-VL vision class (patch embedding, ViT blocks and the 2x2 merger whose output
tokens the language model reads) is trained with a linear head on those output tokens.  At
ClueWorld's 112 px one merged token covers exactly one cell of the 4x4 grid for one temporal
patch (two frames), so the targets are ``clueworld.cell_states`` of that cell, for each of
the two frames: colour (9 classes with "empty"), shape (7) and motion (6: empty, still, or
one of four directions).  Every target is visible inside one temporal patch, which is all a
Qwen-VL vision tower sees at once (its attention never crosses temporal patches).

Output: ``<out>/vision.safetensors`` (the vision module's weights; ``model.vision_init`` in a
stage-1 config loads them, usually with ``model.freeze_vision: true``) and
``<out>/vision_pretrain.json`` (arguments, seconds, held-out accuracy per target).
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

HELD_OUT_CLIPS = 64  # a quarter of smaller sets
TARGETS = {"colour": 9, "shape": 7, "motion": 6}  # classes per frame, "empty" included
WEIGHTS_NAME = "vision.safetensors"
REPORT_NAME = "vision_pretrain.json"


def slot_targets(states: dict[str, np.ndarray], frames_per_slot: int = 2) -> torch.Tensor:
    """[slots * cells, frames_per_slot * len(TARGETS)] class ids in the merged-token order
    (slot-major, then grid rows, then columns) from ``clueworld.cell_states`` arrays [T, G, G]."""
    t, g, _ = states["colour"].shape
    per = np.stack([states[k] for k in TARGETS], -1)  # [T, G, G, K]
    per = per.reshape(t // frames_per_slot, frames_per_slot, g, g, len(TARGETS)).transpose(0, 2, 3, 1, 4)
    return torch.from_numpy(per.reshape(-1, frames_per_slot * len(TARGETS)).copy())


def video_tokens(visual: Any, pixels: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """The merged output tokens of a Qwen-VL vision module, [tokens, hidden]."""
    out = visual(pixels, grid_thw=grid)
    return out.pooler_output if hasattr(out, "pooler_output") else out


class CellHead(torch.nn.Module):
    """A linear read-out of every target from one merged token (linear, so what it reads
    the language model can read too)."""

    def __init__(self, hidden: int, frames_per_slot: int = 2) -> None:
        super().__init__()
        self.sizes = [n for _ in range(frames_per_slot) for n in TARGETS.values()]
        self.proj = torch.nn.Linear(hidden, sum(self.sizes))

    def forward(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        return list(self.proj(tokens).split(self.sizes, dim=-1))


def head_loss(logits: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    return sum(torch.nn.functional.cross_entropy(lg, targets[:, k]) for k, lg in enumerate(logits)) / len(logits)


def accuracy(logits: list[torch.Tensor], targets: torch.Tensor, frames_per_slot: int = 2) -> dict[str, float]:
    """Per target kind: accuracy over every frame, and over the cells that hold an object."""
    out = {}
    for j, name in enumerate(TARGETS):
        cols = [f * len(TARGETS) + j for f in range(frames_per_slot)]
        pred = torch.stack([logits[c].argmax(-1) for c in cols], 1)
        gold = targets[:, cols]
        full = gold > 0
        out[name] = round(float((pred == gold).float().mean()), 4)
        out[f"{name}_occupied"] = round(float((pred[full] == gold[full]).float().mean()), 4)
    return out


def _clip_targets(sample_ids: Sequence[str], world: Any) -> dict[str, torch.Tensor]:
    from cluenet.data import clueworld as cw
    from training.data import clueworld_seed_index

    return {sid: slot_targets(cw.cell_states(cw.clip_rng(*clueworld_seed_index(sid)), world)) for sid in sample_ids}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from cluenet.data import clueworld as cw
    from training import common, model_build
    from training import data as tdata
    from training.config import ModelConfig
    from training.make_default_model import _processor_fn

    if args.steps < 1:
        raise SystemExit(f"--steps must be at least 1, got {args.steps}")
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    built = model_build.build(ModelConfig(name_or_path=args.model, finetune="full"), seed=args.seed)
    visual = built.family.vision_module(built.model)
    store = tdata.VisionStore(Path(args.train).parent / "vision_store", _processor_fn())
    held, pool = held_out_split(store, args.batch)
    (_, h, w), = store.extras["video_grid_thw"].tolist()
    if (h // 2, w // 2) != (cw.GRID, cw.GRID):
        raise SystemExit(f"one merged token must cover one ClueWorld cell: the store's merged grid is "
                         f"{h // 2}x{w // 2}, the world's {cw.GRID}x{cw.GRID} (clips of 112 px)")
    world = common.world_config(args.train)
    targets = _clip_targets(held, world)
    head = CellHead(int(video_tokens(visual, *_batch(store, held[:1])).shape[-1]))
    opt = torch.optim.AdamW([*visual.parameters(), *head.parameters()], lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 30) * (0.1 + 0.9 * (1 - s / args.steps)))
    t0 = time.time()
    for step in tqdm(range(1, args.steps + 1), desc="vision pretrain", disable=None):
        pick = rng.sample(pool, args.batch)
        targets.update(_clip_targets([s for s in pick if s not in targets], world))
        loss = head_loss(head(video_tokens(visual, *_batch(store, pick))), torch.cat([targets[s] for s in pick]))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(visual.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % args.every == 0 or step == args.steps:
            scores = evaluate(visual, head, store, held, targets)
            print(json.dumps({"step": step, "seconds": round(time.time() - t0), "loss": round(loss.item(), 4),
                              "held_out": scores}), flush=True)
    out = Path(args.out)
    model_build.save_weights(visual.state_dict(), str(out / WEIGHTS_NAME))
    report = {"args": {k: v for k, v in vars(args).items() if k != "func"}, "seconds": round(time.time() - t0),
              "held_out_clips": len(held), "held_out": scores}
    (out / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    return report


def held_out_split(store: Any, batch: int) -> tuple[list[str], list[str]]:
    """(held-out clip ids, training clip ids) of a vision store: the last ``HELD_OUT_CLIPS``
    (a quarter of smaller stores) are held out; SystemExit if too few are left for a batch."""
    ids = list(store.row)
    n_held = min(HELD_OUT_CLIPS, len(ids) // 4)
    if len(ids) - n_held < batch or n_held == 0:
        raise SystemExit(f"need at least {batch + max(n_held, 1)} clips in the vision store, got {len(ids)}")
    return ids[-n_held:], ids[:-n_held]


def _batch(store: Any, sample_ids: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    pix = torch.from_numpy(np.asarray(store.pixels[[store.row[s] for s in sample_ids]], dtype=np.float32))
    return pix.flatten(0, 1), store.extras["video_grid_thw"].repeat(len(sample_ids), 1)


@torch.no_grad()
def evaluate(visual: Any, head: CellHead, store: Any, held: Sequence[str], targets: dict) -> dict[str, float]:
    visual.eval()
    logits = head(video_tokens(visual, *_batch(store, held)))
    visual.train()
    return accuracy(logits, torch.cat([targets[s] for s in held]))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.vision_pretrain", description=__doc__.splitlines()[0])
    p.add_argument("--train", required=True, help="ClueWorld training JSONL with its vision_store/ beside it")
    p.add_argument("--out", required=True, help="folder for vision.safetensors and vision_pretrain.json")
    p.add_argument("--model", default="small:qwen2_vl", help="the from-scratch model whose vision tower to train")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=16, help="clips per step")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--every", type=int, default=100, help="print held-out accuracy every N steps")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from training.common import run_recipe

    return run_recipe(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
