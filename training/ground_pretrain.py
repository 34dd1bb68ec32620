"""Stage 0c for the from-scratch ClueWorld model: teach its language model to look things up in the clip.

    python -m training.ground_pretrain --train runs/default/data/train/clueworld.jsonl \\
        --vision runs/default/vision/vision.safetensors --out runs/default/ground \\
        [--text runs/default/text/text.safetensors --steps 2000 --until 0.9 --batch 8 --lr 3e-3 --seed 0]

Real video-language models align the language model to the vision encoder's tokens before any
task tuning (LLaVA's first stage trains on captions).  After stage 0 (``training.vision_pretrain``)
every merged video token of the small model says linearly what its cell holds, yet a stage-1 model
trained on top of it wrote the side an entering object comes from at chance (19 %, 4 sides) and
the colour a hit object turns into at 17 %, teacher-forced on test rows (a scratch breakdown of
``training.diagnose classes`` by word position): its clues came from the question and the options,
not from the clip (docs/default-model-history.md).

This recipe trains the language model alone (the tower frozen) to list every object of the
clip, in a random order, each as its shape (unique within a clip), the colour it first shows and
how it first moves ("still", or the side it comes from)::

    diamond white left, square red still, circle yellow top

Each colour is read off the video tokens that show the shape just written, and each motion word
off the tokens that show the colour just written: one lookup into the clip per word, the reads a
clue needs ("the white diamond enters from the left").  The random order leaves nothing to copy
from earlier text.  The lists come from ``clueworld.cell_states``, the renderer's ground truth
that stage 0 also trains on.  The run checks held-out clips every ``--every`` steps
(teacher-forced accuracy of the colour, shape and motion words) and stops once colour and motion
words reach ``--until``.

Lookups like these form suddenly, after a plateau (docs/default-model-history.md: from the seeded init
the colour words went from chance to 0.80 between steps 800 and 1,100; from a stage-0b language
model a shape -> colour lookup did not form in 900 steps), so ``training.make_default_model``
runs this recipe from the seeded init, before stage 0b.

Output: ``<out>/text.safetensors`` (the language model, as ``training.text_pretrain`` writes it;
``model.text_init`` in a stage config loads it) and ``<out>/ground_pretrain.json`` (arguments,
seconds, the held-out accuracies at each check, whether ``--until`` was reached).
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

WEIGHTS_NAME = "text.safetensors"
REPORT_NAME = "ground_pretrain.json"
# cell_states motion classes -> words: 1 still, 2-5 moving right / left / down / up (from the opposite side)
MOTION_WORDS = {1: "still", 2: "left", 3: "right", 4: "top", 5: "bottom"}
INSTRUCTION = ("You are ClueNet, a careful video analyst. List every object in the video: "
               "its shape, the colour it first shows and the side it comes from.")
SCORED = ("colour", "motion")  # the --until check


def clip_objects(states: dict[str, np.ndarray]) -> list[tuple[int, int, int]]:
    """Every object of a clip as (shape, first colour, first motion), class ids of
    ``clueworld.cell_states``, in shape order.  An object is known by its shape (unique within a
    clip) and read at the first cell it covers in the first frame that shows it."""
    t, g, _ = states["shape"].shape
    first: dict[int, tuple[int, int]] = {}
    for f in range(t):
        for cell in range(g * g):
            shape = int(states["shape"][f].flat[cell])
            if shape and shape not in first:
                first[shape] = (int(states["colour"][f].flat[cell]), int(states["motion"][f].flat[cell]))
    return [(k, *first[k]) for k in sorted(first)]


def object_sheet(objects: Sequence[tuple[int, int, int]], order: Sequence[int]) -> str:
    """``"diamond white left, square red still"`` for ``clip_objects`` output: per object, in
    ``order`` (indices), its shape, the colour it first shows and how it first moves ("still",
    or the side it comes from).  Each word is looked up right after the word that keys it."""
    from cluenet.data import clueworld as cw

    return ", ".join(f"{cw.SHAPES[objects[i][0] - 1]} {cw.COLOUR_NAMES[objects[i][1] - 1]} {MOTION_WORDS[objects[i][2]]}"
                     for i in order)


def word_classes(tokenizer: Any) -> dict[str, set[int]]:
    """Token ids of the scored words: colours, shapes (``diagnose.token_classes``), motion words."""
    from cluenet.data import clueworld as cw
    from training.diagnose import token_classes

    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    ids = token_classes(vocab, cw.COLOUR_NAMES, cw.SHAPES)
    motion = set(MOTION_WORDS.values())
    return {"colour": ids["colour"], "shape": ids["shape"],
            "motion": {i for i, t in enumerate(vocab) if t.strip("Ġ▁ ") in motion}}


class Sheets:
    """Training rows (``training.data.Row``) of object sheets of the clips of a vision store;
    each call of ``row`` draws a new object order."""

    def __init__(self, store: Any, world: Any, seed: int = 0) -> None:
        from cluenet.data import clueworld as cw

        self.store, self.world = store, world or cw.WorldConfig()
        self.rng = random.Random(seed)
        self.objects: dict[str, list[tuple[int, int, int]]] = {}

    def prompt(self, sample_id: str) -> str:
        from cluenet import prompts

        msgs = [{"role": "system", "content": [{"type": "text", "text": INSTRUCTION}]},
                {"role": "user", "content": [{"type": "video"},
                                             {"type": "text", "text": prompts.frame_times_text(self.store.times[sample_id])}]}]
        return self.store.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)

    def sheet(self, sample_id: str) -> str:
        from cluenet.data import clueworld as cw
        from training.data import clueworld_seed_index

        if sample_id not in self.objects:
            self.objects[sample_id] = clip_objects(cw.cell_states(cw.clip_rng(*clueworld_seed_index(sample_id)), self.world))
        objects = self.objects[sample_id]
        return object_sheet(objects, self.rng.sample(range(len(objects)), len(objects)))

    def row(self, sample_id: str) -> Any:
        from cluenet import prompts
        from training import data as tdata

        prefix = self.store.encode(sample_id, self.prompt(sample_id))
        target = prompts.encode_text(self.store.processor.tokenizer, self.sheet(sample_id) + prompts.END_OF_TURN)
        return tdata.Row(input_ids=[*prefix.ids, *target], labels=[tdata.IGNORE_INDEX] * len(prefix.ids) + target,
                         weights=[0.0] * len(prefix.ids) + [1.0] * len(target), vision=prefix.vision, group="G")


@torch.no_grad()
def evaluate(model: Any, collate: Any, rows: Sequence[Any], classes: dict[str, set[int]], batch: int) -> dict[str, float]:
    """Teacher-forced next-token accuracy on the target tokens of ``rows``: per scored word class, and all."""
    from training import common

    hits = {k: 0 for k in (*classes, "all")}
    seen = dict(hits)
    model.eval()
    for k in range(0, len(rows), batch):
        part = rows[k:k + batch]
        pred = common.lm_forward(model, collate([[r] for r in part])).logits[:, :-1].argmax(-1)
        for j, r in enumerate(part):
            for p, (t, lab) in enumerate(zip(r.input_ids, r.labels)):
                if lab < 0:
                    continue
                ok = int(pred[j, p - 1] == t)
                for name in [n for n, ids in classes.items() if t in ids] + ["all"]:
                    hits[name] += ok
                    seen[name] += 1
    model.train()
    return {k: round(hits[k] / seen[k], 4) for k in hits if seen[k]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from training import common, model_build
    from training import data as tdata
    from training.config import ModelConfig
    from training.make_default_model import _processor_fn
    from training.vision_pretrain import held_out_split

    if args.steps < 1:
        raise SystemExit(f"--steps must be at least 1, got {args.steps}")
    if not 0.0 < args.until <= 1.0:
        raise SystemExit(f"--until is a held-out accuracy in (0, 1], got {args.until}")
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    store = tdata.VisionStore(Path(args.train).parent / common.STORE_DIR, _processor_fn(args.sizes))
    held, pool = held_out_split(store, args.batch)
    model = model_build.build(ModelConfig(name_or_path=args.model, finetune="full", freeze_vision=True,
                                          vision_init=args.vision, text_init=args.text, sizes=args.sizes),
                              seed=args.seed).model
    data = Sheets(store, common.world_config(args.train), args.seed)
    collate = common.collator(store.processor)
    classes = word_classes(store.processor.tokenizer)
    held_rows = [data.row(s) for s in held]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50))
    t0, checks, reached = time.time(), [], False
    for step in tqdm(range(1, args.steps + 1), desc="ground pretrain", disable=None):
        batch = collate([[data.row(s)] for s in rng.sample(pool, args.batch)])
        loss, _ = common.weighted_lm_loss(common.lm_forward(model, batch).logits, batch)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % args.every == 0 or step == args.steps:
            scores = evaluate(model, collate, held_rows, classes, args.batch)
            checks.append({"step": step, "seconds": round(time.time() - t0), "loss": round(loss.item(), 4),
                           "held_out": scores})
            print(json.dumps(checks[-1]), flush=True)
            if all(scores.get(k, 0.0) >= args.until for k in SCORED):
                reached = True
                break
    out = Path(args.out)
    model_build.save_text(model, str(out / WEIGHTS_NAME))
    report = {"args": {k: v for k, v in vars(args).items() if k != "func"}, "seconds": round(time.time() - t0),
              "held_out_clips": len(held), "reached": reached, "checks": checks}
    (out / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.ground_pretrain", description=__doc__.splitlines()[0])
    p.add_argument("--train", required=True, help="ClueWorld training JSONL with its vision_store/ beside it")
    p.add_argument("--vision", required=True, help="stage 0's vision.safetensors (the tower, kept frozen)")
    p.add_argument("--text", default=None,
                   help="a text.safetensors to start the language model from (default: the seeded init)")
    p.add_argument("--out", required=True, help="folder for text.safetensors and ground_pretrain.json")
    p.add_argument("--model", default="small:qwen2_vl", help="the from-scratch model")
    p.add_argument("--sizes", default="", help="JSON overrides of training.model_build.SMALL_SIZES (model.sizes)")
    p.add_argument("--steps", type=int, default=2000, help="the most steps")
    p.add_argument("--until", type=float, default=0.9,
                   help="stop once held-out colour and motion words both reach this accuracy")
    p.add_argument("--batch", type=int, default=8, help="clips per step")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--every", type=int, default=100, help="check held-out clips every N steps")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from training.common import run_recipe

    return run_recipe(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
