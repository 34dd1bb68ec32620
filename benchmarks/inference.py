"""Inference benchmark: python -m benchmarks.inference [--quick] [--json out.json]

On one backbone (assets/model if shipped, else the tiny random default) and one
generated ClueWorld clip, measures in the same run:

* ClueNet ``analyze`` latency / ``answer_direct`` latency (both from a cold clip cache);
* second question on the same clip / first question (frames and vision features reused);
* ``reason`` (pass 2 only) / full ``analyze``;
* generated tokens per stage;
* the unavoidable work of each call timed separately, and each call / its unavoidable
  work (the pipeline's overhead): a first analyze needs one decode of the sampled
  frames, one vision encoding, one prefill of the prefix and one decoding step per
  generated token; a second question needs only its prefill (vision reused) and its
  tokens; ``reason`` needs one forward of the tokens after the cached prefix and its
  chain tokens.  Frame decodes and vision encodings of the second question and of
  ``reason`` are counted (both should be 0);
* the filter head's share of the analyze time.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import emit

QUICK_CAP = 24  # generated-token caps in --quick mode (an untrained model never closes a block)
OVERHEAD_TARGET = 1.15  # a call / its unavoidable work (issue #8)
FILTER_SHARE_TARGET = 0.02
REPEATS = 5  # rounds per measurement; medians are reported
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


def _token_loop(net, prefix, n: int) -> float:
    """Seconds for ``n`` cached single-token decoding steps after ``prefix`` (the pass's own loop)."""
    from cluenet.model import _Gen

    gen, tok = _Gen(), net._ids["clues_open"]
    net._restore(prefix)  # as a pass does: cache at the prefix, the prefix's rope offset
    t0 = time.perf_counter()
    for _ in range(n):
        net._feed([tok], prefix, gen)
    _sync()
    seconds = time.perf_counter() - t0
    net._crop(prefix)
    return seconds


def _generated(trace) -> int:
    return trace.tokens.get("clues", 0) + trace.tokens.get("chain", 0)


def _unavoidable(net, video, options, first, second, reasoned) -> dict[str, float]:
    """Each necessary piece of the three calls, timed on its own (decode is 0 for an in-memory clip).

    first question: decode + preprocess (the processor turning frames into patches: the
    encoder's input) + vision + prefill + its generated tokens; second question:
    the prefill of its prefix (vision reused) + its tokens; ``reason``: one forward of
    the tokens after the cached prefix (kept clues, ``<chain>``) + its tokens.
    """
    from cluenet import prompts
    from cluenet import video as vid
    from cluenet.model import _Gen

    n = len(first.clip.frame_times)
    t_decode, sampled = (0.0, video) if hasattr(video, "frames") else _timed(vid.sample, video, num_frames=n, max_side=448)
    clip = net._clip(sampled, n)
    text = prompts.prefix_text(net.processor, QUESTIONS[0], options, clip.times)
    t_preprocess, inputs = _timed(net.family.processor_inputs, net.processor, text, clip.frames, clip.times)
    t_vision, vision = _timed(_synced, net._encode_video, inputs)
    inputs = {k: v for k, v in inputs.items() if k != "pixel_values_videos"}
    t_prefill, prefix = _timed(_synced, net._prefill, clip, vision, inputs, QUESTIONS[0], options)
    t_tokens = _token_loop(net, prefix, _generated(first))
    text2 = prompts.prefix_text(net.processor, QUESTIONS[1], options, clip.times)
    t_prefill2, prefix2 = _timed(_synced, net._prefill, clip, vision, net._text_inputs(text2, vision), QUESTIONS[1], options)
    t_tokens2 = _token_loop(net, prefix2, _generated(second))
    context = prompts.encode_text(net.tokenizer, prompts.reasoning_context(reasoned.kept_clues))
    net._restore(prefix)
    t_context, _ = _timed(_synced, net._feed, context + [net._ids["chain_open"]], prefix, _Gen())
    t_chain = _token_loop(net, prefix, reasoned.tokens.get("chain", 0))
    return {"decode": t_decode, "preprocess": t_preprocess, "vision": t_vision, "prefill": t_prefill, "tokens": t_tokens,
            "second_prefill": t_prefill2, "second_tokens": t_tokens2,
            "reason_prefill": t_context, "reason_tokens": t_chain}


class _Counter:
    """Counts calls of the frame decoder and of the vision encoder while active."""

    def __init__(self, net) -> None:
        self.net, self.decodes, self.encodes = net, 0, 0

    def __enter__(self) -> "_Counter":
        from cluenet import video as vid

        self._sample, self._encode = vid.sample, self.net._encode_video

        def sample(*a, **kw):
            self.decodes += 1
            return self._sample(*a, **kw)

        def encode(*a, **kw):
            self.encodes += 1
            return self._encode(*a, **kw)

        vid.sample, self.net._encode_video = sample, encode
        return self

    def __exit__(self, *exc) -> None:
        from cluenet import video as vid

        vid.sample = self._sample
        del self.net._encode_video  # back to the class's method


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _synced(fn, *args, **kw):
    out = fn(*args, **kw)
    _sync()
    return out


def measure(net, video, options, benchmark: str = "inference", repeats: int = REPEATS) -> list[dict]:
    """The same-run ratios of the module docstring for one model and one clip.

    ``video`` is a file path (decode is part of the work) or an in-memory sampled clip.
    Every time is the median of ``repeats`` rounds, each round timing every piece once
    (interleaved, so a slow spell of the machine hits all of them alike).
    """
    row = lambda metric, value, note="", target=None: _row(metric, value, note, benchmark, target)  # noqa: E731
    net.analyze(video, QUESTIONS[0], options)  # warm-up: lazy imports, allocator, kernels
    rounds: list[dict[str, float]] = []
    for _ in range(repeats):
        net.cache.clear()
        t: dict[str, float] = {}
        t["first"], first = _timed(_synced, net.analyze, video, QUESTIONS[0], options)
        with _Counter(net) as second_work:
            t["second"], second = _timed(_synced, net.analyze, video, QUESTIONS[1], options)
        with _Counter(net) as reason_work:
            t["reason"], reasoned = _timed(_synced, net.reason, first, [c.id for c in first.kept_clues])
        net.cache.clear()
        t["direct"], _ = _timed(_synced, net.answer_direct, video, QUESTIONS[0], options)
        net.cache.clear()
        t.update(_unavoidable(net, video, options, first, second, reasoned))
        t["filter"] = first.timings.get("filter", 0.0)
        rounds.append(t)
    m = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    parts = {k: m[k] for k in ("decode", "preprocess", "vision", "prefill", "tokens")}
    floor = sum(parts.values())
    floor2 = m["second_prefill"] + m["second_tokens"]
    floor_r = m["reason_prefill"] + m["reason_tokens"]
    t_first = m["first"]
    ms = lambda v: f"{v * 1000:.0f} ms"  # noqa: E731
    rows = [
        row("analyze / direct latency", t_first / m["direct"], f"{t_first:.3f} s vs {m['direct']:.3f} s"),
        row("second question / first question", m["second"] / t_first, f"{m['second']:.3f} s vs {t_first:.3f} s"),
        row("reason / analyze", m["reason"] / t_first, f"{m['reason']:.3f} s vs {t_first:.3f} s"),
        row("analyze / unavoidable work", t_first / floor,
            ", ".join(f"{k} {ms(v)}" for k, v in parts.items()) + f"; median of {repeats}", target=OVERHEAD_TARGET),
        row("second question / its prefill + decoding", m["second"] / floor2,
            f"prefill {ms(m['second_prefill'])}, tokens {ms(m['second_tokens'])}", target=OVERHEAD_TARGET),
        row("second question: frames decoded, vision encodings", float(second_work.decodes + second_work.encodes),
            f"{second_work.decodes} decodes, {second_work.encodes} encodings (last round)", target=0),
        row("reason / its prefill + decoding", m["reason"] / floor_r,
            f"prefill after the cached prefix {ms(m['reason_prefill'])}, tokens {ms(m['reason_tokens'])}",
            target=OVERHEAD_TARGET),
        row("reason: vision encodings", float(reason_work.encodes), "last round", target=0),
        row("filter share of analyze", m["filter"] / t_first, f"{m['filter'] * 1000:.2f} ms", target=FILTER_SHARE_TARGET),
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


def _row(metric: str, value: float, note: str = "", benchmark: str = "inference", target: float | None = None) -> dict:
    row = {"benchmark": benchmark, "metric": metric, "value": round(float(value), 4), "note": note}
    if target is not None:
        row["target"] = target
    return row


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
