"""Evaluate a trained model (ClueNet or a baseline) on a JSONL split through the shipped pipeline.

    python -m training.evaluate --model M --data D.jsonl --json [--mode cluenet|direct|cot] [--limit N]
        [--traces T.jsonl] [--workers W]

``--model`` is a stage output folder (``<output_dir>/final``: a ``ClueNet.save``
folder, or base + ``adapter/`` for LoRA runs) or anything ``ClueNet.from_pretrained``
takes.  Every question runs through ``ClueNet.analyze`` (mode ``cluenet``: clues ->
filter -> chain -> answer), ``answer_direct`` or ``answer_cot`` -- the code the app
runs -- and its Trace is written to ``--traces`` (default ``<model>/traces-<mode>-<data
stem>.jsonl``).  The scores are ``cluenet.eval.evaluate_traces``: accuracy per question
type, clue precision/recall/F1, filter precision/recall, citation errors,
hallucinated clues and tokens generated per answer; ``--json`` prints them as JSON.

Clips: a sample whose video file exists is decoded from it; a ClueWorld sample whose
file is absent is re-rendered in memory from its id (same pixels as the mp4 before
H.264).  ``--workers W`` splits the questions over W processes (one CPU thread each)
and merges their traces in the original order.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from cluenet.errors import ConfigError, InputError
from cluenet.schema import Sample, Trace

MODES = ("cluenet", "direct", "cot")
MAX_WORKERS = 64


@dataclass(frozen=True)
class MemoryClip:
    """A clip in memory in the shape ``ClueNet`` accepts (``frames``, ``times``, ``name``)."""

    frames: np.ndarray
    times: tuple[float, ...]
    name: str


def load_model(folder: str, device: str | None = None) -> Any:
    """A ClueNet from a stage output (full weights, or base + adapter) or any from_pretrained target."""
    from cluenet.model import ClueNet

    return ClueNet.from_pretrained(folder, device=device)


def clip_for(sample: Sample, world: Any = None) -> Any:
    """The video path when the file exists, else the ClueWorld clip re-rendered with ``world`` (a WorldConfig)."""
    if sample.video and Path(sample.video).is_file():
        return sample.video
    if sample.source == "clueworld":
        from training.data import ClueWorldFrames

        frames, times = ClueWorldFrames(world)(sample)
        return MemoryClip(frames, times, Path(sample.video).name)
    raise InputError(f"sample {sample.id}: video file {sample.video} not found")


def run_one(net: Any, sample: Sample, mode: str, world: Any = None) -> Trace:
    clip = clip_for(sample, world)
    kw = dict(gold=sample.answer, sample_id=sample.id, qtype=sample.qtype)
    if mode == "direct":
        return net.answer_direct(clip, sample.question, sample.options, **kw)
    if mode == "cot":
        return net.answer_cot(clip, sample.question, sample.options, **kw)
    return net.analyze(clip, sample.question, sample.options, **kw)


def write_traces(net: Any, samples: Sequence[Sample], mode: str, out: Path, world: Any = None) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for s in tqdm(samples, desc=f"evaluate {mode}", unit="q", disable=None):
            f.write(run_one(net, s, mode, world).to_json(indent=None) + "\n")


def _sharded(args: argparse.Namespace, samples: Sequence[Sample], out: Path) -> None:
    """Run ``workers`` copies of this module on interleaved shards, then merge in order."""
    parts = [out.with_suffix(f".part{i}") for i in range(args.workers)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "training.evaluate", "--model", args.model, "--data", args.data,
                               "--mode", args.mode, "--limit", str(len(samples)), "--traces", str(p),
                               "--shard", f"{i}/{args.workers}", "--no-score"], env=env)
             for i, p in enumerate(parts)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise RuntimeError(f"evaluation workers exited with {codes}")
    lines = [p.read_text(encoding="utf-8").splitlines() for p in parts]
    merged = [lines[i % args.workers][i // args.workers] for i in range(len(samples))]
    out.write_text("".join(line + "\n" for line in merged), encoding="utf-8")
    for p in parts:
        p.unlink()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="stage output folder or model name")
    p.add_argument("--data", required=True, help="JSONL of samples")
    p.add_argument("--mode", default="cluenet", choices=MODES)
    p.add_argument("--limit", type=int, default=0, help="first N samples only (0: all)")
    p.add_argument("--traces", default="", help="traces JSONL to write")
    p.add_argument("--workers", type=int, default=1, help=f"processes (1..{MAX_WORKERS})")
    p.add_argument("--shard", default="", help=argparse.SUPPRESS)
    p.add_argument("--no-score", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--score-only", action="store_true",
                   help="score an existing --traces file (written by an earlier run) without running the model")
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from cluenet.cli import run

    parser = build_parser()
    parser.set_defaults(func=_main)
    return run(parser, list(argv) if argv is not None else None)


def _main(args: argparse.Namespace) -> int:
    from cluenet.data.jsonl import read_samples
    from cluenet.eval import evaluate_traces, read_traces

    if not 1 <= args.workers <= MAX_WORKERS:
        raise ConfigError(f"--workers is {args.workers}, must be 1 to {MAX_WORKERS}")
    samples = read_samples(args.data)
    if args.limit < 0:
        raise ConfigError(f"--limit is {args.limit}, must be >= 0")
    samples = samples[: args.limit] if args.limit else samples
    from training.common import world_config

    world = world_config(args.data)
    out = Path(args.traces or Path(args.model) / f"traces-{args.mode}-{Path(args.data).stem}.jsonl")
    if args.score_only:
        if not out.is_file():
            raise InputError(f"--score-only needs an existing traces file; {out} does not exist")
    elif args.shard:
        i, n = (int(x) for x in args.shard.split("/"))
        import torch

        torch.set_num_threads(1)
        write_traces(load_model(args.model, args.device), samples[i::n], args.mode, out, world)
    elif args.workers > 1:
        _sharded(args, samples, out)
    else:
        write_traces(load_model(args.model, args.device), samples, args.mode, out, world)
    if args.no_score:
        return 0
    traces = read_traces(out)
    result = {"model": args.model, "mode": args.mode, "data": args.data, "traces": str(out),
              **evaluate_traces(samples, traces), "flag_rates": flag_rates(samples, traces)}
    print(json.dumps(result, indent=2) if args.json else _table(result))
    return 0


def flag_rates(samples: Sequence[Sample], traces: Sequence[Trace]) -> dict[str, float | None]:
    """Share of questions with at least one flag of each kind that needs no extra model run.

    (``unsupported_citation``, ``chain_answer_inconsistency``, ``ungrounded_clue`` against
    the samples' gold events; the probe flags -- clue necessity, video independence --
    cost extra passes per question and are left to the app's case study.)
    """
    from cluenet.analysis import static_flags

    kinds = ("unsupported_citation", "chain_answer_inconsistency", "ungrounded_clue")
    by_id = {s.id: s for s in samples}
    hits = {k: 0 for k in kinds}
    n = 0
    for t in traces:
        sample = by_id.get(t.sample_id or "")
        if sample is None:
            continue
        n += 1
        for k in {f.kind for f in static_flags(t, sample.events)} & set(kinds):
            hits[k] += 1
    return {k: (hits[k] / n if n else None) for k in kinds}


def _table(r: dict) -> str:
    lines = [f"{r['mode']} on {r['data']}: accuracy {r['accuracy']:.3f} ({r['correct']}/{r['n_samples']})"]
    lines += [f"  {q}: {v['accuracy']:.3f} ({v['n']})" for q, v in r["by_qtype"].items()]
    c = r["clues"]
    if c.get("f1") is not None:
        lines.append(f"  clue P/R/F1 {c['precision']:.3f}/{c['recall']:.3f}/{c['f1']:.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
