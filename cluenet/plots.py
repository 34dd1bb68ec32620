"""Plotly figures of a ``Trace``: clue timeline, filter scores, option probabilities.

Every figure is a pure function of a Trace (plus an optional set of clue ids to
highlight), so the app, notebooks and tests build the same pictures:

    clue_timeline(trace)   time on x, one row per clue, colour = filter score,
                           kept clues solid, dropped clues hatched and faded,
                           sampled frame times as ticks along the bottom
    filter_scores(trace)   one bar per clue with the filter's threshold as a line
    option_probs(trace)    one bar per option; the answer filled, the gold outlined

Kept and dropped clues are separate plotly traces named ``kept`` / ``dropped``
so the legend tells them apart; clues not yet filtered (``kept is None``) are
drawn as ``unscored``.  Scores use one fixed colour scale on [0, 1] in every
figure so the same colour means the same score everywhere.
"""
from __future__ import annotations

from typing import Iterable

import plotly.graph_objects as go

from .schema import LETTERS, Clue, Trace

COLORSCALE = "Viridis"
DROPPED_OPACITY = 0.45  # faded, and hatched, so dropped clues read differently in print too
DROPPED_PATTERN = "/"
UNSCORED_COLOR = "#9aa0a6"
HIGHLIGHT_COLOR = "#e8453c"
ANSWER_COLOR = "#2b6cb0"
OTHER_COLOR = "#b8c2cc"
GOLD_COLOR = "#2f9e44"
MIN_SPAN_S = 0.08  # a zero-length clue still gets a visible sliver on the timeline
ROW_HEIGHT_PX = 34
BASE_HEIGHT_PX = 150
MAX_LABEL_CHARS = 48


def _group(clues: Iterable[Clue]) -> dict[str, list[Clue]]:
    """Clues by filter outcome, in a fixed order so legends stay stable."""
    groups: dict[str, list[Clue]] = {"kept": [], "dropped": [], "unscored": []}
    for c in clues:
        key = "unscored" if c.kept is None else ("kept" if c.kept else "dropped")
        groups[key].append(c)
    return groups


def _short(text: str, limit: int = MAX_LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _marker(group: str, clues: list[Clue], highlight: set[str], show_scale: bool) -> dict:
    """Bar marker for one group: score colours, hatching and fading for dropped clues,
    a thick red outline for highlighted ones."""
    scored = group != "unscored"
    marker: dict = {
        "color": [c.score for c in clues] if scored else UNSCORED_COLOR,
        "line": {
            "color": [HIGHLIGHT_COLOR if c.id in highlight else "#333333" for c in clues],
            "width": [3.5 if c.id in highlight else 0.8 for c in clues],
        },
        "opacity": DROPPED_OPACITY if group == "dropped" else 1.0,
        "pattern": {"shape": DROPPED_PATTERN if group == "dropped" else "", "fgcolor": "#ffffff"},
    }
    if scored:
        marker.update(colorscale=COLORSCALE, cmin=0.0, cmax=1.0, showscale=show_scale)
        if show_scale:
            marker["colorbar"] = {"title": {"text": "score"}, "thickness": 12, "len": 0.8}
    return marker


def _row_label(c: Clue) -> str:
    return f"{c.id}  {_short(c.text, 28)}"


def clue_timeline(trace: Trace, highlight: Iterable[str] = ()) -> go.Figure:
    """Horizontal bars from each clue's start to end time, one row per clue.

    Rows are in the order the model generated the clues (first at the top).
    ``highlight`` ids get a red outline (the app passes the clues a selected chain
    step cites).  Frame times, when the trace has them, are drawn as ticks on a
    ``frames`` row so one can see which frames a clue spans.
    """
    highlight = set(highlight)
    fig = go.Figure()
    shown_scale = False
    for group, clues in _group(trace.clues).items():
        if not clues:
            continue
        show = group != "unscored" and not shown_scale
        shown_scale = shown_scale or show
        fig.add_trace(
            go.Bar(
                name=group,
                orientation="h",
                y=[_row_label(c) for c in clues],
                base=[c.start for c in clues],
                x=[max(c.end - c.start, MIN_SPAN_S) for c in clues],
                marker=_marker(group, clues, highlight, show),
                customdata=[[c.id, c.start, c.end, _score_text(c), c.text] for c in clues],
                hovertemplate="<b>%{customdata[0]}</b> %{customdata[1]:.1f}-%{customdata[2]:.1f} s"
                "<br>score %{customdata[3]}<br>%{customdata[4]}<extra>" + group + "</extra>",
            )
        )
    if trace.clip.frame_times:
        fig.add_trace(
            go.Scatter(
                name="frames",
                x=list(trace.clip.frame_times),
                y=["frames"] * len(trace.clip.frame_times),
                mode="markers",
                marker={"symbol": "line-ns-open", "size": 14, "color": "#555555"},
                hovertemplate="frame at %{x:.2f} s<extra></extra>",
            )
        )
    order = ["frames"] * bool(trace.clip.frame_times) + [_row_label(c) for c in reversed(trace.clues)]
    fig.update_yaxes(categoryorder="array", categoryarray=order, automargin=True)
    x_max = max([trace.clip.duration, *(c.end for c in trace.clues)], default=1.0) or 1.0
    fig.update_xaxes(title_text="time (s)", range=[0, x_max * 1.02])
    _layout(fig, "Clue timeline", rows=len(order))
    _note_if_empty(fig, trace)
    return fig


def _score_text(c: Clue) -> str:
    return "—" if c.score is None else f"{c.score:.2f}"


def filter_scores(trace: Trace, highlight: Iterable[str] = ()) -> go.Figure:
    """One bar per clue (its filter score) and the threshold the filter applied.

    The threshold is a horizontal line at ``trace.threshold`` (absent when the
    trace has none, e.g. before filtering); bars above it were kept unless the
    ``m_max`` cap dropped them, which is why the colour/hatching comes from
    ``Clue.kept`` and not from re-comparing with the line.
    """
    highlight = set(highlight)
    fig = go.Figure()
    shown_scale = False
    for group, clues in _group(trace.clues).items():
        if not clues:
            continue
        show = group != "unscored" and not shown_scale
        shown_scale = shown_scale or show
        fig.add_trace(
            go.Bar(
                name=group,
                x=[c.id for c in clues],
                y=[c.score if c.score is not None else 0.0 for c in clues],
                marker=_marker(group, clues, highlight, show),
                customdata=[[_score_text(c), c.text] for c in clues],
                hovertemplate="<b>%{x}</b> score %{customdata[0]}<br>%{customdata[1]}<extra>"
                + group + "</extra>",
            )
        )
    if trace.threshold is not None:
        fig.add_hline(
            y=trace.threshold,
            line={"color": HIGHLIGHT_COLOR, "dash": "dash", "width": 2},
            annotation_text=f"threshold {trace.threshold:.2f}",
            annotation_position="top right",
        )
    fig.update_xaxes(categoryorder="array", categoryarray=[c.id for c in trace.clues], title_text="clue")
    fig.update_yaxes(range=[0, 1.05], title_text="filter score")
    _layout(fig, "Filter scores", rows=None)
    _note_if_empty(fig, trace)
    return fig


def option_probs(trace: Trace) -> go.Figure:
    """Probability of each option; the chosen answer filled blue, the gold answer
    (when known) outlined green and marked ``gold``."""
    n = len(trace.options)
    probs = list(trace.option_probs) + [0.0] * (n - len(trace.option_probs))
    labels = [f"{LETTERS[i]}. {_short(o, 40)}" for i, o in enumerate(trace.options)]
    colors = [ANSWER_COLOR if i == trace.answer else OTHER_COLOR for i in range(n)]
    outlines = [GOLD_COLOR if i == trace.gold else "rgba(0,0,0,0)" for i in range(n)]
    fig = go.Figure(
        go.Bar(
            name="p(option)",
            orientation="h",
            y=labels,
            x=probs[:n],
            marker={"color": colors, "line": {"color": outlines, "width": 3}},
            text=[f"{p:.2f}" + ("  gold" if i == trace.gold else "") for i, p in enumerate(probs[:n])],
            textposition="outside",
            hovertemplate="%{y}<br>p = %{x:.3f}<extra></extra>",
        )
    )
    fig.update_yaxes(categoryorder="array", categoryarray=list(reversed(labels)), automargin=True)
    fig.update_xaxes(range=[0, 1.15], title_text="probability")
    _layout(fig, "Option probabilities", rows=n)
    fig.update_layout(showlegend=False)
    return fig


def _note_if_empty(fig: go.Figure, trace: Trace) -> None:
    """Say so in the plot when there is nothing to draw, rather than show empty axes."""
    if not trace.clues:
        fig.add_annotation(text="no clues extracted", xref="paper", yref="paper", x=0.5, y=0.5,
                           showarrow=False, font={"size": 14, "color": "#777777"})


def _layout(fig: go.Figure, title: str, rows: int | None) -> None:
    """Shared look: white background, compact margins, height that grows with rows."""
    height = BASE_HEIGHT_PX + ROW_HEIGHT_PX * rows if rows else 320
    fig.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 15}},
        template="plotly_white",
        barmode="overlay",
        height=height,
        margin={"l": 10, "r": 10, "t": 40, "b": 40},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0},
    )
