"""Imports: an lmms-eval --log_samples file (tests/fixtures/lmms_eval) and NExT-QA's own
STVQA prediction file load as read-only runs usable by the table, report and dashboard.

    pytest tests/test_imports.py -q
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluenet import casestudy, dashboard, imports, report
from cluenet.errors import InputError
from cluenet.tags import TagStore

FIX = Path(__file__).resolve().parent / "fixtures"
LMMS = FIX / "lmms_eval" / "samples_nextqa_mc_test.jsonl"
NEXTQA = FIX / "nextqa"


def test_lmms_eval_samples_load_as_a_read_only_run(tmp_path):
    run = imports.load_lmms_eval(LMMS, tags_path=tmp_path / "tags.jsonl")
    assert run.read_only and len(run.traces) == 6
    ids = [t.sample_id for t in run.traces]
    assert ids[:2] == ["4010069381_6", "4882821564_1"]  # NExT-QA's own keys: <video>_<qid>
    # responses: "C", "(B) approach lady...", "The answer is C.", no option, option text, "C"
    assert [t.answer for t in run.traces] == [2, 1, 2, None, 3, 2]
    assert [t.gold for t in run.traces] == [0, 2, 2, 2, 3, 2]
    assert [t.correct for t in run.traces] == [False, False, True, False, True, True]
    assert [t.qtype for t in run.traces] == ["CH", "CW", "CH", "TN", "CW", "CW"]
    assert run.traces[3].warnings and "names no option" in run.traces[3].warnings[0]
    assert all(not t.clues and not t.flags for t in run.traces)  # clue-based flags cannot fire
    assert run.traces[1].raw["response"] == "(B) approach lady sitting there"
    assert run.samples["4882821564_1"].options[1] == "approach lady sitting there"
    assert run.manifest["counts"] == {"done": 6, "answered": 5, "with_gold": 6, "correct": 3}


def test_imported_runs_work_in_table_report_dashboard_and_tags(tmp_path):
    run = imports.load_lmms_eval(LMMS, tags_path=tmp_path / "tags.jsonl")
    assert [r["id"] for r in casestudy.case_table(run, qtype="CW", correct=True)] == ["8132842161_2", "4260763967_4"]
    assert casestudy.case_table(run, flag="ungrounded_clue") == []
    TagStore(run.tags_path).set("4010069381_6", ["eventhallusion/misleading_event"])
    r = report.build_report(run)
    assert r["summary"]["accuracy"] == 0.5 and [e["id"] for e in r["examples"]] == ["4010069381_6"]
    figs = dashboard.all_figures(run)
    notes = [a.text for a in figs["calibration"].layout.annotations]
    assert notes == ["no clue scores in this run"]
    assert figs["accuracy_by_kept"].layout.annotations[0].text == "no clues in this run"
    assert list(figs["accuracy_by_type"].data[0].x) == ["CH", "CW", "TN"]


def test_default_tags_file_sits_beside_the_import(tmp_path):
    copy = tmp_path / "samples_x.jsonl"
    copy.write_text(LMMS.read_text())
    run = imports.load_lmms_eval(copy)
    assert run.tags_path == tmp_path / "samples_x.jsonl.tags.jsonl" and run.manifest["model"]["name"] == "lmms-eval:samples_x"


def test_option_lists_letter_targets_and_plain_ids(tmp_path):
    line = {"doc_id": 3, "doc": {"question_id": "mv-9", "question": "What happens?", "candidates": ["open", "close", "wait"],
                                 "task_type": "action_sequence", "video": "clip.mp4"},
            "target": "(B) close", "arguments": [], "resps": [["Answer: close"]], "filtered_resps": ["close"]}
    path = tmp_path / "mv.jsonl"
    path.write_text(json.dumps(line) + "\n")
    (t,) = imports.load_lmms_eval(path).traces
    assert (t.sample_id, t.gold, t.answer, t.qtype, t.options) == ("mv-9", 1, 1, "action_sequence", ("open", "close", "wait"))


@pytest.mark.parametrize("record, message", [
    ({"doc_id": 0, "doc": {"question": "q", "a0": "x", "a1": "y"}, "target": 0}, "missing filtered_resps"),
    ({"doc_id": 0, "doc": {"question": "q"}, "target": 0, "filtered_resps": ["x"]}, "0 options found"),
    ({"doc_id": 0, "doc": {"question": "", "a0": "x", "a1": "y"}, "target": 0, "filtered_resps": ["x"]}, "no question"),
    ([1, 2], "a JSON list, expected an lmms-eval sample object"),
])
def test_bad_lmms_eval_lines_name_the_line(tmp_path, record, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(LMMS.read_text().splitlines()[0] + "\n" + json.dumps(record) + "\n")
    with pytest.raises(InputError, match=f"bad.jsonl line 2: .*{message}"):
        imports.load_lmms_eval(path)


def test_duplicate_cases_and_missing_files_are_refused(tmp_path):
    path = tmp_path / "dup.jsonl"
    first = LMMS.read_text().splitlines()[0]
    path.write_text(first + "\n" + first + "\n")
    with pytest.raises(InputError, match="line 2: case '4010069381_6' already on line 1"):
        imports.load_lmms_eval(path)
    with pytest.raises(InputError, match="no such lmms-eval samples file"):
        imports.load_lmms_eval(tmp_path / "nope.jsonl")


def test_nextqa_stvqa_predictions_load_with_the_annotations():
    run = imports.load_nextqa_predictions(NEXTQA / "STVQA-bert-ft-h256-val.json", NEXTQA / "val.csv")
    assert run.read_only and len(run.traces) == 4996
    # NExT-QA's published STVQA numbers: 47.90 overall on val (DESIGN.md)
    r = report.build_report(run, max_examples=0)
    assert round(100 * r["summary"]["accuracy"], 2) == 47.90
    assert run.manifest["counts"]["missing"] == 0 and run.manifest["counts"]["unknown_ids"] == 0
    assert run.trace("4882821564_1").answer == 2 and run.trace("4010069381_6").gold == 0


def test_nextqa_prediction_ids_must_match(tmp_path):
    preds = tmp_path / "p.json"
    preds.write_text(json.dumps({"nope_1": {"prediction": 1, "answer": 0}}))
    with pytest.raises(InputError, match="none of the 1 prediction ids match"):
        imports.load_nextqa_predictions(preds, NEXTQA / "val.csv")
    preds.write_text(json.dumps({"4010069381_6": {"prediction": 7, "answer": 3}}))
    run = imports.load_nextqa_predictions(preds, NEXTQA / "val.csv")
    (t,) = run.traces
    assert t.answer is None and len(t.warnings) == 2 and run.manifest["counts"]["missing"] == 4995
