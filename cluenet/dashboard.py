"""Dashboard figures of a whole run (plotly), in the style of ``cluenet.plots``.

    accuracy_by_type(run)    one bar per question type, labelled "62 % (31/50)"; the
                             overall accuracy as a dashed line
    calibration(run)         reliability diagram of the filter scores: clues binned by
                             score; per bin the fraction that is gold-relevant against
                             the bin's mean score, the diagonal, counts per bin, ECE
                             in the title
    accuracy_by_kept(run)    accuracy against the number of kept clues (bars, counts)
    stage_costs(run)         mean generated/fed tokens and mean latency per stage
    side_by_side(traces)     option probabilities of ClueNet / direct / cot on one question

**Gold-relevant clue** (calibration): a predicted clue matched one-to-one to a gold clue
cited by the sample's gold chain (``cluenet.metrics.relevant_predicted``), so only cases
whose sample has gold clues and a gold chain count.  **ECE** = sum over bins of
(clues in bin / all clues) * |fraction relevant - mean score| (equal-width bins on [0, 1]).

Every figure copes with an empty or imported (read-only) run: instead of raising it
shows a grey note such as "no clue scores in this run".
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .errors import InputError
from .metrics import MatchConfig, relevant_predicted
from .plots import ANSWER_COLOR, GOLD_COLOR, HIGHLIGHT_COLOR, OTHER_COLOR
from .schema import LETTERS, Trace

DEFAULT_BINS = 10
MIN_BINS, MAX_BINS = 2, 50
STAGE_ORDER = ("decode", "vision", "prefill", "prefix", "clues", "filter", "context", "chain", "answer")
MODE_COLORS = {"cluenet": ANSWER_COLOR, "direct": OTHER_COLOR, "cot": GOLD_COLOR}
FIG_HEIGHT_PX = 360
NOTE_COLOR = "#777777"


# ----------------------------------------------------------------------------- shared look
def _layout(fig: go.Figure, title: str, height: int = FIG_HEIGHT_PX) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 15}}, template="plotly_white", height=height,
        margin={"l": 10, "r": 10, "t": 50, "b": 40},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0},
    )
    return fig


def _note(fig: go.Figure, text: str) -> go.Figure:
    """Say in the plot why it is empty, rather than show bare axes."""
    fig.add_annotation(text=text, xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False,
                       font={"size": 14, "color": NOTE_COLOR})
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return fig


def _pct_label(correct: int, n: int) -> str:
    return f"{100 * correct / n:.0f} % ({correct}/{n})"


# ----------------------------------------------------------------------------- accuracy
def _graded(run: Any) -> list[Trace]:
    return [t for t in run.traces if t.gold is not None]


def accuracy_by_type(run: Any) -> go.Figure:
    """Accuracy per question type with the case counts on the bars; overall as a dashed line."""
    graded = _graded(run)
    fig = go.Figure()
    if not graded:
        return _layout(_note(fig, "no cases with a gold answer in this run"), "Accuracy per question type")
    groups: dict[str, list[bool]] = defaultdict(list)
    for t in graded:
        groups[t.qtype or "-"].append(bool(t.correct))
    names = sorted(groups)
    fig.add_trace(go.Bar(
        name="accuracy", x=names, y=[sum(groups[q]) / len(groups[q]) for q in names],
        text=[_pct_label(sum(groups[q]), len(groups[q])) for q in names], textposition="outside",
        marker={"color": ANSWER_COLOR}, customdata=[len(groups[q]) for q in names],
        hovertemplate="%{x}: %{y:.1%} of %{customdata} cases<extra></extra>",
    ))
    overall = sum(bool(t.correct) for t in graded) / len(graded)
    fig.add_hline(y=overall, line={"color": HIGHLIGHT_COLOR, "dash": "dash", "width": 2},
                  annotation_text=f"all {_pct_label(sum(bool(t.correct) for t in graded), len(graded))}",
                  annotation_position="top left")
    fig.update_yaxes(range=[0, 1.15], tickformat=".0%", title_text="accuracy")
    fig.update_xaxes(title_text="question type", type="category")
    return _layout(fig, "Accuracy per question type")


def accuracy_by_kept(run: Any) -> go.Figure:
    """Accuracy of the cases grouped by how many clues the filter kept."""
    graded = [t for t in _graded(run) if t.clues]
    fig = go.Figure()
    if not graded:
        return _layout(_note(fig, "no clues in this run"), "Accuracy vs kept clues")
    groups: dict[int, list[bool]] = defaultdict(list)
    for t in graded:
        groups[len(t.kept_clues)].append(bool(t.correct))
    ks = sorted(groups)
    fig.add_trace(go.Bar(
        name="accuracy", x=ks, y=[sum(groups[k]) / len(groups[k]) for k in ks],
        text=[_pct_label(sum(groups[k]), len(groups[k])) for k in ks], textposition="outside",
        marker={"color": ANSWER_COLOR}, hovertemplate="%{x} kept: %{y:.1%}<extra></extra>",
    ))
    fig.update_yaxes(range=[0, 1.15], tickformat=".0%", title_text="accuracy")
    fig.update_xaxes(title_text="kept clues", tickmode="array", tickvals=ks)
    return _layout(fig, "Accuracy vs kept clues")


# ----------------------------------------------------------------------------- calibration
@dataclass(frozen=True)
class Bin:
    """One reliability bin: [lo, hi), its clue count, mean score and fraction relevant."""

    lo: float
    hi: float
    count: int
    mean_score: float | None
    fraction_relevant: float | None


def calibration_points(run: Any, config: MatchConfig = MatchConfig()) -> list[tuple[float, bool]]:
    """(filter score, gold-relevant?) of every scored clue whose sample has gold clues and chain."""
    points = []
    for t in run.traces:
        sample = run.samples.get(t.sample_id)
        if sample is None or not sample.clues or not sample.chain:
            continue
        relevant = relevant_predicted(t.clues, sample.clues, sample.chain, config)
        points += [(float(c.score), i in relevant) for i, c in enumerate(t.clues) if c.score is not None]
    return points


def reliability(points: Sequence[tuple[float, bool]], bins: int = DEFAULT_BINS) -> tuple[list[Bin], float | None]:
    """Equal-width bins on [0, 1] (a score of 1.0 goes in the last) and the ECE (None when empty)."""
    if isinstance(bins, bool) or not isinstance(bins, int) or not MIN_BINS <= bins <= MAX_BINS:
        raise InputError(f"bins must be an integer in [{MIN_BINS}, {MAX_BINS}], got {bins!r}")
    members: list[list[tuple[float, bool]]] = [[] for _ in range(bins)]
    for score, rel in points:
        members[min(int(min(max(score, 0.0), 1.0) * bins), bins - 1)].append((score, rel))
    out = []
    for i, m in enumerate(members):
        mean = sum(s for s, _ in m) / len(m) if m else None
        frac = sum(r for _, r in m) / len(m) if m else None
        out.append(Bin(i / bins, (i + 1) / bins, len(m), mean, frac))
    n = len(points)
    ece = sum(b.count / n * abs(b.fraction_relevant - b.mean_score) for b in out if b.count) if n else None
    return out, ece


def calibration(run: Any, bins: int = DEFAULT_BINS, config: MatchConfig = MatchConfig()) -> go.Figure:
    """Reliability diagram of the filter scores against gold relevance (module docstring)."""
    title = "Filter-score calibration"
    fig = go.Figure()
    if not any(c.score is not None for t in run.traces for c in t.clues):
        return _layout(_note(fig, "no clue scores in this run"), title)
    points = calibration_points(run, config)
    if not points:
        return _layout(_note(fig, "no gold clues and chains to judge the clue scores against"), title)
    table, ece = reliability(points, bins)
    filled = [b for b in table if b.count]
    fig.add_trace(go.Scatter(name="perfect calibration", x=[0, 1], y=[0, 1], mode="lines",
                             line={"color": "#999999", "dash": "dash"}, hoverinfo="skip"))
    fig.add_trace(go.Bar(name="clues per bin", x=[(b.lo + b.hi) / 2 for b in table], y=[b.count for b in table],
                         width=1 / bins * 0.9, yaxis="y2", marker={"color": OTHER_COLOR, "opacity": 0.35},
                         hovertemplate="%{y} clues<extra></extra>"))
    fig.add_trace(go.Scatter(
        name="fraction relevant", x=[b.mean_score for b in filled], y=[b.fraction_relevant for b in filled],
        mode="lines+markers+text", text=[f"n={b.count}" for b in filled], textposition="top center",
        marker={"color": ANSWER_COLOR, "size": 9}, line={"color": ANSWER_COLOR},
        hovertemplate="mean score %{x:.2f}<br>relevant %{y:.1%}<br>%{text}<extra></extra>",
    ))
    fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "showgrid": False, "title": {"text": "clues"},
                              "rangemode": "tozero"})
    fig.update_xaxes(range=[0, 1], title_text="filter score (bin mean)")
    fig.update_layout(yaxis={"range": [0, 1.05], "title": {"text": "fraction gold-relevant"}})  # not yaxis2 (counts)
    return _layout(fig, f"{title} (ECE {ece:.3f}, {len(points)} clues)")


# ----------------------------------------------------------------------------- costs
def _stage_means(traces: Iterable[Trace], attr: str) -> dict[str, float]:
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for t in traces:
        for stage, v in getattr(t, attr).items():
            sums[stage] += float(v)
            counts[stage] += 1
    order = [s for s in STAGE_ORDER if s in sums] + sorted(s for s in sums if s not in STAGE_ORDER)
    return {s: sums[s] / counts[s] for s in order}


def stage_costs(run: Any) -> go.Figure:
    """Mean tokens (left) and mean latency in ms (right) per pipeline stage, over the run's cases."""
    tokens = _stage_means(run.traces, "tokens")
    seconds = _stage_means(run.traces, "timings")
    if not tokens and not seconds:
        return _layout(_note(go.Figure(), "no timings or token counts in this run"), "Tokens and latency per stage")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("tokens per case", "latency per case (ms)"))
    fig.add_trace(go.Bar(name="tokens", x=list(tokens), y=list(tokens.values()), marker={"color": ANSWER_COLOR},
                         text=[f"{v:.0f}" for v in tokens.values()], textposition="outside"), row=1, col=1)
    fig.add_trace(go.Bar(name="latency", x=list(seconds), y=[v * 1000 for v in seconds.values()],
                         marker={"color": GOLD_COLOR}, text=[f"{v * 1000:.0f}" for v in seconds.values()],
                         textposition="outside"), row=1, col=2)
    fig.update_xaxes(type="category")
    total = sum(seconds.values())
    return _layout(fig, f"Tokens and latency per stage ({len(run.traces)} cases, {total:.2f} s per case)")


# ----------------------------------------------------------------------------- side by side
def side_by_side(traces: Mapping[str, Trace]) -> go.Figure:
    """Option probabilities of each mode (ClueNet, direct, cot) on one question, grouped by option."""
    fig = go.Figure()
    if not traces:
        return _layout(_note(fig, "nothing to compare yet"), "ClueNet vs baselines")
    first = next(iter(traces.values()))
    labels = [f"{LETTERS[i]}. {o[:30]}" for i, o in enumerate(first.options)]
    for mode, t in traces.items():
        probs = list(t.option_probs) + [0.0] * (len(labels) - len(t.option_probs))
        fig.add_trace(go.Bar(
            name=f"{mode} → {LETTERS[t.answer] if t.answer is not None else '–'}", x=labels, y=probs[: len(labels)],
            marker={"color": MODE_COLORS.get(mode, OTHER_COLOR)}, hovertemplate=mode + ": %{y:.3f}<extra></extra>",
        ))
    if first.gold is not None:
        fig.add_annotation(x=labels[first.gold], y=1.02, text="gold", showarrow=False, yref="y",
                           font={"color": GOLD_COLOR})
    fig.update_layout(barmode="group")
    fig.update_yaxes(range=[0, 1.08], title_text="probability")
    return _layout(fig, "ClueNet vs baselines: option probabilities")


def all_figures(run: Any, bins: int = DEFAULT_BINS) -> dict[str, go.Figure]:
    """Every dashboard figure of a run, by name (the Dashboard tab's four plots)."""
    return {"accuracy_by_type": accuracy_by_type(run), "calibration": calibration(run, bins),
            "accuracy_by_kept": accuracy_by_kept(run), "stage_costs": stage_costs(run)}
