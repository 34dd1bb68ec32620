"""Run: python -m benchmarks.clueworld [--quick]   (or python -m benchmarks --only clueworld)

ClueWorld generation speed with H.264 writing, 1 and 2 workers: clips per second and
the time for 1,000 clips (target: under 2 minutes on 2 CPU cores).  --quick writes
60 clips per setting and extrapolates the 1,000-clip time; the full run writes and
times 1,000 clips per setting.  Also the text-only rate (``--no-video`` style
samples per second), which the tokenizer corpus and text baselines use.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time

from cluenet.data.clueworld import WorldConfig, clip_rng, generate, make_sample

TARGET_1000_S = 120.0
QUICK_N, FULL_N = 60, 1000
TEXT_N = 300


def _time_generate(n: int, workers: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generate(tmp, n, seed=0, cfg=WorldConfig(), workers=workers)  # pool start-up included
        return time.perf_counter() - start


def run(quick: bool) -> list[dict]:
    n = QUICK_N if quick else FULL_N
    rows = []
    for workers in (1, 2):
        seconds = _time_generate(n, workers)
        rate = n / seconds
        how = f"extrapolated from {n} clips" if quick else f"measured on {n} clips"
        rows += [
            {"benchmark": "clueworld", "metric": f"clips/s with video, {workers} worker(s)", "value": rate,
             "unit": "clip/s", "note": f"{n} clips, 16 frames 112x112, in {seconds:.1f} s"},
            {"benchmark": "clueworld", "metric": f"time for 1000 clips, {workers} worker(s)",
             "value": 1000 / rate if quick else seconds, "unit": "s", "target": TARGET_1000_S, "note": how},
        ]
    start = time.perf_counter()
    for i in range(TEXT_N):
        make_sample(clip_rng(0, i))
    rows.append({"benchmark": "clueworld", "metric": "samples/s without video, 1 process",
                 "value": TEXT_N / (time.perf_counter() - start), "unit": "sample/s", "note": f"{TEXT_N} samples"})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.clueworld", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_N} clips per setting, extrapolated")
    args = parser.parse_args(argv)
    for row in run(args.quick):
        target = f"  (target <= {row['target']:g})" if "target" in row else ""
        print(f"{row['metric']:<40} {row['value']:10.2f} {row['unit']:<9} {row['note']}{target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
