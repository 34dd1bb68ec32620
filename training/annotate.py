"""Annotate real datasets with clues and chains for stage 1.

    python -m training.annotate teacher --model M --data D.jsonl --out A.jsonl [--limit N] [--frames 16]
    python -m training.annotate star --star STAR_train.json --out A.jsonl [--video-root DIR] [--fps 30]

``teacher``: a teacher model (any backbone ``ClueNet.from_pretrained`` loads -- a hub
name, a local folder or a stage output -- run locally, training-free or trained) writes
clues and a chain for each question while *told the correct answer*: the question it
sees is ``"<question> (The correct answer is <letter>. <option>.)"``.  Two checks
decide whether the annotation is kept:

* **answer consistency** -- reasoning from the clues alone must reach the answer: the
  teacher's clues are given to a second reasoning pass (``ClueNet.reason``) on the
  *original* question over a blank clip (black frames at the same times), so only the
  clue text can carry the answer; its answer must be the gold one;
* **leakage** -- the clues must not restate option text: a clue that contains the
  normalised full text of an option of ``LEAK_MIN_WORDS`` words or more, or the words
  "answer" / "option", is a leak.  Not covered: paraphrases of an option, and options
  shorter than ``LEAK_MIN_WORDS`` words (a single object name must stay usable in a clue).

Kept samples are written with their clues and chain; rejected ones go to
``<out>.rejected.jsonl`` with the reason, and a summary line is printed.

``star``: STAR situation graphs become clues without a teacher (``cluenet.data.star``
events, ids c1...); the chain is one step citing the clues that share a content word
with the question or the correct answer (all clues when none does), ending with the
answer letter.  The leakage check applies.
"""
from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

from cluenet.errors import ConfigError
from cluenet.metrics import normalize_statement
from cluenet.schema import LETTERS, Clue, Sample, Step

LEAK_MIN_WORDS = 3
LEAK_WORDS = ("answer", "option")
MAX_TEACHER_SAMPLES = 1_000_000
_STOP = {"the", "a", "an", "of", "to", "in", "on", "at", "is", "was", "did", "does", "do", "what", "why", "how",
         "which", "who", "when", "after", "before", "and", "or", "with", "person", "it", "that", "this", "by"}


@dataclass(frozen=True)
class Verdict:
    """The outcome of the checks for one annotated sample."""

    sample: Sample
    kept: bool
    reason: str = ""


# ----------------------------------------------------------------------------- checks
def leaked_clues(clues: Sequence[Clue], options: Sequence[str]) -> list[str]:
    """Ids of clues that restate an option (or talk about answers/options); see the module docstring."""
    long_opts = [normalize_statement(o) for o in options if len(normalize_statement(o).split()) >= LEAK_MIN_WORDS]
    bad = []
    for c in clues:
        text = f" {normalize_statement(c.text)} "
        words = set(text.split())
        if any(w in words for w in LEAK_WORDS) or any(f" {o} " in text for o in long_opts):
            bad.append(c.id)
    return bad


def hinted_question(sample: Sample) -> str:
    """The question the teacher sees: the original plus the correct answer."""
    return f"{sample.question} (The correct answer is {LETTERS[sample.answer]}. {sample.options[sample.answer]}.)"


def blank_clip(times: Sequence[float], side: int = 56) -> Any:
    """Black frames at ``times``: a clip that carries no visual information."""
    from training.evaluate import MemoryClip

    return MemoryClip(np.zeros((len(times), side, side, 3), dtype=np.uint8), tuple(times), "blank")


def consistent_answer(net: Any, sample: Sample, clues: Sequence[Clue], times: Sequence[float]) -> int | None:
    """The answer ``net`` reaches from ``clues`` alone (blank clip, original question)."""
    if not clues:
        return None
    cap = net.max_clue_tokens
    net.max_clue_tokens = 1  # pass 1 on the blank clip is only there to cache the prefix
    try:
        trace = net.analyze(blank_clip(times), sample.question, sample.options)
    finally:
        net.max_clue_tokens = cap
    trace = trace.with_(clues=tuple(replace(c, score=None, kept=True) for c in clues))
    return net.reason(trace, [c.id for c in clues]).answer


def check(net: Any, sample: Sample, clues: Sequence[Clue], chain: Sequence[Step], times: Sequence[float]) -> Verdict:
    """Leakage first (cheap), then answer consistency."""
    out = replace(sample, clues=tuple(replace(c, score=None, kept=None) for c in clues), chain=tuple(chain))
    if not clues or not chain:
        return Verdict(out, False, f"teacher wrote {len(clues)} clues and {len(chain)} chain steps")
    leaks = leaked_clues(clues, sample.options)
    if leaks:
        return Verdict(out, False, f"leakage: clues {leaks} restate option text")
    if net is not None:
        got = consistent_answer(net, sample, clues, times)
        if got != sample.answer:
            shown = LETTERS[got] if got is not None else "none"
            return Verdict(out, False, f"inconsistent: the clues alone give {shown}, gold is {LETTERS[sample.answer]}")
    return Verdict(out, True)


# ----------------------------------------------------------------------------- teacher
def annotate_with_teacher(net: Any, sample: Sample, clip: Any) -> Verdict:
    """Teacher pass (told the answer), then the checks."""
    trace = net.analyze(clip, hinted_question(sample), sample.options)
    chain = trace.chain
    return check(net, sample, trace.clues, chain, trace.clip.frame_times)


def run_teacher(model: str, data: str, out: Path, limit: int = 0, frames: int | None = None,
                max_tokens: int | None = None) -> dict[str, int]:
    from cluenet.data.jsonl import read_samples

    from training.common import world_config
    from training.evaluate import clip_for, load_model

    net = load_model(model)
    if frames is not None:
        net.num_frames = frames
    if max_tokens is not None:  # caps each decoding pass (the pipeline's defaults otherwise)
        net.max_clue_tokens = net.max_chain_tokens = max_tokens
    samples = read_samples(data)
    samples = samples[:limit] if limit else samples
    world = world_config(data)
    verdicts = [annotate_with_teacher(net, s, clip_for(s, world)) for s in tqdm(samples, desc="annotate", disable=None)]
    return _write(verdicts, out)


# ----------------------------------------------------------------------------- STAR
def star_chain(sample: Sample) -> tuple[Step, ...]:
    """One step citing the clues that share a content word with the question or correct answer."""
    key = {w for w in normalize_statement(f"{sample.question} {sample.options[sample.answer]}").split()
           if w not in _STOP and len(w) > 2}
    cites = [c.id for c in sample.clues if key & set(normalize_statement(c.text).split())]
    cites = cites or [c.id for c in sample.clues]
    text = f"{sample.options[sample.answer].rstrip('.')}, so the answer is {LETTERS[sample.answer]}"
    return (Step(re.sub(r"\s+", " ", text), tuple(cites)),)


def run_star(star_json: str, out: Path, video_root: str | None = None, fps: float = 30.0) -> dict[str, int]:
    from cluenet.data.star import load_star

    verdicts = []
    for s in load_star(star_json, video_root, fps=fps, as_clues=True):
        verdicts.append(check(None, s, s.clues, star_chain(s), ()) if s.clues else
                        Verdict(s, False, "no situation-graph events"))
    return _write(verdicts, out)


# ----------------------------------------------------------------------------- output
def _write(verdicts: Iterable[Verdict], out: Path) -> dict[str, int]:
    verdicts = list(verdicts)
    out.parent.mkdir(parents=True, exist_ok=True)
    rejected = out.with_suffix(".rejected.jsonl")
    with open(out, "w", encoding="utf-8") as f, open(rejected, "w", encoding="utf-8") as g:
        for v in verdicts:
            if v.kept:
                f.write(json.dumps(v.sample.to_dict()) + "\n")
            else:
                g.write(json.dumps({"id": v.sample.id, "reason": v.reason, "sample": v.sample.to_dict()}) + "\n")
    summary = {"samples": len(verdicts), "kept": sum(v.kept for v in verdicts),
               "leakage": sum(v.reason.startswith("leakage") for v in verdicts),
               "inconsistent": sum(v.reason.startswith("inconsistent") for v in verdicts)}
    summary["other"] = summary["samples"] - summary["kept"] - summary["leakage"] - summary["inconsistent"]
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.annotate", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("teacher", help="clues and chains from a teacher model told the answer")
    t.add_argument("--model", required=True)
    t.add_argument("--data", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--limit", type=int, default=0)
    t.add_argument("--frames", type=int, default=None)
    t.add_argument("--max-tokens", type=int, default=None, help="cap on tokens per decoding pass")
    s = sub.add_parser("star", help="clues from STAR situation graphs, no teacher")
    s.add_argument("--star", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--video-root", default=None)
    s.add_argument("--fps", type=float, default=30.0)
    args = p.parse_args(argv)
    if args.cmd == "teacher":
        if not 0 <= args.limit <= MAX_TEACHER_SAMPLES:
            raise ConfigError(f"--limit is {args.limit}, must be 0 to {MAX_TEACHER_SAMPLES}")
        summary = run_teacher(args.model, args.data, Path(args.out), args.limit, args.frames, args.max_tokens)
    else:
        summary = run_star(args.star, Path(args.out), args.video_root, args.fps)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
