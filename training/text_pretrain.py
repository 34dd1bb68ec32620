"""Stage 0b for the from-scratch ClueWorld model: give its language model an induction circuit.

    python -m training.text_pretrain --out runs/default/text [--steps 3000 --until 0.9 --lr 3e-3
        --batch 16 --seed 1 --init runs/default/ground/text.safetensors]

Real backbones arrive with in-context lookups already working: "find where this token occurred
before and copy what followed it" (an induction circuit) is among the first things a language
model learns from text.  The small model trained from scratch never formed one on ClueWorld's
rows within a CPU hour: the chain's colour and shape words, which can be copied from the clues
in the same row, stayed at chance (docs/default-model-history.md).  Its one lookup exercise,
``diagnose recall``, labels four tokens a row and plateaued at 0.60-0.65.

This recipe trains the text model alone on rows of random tokens in which a segment of 6-39
tokens recurs a few tokens after its first occurrence, at a random place, with a loss on the
recurrence.  Nothing but an induction circuit predicts those tokens, and every one of them
trains it.  Induction circuits appear suddenly (a phase change after a long plateau), so the run
checks held-out rows every ``--every`` steps and stops once their accuracy reaches ``--until``;
it exits with status 1 if ``--steps`` pass first (try another ``--seed``).

Output: ``<out>/text.safetensors`` (the language model, embeddings included; ``model.text_init``
in a stage config loads it) and ``<out>/text_pretrain.json`` (arguments, seconds, the held-out
accuracies at each check, among them zero-shot ``diagnose recall`` rows).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

import torch

WEIGHTS_NAME = "text.safetensors"
REPORT_NAME = "text_pretrain.json"
SPAN = (6, 40)  # segment lengths drawn from [6, 40)


def repeat_batch(pool: Sequence[int], batch: int, length: int, gen: torch.Generator,
                 span: tuple[int, int] = SPAN, with_spans: bool = False):
    """Rows of ``length`` random ids from ``pool`` in which a segment (its length drawn from
    ``span``) recurs 0-3 tokens after its first occurrence, at a random place; labels on the
    recurrence from its second token on (its first token cannot be predicted).

    Returns ``(ids, labels)``, and with ``with_spans`` also each row's ``(first, again, n)``: where
    the segment starts, where it recurs and its length (``copy_attention_targets`` wants them)."""
    def draw(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi, (1,), generator=gen))

    if length < 2 * span[1] + 4:
        raise ValueError(f"rows of {length} tokens cannot hold two segments of up to {span[1] - 1}")
    ids = torch.tensor(list(pool))[torch.randint(0, len(pool), (batch, length), generator=gen)]
    labels = torch.full_like(ids, -100)
    spans = []
    for row, lab in zip(ids, labels):
        n = draw(*span)
        first = draw(0, length - 2 * n - 3)
        again = first + n + draw(0, 4)
        row[again:again + n] = row[first:first + n].clone()
        lab[again + 1:again + n] = row[again + 1:again + n]
        spans.append((first, again, n))
    return (ids, labels, spans) if with_spans else (ids, labels)


def lookup_batch(pool: Sequence[int], letters: Sequence[int], newline: int, batch: int, length: int,
                 gen: torch.Generator):
    """Copy rows shaped like a multiple-choice lookup: ``len(letters)`` lines of 2-4 random words,
    each closed by its letter and a newline, at a random place; after them the last word of 1-3 lines
    again, the restated line's among them, each followed by a random word (the clues' mentions of
    the options' objects); then one line's words restated and its letter (labelled from the
    restatement's second token on).
    Returns ``(ids, labels, spans)`` like ``repeat_batch(with_spans=True)``: the segment is the line
    (its words and letter), so ``copy_attention_targets`` sends the induction head from the
    restated last word to that line's letter, not to the mentions in between."""
    def draw(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi, (1,), generator=gen))

    def word() -> int:
        return int(pool[draw(0, len(pool))])

    k = len(letters)
    if length < k * 6 + 3 * 2 + 5 + 1:
        raise ValueError(f"rows of {length} tokens cannot hold {k} lines, their mentions and a restatement")
    ids = torch.tensor(list(pool))[torch.randint(0, len(pool), (batch, length), generator=gen)]
    labels = torch.full_like(ids, -100)
    spans = []
    for row, lab in zip(ids, labels):
        lines = [[word() for _ in range(draw(2, 5))] for _ in range(k)]
        while len({line[-1] for line in lines}) < k:  # the last word tells the lines apart
            lines = [[*line[:-1], word()] for line in lines]
        block = [t for i, line in enumerate(lines) for t in (*line, letters[i], newline)]
        j = draw(0, k)
        mentioned = sorted({j, *(draw(0, k) for _ in range(draw(0, 3)))})
        mentions = [t for i in mentioned for t in (lines[i][-1], word())]
        tail = [*lines[j], letters[j]]
        room = length - len(block) - len(mentions) - len(tail)
        start = draw(0, room // 2 + 1)
        gap = draw(0, room - start + 1)
        first = start + sum(len(line) + 2 for line in lines[:j])
        again = start + len(block) + len(mentions) + gap
        row[start:start + len(block)] = torch.tensor(block)
        row[start + len(block):start + len(block) + len(mentions)] = torch.tensor(mentions, dtype=row.dtype)
        row[again:again + len(tail)] = torch.tensor(tail)
        lab[again + 1:again + len(tail)] = row[again + 1:again + len(tail)]
        spans.append((first, again, len(tail)))
    return ids, labels, spans


def copy_heads(text: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """``loss.copy_heads`` / ``--heads``: ``"1:2,2:2"`` -> the previous-token head and the
    induction head; ConfigError unless there are exactly two and the first is in an earlier layer
    (the induction head reads what the previous-token head wrote)."""
    from cluenet.errors import ConfigError
    from training.grounding import parse_heads

    heads = parse_heads(text)
    if len(heads) != 2 or heads[0][0] >= heads[1][0]:
        raise ConfigError(f"copy_heads wants two 'layer:head' pairs, the previous-token head in an earlier layer "
                          f"than the induction head (e.g. '1:2,2:2'), got {text!r}")
    return heads[0], heads[1]


def previous_token_targets(lengths: Sequence[int]) -> list[list[tuple[int, tuple[int]]]]:
    """The previous-token head's grounding targets: at every position of each row (of ``lengths``
    real tokens) but the first, the position before it."""
    return [[(t, (t - 1,)) for t in range(1, int(n))] for n in lengths]


def copy_attention_targets(spans: Sequence[tuple[int, int, int]], length: int):
    """Where an induction circuit looks on copy rows, as grounding targets (one list a row of
    ``(query, targets)``, like ``training.grounding.letter_targets``): the previous-token head at
    every position on the position before it; the induction head at each token of the recurrence
    (but its last) on the token that followed that token's first occurrence, the one to copy."""
    prev = previous_token_targets([length] * len(spans))
    induction = [[(again + j, (first + j + 1,)) for j in range(n - 1)] for first, again, n in spans]
    return prev, induction


def _head_loss(tap: Any, spans: Sequence[tuple[int, int, int]], length: int, ids: torch.Tensor | None = None,
               lm_head: torch.nn.Module | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The grounding loss of ``tap``'s two heads (previous-token, induction) on copy rows, and their
    mean masses.  With ``lm_head`` (and the rows' ``ids``) also the cross-entropy of the induction
    head's own output read through ``lm_head`` against the token it should copy (its direct logit
    attribution): that trains its values and output to copy; metric ``induction_copy``, the share of
    queries at which that output alone picks the right token."""
    from training.grounding import grounding_loss, head_output

    prev_head, induction_head = tap.heads
    prev, induction = copy_attention_targets(spans, length)
    p_loss, p_mass = grounding_loss(tap, prev, [prev_head])
    i_loss, i_mass = grounding_loss(tap, induction, [induction_head])
    loss, metrics = p_loss + i_loss, {"prev_mass": p_mass, "induction_mass": i_mass}
    if lm_head is not None:
        pairs = [(b, q, t) for b, row in enumerate(induction) for q, (t,) in row]
        device = ids.device
        rows = torch.tensor([b for b, _, _ in pairs], device=device)
        queries = torch.tensor([q for _, q, _ in pairs], device=device)
        wanted = ids[rows, torch.tensor([t for _, _, t in pairs], device=device)]
        logits = lm_head(head_output(tap, *induction_head, rows, queries)).float()
        loss = loss + torch.nn.functional.cross_entropy(logits, wanted)
        metrics["induction_copy"] = float((logits.argmax(-1) == wanted).float().mean())
    tap.seen.clear()
    return loss, metrics


def text_pool(tokenizer: Any) -> list[int]:
    """Every id of ``tokenizer`` that is not a special token: what copy rows are drawn from."""
    special = set(tokenizer.all_special_ids)
    return [i for i in range(len(tokenizer)) if i not in special]


def lookup_tokens(tokenizer: Any, k: int = 5) -> tuple[list[int], int]:
    """The ids of the letters " A".." E" (as ``letter_last`` options end) and of the newline."""
    from cluenet.prompts import LETTERS, encode_text

    letters = [encode_text(tokenizer, " " + x) for x in LETTERS[:k]]
    newline = encode_text(tokenizer, "\n")
    if any(len(x) != 1 for x in letters) or len(newline) != 1:
        raise ValueError("lookup rows need the letters and the newline as one token each")
    return [x[0] for x in letters], newline[0]


LOOKUP_LENGTH = 384  # about a ClueWorld stage-1 row: the options sit 100-150 tokens before the chain's letter


def with_copy_rows(base_loss: Any, tokenizer: Any, weight: float, rows: int, seed: int = 0,
                   length: int = 128, heads: str = "", model: torch.nn.Module | None = None, lookup_rows: int = 0,
                   lookup_length: int = LOOKUP_LENGTH, prev_on_task: bool = False, copy_ov: bool = False):
    """Wrap a recipe's ``loss_fn(model, batch) -> (loss, metrics)``: add ``weight`` x the
    next-token loss of ``rows`` copy rows (``repeat_batch``) to every batch, so that the
    induction circuit stage 0b gives forms during the task's own training instead of before
    it.  The rows are drawn from a generator seeded by ``seed`` and the batch's token ids: the same
    batch gets the same rows, so a resumed run sees what an uninterrupted one saw.  Metrics gain
    ``copy_loss``.

    ``heads`` (``copy_heads``; needs ``model``) also supervises where two heads look on those rows,
    with the grounding loss (``-log`` of the attention mass on the target) at the same weight: the
    first on the previous token, the second, in a later layer, on the token to copy
    (``copy_attention_targets``); metrics gain ``prev_mass`` and ``induction_mass``.

    ``lookup_rows`` more rows a step, of ``lookup_length`` tokens, are ``lookup_batch``'s (lettered
    lines, one restated, its letter), with their own loss and head terms at the same weight;
    metrics gain ``lookup_loss`` and, with ``heads``, ``lookup_mass`` (the induction head's).  They
    are longer than the copy rows, whose recurrence is at most ~40 tokens back: an induction head
    trained on those alone did not look as far back as a stage-1 row's options.

    ``prev_on_task`` (with ``heads``) supervises the previous-token head on the task's own rows as
    well (every real token after the first); metrics gain ``task_prev_mass``.  ``copy_ov`` (with
    ``heads``) also trains the induction head's output to predict the token it looks at
    (``_head_loss``); metrics gain ``induction_copy``."""
    from training.grounding import AttentionTap, grounding_loss

    pool = text_pool(tokenizer)
    letters, newline = lookup_tokens(tokenizer) if lookup_rows else ([], 0)
    tap = AttentionTap(model, list(copy_heads(heads))) if heads else None

    def rows_loss(model: torch.nn.Module, ids: torch.Tensor, labels: torch.Tensor, spans: list, device: Any):
        out = model(input_ids=ids.to(device), labels=labels.to(device), use_cache=False).loss
        if tap is None:
            return out, float(out.detach()), {}
        head_loss, masses = _head_loss(tap, spans, ids.shape[1], ids.to(device),
                                       model.get_output_embeddings() if copy_ov else None)
        return out + head_loss, float(out.detach()), masses

    def loss_fn(model: torch.nn.Module, batch: dict[str, Any]):
        loss, metrics = base_loss(model, batch)
        ids = batch["input_ids"]
        if tap is not None and prev_on_task:  # the tap still holds the task batch's forward
            real = batch["attention_mask"].sum(-1).tolist() if "attention_mask" in batch else [ids.shape[1]] * len(ids)
            task_prev, task_mass = grounding_loss(tap, previous_token_targets(real), [tap.heads[0]])
            loss, metrics = loss + weight * task_prev, {**metrics, "task_prev_mass": task_mass}
        gen = torch.Generator().manual_seed(seed * 1_000_003 + int(ids.sum()) % 2**31)
        extra, copy_loss, masses = rows_loss(model, *repeat_batch(pool, rows, length, gen, with_spans=True), ids.device)
        metrics = {**metrics, "copy_loss": copy_loss, **masses}
        if lookup_rows:
            more, lookup_loss, masses = rows_loss(
                model, *lookup_batch(pool, letters, newline, lookup_rows, lookup_length, gen), ids.device)
            extra = extra + more
            metrics = {**metrics, "lookup_loss": lookup_loss,
                       **({"lookup_mass": masses["induction_mass"]} if masses else {}),
                       **({"lookup_copy": masses["induction_copy"]} if "induction_copy" in masses else {})}
        return loss + weight * extra, metrics

    return loss_fn


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.text_pretrain", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for text.safetensors and text_pretrain.json")
    p.add_argument("--steps", type=int, default=3000, help="the most steps; the run fails if --until is not reached")
    p.add_argument("--until", type=float, default=0.9, help="stop once the held-out repeat accuracy reaches this")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=128, help="tokens per row")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=0.01,
                   help="AdamW weight decay (a larger one keeps the residual stream from growing)")
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--every", type=int, default=100, help="check the held-out rows every N steps")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sizes", default="", help="JSON overrides of training.model_build.SMALL_SIZES")
    p.add_argument("--heads", default="",
                   help="supervise a previous-token head and an induction head, e.g. '1:2,2:2' (loss.copy_heads)")
    p.add_argument("--init", default=None,
                   help="a text.safetensors to start from (e.g. training.ground_pretrain's) instead of the seeded init")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from training import model_build
    from training.diagnose import adamw_step, warm_up, held_accuracy, recall_held, text_probe_setup

    args = build_parser().parse_args(argv)
    if not 0.0 < args.until <= 1.0:
        raise SystemExit(f"--until is a held-out accuracy in (0, 1], got {args.until}")
    model, pools = text_probe_setup(args.seed, args.sizes)
    if args.init:
        from cluenet.errors import ConfigError

        try:
            model_build.load_text(model, args.init)
        except ConfigError as exc:
            raise SystemExit(f"--init: {exc}") from None
    gen = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=args.weight_decay)
    held = repeat_batch(pools["text"], 64, args.length, torch.Generator().manual_seed(args.seed + 1))
    recall = recall_held(pools, args.seed + 1)
    report = {"args": vars(args), "checks": []}
    t0, reached = time.time(), False
    tap = None
    if args.heads:
        from cluenet.errors import ConfigError
        from training.grounding import AttentionTap

        try:
            tap = AttentionTap(model, list(copy_heads(args.heads)))
        except ConfigError as exc:
            raise SystemExit(f"--heads: {exc}") from None
    masses: dict[str, float] = {}
    for step in range(1, args.steps + 1):
        warm_up(opt, step, args.warmup)
        ids, labels, spans = repeat_batch(pools["text"], args.batch, args.length, gen, with_spans=True)
        loss = model(input_ids=ids, labels=labels).loss
        if tap is not None:
            head_loss, masses = _head_loss(tap, spans, args.length)
            loss = loss + head_loss
        adamw_step(model, opt, loss)
        if step % args.every == 0 or step == args.steps:
            row = {"step": step, "seconds": round(time.time() - t0), "repeat_accuracy": held_accuracy(model, held),
                   "recall_accuracy_zero_shot": held_accuracy(model, recall),
                   **{k: round(v, 3) for k, v in masses.items()}}
            report["checks"].append(row)
            print(json.dumps(row), flush=True)
            if row["repeat_accuracy"] >= args.until:
                reached = True
                break
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report.update(seconds=round(time.time() - t0), reached=reached)
    if reached:
        model_build.save_text(model, str(out / WEIGHTS_NAME))
    (out / REPORT_NAME).write_text(json.dumps(report, indent=1) + "\n")
    if not reached:
        print(f"held-out repeat accuracy stayed below {args.until} for {args.steps} steps: no induction circuit "
              f"formed; nothing saved (try another --seed or more --steps)", flush=True)
        return 1
    print(json.dumps({"saved": str(out / WEIGHTS_NAME), "seconds": report["seconds"]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
