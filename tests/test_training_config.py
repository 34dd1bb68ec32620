"""Training config: YAML + dotted overrides, unknown keys, bad values, resolved config round trip,
and every shipped accelerate config parses with accelerate's own loader."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cluenet.errors import ConfigError
from training.config import (
    BaselineRunConfig,
    Stage1RunConfig,
    Stage2RunConfig,
    load_config,
    save_resolved,
)

ROOT = Path(__file__).resolve().parents[1]

YAML = """
model:
  name_or_path: Qwen/Qwen2.5-VL-3B-Instruct
  lora_r: 8
optim:
  lr: 1e-4          # PyYAML reads this as a string: coercion must make it a float
  schedule: linear
train:
  batch_size: 2
  mixed_precision: bf16
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_yaml_and_overrides(tmp_path):
    cfg = load_config(Stage1RunConfig, write(tmp_path, YAML), [
        "optim.lr=3e-5", "train.grad_accum=4", "model.lora_targets=[q_proj,v_proj]",
        "train.length_grouping=false", "loss.answer_weight=2"])
    assert cfg.model.name_or_path == "Qwen/Qwen2.5-VL-3B-Instruct" and cfg.model.lora_r == 8
    assert cfg.optim.lr == 3e-5 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.schedule == "linear"
    assert cfg.train.batch_size == 2 and cfg.train.grad_accum == 4 and cfg.train.mixed_precision == "bf16"
    assert cfg.model.lora_targets == ("q_proj", "v_proj")
    assert cfg.train.length_grouping is False
    assert cfg.loss.answer_weight == 2.0
    assert cfg.data.num_frames == 8  # untouched sections keep defaults
    assert load_config(Stage1RunConfig, write(tmp_path, YAML), []).optim.lr == 1e-4


def test_comma_list_override_and_defaults_without_file():
    cfg = load_config(Stage2RunConfig, None, ["model.lora_targets=q_proj, o_proj", "stage2.beta=0.5",
                                              "filter.tau_min=0.2"])
    assert cfg.model.lora_targets == ("q_proj", "o_proj")
    assert cfg.stage2.beta == 0.5 and cfg.filter.tau_min == 0.2
    assert load_config(BaselineRunConfig, None, ["kind=cot"]).kind == "cot"


def test_layer_head_pairs_stay_text_in_overrides_and_files(tmp_path):
    """YAML 1.1 reads 2:0 as the base-60 int 120; a config keeps it as the pair it is."""
    cfg = load_config(Stage1RunConfig, None, ["loss.grounding_weight=1", "loss.grounding_heads=2:0"])
    assert cfg.loss.grounding_heads == "2:0"
    f = tmp_path / "c.yaml"
    f.write_text("loss:\n  grounding_weight: 1\n  grounding_heads: 1:1\noptim:\n  lr: 3.0e-3\n")
    cfg = load_config(Stage1RunConfig, str(f), ["train.max_steps=12", "optim.weight_decay=1e-2"])
    assert (cfg.loss.grounding_heads, cfg.optim.lr, cfg.train.max_steps, cfg.optim.weight_decay) == ("1:1", 0.003, 12, 0.01)


def test_model_sizes_take_a_mapping_or_its_json_text():
    as_json = '{"temporal_patch": 16, "vision_hidden": 128}'
    for value in (as_json, f"'{as_json}'"):  # the shell ate the quotes, or kept them
        cfg = load_config(Stage1RunConfig, None, ["model.name_or_path=small:qwen2_vl", f"model.sizes={value}"])
        assert json.loads(cfg.model.sizes) == {"temporal_patch": 16, "vision_hidden": 128}
    with pytest.raises(ConfigError, match="sizes"):
        load_config(Stage1RunConfig, None, ["model.name_or_path=small:qwen2_vl", "model.sizes={temporal_patchh: 16}"])
    with pytest.raises(ConfigError, match="expected a string"):
        load_config(Stage1RunConfig, None, ["train.output_dir={a: 1}"])


@pytest.mark.parametrize("override,named,suggestion", [
    ("optim.lrr=1e-4", "optim.lrr", "optim.lr"),
    ("trian.batch_size=2", "trian", "train"),
    ("train.batch=2", "train.batch", "train.batch_size"),
])
def test_unknown_key_fails_naming_it(override, named, suggestion):
    with pytest.raises(ConfigError) as err:
        load_config(Stage1RunConfig, None, [override])
    msg = str(err.value)
    assert f"unknown config key '{named}'" in msg
    assert f"did you mean '{suggestion}'" in msg
    assert "allowed keys in" in msg


def test_unknown_key_in_yaml_lists_allowed_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.momentum'; allowed keys in optim: lr, "):
        load_config(Stage1RunConfig, write(tmp_path, "optim:\n  momentum: 0.9\n"), [])


@pytest.mark.parametrize("override,message", [
    ("optim.lr=-1", r"optim.lr: got -1.0, expected a finite float > 0"),
    ("optim.lr=abc", r"optim.lr: got 'abc', expected a number"),
    ("train.batch_size=0", r"train.batch_size: got 0, expected an int >= 1"),
    ("train.batch_size=2.5", r"train.batch_size: got 2.5, expected an int"),
    ("train.mixed_precision=fp8", r"train.mixed_precision: got 'fp8', expected one of \('no', 'bf16', 'fp16'\)"),
    ("train.resume=maybe", r"train.resume: got 'maybe', expected true or false"),
    ("model.finetune=qlora", r"model.finetune: got 'qlora', expected one of"),
    ("data.num_frames=1000", r"data.num_frames: got 1000, expected an int in \[1, 256\]"),
    ("data.option_style=last", r"data.option_style: got 'last', expected one of \('letter_first', 'letter_last'\)"),
    ("train.max_skip_fraction=1.5", r"train.max_skip_fraction: got 1.5, expected a float in \[0, 1\]"),
    ("optim=3", r"optim: got int, expected a mapping"),
    ("optim.lr", r"expected the form section.key=value"),
])
def test_bad_value_fails_naming_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Stage1RunConfig, None, [override])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(Stage1RunConfig, tmp_path / "missing.yaml", [])
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(Stage1RunConfig, write(tmp_path, "optim: [1,\n"), [])
    with pytest.raises(ConfigError, match="got a list at top level, expected a mapping"):
        load_config(Stage1RunConfig, write(tmp_path, "- 1\n"), [])


@pytest.mark.parametrize("cls,overrides", [
    (Stage1RunConfig, ["optim.lr=2e-4", "model.lora_targets=[q_proj]"]),
    (Stage2RunConfig, ["stage2.delta=0.3", "filter.m_max=4"]),
    (BaselineRunConfig, ["kind=cot", "train.output_dir=runs/cot"]),
])
def test_resolved_config_written_and_reloads_equal(tmp_path, cls, overrides):
    cfg = load_config(cls, None, overrides)
    path = save_resolved(cfg, tmp_path / "run")
    assert path == tmp_path / "run" / "config.yaml"
    assert path.read_text().startswith(f"# resolved {cls.__name__}")
    assert load_config(cls, path, []) == cfg


@pytest.mark.parametrize("path", sorted((ROOT / "training" / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_parse_and_say_how_to_run(path):
    from accelerate.commands.config.config_args import ClusterConfig

    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and "accelerate launch --config_file training/accelerate/" + path.name in first
    cfg = ClusterConfig.from_yaml_file(str(path))  # accelerate's own loader rejects unknown keys
    assert cfg.num_processes >= 2
    if path.stem.startswith("deepspeed"):
        ds = yaml.safe_load(path.read_text())["deepspeed_config"]
        assert ds["zero_stage"] == 2 or "deepspeed_config_file" in ds


def test_all_four_accelerate_configs_exist():
    names = {p.stem for p in (ROOT / "training" / "accelerate").glob("*.yaml")}
    assert {"ddp", "deepspeed_zero2", "fsdp", "cpu_2proc"} <= names


@pytest.mark.parametrize("freeze", [False, True])
def test_freeze_vision_fixes_only_the_vision_encoder(freeze):
    from cluenet import backbones
    from training.config import ModelConfig
    from training.model_build import build, count_parameters

    built = build(ModelConfig(name_or_path="tiny:qwen2_vl", finetune="full", freeze_vision=freeze))
    vision = set(map(id, backbones.get_family("qwen2_vl").vision_module(built.model).parameters()))
    trainable, total = count_parameters(built.model)
    for p in built.model.parameters():
        assert p.requires_grad == (not (freeze and id(p) in vision))
    assert (trainable < total) == freeze
