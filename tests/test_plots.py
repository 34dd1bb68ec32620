"""Figure specs of cluenet.plots and the frame strip of cluenet.frames.

    pytest tests/test_plots.py -q

Traces are built here by hand (``make_trace``) so the checks do not depend on a
model; tests/test_app.py reuses ``make_trace``.
"""
from __future__ import annotations

import numpy as np
import pytest

from cluenet import frames as fr
from cluenet import plots
from cluenet.schema import ClipInfo, Clue, FilterSettings, Flag, ModelInfo, Step, Trace


def make_trace(scores=(0.9, 0.2, 0.55, 0.05), threshold=0.45, answer=1, gold=2, n_frames=8) -> Trace:
    """A filtered trace: clue i spans [i, i+1.5] s; kept iff score >= threshold."""
    clues = tuple(
        Clue(id=f"c{i + 1}", start=float(i), end=float(i) + 1.5, text=f"shape {i + 1} moves right",
             score=s, kept=s >= threshold)
        for i, s in enumerate(scores)
    )
    kept_ids = tuple(c.id for c in clues if c.kept)
    chain = (
        Step(text="the first kept clue happens first", cites=kept_ids[:1]),
        Step(text="so the answer follows", cites=kept_ids),
    )
    duration = 6.0
    times = tuple(duration * (k + 0.5) / n_frames for k in range(n_frames))
    return Trace(
        clip=ClipInfo(name="episode.mp4", duration=duration, fps=8.0, width=112, height=112, frame_times=times),
        question="Which shape moves first?",
        options=("red circle", "blue square", "green triangle", "yellow star", "none"),
        clues=clues,
        chain=chain,
        answer=answer,
        generated_answer=answer,
        option_probs=(0.1, 0.5, 0.2, 0.15, 0.05),
        gold=gold,
        filter=FilterSettings(tau_min=0.3, rho=0.5),
        threshold=threshold,
        flags=(Flag(kind="unsupported_citation", message="step 2 cites c9", clue_ids=("c9",), step=2),),
        warnings=("generated letter disagrees with argmax",),
        model=ModelInfo(name="tiny", trained_on="nothing: random weights"),
    )


def _bars(fig, name):
    return [t for t in fig.data if t.type == "bar" and t.name == name]


def test_timeline_has_one_row_per_clue_and_splits_kept_from_dropped():
    trace = make_trace()
    fig = plots.clue_timeline(trace)
    kept, dropped = _bars(fig, "kept")[0], _bars(fig, "dropped")[0]
    assert len(kept.y) == 2 and len(dropped.y) == 2
    rows = set(kept.y) | set(dropped.y)
    assert len(rows) == len(trace.clues)
    # bars span [start, end]
    assert list(kept.base) == [0.0, 2.0] and list(kept.x) == [1.5, 1.5]
    # kept vs dropped are visibly different: opacity and hatching
    assert kept.marker.opacity == 1.0 and dropped.marker.opacity == plots.DROPPED_OPACITY
    assert kept.marker.pattern.shape == "" and dropped.marker.pattern.shape == plots.DROPPED_PATTERN
    # colour = score on a fixed [0, 1] scale
    assert list(kept.marker.color) == [0.9, 0.55] and kept.marker.cmin == 0 and kept.marker.cmax == 1
    # frame ticks row + clue rows on the category axis
    assert len(fig.layout.yaxis.categoryarray) == len(trace.clues) + 1
    frames = [t for t in fig.data if t.name == "frames"][0]
    assert list(frames.x) == list(trace.clip.frame_times)


def test_timeline_highlight_outlines_only_the_cited_clues():
    fig = plots.clue_timeline(make_trace(), highlight={"c3"})
    kept = _bars(fig, "kept")[0]  # c1, c3
    assert list(kept.marker.line.color) == ["#333333", plots.HIGHLIGHT_COLOR]
    assert kept.marker.line.width[1] > kept.marker.line.width[0]


def test_timeline_zero_length_clue_stays_visible_and_unscored_clues_are_grey():
    trace = make_trace().with_(clues=(Clue(id="c1", start=2.0, end=2.0, text="a flash"),), threshold=None)
    fig = plots.clue_timeline(trace)
    (bar,) = _bars(fig, "unscored")
    assert bar.x[0] == pytest.approx(plots.MIN_SPAN_S)
    assert bar.marker.color == plots.UNSCORED_COLOR


def test_scores_bars_and_threshold_line_at_the_value():
    trace = make_trace(threshold=0.45)
    fig = plots.filter_scores(trace)
    bars = _bars(fig, "kept") + _bars(fig, "dropped")
    assert sum(len(b.x) for b in bars) == len(trace.clues)
    heights = dict(zip([x for b in bars for x in b.x], [y for b in bars for y in b.y]))
    assert heights == {"c1": 0.9, "c2": 0.2, "c3": 0.55, "c4": 0.05}
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert len(lines) == 1 and lines[0].y0 == pytest.approx(0.45) and lines[0].y1 == pytest.approx(0.45)
    assert "0.45" in fig.layout.annotations[0].text
    assert _bars(fig, "kept")[0].marker.pattern.shape != _bars(fig, "dropped")[0].marker.pattern.shape


def test_scores_without_threshold_draw_no_line():
    fig = plots.filter_scores(make_trace().with_(threshold=None))
    assert not [s for s in fig.layout.shapes if s.type == "line"]


def test_option_probs_marks_answer_and_gold():
    trace = make_trace(answer=1, gold=2)
    (bar,) = fig_data = plots.option_probs(trace).data
    assert len(bar.y) == 5 and list(bar.x) == list(trace.option_probs)
    assert [c == plots.ANSWER_COLOR for c in bar.marker.color] == [False, True, False, False, False]
    assert bar.marker.line.color[2] == plots.GOLD_COLOR and bar.marker.line.color[1] != plots.GOLD_COLOR
    assert "gold" in bar.text[2] and "gold" not in bar.text[1]
    assert fig_data


def test_figures_serialise_for_the_browser():
    trace = make_trace()
    for fig in (plots.clue_timeline(trace), plots.filter_scores(trace), plots.option_probs(trace)):
        assert fig.to_json().startswith("{")


# ----------------------------------------------------------------------- frame strip
def test_clue_frames_by_span_and_nearest_fallback():
    times = [0.25, 0.75, 1.25, 1.75]
    assert fr.clue_frames(times, Clue(id="c1", start=0.0, end=1.0, text="x")) == [0, 1]
    # a span between two frames maps to the nearest one
    assert fr.clue_frames(times, Clue(id="c2", start=1.4, end=1.5, text="x")) == [2]
    assert fr.clue_frames([], Clue(id="c3", start=0.0, end=1.0, text="x")) == []


def test_frame_strip_marks_highlighted_frames():
    trace = make_trace(n_frames=6)
    frames = np.full((6, 32, 48, 3), 200, dtype=np.uint8)
    plain = fr.frame_strip(frames, trace.clip.frame_times, trace.clues)
    lit = fr.frame_strip(frames, trace.clip.frame_times, trace.clues, highlight={"c1"})
    assert plain.dtype == np.uint8 and plain.ndim == 3 and plain.shape == lit.shape
    assert plain.shape[0] >= fr.THUMB_HEIGHT_PX
    red = np.array([0xE8, 0x45, 0x3C])
    is_red = lambda img: np.all(img == red, axis=-1)  # noqa: E731
    assert not is_red(plain).any() and is_red(lit).sum() > 100
    # only frames c1 spans ([0, 1.5] s -> the first two of six frames over 6 s) get a border
    cols = np.nonzero(is_red(lit).any(axis=0))[0]
    thumb_w = 48 * fr.THUMB_HEIGHT_PX // 32 + 2 * fr.BORDER_PX
    assert cols.max() < 2 * (thumb_w + fr.GAP_PX) + fr.GAP_PX


def test_frame_strip_rejects_mismatched_input():
    with pytest.raises(ValueError, match="3 timestamps"):
        fr.frame_strip(np.zeros((2, 8, 8, 3), np.uint8), [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="shape"):
        fr.frame_strip(np.zeros((2, 8, 8), np.uint8), [0.0, 1.0])


def test_band_colours_follow_the_score_scale():
    low = fr.band_colour(Clue(id="c1", start=0, end=1, text="x", score=0.0, kept=True))
    high = fr.band_colour(Clue(id="c2", start=0, end=1, text="x", score=1.0, kept=True))
    dropped = fr.band_colour(Clue(id="c3", start=0, end=1, text="x", score=1.0, kept=False))
    assert low == (68, 1, 84) and high == (253, 231, 37)  # the ends of Viridis
    assert dropped == fr._rgb(fr.DROPPED_BAND)


def test_empty_trace_says_no_clues():
    trace = make_trace().with_(clues=(), chain=(), threshold=None)
    for fig in (plots.clue_timeline(trace), plots.filter_scores(trace)):
        assert [a.text for a in fig.layout.annotations] == ["no clues extracted"]
        assert not [t for t in fig.data if t.type == "bar"]
