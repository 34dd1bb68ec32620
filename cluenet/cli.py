"""Command line: ``python -m cluenet {probe,infer} ...``.

    python -m cluenet probe VIDEO [--frames N]
        print the probe as JSON; with --frames also the timestamps (s) of N
        uniformly sampled frames.
    python -m cluenet infer --video V --question Q --option A --option B ... [--json]
        run the ClueNet pipeline and print the Trace.

On bad input every command prints one line to stderr and exits 2.
"""
from __future__ import annotations

import argparse
import json
import sys

from .schema import LETTERS, Trace

EXIT_BAD_INPUT = 2


def _probe(args: argparse.Namespace) -> int:
    from . import video

    info = video.probe(args.video)
    out = info.to_dict()
    if args.frames:
        clip = video.sample(args.video, num_frames=args.frames, backend=args.backend)
        out["frame_times"] = [round(t, 6) for t in clip.times]
        out["backend"] = clip.backend
    print(json.dumps(out, indent=2))
    return 0


def _infer(args: argparse.Namespace) -> int:
    """Run ``ClueNet.analyze`` and print the Trace (JSON with --json)."""
    from .model import ClueNet  # heavy import (torch, transformers) only when needed

    net = ClueNet.from_pretrained(args.model, adapter=args.adapter, filter_head=args.filter_head, device=args.device)
    trace = net.analyze(args.video, args.question, args.options, num_frames=args.frames)
    print(trace.to_json() if args.json else summary(trace))
    return 0


def summary(trace: Trace) -> str:
    """A readable multi-line summary of a Trace."""
    lines = [f"clip: {trace.clip.name} ({len(trace.clip.frame_times)} frames)   model: {trace.model.name}"]
    if trace.model.trained_on:
        lines.append(f"trained on: {trace.model.trained_on}")
    lines.append(f"question: {trace.question}")
    for c in trace.clues:
        mark = "kept" if c.kept else "drop"
        score = "" if c.score is None else f" u={c.score:.2f}"
        lines.append(f"  [{mark}{score}] {c.id} [{c.start:.1f}-{c.end:.1f}s] {c.text}")
    for i, s in enumerate(trace.chain, 1):
        lines.append(f"  {i}. ({','.join(s.cites)}) {s.text}")
    for i, (o, p) in enumerate(zip(trace.options, trace.option_probs)):
        star = "*" if i == trace.answer else " "
        lines.append(f" {star}{LETTERS[i]}. {o}  p={p:.3f}")
    lines += [f"warning: {w}" for w in trace.warnings]
    lines.append("timings: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in trace.timings.items()))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cluenet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("probe", help="probe a video file and optionally sample frame timestamps")
    p.add_argument("video")
    p.add_argument("--frames", type=int, default=0, help="also sample N frames and print their timestamps")
    p.add_argument("--backend", choices=("auto", "decord", "pyav"), default="auto")
    p.set_defaults(func=_probe)

    p = sub.add_parser("infer", help="answer a multiple-choice question about a clip and print the Trace")
    p.add_argument("--video", required=True)
    p.add_argument("--question", required=True)
    p.add_argument("--option", action="append", required=True, dest="options", help="repeat for each option (2-5)")
    p.add_argument("--model", default=None, help="model name or path (default: the embedded ClueWorld model)")
    p.add_argument("--adapter", default=None, help="PEFT adapter folder (safetensors)")
    p.add_argument("--filter-head", default=None, help="filter head .safetensors")
    p.add_argument("--frames", type=int, default=None, help="number of frames to sample")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--json", action="store_true", help="print the Trace as JSON")
    p.set_defaults(func=_infer)
    return parser


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and call the chosen subcommand's ``func``; a ClueNetError (bad input
    the user can fix) becomes one stderr line and exit status 2.  Shared by every CLI."""
    from .errors import ClueNetError

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ClueNetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)
