"""Pieces every recipe shares: argument parsing, data loading, the weighted LM loss, stage outputs.

A stage's output folder (``<train.output_dir>/final``) is what the next stage and
``training.evaluate`` load::

    final/
      stage.json                     {"stage", "recipe", "base", "family", "finetune", "num_frames", ...}
      config.json, model.safetensors   from-scratch / full fine-tune: the whole model (ClueNet.save layout)
      tokenizer + processor files
      adapter/                         LoRA runs: the peft adapter (adapter_model.safetensors)
      filter_head.safetensors          stage 2: the trained filter head
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from cluenet import backbones
from cluenet.errors import ConfigError, ModelError
from cluenet.pretrained import ADAPTER_DIR, STAGE_FILE  # the output layout ClueNet.from_pretrained reads back
from cluenet.prompts import DEFAULT_OPTION_STYLE
from cluenet.schema import Sample
from training import data as tdata
from training.config import DataConfig, ModelConfig

FINAL_DIR = "final"


def parse(argv: Sequence[str] | None, prog: str, doc: str) -> argparse.Namespace:
    """``--config YAML`` plus dotted overrides ``section.key=value``."""
    p = argparse.ArgumentParser(prog=prog, description=(doc or "").splitlines()[0])
    p.add_argument("--config", required=True, help="YAML config (training/configs/*.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=1e-4 train.max_steps=200")
    return p.parse_args(argv)


def load_samples(path: str, what: str = "data.train_path") -> list[Sample]:
    """Samples of a JSONL file; ConfigError when the path is not set."""
    if not path:
        raise ConfigError(f"{what} is empty; set it to a JSONL file of samples")
    return tdata.read_any_samples(path)


def world_config(jsonl_path: str | Path) -> Any:
    """The WorldConfig a ClueWorld set was generated with (its meta file beside the JSONL), or None."""
    from cluenet.data import clueworld

    meta = Path(jsonl_path).parent / clueworld.META_NAME
    if not meta.is_file():
        return None
    c = json.loads(meta.read_text())["config"]
    return clueworld.WorldConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in c.items()})


def frame_source(cfg: DataConfig, samples: Sequence[Sample], train_path: str) -> tdata.FrameSource:
    """Re-render ClueWorld clips in memory (their config read from the set's meta file); decode anything else."""
    if samples and all(s.source == "clueworld" for s in samples):
        world = world_config(train_path)
        if world is not None and world.frames != cfg.num_frames:
            raise ConfigError(f"data.num_frames is {cfg.num_frames} but the ClueWorld clips have {world.frames} "
                              "frames; set data.num_frames to match")
        return tdata.ClueWorldFrames(world)
    return tdata.VideoFrames(num_frames=cfg.num_frames)


STORE_DIR = "vision_store"


def attach_store(dataset: tdata.RowDataset, train_path: str) -> None:
    """Use ``<folder of train_path>/vision_store`` (``data.VisionStore``) when it exists."""
    folder = Path(train_path).parent / STORE_DIR
    if (folder / tdata.VisionStore.INDEX).is_file():
        dataset.store = tdata.VisionStore(folder, dataset.processor)


def collator(processor: Any) -> tdata.Collator:
    tok = processor.tokenizer
    return tdata.Collator(tok.pad_token_id, getattr(processor, "video_token_id", None))


def weighted_lm_loss(logits: torch.Tensor, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy on target tokens, weighted per token, normalised by the number of target tokens.

    Normalising by the token count (not the weight sum) is what makes an answer
    weight > 1 raise the answer's share of the loss.  Metrics: the mean CE per group
    and the accuracy of the answer-letter predictions.
    """
    labels, weights = batch["labels"][:, 1:], batch["weights"][:, 1:]
    lg = logits[:, :-1].float()
    ce = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), labels.reshape(-1), reduction="none",
                         ignore_index=tdata.IGNORE_INDEX).view_as(labels)
    target = labels != tdata.IGNORE_INDEX
    n = target.sum().clamp(min=1)
    loss = (ce * weights).sum() / n
    metrics = {"target_tokens": float(n)}
    if "attention_mask" in batch:  # non-padding tokens: the throughput numerator of benchmarks.training
        metrics["real_tokens"] = float(batch["attention_mask"].sum())
    heavy = weights > weights[target].min() if target.any() else target
    if heavy.any():  # up-weighted tokens are the answer letters (when answer_weight > 1)
        metrics["answer_acc"] = float((lg.argmax(-1)[heavy] == labels[heavy]).float().mean())
    return loss, metrics


def lm_forward(model: torch.nn.Module, batch: dict[str, Any]) -> Any:
    return model(**tdata.model_inputs(batch), use_cache=False)


def write_stage(folder: Path, info: dict[str, Any]) -> None:
    (folder / STAGE_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def read_stage(folder: str | Path, expect_stage: int, model_cfg: ModelConfig, num_frames: int,
               option_style: str | None = None) -> dict[str, Any]:
    """Check that ``folder`` is a finished stage-``expect_stage`` output compatible with this run.

    Raises ConfigError naming what is missing or what differs."""
    folder = Path(folder)
    f = folder / STAGE_FILE
    if not folder.is_dir():
        raise ConfigError(f"stage-{expect_stage} output {folder} does not exist; run training.stage{expect_stage} first")
    if not f.is_file():
        raise ConfigError(f"{folder} has no {STAGE_FILE}: not a finished training.stage{expect_stage} output "
                          "(interrupted run? resume it to the end first)")
    info = json.loads(f.read_text())
    if info.get("stage") != expect_stage:
        raise ConfigError(f"{folder} is a stage-{info.get('stage')} ({info.get('recipe')}) output, expected stage {expect_stage}")
    if int(info.get("num_frames", -1)) != num_frames:
        raise ConfigError(f"stage-{expect_stage} output {folder} was trained with {info.get('num_frames')} frames, "
                          f"this run has data.num_frames={num_frames}")
    saved_style = info.get("option_style", DEFAULT_OPTION_STYLE)  # outputs from before the key existed
    if option_style is not None and saved_style != option_style:
        raise ConfigError(f"stage-{expect_stage} output {folder} was trained with data.option_style={saved_style}, "
                          f"this run has data.option_style={option_style}")
    if info.get("finetune") == "lora" and info.get("base") != model_cfg.name_or_path:
        raise ConfigError(f"stage-{expect_stage} adapter in {folder} was trained on {info.get('base')!r}, "
                          f"this run's model.name_or_path is {model_cfg.name_or_path!r}")
    return info


def save_output(model: torch.nn.Module, processor: Any, folder: Path, info: dict[str, Any],
                filter_head: Any = None, trained_on: str = "") -> Path:
    """Write a stage output (layout in the module docstring); returns the folder."""
    from cluenet.model import ClueNet

    folder.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    if info.get("finetune") == "lora":
        model.save_pretrained(str(folder / ADAPTER_DIR), safe_serialization=True)
        processor.save_pretrained(str(folder))
        if filter_head is not None:
            filter_head.save(folder / "filter_head.safetensors")
    else:
        net = ClueNet.from_components(model, processor, filter_head, trained_on=trained_on,
                                      num_frames=int(info["num_frames"]),
                                      option_style=info.get("option_style", DEFAULT_OPTION_STYLE))
        net.save(folder, trained_on=trained_on)
    write_stage(folder, info)
    return folder


def load_output(folder: str | Path, model_cfg: ModelConfig, trainable: bool = True) -> tuple[Any, Any, Any]:
    """(model, processor, family) from a stage output: the whole model, or base + adapter."""
    folder = Path(folder)
    info = json.loads((folder / STAGE_FILE).read_text())
    if info.get("finetune") == "lora":
        from peft import PeftModel

        base, processor, fam = backbones.load_pretrained(info["base"])
        model = PeftModel.from_pretrained(base, str(folder / ADAPTER_DIR), is_trainable=trainable)
        return model, processor, fam
    try:
        model, processor, fam = backbones.load_pretrained(str(folder), device="cpu", dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - report any load failure with the folder named
        raise ModelError(f"cannot load stage output {folder}: {exc}") from exc
    for p in model.parameters():
        p.requires_grad_(trainable)
    if trainable and model_cfg.freeze_vision:
        from training.model_build import freeze_vision

        freeze_vision(model)
    return model, processor, fam


def run_recipe(parser: Any, run: Any, argv: Sequence[str] | None = None) -> int:
    """A stage-0 recipe's ``main``: parse ``argv``, call ``run(args)`` and exit 0; bad input the
    user can fix (a ClueNetError) becomes one stderr line and exit status 2 (``cluenet.cli.run``)."""
    from cluenet.cli import run as run_cli

    def call(args: Any) -> int:
        run(args)
        return 0

    parser.set_defaults(func=call)
    return run_cli(parser, list(argv) if argv is not None else None)
