"""Baselines trained with the same code, data, frames and step budget as ClueNet.

    python -m training.baselines --config training/configs/direct_clueworld.yaml [section.key=value ...]
    python -m training.baselines --config training/configs/cot_clueworld.yaml

``kind: direct`` -- prefix(direct) -> ``<answer>X</answer>``;
``kind: cot``    -- prefix(cot) -> ``<chain>...</chain>`` + answer (no clues block).

Both see the same video, question and options as ClueNet (only the system prompt's
instruction line differs, ``cluenet.prompts``).  Equal budget means the same number of
optimizer steps x batch size as ClueNet's stage 1 + stage 2 -- the configs say so.
The output folder (``<output_dir>/final``) is loaded by ``training.evaluate --mode
direct|cot``.
"""
from __future__ import annotations

from typing import Any, Sequence

from cluenet.schema import Sample
from training import common
from training import data as tdata
from training.config import BaselineRunConfig, load_config
from training.loop import Trainer
from training.model_build import count_parameters
from training.stage1 import finish, setup

RECIPE = "baseline"


def make_rows(cfg: BaselineRunConfig):
    def rows(tokenizer: Any, prefix_of: Any, sample: Sample) -> list[tdata.Row]:
        return [tdata.baseline_row(tokenizer, prefix_of(cfg.kind), sample, cfg.kind, cfg.loss)]

    return rows


def run(cfg: BaselineRunConfig, samples: Sequence[Sample] | None = None) -> Trainer:
    """Train a ``direct`` or ``cot`` baseline and save ``<output_dir>/final``."""
    trainer = setup(cfg, samples, rows=make_rows(cfg))
    trainer.setup()
    if trainer.accelerator.is_main_process:
        print(f"baseline {cfg.kind}: {len(trainer.train_data)} samples, "
              f"{count_parameters(trainer.model)[0]:,} trainable parameters, resumed from {trainer.resumed_from}")
    trainer.train()
    finish(trainer, cfg, f"{RECIPE}-{cfg.kind}", stage=0, extra={"kind": cfg.kind})
    trainer.cleanup()
    return trainer


def main(argv: Sequence[str] | None = None) -> int:
    args = common.parse(argv, "python -m training.baselines", __doc__)
    run(load_config(BaselineRunConfig, args.config, args.overrides))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
