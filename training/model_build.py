"""Build the model a recipe trains: a from-scratch small model or a real backbone + LoRA.

``model.name_or_path`` selects it:

* ``tiny:<family>`` -- ``cluenet.backbones.tiny_model`` (text 128 x 2 layers; tests);
  ``tiny:clueworld`` means the primary family.
* ``small:<family>`` -- the same real transformers classes at the size of the
  shipped ClueWorld model (``SMALL_SIZES``: text 128 x 3 layers, vision 64 x 2; 0.9 M parameters: on 2 CPU
  cores it takes 2.3x more optimizer steps per hour than 256 x 4 / 128 x 4, and neither size had
  learned the grounded tokens after ~6k rows, so steps are what the hour must buy),
  random init, trained in full; ``model.vision_init`` and ``model.text_init`` start the vision
  tower and the language model from stage 0 (``training.vision_pretrain``, ``training.text_pretrain``).
* a hub name or a local folder -- ``cluenet.backbones.load_pretrained``
  (safetensors only, ``trust_remote_code`` off), then ``finetune``: ``lora``
  (peft adapter on the language model's attention), ``full`` or ``frozen``.

A folder written by ``ClueNet.save`` (a previous stage's output) loads the same way,
so stage 2 and the baselines start from any stage-1 output.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from cluenet import backbones
from cluenet import tokenizer as tokmod
from cluenet.errors import ConfigError
from training.config import ModelConfig

SMALL_SIZES = {"text_hidden": 128, "text_layers": 3, "text_heads": 4, "text_kv_heads": 2, "text_ffn": 384,
               "vision_hidden": 64, "vision_layers": 2, "vision_heads": 2, "temporal_patch": 2}
SMALL_ROPE_THETA = 1_000_000.0  # the real Qwen2-VL checkpoints' value
TINY_ALIAS = "clueworld"


@dataclass
class Built:
    """What a recipe gets: the (possibly PEFT-wrapped) model, its processor and family."""

    model: torch.nn.Module
    processor: Any
    family: backbones.Family
    from_scratch: bool


def _family_name(spec: str) -> str:
    name = spec.split(":", 1)[1] or TINY_ALIAS
    return backbones.PRIMARY if name == TINY_ALIAS else name


def parse_sizes(text: str) -> dict[str, int]:
    """``model.sizes`` / ``--sizes``: a JSON object of ``SMALL_SIZES`` overrides ("" for none);
    ConfigError names a bad key or value."""
    import json

    if not text:
        return {}
    try:
        sizes = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"sizes must be a JSON object of SMALL_SIZES overrides, got {text!r}: {exc}") from None
    if not isinstance(sizes, dict):
        raise ConfigError(f"sizes must be a JSON object of SMALL_SIZES overrides, got {text!r}")
    for key, value in sizes.items():
        if key not in SMALL_SIZES:
            raise ConfigError(f"sizes: unknown key {key!r}; known: {sorted(SMALL_SIZES)}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"sizes: {key} must be a positive integer, got {value!r}")
    return sizes


def small_config(family: str, tokenizer: Any, sizes: dict[str, int] | None = None) -> Any:
    """A from-scratch config of a real class at ``sizes`` (default ``SMALL_SIZES``), Qwen-VL families only."""
    s = {**SMALL_SIZES, **(sizes or {})}
    fam = backbones.get_family(family)
    if not family.startswith("qwen"):
        raise ConfigError(f"small:<family> supports the Qwen-VL families, got {family!r}; use tiny:{family}")
    cfg = fam.tiny_config(tokenizer)
    t = cfg.text_config
    head_dim = s["text_hidden"] // s["text_heads"]
    t.hidden_size, t.num_hidden_layers, t.intermediate_size = s["text_hidden"], s["text_layers"], s["text_ffn"]
    t.num_attention_heads, t.num_key_value_heads = s["text_heads"], s["text_kv_heads"]
    if getattr(t, "layer_types", None) is not None:  # one entry per layer, derived at construction
        t.layer_types = [t.layer_types[0]] * s["text_layers"]
    if hasattr(t, "max_window_layers"):
        t.max_window_layers = s["text_layers"]
    if hasattr(t, "head_dim"):
        t.head_dim = head_dim
    half = head_dim // 2  # mrope sections (temporal, height, width) split the rotary half-dimension
    # SMALL_ROPE_THETA, not the tiny configs' 1e4: with 16 rotary pairs a head, 1e4 leaves few position-free
    # dimensions for a lookup from the answer text into video tokens 100-300 positions back (docs/default-model-history.md)
    t.rope_parameters = {**t.rope_parameters, "rope_theta": SMALL_ROPE_THETA,
                         "mrope_section": [half // 2, half // 4, half - half // 2 - half // 4]}
    v = cfg.vision_config
    v.depth, v.num_heads, v.temporal_patch_size = s["vision_layers"], s["vision_heads"], s["temporal_patch"]
    if family == "qwen2_vl":
        v.embed_dim, v.hidden_size = s["vision_hidden"], s["text_hidden"]
    else:
        v.hidden_size, v.intermediate_size, v.out_hidden_size = s["vision_hidden"], 2 * s["vision_hidden"], s["text_hidden"]
        if hasattr(v, "fullatt_block_indexes"):
            v.fullatt_block_indexes = list(range(s["vision_layers"]))
    return cfg


def small_processor(fam: backbones.Family, tokenizer: Any, config: Any) -> Any:
    """The family's tiny processor, cutting clips into temporal patches of the model's size."""
    processor = fam.tiny_processor(tokenizer)
    tp = config.vision_config.temporal_patch_size
    for part in (processor.video_processor, processor.image_processor):
        part.temporal_patch_size = tp
    return processor


def build(cfg: ModelConfig, seed: int = 0) -> Built:
    """The model and processor for ``cfg`` (see the module docstring)."""
    spec = cfg.name_or_path
    if spec.startswith(("tiny:", "small:")):
        family = _family_name(spec)
        fam = backbones.get_family(family)
        tok = tokmod.load()
        torch.manual_seed(seed)
        if spec.startswith("tiny:"):
            model, processor = backbones.tiny_model(family, tok, seed=seed)
        else:
            config = small_config(family, tok, parse_sizes(cfg.sizes))
            model, processor = fam.model_cls()(config), small_processor(fam, tok, config)
        if cfg.vision_init:
            load_vision(model, fam, cfg.vision_init)
        if cfg.text_init:
            load_text(model, cfg.text_init)
        _set_trainable(model, cfg, from_scratch=True)
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return Built(model.train(), processor, fam, from_scratch=True)
    model, processor, fam = backbones.load_pretrained(spec)
    if cfg.finetune == "lora":
        model = add_lora(model, cfg, fam)
    else:
        _set_trainable(model, cfg, from_scratch=False)
    if cfg.gradient_checkpointing:  # non-reentrant: works with LoRA without forcing input grads
        backbones.unwrap(model).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return Built(model.train(), processor, fam, from_scratch=False)


def load_vision(model: torch.nn.Module, fam: backbones.Family, path: str) -> None:
    """Load a ``training.vision_pretrain`` output into the vision module; every key must match."""
    from pathlib import Path

    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise ConfigError(f"model.vision_init: no file {path}; write it with python -m training.vision_pretrain")
    visual = fam.vision_module(model)
    state = load_file(path)
    try:
        missing, unexpected = visual.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of another shape (another model size)
        raise ConfigError(f"model.vision_init {path} does not fit this model's vision module: {exc}") from exc
    if missing or unexpected:
        raise ConfigError(f"model.vision_init {path} does not fit this model's vision module: "
                          f"missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}")


def _text_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Everything but the vision module; a tied output head is the input embedding's tensor, so left out."""
    fam = backbones.family_of(model)
    visual = {id(p) for p in fam.vision_module(model).parameters()}
    seen: set[int] = set()
    out = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in visual or id(p) in seen:
            continue
        seen.add(id(p))
        out[name] = p.detach().contiguous()
    return out


def save_weights(tensors: dict[str, torch.Tensor], path: str) -> None:
    """Write ``tensors`` as safetensors to a temporary name, then rename: a run killed while
    saving leaves no half file at ``path``."""
    from pathlib import Path

    from safetensors.torch import save_file

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(tmp))
    tmp.replace(out)


def save_text(model: torch.nn.Module, path: str) -> None:
    """Write the language model's weights (``save_weights``), for ``load_text``."""
    save_weights(_text_state(model), path)


def load_text(model: torch.nn.Module, path: str) -> None:
    """Load ``save_text``'s output into ``model``'s language model; every key must match."""
    from pathlib import Path

    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise ConfigError(f"model.text_init: no file {path}; write it with python -m training.text_pretrain")
    want = _text_state(model)
    state = load_file(path)
    if set(state) != set(want) or any(state[k].shape != want[k].shape for k in want):
        raise ConfigError(f"model.text_init {path} does not fit this model's language model: "
                          f"missing {sorted(set(want) - set(state))[:3]}, unexpected {sorted(set(state) - set(want))[:3]}")
    with torch.no_grad():
        for k, v in state.items():
            want[k].copy_(v)


def add_lora(model: Any, cfg: ModelConfig, fam: backbones.Family) -> Any:
    """Wrap ``model`` in a peft LoRA on the language model's attention (``fam.lora_targets``)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=fam.lora_targets if tuple(cfg.lora_targets) == ModelConfig.lora_targets
                      else list(cfg.lora_targets))
    return get_peft_model(model, lora)


def _set_trainable(model: torch.nn.Module, cfg: ModelConfig, from_scratch: bool) -> None:
    """Full training for from-scratch models and ``finetune=full``; nothing for ``frozen``;
    ``freeze_vision`` then fixes the vision encoder."""
    train_all = from_scratch or cfg.finetune == "full"
    for p in model.parameters():
        p.requires_grad_(train_all)
    if cfg.freeze_vision:
        freeze_vision(model)


def freeze_vision(model: torch.nn.Module) -> None:
    """Stop gradients into the vision encoder (its merger/projector included)."""
    for p in backbones.family_of(model).vision_module(model).parameters():
        p.requires_grad_(False)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
