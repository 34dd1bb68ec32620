"""training.ship: copies only model files, refuses oversize or unevaluated runs, writes the card."""
import json

import pytest

from cluenet.errors import ConfigError
from training.ship import results_table, ship


def _eval(acc, f1=None):
    return {"n_samples": 10, "accuracy": acc, "by_qtype": {"CW": {"n": 6, "correct": 3, "accuracy": 0.5},
                                                            "DO": {"n": 4, "correct": 4, "accuracy": 1.0}},
            "clues": {"precision": 0.5, "recall": 0.25, "f1": f1}, "filter": {"precision": 0.75, "recall": 1.0},
            "flag_rates": {"unsupported_citation": 0.1, "chain_answer_inconsistency": 0.0, "ungrounded_clue": 0.3},
            "tokens_per_answer": 42.0}


@pytest.fixture
def run(tmp_path):
    final = tmp_path / "run" / "stage2" / "final"
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")
    (final / "model.safetensors").write_bytes(b"\0" * 1000)
    (final / "optimizer.pt").write_bytes(b"\0" * 10)  # not a shipped kind of file
    (final / "stage.json").write_text(json.dumps({"steps": 7, "seed": 0}))
    (final / "cluenet.json").write_text(json.dumps({"backbone": "qwen2_vl", "trained_on": "stage2 on x (7 steps)"}))
    (tmp_path / "run" / "command.txt").write_text("python -m training.make_default_model --out X\n")
    return tmp_path / "run"


def test_results_table_has_a_column_per_mode_and_a_row_per_type():
    table = results_table({"cluenet": _eval(0.8, 0.7), "direct": _eval(0.3)})
    lines = table.splitlines()
    assert lines[0] == "| | ClueNet | direct |"
    assert "| accuracy, % (10 questions, chance 20) | 80.0 | 30.0 |" in lines
    assert "| accuracy CW, % (n) | 50.0 (6) | 50.0 (6) |" in lines
    assert any(line.startswith("| clue precision / recall / F1 | 0.500 / 0.250 / 0.700 | - |") for line in lines)
    cot = results_table({"cluenet": _eval(0.8, 0.7), "cot": _eval(0.3)}).splitlines()
    assert "| questions flagged unsupported citation, % | 10.0 | 10.0 |" in cot  # a cot chain should cite nothing
    assert "| questions flagged ungrounded clue, % | 30.0 | - |" in cot


def test_ship_copies_model_files_and_writes_the_card(run, tmp_path):
    (run / "eval-cluenet.json").write_text(json.dumps(_eval(0.9, 0.8)))
    dest = tmp_path / "assets" / "model"
    table = ship(run, dest, max_mb=1.0)
    assert sorted(p.name for p in dest.iterdir()) == ["MODEL_CARD.md", "cluenet.json", "config.json",
                                                      "model.safetensors", "stage.json"]
    trained_on = json.loads((dest / "cluenet.json").read_text())["trained_on"]
    assert trained_on.startswith("ClueWorld") and "test accuracy 90.0 % (chance 20 %)" in trained_on
    card = (dest / "MODEL_CARD.md").read_text()
    assert "python -m training.make_default_model --out X" in card and table in card and "stage 1" in card
    assert "text_hidden 128" in card and "baselines: not trained in this run yet" in card
    assert "validation split" not in card  # the run has none


def test_the_card_gives_the_sizes_and_baseline_steps_the_run_used(run, tmp_path):
    (run / "eval-cluenet.json").write_text(json.dumps(_eval(0.9, 0.8)))
    (run / "stage1").mkdir()
    (run / "stage1" / "config.yaml").write_text("model:\n  name_or_path: small:qwen2_vl\n  sizes: '{\"temporal_patch\": 16, \"vision_hidden\": 128}'\n")
    for kind in ("direct", "cot"):
        (run / kind / "final").mkdir(parents=True)
        (run / kind / "final" / "stage.json").write_text(json.dumps({"steps": 57}))
    (run / "data" / "val").mkdir(parents=True)
    (run / "data" / "val" / "clueworld.jsonl").write_text('{"id": "cw2-000000"}\n{"id": "cw2-000001"}\n')
    ship(run, tmp_path / "d", max_mb=1.0)
    card = (tmp_path / "d" / "MODEL_CARD.md").read_text()
    assert f"validation split seed 2 (2 questions, {(run / 'data' / 'val' / 'clueworld.jsonl').as_posix()})" in card
    assert "temporal_patch 16" in card and "vision_hidden 128" in card and "vision_hidden 64" not in card
    assert "baselines `direct` 57 and `cot` 57 steps (equal step budget" in card


def test_ship_refuses_unevaluated_or_oversized_runs(run, tmp_path):
    with pytest.raises(ConfigError, match="eval-cluenet.json"):
        ship(run, tmp_path / "d", max_mb=1.0)
    (run / "eval-cluenet.json").write_text(json.dumps(_eval(0.9)))
    with pytest.raises(ConfigError, match="MB"):
        ship(run, tmp_path / "d", max_mb=0.0001)
    assert not (tmp_path / "d").exists()


def test_card_lists_the_stage_0_reports_in_the_order_they_ran(tmp_path):
    import json

    from training.ship import _stage0

    for name, report in {
        "vision/vision_pretrain.json": {"args": {"steps": 300, "seed": 0}, "seconds": 140,
                                        "held_out": {"colour_occupied": 1.0, "colour": 1.0}},
        "ground/ground_pretrain.json": {"args": {"seed": 0}, "seconds": 700, "reached": False,
                                        "checks": [{"step": 2000, "held_out": {"colour": 0.97, "motion": 0.66, "all": 0.8}}]},
        "text/text_pretrain.json": {"args": {"seed": 1, "init": "runs/x/ground/text.safetensors"}, "seconds": 400,
                                    "checks": [{"step": 1900, "repeat_accuracy": 0.92, "recall_accuracy_zero_shot": 0.6}]},
    }.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(json.dumps(report))
    lines = _stage0(tmp_path).splitlines()
    assert [line.split(" (")[0] for line in lines] == ["* stage 0, vision", "* stage 0c, looking things up in the clip",
                                                       "* stage 0b, language model"]
    assert "colour 97.0 %, motion 66.0 %" in lines[1] and "from stage 0c's language model" in lines[2]
