"""Reports: counts per flag and per type on constructed traces, chosen examples, Markdown and JSON export.

    pytest tests/test_report.py -q
"""
from __future__ import annotations

import json

import pytest

from cluenet import report
from cluenet.casestudy import Run
from cluenet.errors import InputError
from cluenet.schema import ClipInfo, Clue, Flag, Step, Trace
from cluenet.tags import TagStore


def _trace(i, qtype, answer, gold, kinds):
    clues = (Clue("c1", 0.0, 1.5, "the red | circle <b>enters</b>", 0.8, True),
             Clue("c2", 1.0, 2.0, "the blue square stops", 0.1, False))
    return Trace(clip=ClipInfo(name="v.mp4"), question=f"why does it stop {i}?", options=("red", "blue", "green"),
                 clues=clues, chain=(Step("the circle hits it, so B", ("c1",)),), answer=answer, gold=gold,
                 option_probs=(0.2, 0.7, 0.1), qtype=qtype, sample_id=f"s{i}",
                 flags=tuple(Flag(k, f"{k} message") for k in kinds))


def _run(tmp_path, traces):
    return Run(samples={}, traces=tuple(traces), manifest={"model": {"name": "tiny"}, "data": "cw.jsonl"},
               tags_path=tmp_path / "tags.jsonl")


TRACES = [
    _trace(0, "CW", 1, 1, ("unsupported_citation", "unsupported_citation", "ungrounded_clue")),
    _trace(1, "CW", 0, 1, ("ungrounded_clue",)),
    _trace(2, "TN", 2, 2, ("chain_answer_inconsistency",)),
    _trace(3, "TN", None, 0, ("clue_necessity",)),
    _trace(4, "DC", 1, None, ("video_independent_answer", "ungrounded_clue")),
    _trace(5, "DC", 2, 2, ()),
]


def test_counts_per_flag_and_type(tmp_path):
    r = report.build_report(_run(tmp_path, TRACES))
    assert {k: (v["cases"], v["flags"]) for k, v in r["flags"].items()} == {
        "unsupported_citation": (1, 2), "chain_answer_inconsistency": (1, 1), "ungrounded_clue": (3, 3),
        "clue_necessity": (1, 1), "video_independent_answer": (1, 1)}
    # accuracy over cases with gold (5); the unanswered s3 counts wrong, s4 has no gold
    assert r["summary"] == {"cases": 6, "answered": 5, "with_gold": 5, "correct": 3, "accuracy": 0.6}
    assert r["qtypes"]["CW"] == {"cases": 2, "answered": 2, "with_gold": 2, "correct": 1, "accuracy": 0.5,
                                 "flags": {"unsupported_citation": 1, "ungrounded_clue": 2}}
    assert r["qtypes"]["TN"]["accuracy"] == 0.5 and r["qtypes"]["DC"]["accuracy"] == 1.0


def test_examples_are_first_flagged_of_each_kind_then_the_tagged_ones(tmp_path):
    run = _run(tmp_path, TRACES)
    r = report.build_report(run)
    assert [(e["id"], e["why"]) for e in r["examples"]] == [
        ("s0", "first case flagged unsupported_citation"), ("s2", "first case flagged chain_answer_inconsistency"),
        ("s3", "first case flagged clue_necessity"), ("s4", "first case flagged video_independent_answer")]
    store = TagStore(run.tags_path)
    store.set("s5", ["vidhalluc/action"], "looks fine but")
    store.set("s1", ["videohallucer/object_relation", "eventhallusion/entire_event"])
    store.set("ghost", ["vidhalluc/action"])  # a tag of a case not in this run is not counted
    r = report.build_report(run)
    assert [e["id"] for e in r["examples"]] == ["s1", "s5"]  # run order
    ex = r["examples"][1]
    assert ex["tags"] == {"categories": ["vidhalluc/action"], "note": "looks fine but"}
    assert ex["answer"] == "C" and ex["gold"] == "C" and ex["correct"] is True
    assert ex["clues"][1]["kept"] is False and ex["chain"][0]["cites"] == ["c1"]
    assert r["tags"] == {"videohallucer/object_relation": 1, "eventhallusion/entire_event": 1, "vidhalluc/action": 1}
    assert [e["id"] for e in report.build_report(run, max_examples=1)["examples"]] == ["s1"]


def test_markdown_and_json_export(tmp_path):
    run = _run(tmp_path, TRACES)
    TagStore(run.tags_path).set("s0", ["videohallucer/temporal"], "order | wrong")
    md_path, json_path = report.export_report(run, tmp_path / "out")
    assert json.loads(json_path.read_text()) == report.build_report(run)
    md = md_path.read_text()
    assert "| ungrounded_clue | 3 | 3 |" in md and "| CW | 2 | 1 | 50.0 % |" in md
    assert "accuracy: 60.0 % (3 / 5)" in md and "VideoHallucer -- Temporal" in md
    # model text cannot break the table or inject HTML
    assert "the red \\| circle &lt;b&gt;enters&lt;/b&gt;" in md and "<b>" not in md
    assert "Tags: videohallucer/temporal — note: order \\| wrong" in md
    assert "### s0 (CW, correct) — tagged" in md


def test_empty_and_imported_runs(tmp_path):
    empty = report.build_report(_run(tmp_path, []))
    assert empty["summary"]["accuracy"] is None and empty["examples"] == []
    assert "No case is tagged or flagged." in report.to_markdown(empty)
    bare = Trace(clip=ClipInfo(name=""), question="q?", options=("a", "b"), answer=1, gold=1, sample_id="x")
    r = report.build_report(Run(samples={}, traces=(bare,), manifest={}, read_only=True))
    assert r["summary"]["accuracy"] == 1.0 and r["run"]["read_only"] and "read-only" in report.to_markdown(r)
    with pytest.raises(InputError, match="max_examples must be an integer in \\[0, 500\\], got -1"):
        report.build_report(_run(tmp_path, TRACES), max_examples=-1)
