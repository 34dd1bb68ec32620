"""Where a ClueNet's weights come from and go to: the saved folder and the default model.

``ClueNet.from_pretrained`` and ``ClueNet.save`` (``cluenet.model``) are thin wrappers
over ``load`` and ``save`` here.  This is kept apart from the pipeline because it is
about files, not inference: the folder layout, the embedded default (``assets/model/``
when a trained model is shipped, else a tiny random Qwen2.5-VL that says so in
``ModelInfo.trained_on``), PEFT adapters, dtype names and the ``ModelInfo`` a trace
records about the weights.  The pipeline never reads these files after construction.

A saved folder (written by ``save``, read by ``load``)::

    folder/
      config.json, model.safetensors      the backbone (adapter merged if any)
      tokenizer.json, tokenizer_config.json, chat_template.jinja, processor_config.json ...
      filter_head.safetensors              when the pipeline has a filter head
      cluenet.json                         {"backbone", "trained_on", "num_frames", "option_style"}

``load`` also reads a LoRA output of the training recipes (``training/common.py``): a folder
with ``stage.json`` (``"finetune": "lora"``, the ``"base"`` model's name) and the PEFT
adapter in ``adapter/``; the base loads by its name and the adapter goes on top.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import backbones
from .errors import InputError, ModelError
from .filter import FilterHead
from .prompts import DEFAULT_OPTION_STYLE, OPTION_STYLES
from .schema import ModelInfo

DEFAULT_SEED = 0  # weights of the tiny random default model
RANDOM_TRAINED_ON = "nothing: random weights (no trained model shipped yet)"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "model"
CONFIG_FILE = "cluenet.json"
HEAD_FILE = "filter_head.safetensors"
STAGE_FILE = "stage.json"  # written by the training recipes next to their output
ADAPTER_DIR = "adapter"  # a LoRA output's PEFT folder


@dataclass
class Loaded:
    """What a ``ClueNet`` is built from."""

    model: Any
    processor: Any
    filter_head: FilterHead | None
    info: ModelInfo
    num_frames: int | None  # as saved in cluenet.json; None: not saved, the pipeline's default applies
    option_style: str = DEFAULT_OPTION_STYLE  # how its prompts letter the options (cluenet.prompts)


def load(model: str | Path | None = None, adapter: str | None = None, filter_head: str | None = None,
         device: str | None = None, dtype: Any = None, trust_remote_code: bool = False) -> Loaded:
    """Load a model by hub name or folder; ``None`` means the embedded default.

    The default is ``assets/model/`` when it exists (a trained ClueWorld model), else
    ``random_default``.  ``adapter`` is a PEFT folder (safetensors); ``filter_head`` a
    ``FilterHead`` safetensors file (default: the folder's ``filter_head.safetensors``
    if present).
    """
    if model is None and not (DEFAULT_MODEL_DIR / "config.json").is_file():
        return random_default(device)
    path = str(model if model is not None else DEFAULT_MODEL_DIR)
    stage = _lora_output(Path(path)) if adapter is None else None
    if stage is not None:  # a training LoRA output: its base model, its adapter, its head and settings
        folder = Path(path)
        path, adapter = str(stage["base"]), str(folder / ADAPTER_DIR)
        if filter_head is None and (folder / HEAD_FILE).is_file():
            filter_head = str(folder / HEAD_FILE)
    net, proc, fam = backbones.load_pretrained(path, device, _dtype(dtype), trust_remote_code)
    meta = _read_meta(path) if stage is None else {**stage, "trained_on": _stage_trained_on(stage)}
    if adapter:
        net = _load_adapter(net, adapter)
    head_path = filter_head or (str(Path(path) / HEAD_FILE) if (Path(path) / HEAD_FILE).is_file() else None)
    head = FilterHead.load(head_path, int(net.config.get_text_config().hidden_size)) if head_path else None
    info = model_info(net, str(model if model is not None else "assets/model"), str(meta.get("trained_on", "")),
                      filter_head=head_path or "", adapter=adapter or "")
    num_frames = int(meta["num_frames"]) if "num_frames" in meta else None
    style = str(meta.get("option_style", DEFAULT_OPTION_STYLE))
    if style not in OPTION_STYLES:
        raise ModelError(f"{Path(path) / CONFIG_FILE}: option_style must be one of {OPTION_STYLES}, got {style!r}")
    return Loaded(net, proc, head, info, num_frames, style)


def _lora_output(folder: Path) -> dict[str, Any] | None:
    """The ``stage.json`` of a training LoRA output, else None (a plain model folder or a hub name)."""
    f = folder / STAGE_FILE
    if not f.is_file():
        return None
    try:
        info = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{f} is not readable JSON: {exc}") from exc
    if not isinstance(info, dict) or info.get("finetune") != "lora":
        return None
    if not info.get("base"):
        raise ModelError(f"{f}: a LoRA output that does not name its base model")
    return info


def _stage_trained_on(stage: dict[str, Any]) -> str:
    return f"{stage.get('recipe', 'training')} LoRA on {stage['base']} ({stage.get('steps', '?')} steps)"


def random_default(device: str | None) -> Loaded:
    """A tiny random Qwen2.5-VL with the shipped tokenizer and a random filter head
    (fixed seed), for when no trained model is shipped."""
    net, proc = backbones.tiny_model(backbones.PRIMARY, seed=DEFAULT_SEED)
    net = net.to(device or "cpu")
    torch.manual_seed(DEFAULT_SEED)
    head = FilterHead(int(net.config.get_text_config().hidden_size)).eval()
    info = model_info(net, f"tiny-random-{backbones.PRIMARY}", RANDOM_TRAINED_ON, filter_head="in-memory")
    return Loaded(net, proc, head, info, None)


def model_info(model: Any, name: str, trained_on: str, filter_head: str = "", adapter: str = "") -> ModelInfo:
    """The ModelInfo of a model: ``filter_head`` names the head's file ("in-memory" for one built
    in memory; empty: none, training-free mode), ``adapter`` the PEFT folder if any."""
    p = next(model.parameters())
    return ModelInfo(
        name=name, backbone=backbones.family_of(model).name, adapter=adapter, filter_head=filter_head,
        device=str(p.device), dtype=str(p.dtype).replace("torch.", ""),
        attn_implementation=str(getattr(backbones.unwrap(model).config, "_attn_implementation", "") or ""),
        trained_on=trained_on, mode="cluenet" if filter_head else "training-free",
    )


def save(folder: str | Path, model: Any, processor: Any, filter_head: FilterHead | None, backbone: str,
         trained_on: str, num_frames: int, option_style: str = DEFAULT_OPTION_STYLE) -> Path:
    """Write the folder ``load`` reads back (layout in the module docstring); returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    net = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    net.save_pretrained(str(folder), safe_serialization=True)
    processor.save_pretrained(str(folder))
    if filter_head is not None:
        filter_head.save(folder / HEAD_FILE)
    meta = {"backbone": backbone, "trained_on": trained_on, "num_frames": num_frames, "option_style": option_style}
    (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    return folder


def _dtype(dtype: Any):
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return getattr(torch, str(dtype))
    except AttributeError:
        raise InputError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16") from None


def _read_meta(path: str) -> dict:
    f = Path(path) / CONFIG_FILE
    if not f.is_file():
        return {}
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{f} is not valid JSON: {exc}") from exc


def _load_adapter(model: Any, adapter: str) -> Any:
    from peft import PeftModel

    if not (Path(adapter) / "adapter_model.safetensors").is_file():
        raise ModelError(f"no adapter_model.safetensors in {adapter}")
    return PeftModel.from_pretrained(model, adapter, is_trainable=False).eval()
