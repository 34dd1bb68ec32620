"""Stage-1 training throughput on CPU and the speed-up from length-grouped batches.

    python -m benchmarks.training [--quick]      (or as part of: python -m benchmarks)

Both runs train the same tiny Qwen2-VL for the same number of steps on the same
ClueWorld clips in this process, one with shuffled batches and one with
length-grouped batches (``training.batching``), so the ratio is measured in one run.
ClueWorld items differ in length only through their text (the video tokens are fixed),
so the expected gain is small -- it grows with the spread of lengths (real datasets
mix clip lengths and frame counts).  Throughput counts target+context tokens that are
not padding, per second of training-step wall time (``metrics.jsonl`` ``seconds``).
Packing is not implemented, so it has no row.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from cluenet.data import clueworld

WORLD = clueworld.WorldConfig(frames=10, size=64, objects=(2, 6), distractors=(0, 2))


def _run(split: Path, out: Path, grouped: bool, steps: int, batch: int) -> dict:
    from training import stage1
    from training.config import Stage1RunConfig, load_config
    from training.loop import read_metrics

    cfg = load_config(Stage1RunConfig, None, [
        "model.name_or_path=tiny:qwen2_vl", f"data.train_path={split}", "data.num_frames=10",
        f"train.output_dir={out}", f"train.max_steps={steps}", f"train.batch_size={batch}",
        f"train.save_every={10 * steps}", f"train.length_grouping={str(grouped).lower()}", "train.mega_batch=8",
        "optim.lr=5e-4", "optim.warmup_steps=0"])
    trainer = stage1.setup(cfg)
    trainer.setup()
    trainer.train(stop_after=steps)
    rows = read_metrics(out)[1:]  # the first step includes one-off start-up work
    tokens = sum(r.get("real_tokens", 0) for r in rows)
    seconds = sum(r["seconds"] for r in rows)
    return {"tokens_per_s": tokens / seconds, "seconds": seconds, "tokens": tokens}


def _store(split: Path) -> None:
    from cluenet import backbones
    from cluenet import tokenizer as tokmod
    from cluenet.data.jsonl import read_samples
    from training import data as tdata
    from training.common import STORE_DIR

    fam = backbones.get_family("qwen2_vl")
    tdata.VisionStore.build(split.parent / STORE_DIR, read_samples(split), lambda: fam.tiny_processor(tokmod.load()),
                            fam, tdata.ClueWorldFrames(WORLD))


def run(quick: bool) -> list[dict]:
    steps, batch, n = (8, 8, 64) if quick else (30, 8, 256)
    with tempfile.TemporaryDirectory() as tmp:
        split = clueworld.generate(Path(tmp) / "cw", n, 101, WORLD, write_video=False)
        _store(split)  # both runs read precomputed pixels: neither pays the processor inside its steps
        plain = _run(split, Path(tmp) / "plain", False, steps, batch)
        grouped = _run(split, Path(tmp) / "grouped", True, steps, batch)
    return [
        {"benchmark": "training", "metric": "stage-1 tokens/s on CPU (tiny Qwen2-VL, shuffled batches)",
         "value": round(plain["tokens_per_s"], 1), "note": f"{steps} steps x batch {batch}"},
        {"benchmark": "training", "metric": "length-grouping speed-up (tokens/s grouped / shuffled)",
         "value": round(grouped["tokens_per_s"] / plain["tokens_per_s"], 3),
         "note": "ClueWorld lengths vary only through the text"},
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.training", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    print(json.dumps(run(args.quick), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
