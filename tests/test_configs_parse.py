"""Every shipped recipe config parses into its recipe's config class and says how to run it."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from cluenet.errors import ConfigError
from training.config import BaselineRunConfig, Stage1RunConfig, Stage2RunConfig, load_config

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "training" / "configs").glob("*.yaml"))
RECIPES = {"training.stage1": Stage1RunConfig, "training.stage2": Stage2RunConfig,
           "training.baselines": BaselineRunConfig}


def test_there_are_configs_for_every_recipe_and_backbone():
    names = {p.stem for p in CONFIGS}
    for stem in ("stage1_clueworld", "stage2_clueworld", "direct_clueworld", "cot_clueworld",
                 "stage1_qwen2_5_vl_7b_nextqa", "stage1_qwen2_5_vl_3b_star", "stage1_llava_onevision_7b_nextqa"):
        assert stem in names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_parses_and_first_line_runs_it(path: Path):
    first = path.read_text().splitlines()[0]
    m = re.search(r"-m (training\.\w+) --config (\S+)", first)
    assert first.startswith("# ") and m, f"{path.name}: first line must be the command that runs it"
    assert m.group(2) == f"training/configs/{path.name}"
    cfg = load_config(RECIPES[m.group(1)], path)
    prefix = path.stem.split("_")[0]
    if isinstance(cfg, BaselineRunConfig):
        assert cfg.kind == prefix
    if isinstance(cfg, Stage2RunConfig):
        assert cfg.model.init_adapter.endswith("stage1/final")


def test_baseline_budget_equals_cluenet_budget():
    """Equal budget: a baseline's steps x batch = stage 1 + stage 2 of the same setup."""
    for path in CONFIGS:
        if not path.stem.startswith(("direct_", "cot_")):
            continue
        setup = path.stem.split("_", 1)[1]
        base = load_config(BaselineRunConfig, path)
        s1 = load_config(Stage1RunConfig, path.with_name(f"stage1_{setup}.yaml"))
        s2 = load_config(Stage2RunConfig, path.with_name(f"stage2_{setup}.yaml"))
        assert base.train.max_steps == s1.train.max_steps + s2.train.max_steps, path.name
        assert base.train.batch_size == s1.train.batch_size == s2.train.batch_size
        assert base.data.num_frames == s1.data.num_frames


def test_a_typo_in_a_recipe_config_is_refused_with_the_key_named(tmp_path: Path):
    from training import stage1

    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 1e-4\n  warmup_stpes: 3\n")
    with pytest.raises(ConfigError, match="warmup_stpes.*did you mean 'optim.warmup_steps'"):
        stage1.main(["--config", str(bad)])
