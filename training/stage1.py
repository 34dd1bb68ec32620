"""Stage 1 of ClueNet: decoupled supervision of clue extraction (E) and reasoning (R).

    python -m training.stage1 --config training/configs/stage1_clueworld.yaml [section.key=value ...]
    accelerate launch --config_file training/accelerate/cpu_2proc.yaml -m training.stage1 --config ...

Tasks (DESIGN.md "Stage 1"), mixed in one run, loss on target tokens only:

* E: prefix -> gold clues block;
* R: prefix + gold clues -> gold chain + answer.

Both tasks of a sample share one row (``training.data`` explains why this is exact):
L1 = w_E * L_E + w_R * L_R with the answer letter up-weighted by ``loss.answer_weight``, plus
``loss.grounding_weight`` x the clue grounding loss (``training.grounding``) when it is above 0,
plus ``loss.copy_weight`` x the loss of stage-0b copy rows (``training.text_pretrain``) when above 0.
The run resumes from the newest complete checkpoint in ``train.output_dir`` (unless
``train.resume=false``) and writes the model to ``<output_dir>/final`` (full weights for
a from-scratch model, a PEFT adapter for a real backbone) with a ``stage.json`` that
stage 2 checks.
"""
from __future__ import annotations

from typing import Any, Sequence

from cluenet.schema import Sample
from training import common
from training import data as tdata
from training.config import Stage1RunConfig, load_config
from training.grounding import ClueGrounder, grounded_loss
from training.loop import Trainer
from training.model_build import build, count_parameters
from training.text_pretrain import with_copy_rows

RECIPE = "stage1"


def make_rows(loss_cfg: Any, grounder: Any = None):
    """Row builder: one E+R row per sample (with clue grounding targets when ``grounder`` is given)."""

    def rows(tokenizer: Any, prefix_of: Any, sample: Sample) -> list[tdata.Row]:
        return [tdata.stage1_row(tokenizer, prefix_of("cluenet"), sample, loss_cfg, grounder)]

    return rows


def loss_fn(model: Any, batch: dict[str, Any]):
    """Weighted next-token loss of the batch (``common.weighted_lm_loss``)."""
    return common.weighted_lm_loss(common.lm_forward(model, batch).logits, batch)


def setup(cfg: Any, samples: Sequence[Sample] | None = None, rows=None, model_override: Any = None) -> Trainer:
    """Model, data and Trainer for a recipe config (shared by stage 1 and the baselines)."""
    samples = list(samples) if samples is not None else common.load_samples(cfg.data.train_path)
    built = build(cfg.model, seed=cfg.train.seed) if model_override is None else model_override
    frames = common.frame_source(cfg.data, samples, cfg.data.train_path)
    grounding = cfg.loss.grounding_weight > 0 and (rows is None or cfg.loss.grounding_letters)
    if rows is None and grounding:
        rows = make_rows(cfg.loss, ClueGrounder(built.processor, common.world_config(cfg.data.train_path)))
    dataset = tdata.RowDataset(samples, built.processor, built.family, frames, rows or make_rows(cfg.loss),
                               option_style=cfg.data.option_style)
    common.attach_store(dataset, cfg.data.train_path)
    lengths = tdata.token_lengths(dataset) if cfg.train.length_grouping else None
    loss = (grounded_loss(loss_fn, built.model, cfg.loss.grounding_weight, cfg.loss.grounding_heads,
                          cfg.loss.grounding_letter_heads, cfg.loss.grounding_letter_detach) if grounding else loss_fn)
    if cfg.loss.copy_weight > 0:
        loss = with_copy_rows(loss, built.processor.tokenizer, cfg.loss.copy_weight, cfg.loss.copy_rows, cfg.train.seed,
                              heads=cfg.loss.copy_heads, model=built.model, lookup_rows=cfg.loss.lookup_rows,
                              prev_on_task=cfg.loss.copy_prev_on_task, copy_ov=cfg.loss.copy_ov)
    trainer = Trainer(built.model, loss, dataset, train=cfg.train, optim=cfg.optim,
                      collate_fn=common.collator(built.processor), lengths=lengths, run_config=cfg,
                      num_workers=cfg.data.num_workers)
    trainer.built = built  # the recipe saves processor + family with the model
    return trainer


def finish(trainer: Trainer, cfg: Any, recipe: str, stage: int, extra: dict | None = None, filter_head=None,
           model=None) -> Any:
    """Save ``<output_dir>/final`` on the main process; returns its path."""
    from pathlib import Path

    acc = trainer.accelerator
    acc.wait_for_everyone()
    folder = Path(cfg.train.output_dir) / common.FINAL_DIR
    if acc.is_main_process:
        built = trainer.built
        net = model if model is not None else acc.unwrap_model(trainer.model)
        info = {"stage": stage, "recipe": recipe, "base": cfg.model.name_or_path, "family": built.family.name,
                "finetune": "full" if built.from_scratch else cfg.model.finetune, "num_frames": cfg.data.num_frames,
                "option_style": cfg.data.option_style, "steps": trainer.state.step, "updates": trainer.state.updates, "seed": cfg.train.seed,
                "train_path": cfg.data.train_path, **(extra or {})}
        common.save_output(net, built.processor, folder, info, filter_head=filter_head,
                           trained_on=f"{recipe} on {cfg.data.train_path} ({trainer.state.step} steps)")
    acc.wait_for_everyone()
    return folder


def run(cfg: Stage1RunConfig, samples: Sequence[Sample] | None = None) -> Trainer:
    """Train stage 1 to ``train.max_steps`` (resuming if possible) and save the output."""
    trainer = setup(cfg, samples)
    trainable, total = count_parameters(trainer.model)
    trainer.setup()
    if trainer.accelerator.is_main_process:
        print(f"stage 1: {len(trainer.train_data)} samples, {trainable:,}/{total:,} trainable parameters, "
              f"resumed from {trainer.resumed_from}")
    trainer.train()
    finish(trainer, cfg, RECIPE, stage=1)
    trainer.cleanup()
    return trainer


def main(argv: Sequence[str] | None = None) -> int:
    args = common.parse(argv, "python -m training.stage1", __doc__)
    run(load_config(Stage1RunConfig, args.config, args.overrides))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
