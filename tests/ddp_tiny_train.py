"""Tiny training run for the 2-process DDP test (tests/test_loop.py, integration tier).

    ACCELERATE_USE_CPU=true accelerate launch --config_file training/accelerate/cpu_2proc.yaml \
        tests/ddp_tiny_train.py OUT_DIR [--stop-after N]

Trains the tiny MLP of test_loop.py through ``training.loop.Trainer`` (resuming from
OUT_DIR's newest checkpoint if any) and writes ``OUT_DIR/result-rank<r>.json`` with
this process's logged losses, skipped-step count and a digest of its final weights.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from test_loop import TinyData, mse, tiny_model  # noqa: E402

from training.config import OptimConfig, Stage1RunConfig, TrainConfig  # noqa: E402
from training.loop import Trainer  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--stop-after", type=int, default=None)
    args = parser.parse_args(argv)
    cfg = Stage1RunConfig(
        train=TrainConfig(output_dir=args.out, seed=5, batch_size=3, grad_accum=2, max_steps=8, save_every=4,
                          keep_last=2, mega_batch=2, max_nonfinite=3, max_skip_fraction=0.2),
        optim=OptimConfig(lr=1e-2, warmup_steps=2))
    # item 7 is NaN (lands on one rank only), item 11 unreadable
    data = TinyData(26, nan_at={7}, none_at={11})
    trainer = Trainer(tiny_model(0), mse, data, train=cfg.train, optim=cfg.optim, run_config=cfg)
    trainer.setup()
    trainer.train(stop_after=args.stop_after)
    trainer.cleanup()
    acc = trainer.accelerator
    params = acc.unwrap_model(trainer.model).state_dict()
    digest = hashlib.sha256(b"".join(params[k].numpy().tobytes() for k in sorted(params))).hexdigest()
    result = {"losses": [r.loss for r in trainer.history], "skipped_steps": trainer.state.skipped_steps,
              "weights": digest, "resumed_from": str(trainer.resumed_from or ""),
              "rank": acc.process_index, "world": acc.num_processes}
    Path(args.out, f"result-rank{acc.process_index}.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
