"""Run every benchmark and print one table of ratios measured in the same run.

    python -m benchmarks            # full run
    python -m benchmarks --quick    # smaller inputs, fewer repeats (under 5 minutes on 2 CPU cores)
    python -m benchmarks --only decode inference --json out.json --markdown out.md

Each benchmark module exposes ``run(quick: bool) -> list[dict]``; a row has at least
``benchmark``, ``metric`` and ``value`` (a ratio or a measured quantity) and may carry
``target`` (the bound the value must stay under) and ``note``.  Ratios, not absolute
times, are the claims: this machine is noisy, so both sides of a ratio are measured
in the same run.
"""
from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
import traceback

from benchmarks import emit

# order: cheap first, so a --quick run shows something early
SUITE = ("decode", "clueworld", "inference", "training", "app")


def machine() -> str:
    import os

    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except Exception:  # torch missing or broken: still describe the machine
        gpu = "torch unavailable"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, few repeats")
    parser.add_argument("--only", nargs="+", choices=SUITE, help="run only these benchmarks")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="also write the table as Markdown (the README's table)")
    args = parser.parse_args(argv)

    rows: list[dict] = []
    failed: list[str] = []
    print(f"machine: {machine()}", flush=True)
    for name in args.only or SUITE:
        start = time.perf_counter()
        print(f"... running benchmarks.{name}", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            rows.extend(module.run(quick=args.quick))
        except Exception:  # one broken benchmark must not hide the others' numbers
            traceback.print_exc()
            failed.append(name)
        print(f"    {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    emit(rows, args.json, machine=machine(), quick=args.quick)
    if args.markdown:
        from pathlib import Path

        from benchmarks import markdown

        Path(args.markdown).write_text(markdown(rows, machine() + (", --quick" if args.quick else "")))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
