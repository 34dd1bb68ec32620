"""Hallucination and faithfulness flags on a Trace (DESIGN.md, "Hallucination and faithfulness analysis").

Five kinds of flag, each a ``cluenet.schema.Flag`` with a stable ``kind``:

``unsupported_citation``
    a chain step cites a clue that does not exist, or one the filter dropped.
``chain_answer_inconsistency``
    the option the chain concludes (read from its last step that names one, with
    ``cluenet.answers.extract_answer``) differs from the trace's answer.
``ungrounded_clue``
    where gold events exist (ClueWorld, STAR situations, NExT-GQA spans), a clue that
    matches no gold event (time-span overlap plus statement match, ``cluenet.metrics``).
``clue_necessity``
    dropping any single kept clue changes p(answer) by less than ``eps``: the answer
    does not rest on the evidence the chain cites.  The per-clue changes are in the
    message; ``value`` is the largest change.  Needs the model (one reasoning pass per
    kept clue, on the cached prefix).
``video_independent_answer``
    the answer survives a blanked clip (every frame replaced by its mean grey), or, for
    temporal questions (qtype starting with "T"), a clip whose frames are shuffled: a
    language prior rather than the video decided.  Needs the model (two full runs).
    A shuffled clip does not fire it for causal or descriptive questions, whose answer
    may legitimately not depend on frame order.

The first three are pure functions of the trace (and the gold events); the last two
run the model and are opt-in (``probes=True``), since they cost extra passes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from .answers import extract_answer
from .metrics import MatchConfig, clues_match
from .schema import Clue, Flag, Trace

NECESSITY_EPS = 0.05  # |change in p(answer)| below this means "not needed"
SHUFFLE_SEED = 0

FLAG_KINDS = (
    "unsupported_citation",
    "chain_answer_inconsistency",
    "ungrounded_clue",
    "clue_necessity",
    "video_independent_answer",
)

FLAG_EXPLANATIONS = {
    "unsupported_citation": "A reasoning step cites a clue that does not exist or that the filter dropped.",
    "chain_answer_inconsistency": "The option the reasoning chain concludes is not the option the model answered.",
    "ungrounded_clue": "A clue describes something that matches no real event of the clip in its time span.",
    "clue_necessity": "Dropping any one kept clue barely changes the answer's probability: the answer ignores its evidence.",
    "video_independent_answer": "The answer stays the same when the frames are blanked (or shuffled, for temporal "
                                "questions): a language prior, not the video, decided it.",
}


class Reasoner(Protocol):
    """What the model probes need (``cluenet.model.ClueNet`` satisfies it)."""

    def reason(self, trace: Trace, kept_ids: Sequence[str]) -> Trace: ...

    def analyze(self, video: Any, question: str, options: Sequence[str], **kwargs: Any) -> Trace: ...


# ----------------------------------------------------------------------------- pure flags
def citation_flags(trace: Trace) -> list[Flag]:
    """One flag per chain step that cites a missing or filtered-out clue."""
    by_id = {c.id: c for c in trace.clues}
    flags = []
    for i, step in enumerate(trace.chain):
        missing = [c for c in step.cites if c not in by_id]
        dropped = [c for c in step.cites if c in by_id and by_id[c].kept is False]
        if not (missing or dropped):
            continue
        parts = []
        if missing:
            parts.append(f"cites {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not a clue")
        if dropped:
            parts.append(f"cites {', '.join(dropped)}, which the filter dropped")
        flags.append(Flag("unsupported_citation", f"step {i + 1} " + " and ".join(parts),
                          clue_ids=tuple(missing + dropped), step=i))
    return flags


def chain_conclusion(trace: Trace) -> tuple[int | None, int | None]:
    """(option index, step index) the chain concludes: the last step naming an option."""
    for i in range(len(trace.chain) - 1, -1, -1):
        choice = extract_answer(trace.chain[i].text, trace.options)
        if choice is not None:
            return choice, i
    return None, None


def consistency_flags(trace: Trace) -> list[Flag]:
    """A flag when the chain concludes one option and the trace answers another."""
    concluded, step = chain_conclusion(trace)
    if concluded is None or trace.answer is None or concluded == trace.answer:
        return []
    letters = "ABCDEFGHIJ"
    return [Flag("chain_answer_inconsistency",
                 f"the chain concludes {letters[concluded]} (step {step + 1}) but the answer is {letters[trace.answer]}",
                 step=step, value=float(concluded))]


def grounding_flags(trace: Trace, events: Sequence[Clue], config: MatchConfig = MatchConfig()) -> list[Flag]:
    """One flag per clue matching no gold event; nothing when there are no gold events."""
    if not events:
        return []
    return [
        Flag("ungrounded_clue", f"{c.id} [{c.start:.1f}-{c.end:.1f}s] '{c.text}' matches no event of the clip",
             clue_ids=(c.id,))
        for c in trace.clues
        if not any(clues_match(c, e, config) for e in events)
    ]


def static_flags(trace: Trace, events: Sequence[Clue] = (), config: MatchConfig = MatchConfig()) -> list[Flag]:
    """Every flag that needs no model run."""
    return citation_flags(trace) + consistency_flags(trace) + grounding_flags(trace, events, config)


# ----------------------------------------------------------------------------- model probes
def _p_answer(trace: Trace, answer: int) -> float:
    return float(trace.option_probs[answer]) if answer < len(trace.option_probs) else 0.0


def clue_necessity(model: Reasoner, trace: Trace) -> dict[str, float]:
    """Change in p(answer) when each kept clue is dropped (one reasoning pass each).

    Positive = the answer became less likely without the clue.  Empty when fewer than
    two clues are kept (dropping the only clue leaves nothing to reason from) or when
    the trace has no answer.
    """
    kept = [c.id for c in trace.kept_clues]
    if trace.answer is None or len(kept) < 2:
        return {}
    base = _p_answer(trace, trace.answer)
    return {cid: base - _p_answer(model.reason(trace, [k for k in kept if k != cid]), trace.answer) for cid in kept}


def necessity_flags(model: Reasoner, trace: Trace, eps: float = NECESSITY_EPS) -> list[Flag]:
    deltas = clue_necessity(model, trace)
    if not deltas or max(abs(d) for d in deltas.values()) >= eps:
        return []
    detail = ", ".join(f"{cid} {d:+.3f}" for cid, d in deltas.items())
    return [Flag("clue_necessity", f"no kept clue moves p(answer) by {eps} or more when dropped ({detail})",
                 clue_ids=tuple(deltas), value=max(abs(d) for d in deltas.values()))]


@dataclass(frozen=True)
class _Frames:
    """A sampled clip with altered frames (same timestamps), accepted by ``ClueNet.analyze``."""

    frames: np.ndarray
    times: tuple[float, ...]
    name: str = "probe"


def blanked(clip: Any) -> _Frames:
    """Every frame replaced by the clip's mean colour: no visual information left."""
    frames = np.asarray(clip.frames)
    grey = frames.reshape(-1, frames.shape[-1]).mean(axis=0).astype(np.uint8)
    return _Frames(np.broadcast_to(grey, frames.shape).copy(), tuple(clip.times), "blanked")


def shuffled(clip: Any, seed: int = SHUFFLE_SEED) -> _Frames:
    """Frames in a random order (a derangement when possible), timestamps unchanged."""
    frames = np.asarray(clip.frames)
    order = np.random.default_rng(seed).permutation(len(frames))
    if len(frames) > 1 and (order == np.arange(len(frames))).any():
        order = np.roll(np.arange(len(frames)), 1)  # a derangement: no frame stays in place
    return _Frames(frames[order], tuple(clip.times), "shuffled")


def video_dependence_flags(model: Reasoner, clip: Any, trace: Trace, **analyze_kwargs: Any) -> list[Flag]:
    """Re-answer with a blanked and a shuffled clip; flag an answer that survives."""
    if trace.answer is None:
        return []
    survived = []
    for probe in (blanked(clip), shuffled(clip)):
        if probe.name == "shuffled" and not trace.qtype.upper().startswith("T"):
            continue
        again = model.analyze(probe, trace.question, trace.options, num_frames=len(probe.frames),
                              filter=trace.filter, **analyze_kwargs)
        if again.answer == trace.answer:
            survived.append(f"{probe.name} frames (p={_p_answer(again, trace.answer):.2f})")
    if not survived:
        return []
    return [Flag("video_independent_answer", "the answer stays the same with " + " and ".join(survived),
                 value=float(len(survived)))]


def add_flags(trace: Trace, events: Sequence[Clue] = (), model: Reasoner | None = None, clip: Any = None,
              config: MatchConfig = MatchConfig()) -> Trace:
    """The trace with every applicable flag attached (replacing earlier ones of the same kinds).

    The model probes run only when ``model`` is given (necessity) and also ``clip``
    (video dependence); ``clip`` is the sampled clip the trace was made from.
    """
    flags = static_flags(trace, events, config)
    recomputed = set(FLAG_KINDS[:3])
    if model is not None:
        flags += necessity_flags(model, trace)
        recomputed.add("clue_necessity")
        if clip is not None:
            flags += video_dependence_flags(model, clip, trace)
            recomputed.add("video_independent_answer")
    earlier = tuple(f for f in trace.flags if f.kind not in recomputed)
    return trace.with_(flags=earlier + tuple(flags))


def flag_counts(traces: Sequence[Trace]) -> dict[str, int]:
    """How many traces carry each kind of flag (a trace counts once per kind)."""
    counts = {kind: 0 for kind in FLAG_KINDS}
    for t in traces:
        for kind in {f.kind for f in t.flags}:
            counts[kind] = counts.get(kind, 0) + 1
    return counts
