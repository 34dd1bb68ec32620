"""Dashboard figures on constructed runs: per-type accuracy, the filter-score reliability
diagram and its ECE (worked by hand), accuracy vs kept clues, stage costs, side by side,
and the notes empty runs get instead of exceptions.

    pytest tests/test_dashboard.py -q
"""
from __future__ import annotations

import pytest

from cluenet import dashboard
from cluenet.casestudy import Run
from cluenet.errors import InputError
from cluenet.schema import ClipInfo, Clue, Sample, Step, Trace

GOLD = (Clue("g1", 0.0, 1.0, "the red circle enters from the left"),
        Clue("g2", 1.0, 2.0, "the red circle hits the blue square"),
        Clue("g3", 2.0, 3.0, "the green triangle moves up"))
CHAIN = (Step("the circle enters", ("g1",)), Step("it hits the square, so B", ("g1", "g2")))  # g3 is not cited


def _sample(i: int, qtype: str = "CW") -> Sample:
    return Sample(id=f"s{i}", video="v.mp4", question="q?", options=("a", "b", "c"), answer=1, qtype=qtype,
                  clues=GOLD, chain=CHAIN, events=GOLD)


def _scored_trace() -> Trace:
    """Clues: matches of g1 (0.95), g2 (0.85), g3 (0.9, not relevant) and two inventions (0.15, 0.05)."""
    clues = (Clue("c1", 0.0, 1.0, "the red circle enters from the left", 0.95, True),
             Clue("c2", 1.0, 2.0, "the red circle hits the blue square", 0.85, True),
             Clue("c3", 2.0, 3.0, "the green triangle moves up", 0.9, True),
             Clue("c4", 0.0, 3.0, "a purple star spins", 0.15, False),
             Clue("c5", 1.0, 1.5, "the camera zooms in", 0.05, False))
    return Trace(clip=ClipInfo(name="v.mp4"), question="q?", options=("a", "b", "c"), clues=clues, answer=1, gold=1,
                 qtype="CW", sample_id="s0", timings={"decode": 0.1, "chain": 0.3}, tokens={"prefix": 100, "chain": 20})


def _simple(i, qtype, answer, gold, kept, timings=None, tokens=None):
    clues = tuple(Clue(f"c{k}", 0.0, 1.0, "x", 0.5, k < kept) for k in range(3))
    return Trace(clip=ClipInfo(name="v.mp4"), question="q?", options=("a", "b", "c"), clues=clues, answer=answer,
                 gold=gold, qtype=qtype, sample_id=f"s{i}", timings=timings or {}, tokens=tokens or {})


def test_reliability_bins_and_ece_by_hand():
    run = Run(samples={"s0": _sample(0)}, traces=(_scored_trace(),), manifest={})
    points = dashboard.calibration_points(run)
    assert sorted(points) == [(0.05, False), (0.15, False), (0.85, True), (0.9, False), (0.95, True)]
    bins, ece = dashboard.reliability(points, bins=10)
    # bin 9: {0.95 rel, 0.9 not} -> |0.5 - 0.925| * 2/5; bin 8: |1 - 0.85| / 5; bin 1: 0.15 / 5; bin 0: 0.05 / 5
    assert ece == pytest.approx(0.17 + 0.03 + 0.03 + 0.01)
    assert [b.count for b in bins] == [1, 1, 0, 0, 0, 0, 0, 0, 1, 2]
    assert bins[9].mean_score == pytest.approx(0.925) and bins[9].fraction_relevant == 0.5
    assert bins[4].mean_score is None
    fig = dashboard.calibration(run)
    assert "ECE 0.240, 5 clues" in fig.layout.title.text
    names = [t.name for t in fig.data]
    assert names == ["perfect calibration", "clues per bin", "fraction relevant"]
    assert list(fig.data[2].text) == ["n=1", "n=1", "n=1", "n=2"]


def test_reliability_of_perfect_and_bad_scores():
    assert dashboard.reliability([(1.0, True)] * 4 + [(0.0, False)] * 4, bins=5)[1] == 0.0
    assert dashboard.reliability([(1.0, False)] * 3, bins=5)[1] == 1.0
    assert dashboard.reliability([], bins=5)[1] is None
    with pytest.raises(InputError, match="bins must be an integer in \\[2, 50\\], got 1"):
        dashboard.reliability([], bins=1)


def test_accuracy_by_type_and_by_kept():
    traces = (_simple(0, "CW", 1, 1, 1), _simple(1, "CW", 0, 1, 2), _simple(2, "TN", 2, 2, 2),
              _simple(3, "TN", 2, 2, 2), _simple(4, "DC", 1, None, 1))
    run = Run(samples={}, traces=traces, manifest={})
    fig = dashboard.accuracy_by_type(run)
    bars = fig.data[0]
    assert list(bars.x) == ["CW", "TN"] and list(bars.y) == [0.5, 1.0]  # DC has no gold
    assert list(bars.text) == ["50 % (1/2)", "100 % (2/2)"]
    assert fig.layout.shapes[0].y0 == pytest.approx(0.75)
    kept = dashboard.accuracy_by_kept(run).data[0]
    assert list(kept.x) == [1, 2] and list(kept.y) == [1.0, pytest.approx(2 / 3)]


def test_stage_costs_are_means_over_the_cases_that_have_the_stage():
    traces = (_simple(0, "CW", 1, 1, 1, {"decode": 0.1, "chain": 0.3}, {"prefix": 100, "chain": 20}),
              _simple(1, "CW", 1, 1, 1, {"decode": 0.3, "vision": 0.2}, {"prefix": 120}))
    fig = dashboard.stage_costs(Run(samples={}, traces=traces, manifest={}))
    tokens, latency = fig.data
    assert list(tokens.x) == ["prefix", "chain"] and list(tokens.y) == [110, 20]
    assert list(latency.x) == ["decode", "vision", "chain"]  # pipeline order, not insertion order
    assert list(latency.y) == [pytest.approx(200), pytest.approx(200), pytest.approx(300)]


def test_empty_and_unscored_runs_get_notes_not_exceptions():
    empty = Run(samples={}, traces=(), manifest={})
    figs = dashboard.all_figures(empty)
    assert {k: f.layout.annotations[0].text for k, f in figs.items()} == {
        "accuracy_by_type": "no cases with a gold answer in this run", "calibration": "no clue scores in this run",
        "accuracy_by_kept": "no clues in this run", "stage_costs": "no timings or token counts in this run"}
    no_gold = Run(samples={}, traces=(_scored_trace(),), manifest={})  # scores, but no sample to judge them
    assert dashboard.calibration(no_gold).layout.annotations[0].text.startswith("no gold clues")


def test_side_by_side_groups_option_probabilities_per_mode():
    base = dict(clip=ClipInfo(name="v.mp4"), question="q?", options=("red", "blue", "green"), gold=1)
    traces = {"cluenet": Trace(**base, answer=1, option_probs=(0.1, 0.8, 0.1)),
              "direct": Trace(**base, answer=0, option_probs=(0.5, 0.3, 0.2)),
              "cot": Trace(**base, answer=None)}
    fig = dashboard.side_by_side(traces)
    assert [t.name for t in fig.data] == ["cluenet → B", "direct → A", "cot → –"]
    assert list(fig.data[1].y) == [0.5, 0.3, 0.2] and list(fig.data[2].y) == [0.0, 0.0, 0.0]
    assert fig.layout.barmode == "group" and fig.layout.annotations[0].text == "gold"
    assert dashboard.side_by_side({}).layout.annotations[0].text == "nothing to compare yet"
