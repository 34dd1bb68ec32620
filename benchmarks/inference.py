"""Inference benchmark: python -m benchmarks.inference [--quick] [--json out.json]

On one backbone (assets/model if shipped, else the tiny random default) and one
generated ClueWorld clip, measures in the same run:

* ClueNet ``analyze`` latency / ``answer_direct`` latency (both from a cold clip cache);
* second question on the same clip / first question (frames and vision features reused);
* ``reason`` (pass 2 only) / full ``analyze``;
* generated tokens per stage;
* the unavoidable work of one analyze timed separately -- decode of the sampled
  frames, one vision encoding, one prefill of the prefix, and one decoding step per
  generated token -- and analyze / that sum (the pipeline's overhead);
* the filter head's share of the analyze time.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import emit

QUICK_CAP = 24  # generated-token caps in --quick mode (an untrained model never closes a block)
QUESTIONS = ("What happens first?", "What happens last?")


def _clip_file(folder: Path) -> tuple[Path, tuple[str, ...]]:
    from cluenet.data.clueworld import make_episode
    from cluenet.video import write_video

    frames, times, sample = make_episode(0)
    fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 8.0
    path = folder / "bench.mp4"
    write_video(path, list(frames), fps=fps)
    return path, tuple(sample.options)


def _timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return time.perf_counter() - t0, out


def _unavoidable(net, video, options, trace) -> dict[str, float]:
    """Each necessary piece of one analyze, timed on its own (decode is 0 for an in-memory clip)."""
    from cluenet import prompts
    from cluenet import video as vid
    from cluenet.model import _Gen

    n = len(trace.clip.frame_times)
    t_decode, sampled = (0.0, video) if hasattr(video, "frames") else _timed(vid.sample, video, num_frames=n, max_side=448)
    clip = net._clip(sampled, n)
    text = prompts.prefix_text(net.processor, QUESTIONS[0], options, clip.times)
    inputs = net.family.processor_inputs(net.processor, text, clip.frames, clip.times)
    t_vision, vision = _timed(_synced, net._encode_video, inputs)
    inputs = {k: v for k, v in inputs.items() if k != "pixel_values_videos"}
    t_prefill, prefix = _timed(_synced, net._prefill, clip, vision, inputs, QUESTIONS[0], options)
    generated = trace.tokens.get("clues", 0) + trace.tokens.get("chain", 0)
    gen, tok = _Gen(), net._ids["clues_open"]
    net._restore(prefix)  # as a pass does: cache at the prefix, the prefix's rope offset
    t0 = time.perf_counter()
    for _ in range(generated):  # one cached decoding step per generated token
        net._feed([tok], prefix, gen)
    _sync()
    t_tokens = time.perf_counter() - t0
    return {"decode": t_decode, "vision": t_vision, "prefill": t_prefill, "tokens": t_tokens}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _synced(fn, *args, **kw):
    out = fn(*args, **kw)
    _sync()
    return out


def measure(net, video, options, benchmark: str = "inference") -> list[dict]:
    """The same-run ratios of the module docstring for one model and one clip.

    ``video`` is a file path (decode is part of the work) or an in-memory sampled clip.
    """
    row = lambda metric, value, note="": _row(metric, value, note, benchmark)  # noqa: E731
    net.analyze(video, QUESTIONS[0], options)  # warm-up: lazy imports, allocator, kernels
    net.cache.clear()
    t_first, first = _timed(_synced, net.analyze, video, QUESTIONS[0], options)
    t_second, _ = _timed(_synced, net.analyze, video, QUESTIONS[1], options)
    t_reason, _ = _timed(_synced, net.reason, first, [c.id for c in first.kept_clues])
    net.cache.clear()
    t_direct, _ = _timed(_synced, net.answer_direct, video, QUESTIONS[0], options)
    net.cache.clear()
    parts = _unavoidable(net, video, options, first)
    floor = sum(parts.values())
    rows = [
        row("analyze / direct latency", t_first / t_direct, f"{t_first:.3f} s vs {t_direct:.3f} s"),
        row("second question / first question", t_second / t_first, f"{t_second:.3f} s vs {t_first:.3f} s"),
        row("reason / analyze", t_reason / t_first, f"{t_reason:.3f} s vs {t_first:.3f} s"),
        row("analyze / unavoidable work", t_first / floor, ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in parts.items())),
        row("filter share of analyze", first.timings.get("filter", 0.0) / t_first,
            f"{first.timings.get('filter', 0.0) * 1000:.2f} ms"),
    ]
    for stage in ("prefix", "clues", "context", "chain"):
        rows.append(row(f"tokens: {stage}", float(first.tokens.get(stage, 0)), "first question"))
    rows.append(row("model", 0.0, f"{net.info.name} ({net.info.backbone}, {net.info.device}, {net.info.dtype}), "
                                   f"trained on: {net.info.trained_on}"))
    return rows


def run(quick: bool = True) -> list[dict]:
    """Rows of ratios and token counts (see the module docstring)."""
    from cluenet.model import ClueNet

    net = ClueNet.from_pretrained(device="cpu" if not torch.cuda.is_available() else None)
    if quick:
        net.max_clue_tokens = net.max_chain_tokens = QUICK_CAP
    with tempfile.TemporaryDirectory() as tmp:
        path, options = _clip_file(Path(tmp))
        return measure(net, path, options)


def _row(metric: str, value: float, note: str = "", benchmark: str = "inference") -> dict:
    return {"benchmark": benchmark, "metric": metric, "value": round(float(value), 4), "note": note}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.inference", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=f"cap generation at {QUICK_CAP} tokens per pass")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    rows = run(args.quick)
    emit(rows, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
