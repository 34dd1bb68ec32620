"""Clue / filter / chain metrics on constructed cases: each rule must fire and must not."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluenet.metrics import (
    PRF,
    Counts,
    MatchConfig,
    citation_errors,
    clue_prf,
    clues_match,
    filter_prf,
    hallucinated_clues,
    match_clues,
    normalize_statement,
    relevant_gold,
    temporal_iou,
    token_f1,
)
from cluenet.schema import Clue, Step

EXACT = MatchConfig(min_iou=0.3, tolerance=0.0, min_text_f1=0.5)


def clue(cid: str, start: float, end: float, text: str, kept: bool | None = None) -> Clue:
    return Clue(id=cid, start=start, end=end, text=text, kept=kept)


# ----------------------------------------------------------------------------- similarity
def test_temporal_iou_values():
    assert temporal_iou(clue("a", 0, 2, "x"), clue("b", 1, 3, "x")) == pytest.approx(1 / 3)
    assert temporal_iou(clue("a", 0, 1, "x"), clue("b", 2, 3, "x")) == 0.0
    assert temporal_iou(clue("a", 4, 4, "x"), clue("b", 4, 4, "x")) == 1.0  # identical points
    assert temporal_iou(clue("a", 4, 4, "x"), clue("b", 4.1, 4.1, "x")) == 0.0
    # widening by 0.5 s: [3.5, 4.5] vs [3.6, 4.6] -> 0.9 / 1.1
    assert temporal_iou(clue("a", 4, 4, "x"), clue("b", 4.1, 4.1, "x"), tolerance=0.5) == pytest.approx(0.9 / 1.1)


def test_statement_normalisation_and_token_f1():
    assert normalize_statement("The Red circle, enters!") == "red circle enters"
    assert token_f1("the red circle enters", "Red circle enters.") == 1.0
    assert token_f1("red circle enters left", "the red circle moves left") == pytest.approx(0.75)
    assert token_f1("blue square", "red circle") == 0.0


def test_clues_match_needs_both_time_and_text():
    gold = clue("g", 1.0, 3.0, "the red circle enters from the left")
    assert clues_match(clue("p", 1.2, 2.8, "red circle enters from left"), gold, EXACT)
    assert not clues_match(clue("p", 5.0, 6.0, "red circle enters from left"), gold, EXACT)  # wrong time
    assert not clues_match(clue("p", 1.2, 2.8, "blue square stops at the wall"), gold, EXACT)  # wrong text
    # a point event matches through the tolerance only
    point = clue("g", 2.0, 2.0, "person holding cup")
    assert not clues_match(clue("p", 2.1, 2.1, "person holding cup"), point, EXACT)
    assert clues_match(clue("p", 2.1, 2.1, "person holding cup"), point, MatchConfig(tolerance=0.25))


def test_default_config_separates_one_changed_word():
    gold = clue("g", 2.5, 3.0, "the red diamond enters from the left")
    assert not clues_match(clue("p", 2.5, 3.0, "the blue diamond enters from the left"), gold)  # wrong colour
    assert clues_match(clue("p", 2.5, 3.0, "the red diamond enters from the left side"), gold)  # one extra word
    assert not clues_match(clue("p", 2.5, 3.0, "blue diamond enters from the left"), gold, MatchConfig(min_text_f1=0.85))
    assert clues_match(clue("p", 2.5, 3.0, "blue diamond enters from the left"), gold, MatchConfig(min_text_f1=0.8))


def test_match_config_rejects_bad_values():
    with pytest.raises(ValueError, match="min_iou"):
        MatchConfig(min_iou=0.0)
    with pytest.raises(ValueError, match="tolerance"):
        MatchConfig(tolerance=-1)
    with pytest.raises(ValueError, match="min_text_f1"):
        MatchConfig(min_text_f1=1.5)


# ----------------------------------------------------------------------------- matching and P/R/F1
def test_matching_is_one_to_one():
    gold = [clue("g1", 0, 2, "red circle enters")]
    pred = [clue("c1", 0, 2, "red circle enters"), clue("c2", 0.1, 2, "the red circle enters")]
    assert match_clues(pred, gold, EXACT) == [(0, 0)]  # the first, closer one; never both
    prf = clue_prf(pred, gold, EXACT)
    assert (prf.tp, prf.n_pred, prf.n_gold) == (1, 2, 1)
    assert prf.precision == 0.5 and prf.recall == 1.0 and prf.f1 == pytest.approx(2 / 3)


def test_matching_reroutes_to_reach_maximum():
    # c1 overlaps both gold spans equally and tries g1 first; c2 overlaps only g1.
    # Taking pairs in order would match c1->g1 and leave c2 out; the maximum
    # matching re-routes c1 to g2 and pairs both.
    g1, g2 = clue("g1", 0, 4, "red circle enters"), clue("g2", 2, 6, "red circle enters")
    c1, c2 = clue("c1", 1, 5, "red circle enters"), clue("c2", 0, 2, "red circle enters")
    assert clues_match(c1, g1, EXACT) and clues_match(c1, g2, EXACT) and not clues_match(c2, g2, EXACT)
    assert match_clues([c1, c2], [g1, g2], EXACT) == [(0, 1), (1, 0)]
    assert match_clues([c1], [g1, g2], EXACT) == [(0, 0)]


def test_prf_empty_cases_are_none_not_zero():
    assert clue_prf([], [], EXACT).precision is None
    assert clue_prf([], [clue("g", 0, 1, "x")], EXACT).recall == 0.0
    wrong = clue_prf([clue("c1", 5, 6, "blue")], [clue("g", 0, 1, "red")], EXACT)
    assert (wrong.precision, wrong.recall, wrong.f1) == (0.0, 0.0, 0.0)
    assert PRF(1, 2, 4) + PRF(1, 2, 0) == PRF(2, 4, 4)
    assert Counts(1, 3) + Counts(0, 1) == Counts(1, 4) and Counts().rate is None


# ----------------------------------------------------------------------------- filter
GOLD = (
    clue("c1", 0.0, 1.5, "the red circle enters from the left"),
    clue("c2", 1.2, 2.0, "the blue square stops at the wall"),
    clue("c3", 3.0, 4.0, "a green triangle changes colour"),
)
GOLD_CHAIN = (Step("the circle moves first", ("c1",)), Step("before the square stops", ("c1", "c2")))


def test_relevant_gold_is_what_the_chain_cites():
    assert [c.id for c in relevant_gold(GOLD, GOLD_CHAIN)] == ["c1", "c2"]
    assert relevant_gold(GOLD, ()) == ()


def test_filter_precision_recall():
    pred = [
        clue("c1", 0.0, 1.5, "red circle enters from the left", kept=True),  # relevant, kept
        clue("c2", 3.0, 4.0, "green triangle changes colour", kept=True),  # irrelevant, kept
        clue("c3", 1.2, 2.0, "blue square stops at the wall", kept=False),  # relevant, dropped
        clue("c4", 8.0, 9.0, "nothing like the gold", kept=False),  # irrelevant, dropped
    ]
    prf = filter_prf(pred, GOLD, GOLD_CHAIN, EXACT)
    assert (prf.tp, prf.n_pred, prf.n_gold) == (1, 2, 2)
    assert prf.precision == 0.5 and prf.recall == 0.5
    # a perfect filter keeps exactly the relevant ones
    perfect = [c.__class__(**{**c.__dict__, "kept": i in (0, 2)}) for i, c in enumerate(pred)]
    assert filter_prf(perfect, GOLD, GOLD_CHAIN, EXACT) == PRF(2, 2, 2)


def test_filter_ignores_clues_without_a_decision():
    pred = [clue("c1", 0.0, 1.5, "red circle enters from the left")]  # kept=None
    assert filter_prf(pred, GOLD, GOLD_CHAIN, EXACT) == PRF(0, 0, 0)


# ----------------------------------------------------------------------------- chain and hallucination
def test_citation_errors_count_missing_and_filtered():
    clues = [clue("c1", 0, 1, "a", kept=True), clue("c2", 1, 2, "b", kept=False), clue("c3", 2, 3, "c")]
    chain = [Step("x", ("c1",)), Step("y", ("c2", "c9")), Step("z", ("c3",)), Step("no cites")]
    assert citation_errors(chain, clues) == Counts(hits=2, total=4)  # c2 filtered, c9 missing
    assert citation_errors([Step("x", ("c1",))], clues) == Counts(0, 1)
    assert citation_errors([], clues).rate is None


def test_hallucinated_clues():
    events = [clue("e1", 0.0, 1.5, "red circle enters from the left")]
    pred = [
        clue("c1", 0.1, 1.4, "the red circle enters from the left"),
        clue("c2", 0.0, 1.5, "red circle enters from left"),  # a duplicate: grounded, not hallucinated
        clue("c3", 0.0, 1.5, "a purple star explodes"),  # right time, wrong statement
        clue("c4", 7.0, 8.0, "red circle enters from the left"),  # right statement, wrong time
    ]
    assert hallucinated_clues(pred, events, EXACT) == Counts(hits=2, total=4)
    assert hallucinated_clues(pred[:2], events, EXACT).rate == 0.0


# ----------------------------------------------------------------------------- properties
WORDS = ["red", "blue", "circle", "square", "enters", "stops", "left", "wall"]
span = st.tuples(st.floats(0, 10, allow_nan=False), st.floats(0, 3, allow_nan=False))
clue_st = st.builds(
    lambda s, text: Clue(id="c", start=round(s[0], 1), end=round(s[0] + s[1], 1), text=" ".join(text)),
    span, st.lists(st.sampled_from(WORDS), min_size=1, max_size=4),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(clue_st, max_size=6), st.lists(clue_st, max_size=6))
def test_matching_properties(pred, gold):
    pairs = match_clues(pred, gold, EXACT)
    assert len({p for p, _ in pairs}) == len(pairs) == len({g for _, g in pairs})  # one-to-one
    assert all(clues_match(pred[p], gold[g], EXACT) for p, g in pairs)
    # maximum cardinality does not depend on which side is "predicted" (the match relation is symmetric)
    assert len(pairs) == len(match_clues(gold, pred, EXACT))
    prf = clue_prf(pred, gold, EXACT)
    for value in (prf.precision, prf.recall, prf.f1):
        assert value is None or 0.0 <= value <= 1.0
