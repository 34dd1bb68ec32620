"""Training configuration: nested frozen dataclasses + YAML + dotted CLI overrides.

Run config files the way every recipe does::

    python -m training.stage1 --config training/configs/stage1_clueworld.yaml optim.lr=1e-4 train.max_steps=200

How a config is resolved (``load_config``):

1. the YAML file is read (``yaml.safe_load``, less YAML 1.1's base-60 numbers) into a nested mapping;
2. each override ``a.b=value`` replaces one leaf (the value is parsed as YAML, so
   ``[q_proj,v_proj]``, ``true`` and ``null`` work);
3. the mapping is turned into the dataclass tree: every key must be a field
   (unknown keys raise ``ConfigError`` naming the dotted key, the allowed keys and
   the nearest match), every value is coerced to the field's annotated type (PyYAML
   reads ``1e-4`` as a string, so coercion is needed, not cosmetic);
4. each dataclass checks its values in ``__post_init__`` and raises ``ConfigError``
   with the dotted-free field name, what was got and what is allowed.

``save_resolved(cfg, run_dir)`` writes the fully resolved tree to
``run_dir/config.yaml``; loading that file with no overrides gives an equal config.

The sections are shared by the recipes: stage 1 (decoupled E/R supervision), stage 2
(filtered self-generated clues + filter head) and the ``direct`` / ``cot`` baselines
(DESIGN.md). Fields a recipe does not use keep their defaults.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from cluenet.errors import ConfigError
from cluenet.prompts import DEFAULT_OPTION_STYLE, OPTION_STYLES

CONFIG_FILENAME = "config.yaml"
FINETUNE_MODES = ("lora", "full", "frozen")
SCHEDULES = ("cosine", "linear", "constant")
MIXED_PRECISION = ("no", "bf16", "fp16")
BASELINES = ("direct", "cot")
MAX_FRAMES = 256  # beyond this a clip does not fit any supported backbone's context
MAX_LORA_RANK = 1024

T = TypeVar("T")


def _require(ok: bool, name: str, got: Any, expected: str) -> None:
    """Raise ``ConfigError`` "name: got X, expected Y" unless ``ok``."""
    if not ok:
        raise ConfigError(f"{name}: got {got!r}, expected {expected}")


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


# ----------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class ModelConfig:
    """Which backbone to train and which of its weights train.

    ``name_or_path`` is a Hugging Face name, a local folder, or ``tiny:<spec>`` for a
    tiny config of the real classes built in code (tests, the ClueWorld default model).
    ``finetune``: ``lora`` (PEFT adapter on ``lora_targets``), ``full`` (all weights) or
    ``frozen`` (only extra heads such as the clue filter train).
    """

    name_or_path: str = "tiny:clueworld"
    finetune: str = "lora"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    init_adapter: str = ""  # stage 2 starts from the stage-1 adapter folder
    gradient_checkpointing: bool = False
    attn_implementation: str = "auto"  # auto: flash_attention_2 on GPU when importable, else sdpa
    # Keep the vision encoder's weights as they are (pretrained, or a from-scratch model's random
    # init; the merger/projector included).  From scratch, a trained tower lost the clip's colours
    # within a few hundred steps while the language model still ignored it; frozen random features
    # kept them (docs/default-model-history.md).  LoRA never touches the vision encoder anyway.  Checkpoints
    # hold trainable weights only: a resumed from-scratch run rebuilds the frozen tower from its seed.
    freeze_vision: bool = False
    # A vision.safetensors written by ``python -m training.vision_pretrain`` (stage 0 of the
    # from-scratch ClueWorld model): loaded into the vision module before training starts.
    vision_init: str = ""
    # A text.safetensors written by ``python -m training.text_pretrain`` (stage 0b: a language
    # model with an induction circuit): loaded into everything but the vision module.
    text_init: str = ""
    # ``small:<family>`` only: a JSON object of ``training.model_build.SMALL_SIZES`` overrides, e.g.
    # '{"temporal_patch": 16, "vision_hidden": 128}' (a tower that sees the whole 16-frame clip at once)
    sizes: str = ""

    def __post_init__(self) -> None:
        _require(bool(self.name_or_path.strip()), "name_or_path", self.name_or_path,
                 "a model name, a folder or tiny:<spec>")
        _require(self.finetune in FINETUNE_MODES, "finetune", self.finetune, f"one of {FINETUNE_MODES}")
        _require(1 <= self.lora_r <= MAX_LORA_RANK, "lora_r", self.lora_r, f"an int in [1, {MAX_LORA_RANK}]")
        _require(_finite(self.lora_alpha) and self.lora_alpha > 0, "lora_alpha", self.lora_alpha, "> 0")
        _require(0.0 <= self.lora_dropout < 1.0, "lora_dropout", self.lora_dropout, "a float in [0, 1)")
        _require(not self.vision_init or self.vision_init.endswith(".safetensors"), "vision_init", self.vision_init,
                 "empty or a .safetensors file from python -m training.vision_pretrain")
        _require(not self.text_init or self.text_init.endswith(".safetensors"), "text_init", self.text_init,
                 "empty or a .safetensors file from python -m training.text_pretrain")
        _require(self.finetune != "lora" or len(self.lora_targets) > 0, "lora_targets", self.lora_targets,
                 "at least one module name when finetune=lora")
        _require(not self.sizes or self.name_or_path.startswith("small:"), "sizes", self.sizes,
                 "empty unless name_or_path is small:<family>")
        if self.sizes:
            from training.model_build import parse_sizes  # here: model_build imports this module (and torch)

            parse_sizes(self.sizes)


@dataclass(frozen=True)
class DataConfig:
    """Where the samples are and how clips become model input."""

    train_path: str = ""
    eval_path: str = ""
    self_clues_path: str = ""  # stage 2: cached JSONL of the stage-1 model's own clues
    num_frames: int = 8
    max_clip_seconds: float = 600.0
    num_workers: int = 0
    option_style: str = DEFAULT_OPTION_STYLE  # cluenet.prompts.OPTION_STYLES; letter_last for the small ClueWorld model

    def __post_init__(self) -> None:
        _require(self.option_style in OPTION_STYLES, "option_style", self.option_style, f"one of {OPTION_STYLES}")
        _require(1 <= self.num_frames <= MAX_FRAMES, "num_frames", self.num_frames, f"an int in [1, {MAX_FRAMES}]")
        _require(_finite(self.max_clip_seconds) and self.max_clip_seconds > 0, "max_clip_seconds",
                 self.max_clip_seconds, "> 0")
        _require(self.num_workers >= 0, "num_workers", self.num_workers, ">= 0")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW + warmup + schedule. ``warmup_steps`` and ``max_grad_norm`` count optimizer steps / L2 norm."""

    lr: float = 1e-4
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    schedule: str = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # cosine/linear decay ends at lr * min_lr_ratio
    max_grad_norm: float = 1.0  # 0 disables clipping

    def __post_init__(self) -> None:
        _require(_finite(self.lr) and self.lr > 0, "lr", self.lr, "a finite float > 0")
        _require(_finite(self.weight_decay) and self.weight_decay >= 0, "weight_decay", self.weight_decay, ">= 0")
        _require(0.0 <= self.beta1 < 1.0, "beta1", self.beta1, "a float in [0, 1)")
        _require(0.0 <= self.beta2 < 1.0, "beta2", self.beta2, "a float in [0, 1)")
        _require(_finite(self.eps) and self.eps > 0, "eps", self.eps, "> 0")
        _require(self.schedule in SCHEDULES, "schedule", self.schedule, f"one of {SCHEDULES}")
        _require(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, ">= 0")
        _require(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio", self.min_lr_ratio, "a float in [0, 1]")
        _require(_finite(self.max_grad_norm) and self.max_grad_norm >= 0, "max_grad_norm",
                 self.max_grad_norm, ">= 0 (0 disables clipping)")


@dataclass(frozen=True)
class TrainConfig:
    """The loop: batch shape, length, checkpoints, robustness limits, precision.

    ``batch_size`` is per process; one optimizer step sees
    ``batch_size * grad_accum * num_processes`` samples. ``max_nonfinite`` is K: that
    many optimizer steps in a row with a NaN/inf loss or gradient abort the run.
    ``max_skip_fraction``: the run aborts once more than this fraction of the training
    set's distinct samples turned out unreadable.
    """

    output_dir: str = "runs/default"
    seed: int = 0
    batch_size: int = 8
    grad_accum: int = 1
    max_steps: int = 1000
    save_every: int = 500
    keep_last: int = 3
    eval_every: int = 0  # 0: no periodic evaluation
    log_every: int = 1
    max_nonfinite: int = 5
    max_skip_fraction: float = 0.05
    mixed_precision: str = "no"
    length_grouping: bool = True
    mega_batch: int = 50  # batches per length-sorted group
    resume: bool = True

    def __post_init__(self) -> None:
        _require(bool(self.output_dir), "output_dir", self.output_dir, "a non-empty path")
        _require(self.seed >= 0, "seed", self.seed, ">= 0")
        for name in ("batch_size", "grad_accum", "max_steps", "save_every", "keep_last", "log_every",
                     "max_nonfinite", "mega_batch"):
            _require(getattr(self, name) >= 1, name, getattr(self, name), "an int >= 1")
        _require(self.eval_every >= 0, "eval_every", self.eval_every, ">= 0 (0 disables)")
        _require(0.0 <= self.max_skip_fraction <= 1.0, "max_skip_fraction", self.max_skip_fraction,
                 "a float in [0, 1]")
        _require(self.mixed_precision in MIXED_PRECISION, "mixed_precision", self.mixed_precision,
                 f"one of {MIXED_PRECISION}")


@dataclass(frozen=True)
class LossConfig:
    """Stage 1 / baselines loss: ``L = w_E * L_E + w_R * L_R`` with answer tokens up-weighted,
    plus ``grounding_weight`` x the clue grounding loss of ``grounding_heads`` (``training.grounding``;
    0, the default, turns it off).  Stage 1 only: the baselines have no clues to ground and stage 2 does
    not apply it yet, so both ignore it (one set of overrides can serve every run).
    ``grounding_letters`` also grounds the decisive letters (``training.grounding.letter_targets``:
    the chain's closing letter on the right option's own words and letter in the prompt, the
    answer's on those and the chain's letter), as a term of its own on ``grounding_letter_heads``,
    in stage 1 and in the baselines alike, since both write them; ``grounding_letter_target="letter"``
    narrows the chain letter's targets to the option's letter (for an induction head), and
    ``grounding_letter_detach`` keeps that term from rewiring the layers below its heads (measured:
    without it the term turned the previous-token head at the options' letters onto the letter itself).

    ``copy_weight`` x the loss of ``copy_rows`` stage-0b copy rows a step (``training.text_pretrain.with_copy_rows``;
    0, the default, turns it off) trains an induction circuit alongside the task, in stage 1 and the
    baselines alike (stage 2 ignores it).  ``copy_heads`` ("" off; e.g. "1:2,2:2") also supervises
    where two heads look on those rows: the first on the previous token, the second (a later layer)
    on the token to copy (``training.text_pretrain.copy_attention_targets``); ``lookup_rows`` more
    rows a step are shaped like an option lookup (``training.text_pretrain.lookup_batch``)."""

    answer_weight: float = 1.0
    extraction_weight: float = 1.0
    reasoning_weight: float = 1.0
    grounding_weight: float = 0.0
    grounding_heads: str = "1:0,2:0"
    grounding_letters: bool = False
    grounding_letter_heads: str = ""  # the heads the letters' targets supervise ("": grounding_heads)
    grounding_letter_target: str = "option"  # the chain letter's targets: the option's words and letter, or "letter"
    grounding_letter_detach: bool = False  # the letters' term trains its heads' query/key projections only
    copy_weight: float = 0.0
    copy_rows: int = 8
    copy_heads: str = ""  # previous-token head, induction head ("": attention not supervised)
    lookup_rows: int = 0  # more copy rows a step shaped like an option lookup (text_pretrain.lookup_batch)
    copy_prev_on_task: bool = False  # with copy_heads: the previous-token head supervised on the task's rows too
    copy_ov: bool = False  # with copy_heads: the induction head's own output trained to predict what it copies

    def __post_init__(self) -> None:
        for name in ("answer_weight", "extraction_weight", "reasoning_weight", "grounding_weight", "copy_weight"):
            v = getattr(self, name)
            _require(_finite(v) and v >= 0, name, v, "a finite float >= 0")
        _require(self.copy_rows >= 1, "copy_rows", self.copy_rows, "an int >= 1")
        _require(self.lookup_rows >= 0, "lookup_rows", self.lookup_rows, "an int >= 0")
        _require(self.grounding_letter_target in ("option", "letter"), "grounding_letter_target",
                 self.grounding_letter_target, "'option' or 'letter'")
        if self.copy_weight > 0 and self.copy_heads:
            from training.text_pretrain import copy_heads

            copy_heads(self.copy_heads)
        if self.grounding_weight > 0:
            from training.grounding import parse_heads

            parse_heads(self.grounding_heads)
            if self.grounding_letters and self.grounding_letter_heads:
                parse_heads(self.grounding_letter_heads)


@dataclass(frozen=True)
class FilterConfig:
    """The adaptive clue filter head and its keep rule (DESIGN.md, inference step 3)."""

    hidden: int = 256
    dropout: float = 0.0
    tau_min: float = 0.3
    rho: float = 0.5
    m_max: int = 8

    def __post_init__(self) -> None:
        _require(self.hidden >= 1, "hidden", self.hidden, "an int >= 1")
        _require(0.0 <= self.dropout < 1.0, "dropout", self.dropout, "a float in [0, 1)")
        _require(0.0 <= self.tau_min <= 1.0, "tau_min", self.tau_min, "a float in [0, 1]")
        _require(0.0 <= self.rho <= 1.0, "rho", self.rho, "a float in [0, 1]")
        _require(self.m_max >= 1, "m_max", self.m_max, "an int >= 1")


@dataclass(frozen=True)
class Stage2Config:
    """Stage 2 loss ``L2 = L_R(filtered) + beta * L_filter + gamma * L_E`` and the utility label.

    ``delta``: a self-generated clue is useful when leaving it out lowers log p(a*)
    by more than ``delta`` (leave-one-out on the stage-1 model).  ``filter_lr``: learning
    rate of the filter head, which starts from scratch while the backbone continues from
    stage 1 (0: ``optim.lr``, one rate for both); the schedule scales it like ``optim.lr``.
    """

    beta: float = 1.0
    gamma: float = 0.1
    delta: float = 0.1
    filter_lr: float = 0.0

    def __post_init__(self) -> None:
        for name in ("beta", "gamma", "delta", "filter_lr"):
            v = getattr(self, name)
            _require(_finite(v) and v >= 0, name, v, "a finite float >= 0")


# ----------------------------------------------------------------------------- recipes
@dataclass(frozen=True)
class Stage1RunConfig:
    """Stage 1: decoupled E (prefix -> clues) and R (prefix + gold clues -> chain + answer)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)


@dataclass(frozen=True)
class Stage2RunConfig:
    """Stage 2: filter head (BCE) + R on filtered self-generated clues + replay of E."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    stage2: Stage2Config = field(default_factory=Stage2Config)


@dataclass(frozen=True)
class BaselineRunConfig:
    """Baselines with the same data, frames and budget: ``direct`` or ``cot``."""

    kind: str = "direct"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        _require(self.kind in BASELINES, "kind", self.kind, f"one of {BASELINES}")


# ----------------------------------------------------------------------------- loading
def load_config(cls: type[T], yaml_path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build a ``cls`` config from a YAML file (optional) and dotted overrides.

    Args:
        cls: a config dataclass, e.g. ``Stage1RunConfig``.
        yaml_path: a YAML mapping; ``None`` starts from the defaults.
        overrides: ``["optim.lr=1e-4", "model.lora_targets=[q_proj,v_proj]"]``.

    Raises:
        ConfigError: unreadable file, unknown key (named, with the allowed keys),
            value of the wrong type or out of range (field named).
    """
    data = _read_yaml(yaml_path) if yaml_path is not None else {}
    for item in overrides or []:
        _apply_override(data, item)
    return from_dict(cls, data)


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Turn a nested mapping into the dataclass ``cls``, coercing leaf values to field types."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: got {type(data).__name__}, expected a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(_unknown_key_message(dotted, str(key), list(fields), prefix))
        kwargs[key] = _coerce(value, hints[key], dotted)
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # __post_init__ names the field; add its section
        raise ConfigError(f"{prefix}{exc}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) of a config, ready for YAML/JSON."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def save_resolved(cfg: Any, run_dir: str | Path) -> Path:
    """Write the resolved config to ``run_dir/config.yaml`` (creating ``run_dir``); return the path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CONFIG_FILENAME
    header = f"# resolved {type(cfg).__name__}; reload with training.config.load_config\n"
    path.write_text(header + yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
    return path


def _read_yaml(path: str | Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    try:
        data = _yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: got a {type(data).__name__} at top level, expected a mapping")
    return data


def _apply_override(data: dict[str, Any], item: str) -> None:
    """Set ``data[a][b] = value`` for ``item == "a.b=value"``; key validity is checked later."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r}: expected the form section.key=value, e.g. optim.lr=1e-4")
    try:
        value = _yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # leave it to type coercion to accept or reject
    *parents, leaf = key.split(".")
    node = data
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {'.'.join(parents[:i + 1])} is a value, not a section")
        node = child
    node[leaf] = value


def _unknown_key_message(dotted: str, key: str, allowed: list[str], prefix: str) -> str:
    where = prefix.rstrip(".") or "the top level"
    msg = f"unknown config key {dotted!r}; allowed keys in {where}: {', '.join(allowed)}"
    # a prefix ("batch" -> "batch_size") beats difflib's ratio, which prefers "mega_batch"
    close = [a for a in allowed if a.startswith(key)][:1] or difflib.get_close_matches(key, allowed, n=1)
    return msg + (f" (did you mean {prefix + close[0]!r}?)" if close else "")


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Coerce a YAML/CLI value to the annotated field type ``tp`` or raise ``ConfigError``."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, prefix=f"{name}.")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], name)
    if origin is tuple:
        return _coerce_tuple(value, typing.get_args(tp), name)
    if name in JSON_TEXT_FIELDS and isinstance(value, dict):  # model.sizes={"temporal_patch": 16} unquoted
        return json.dumps(value)
    scalar = _SCALARS.get(tp)
    if scalar is None:
        raise ConfigError(f"{name}: unsupported field type {tp!r}")  # a bug in a config class
    return scalar(value, name)


def _coerce_tuple(value: Any, args: tuple[Any, ...], name: str) -> tuple[Any, ...]:
    if isinstance(value, str):  # "q_proj,v_proj" from the command line
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{name}: got {value!r}, expected a list")
    item_tp = args[0] if args else str
    return tuple(_coerce(v, item_tp, f"{name}[{i}]") for i, v in enumerate(value))


def _to_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return value.lower() in ("true", "yes", "on", "1")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ConfigError(f"{name}: got {value!r}, expected true or false")


def _to_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{name}: got {value!r}, expected an int")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ConfigError(f"{name}: got {value!r}, expected an int")


def _to_float(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{name}: got {value!r}, expected a number")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())  # PyYAML reads 1e-4 (no dot) as a string
        except ValueError:
            pass
    raise ConfigError(f"{name}: got {value!r}, expected a number")


def _to_str(value: Any, name: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list, tuple)):
        raise ConfigError(f"{name}: got {value!r}, expected a string")
    return str(value)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader without YAML 1.1's base-60 numbers: ``2:0`` (a layer:head pair) is the
    text "2:0", not the int 120."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(
    r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"), list("-+0123456789"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(
    r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"), list("-+0123456789."))


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 -- a SafeLoader subclass


_SCALARS = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}
# string fields that hold a JSON object: a mapping written in YAML or on the command line is taken as one
JSON_TEXT_FIELDS = {"model.sizes"}
