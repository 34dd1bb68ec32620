"""App latency: cold start to the first served page, opening an example, upload to answer.

    python -m benchmarks.app [--quick] [--json out.json]
    python -m benchmarks --only app

Three measurements, all on this machine's CPU unless a GPU is present:

* ``cold_start_s``: ``python app.py --port P`` in a fresh process until ``GET /``
  answers 200.  ``app.main`` loads the model before serving, so this includes
  importing gradio/torch/transformers and loading the default model.
* ``open_example_s``: the Explore handler (``app.open_example``: trace from disk,
  frames for the strip decoded, three figures built), median over the examples in
  ``assets/examples`` (skipped when none are built).
* ``upload_to_answer_s``: the Inspect handler (``app.analyze_upload``) on a 10 s
  clip with the default model, from the call to the last streamed update (the
  answer); ``scores_shown_s`` is the time until the filter scores are on screen
  (the streamed update after pass 1, whose status reads "kept k of n clues").

The ratio ``open_example / upload_to_answer`` is the claim that browsing
precomputed traces is much cheaper than running the model (target < 0.1).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CLIP_SECONDS = 10.0
CLIP_FPS = 10
CLIP_SIZE = (240, 320)  # H, W
COLD_START_TIMEOUT_S = 300.0
POLL_S = 0.25
OPEN_RATIO_TARGET = 0.1
COLD_START_TARGET_S = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cold_start() -> float:
    """Seconds from spawning ``python app.py`` to the first HTTP 200 on ``/``."""
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while time.perf_counter() - t0 < COLD_START_TIMEOUT_S:
            if proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {proc.returncode}: {proc.stderr.read()[-500:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except OSError:
                time.sleep(POLL_S)
        raise TimeoutError(f"no page after {COLD_START_TIMEOUT_S} s")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def open_example_times(repeats: int) -> list[float]:
    """Seconds per ``open_example`` call, every example ``repeats`` times."""
    import app

    examples = app.load_examples()
    times = []
    for _ in range(repeats):
        for i in range(len(examples)):
            t0 = time.perf_counter()
            app.open_example(examples, i)
            times.append(time.perf_counter() - t0)
    return times


def ten_second_clip(folder: Path) -> Path:
    """A 10 s clip: two coloured squares crossing a grey background."""
    from cluenet.video import write_video

    n = int(CLIP_SECONDS * CLIP_FPS)
    h, w = CLIP_SIZE
    frames = np.full((n, h, w, 3), 60, np.uint8)
    for k in range(n):
        x = int(k / n * (w - 40))
        frames[k, 40:80, x:x + 40] = (220, 50, 50)
        frames[k, 150:190, w - 40 - x:w - x] = (50, 90, 220)
    return write_video(folder / "ten_seconds.mp4", frames, fps=CLIP_FPS)


def upload_to_answer(holder, clip: Path) -> tuple[float, float]:
    """(filter scores shown, answer) in seconds for one Inspect request, with the
    model's clip/prefix cache emptied first (a new upload, not a repeated question)."""
    import app

    cache = getattr(holder.get(), "cache", None)
    if cache is not None:
        cache.clear()
    t0 = time.perf_counter()
    scores = None
    last = None
    for last in app.analyze_upload(holder, str(clip), "Which square reaches the middle first?",
                                   "the red one", "the blue one", "both at once", "", "", app.DEFAULT_FRAMES):
        if scores is None and "kept" in str(last[0]):
            scores = time.perf_counter() - t0
    total = time.perf_counter() - t0
    if last is None or "Done" not in str(last[0]):
        raise RuntimeError(f"analysis did not finish: {last[0] if last else 'no output'}")
    return scores if scores is not None else total, total


def run(quick: bool = False) -> list[dict]:
    """Benchmark rows (see the module docstring)."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import app

    rows = [{"benchmark": "app", "metric": "cold_start_s", "value": cold_start(), "unit": "s",
             "target": COLD_START_TARGET_S, "note": "python app.py -> first HTTP 200, model load included"}]
    opened = open_example_times(1 if quick else 3)
    holder = app.ModelHolder(app.default_loader())
    t0 = time.perf_counter()
    model = holder.get()
    load_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        clip = ten_second_clip(Path(tmp))
        upload_to_answer(holder, clip)  # warm-up: first-call allocations, not the steady state
        runs = [upload_to_answer(holder, clip) for _ in range(1 if quick else 2)]
    answer_s = statistics.median(r[1] for r in runs)
    note = f"default model {model.info.name} on {model.info.device}; trained on: {model.info.trained_on}"
    rows += [
        {"benchmark": "app", "metric": "model_load_s", "value": load_s, "unit": "s", "note": note},
        {"benchmark": "app", "metric": "scores_shown_s", "value": statistics.median(r[0] for r in runs),
         "unit": "s", "note": "Inspect: call -> filter scores streamed (pass 1 done)"},
        {"benchmark": "app", "metric": "upload_to_answer_s", "value": answer_s, "unit": "s",
         "note": f"{CLIP_SECONDS:g} s clip {CLIP_SIZE[1]}x{CLIP_SIZE[0]}, {app.DEFAULT_FRAMES} frames, clip cache cleared"},
    ]
    if opened:
        open_s = statistics.median(opened)
        rows += [
            {"benchmark": "app", "metric": "open_example_s", "value": open_s, "unit": "s",
             "note": f"median of {len(opened)} opens, no model call"},
            {"benchmark": "app", "metric": "open_example/upload_to_answer", "value": open_s / answer_s,
             "target": OPEN_RATIO_TARGET, "note": "browsing a trace vs running the model"},
        ]
    return rows


def main(argv: list[str] | None = None) -> int:
    """Print the rows as a table (and optionally JSON)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.app", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    rows = run(args.quick)
    for r in rows:
        value = f"{r['value']:.3g}" if isinstance(r["value"], float) else r["value"]
        print(f"{r['metric']:32s} {value} {r.get('unit', '')}  {r.get('note', '')}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
