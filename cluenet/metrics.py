"""Clue, filter and chain metrics: pure functions over ``Clue`` / ``Step``.

Definitions (all parameters live in ``MatchConfig``):

* **Statement normalisation** -- lower case, punctuation to spaces, the articles
  a/an/the dropped, whitespace collapsed.
* **Statement match** -- the normalised statements are equal, or their token F1
  (SQuAD-style, over word multisets) is >= ``min_text_f1`` (default 0.85).
  The default is strict on purpose: clue statements are short (3-7 words), and
  one changed word -- a wrong colour or object -- in a statement of up to six
  words gives F1 <= 0.83, which must count as a different (possibly
  hallucinated) clue; an added filler word ("person is holding cup") still
  matches.  Lower it for free-form paraphrases.
* **Time match** -- the temporal IoU of the two spans, each first widened by
  ``tolerance`` seconds on both sides, is >= ``min_iou`` (default 0.3 and
  0.25 s).  The widening lets point events (a single keyframe, start == end)
  and the grammar's 0.1 s precision match; with ``tolerance=0`` it is plain IoU.
* **Clue match** -- time match *and* statement match.
* **One-to-one matching** -- a maximum-cardinality bipartite matching between
  predicted and gold clues over the match relation (augmenting paths; among
  equal-size matchings, candidate pairs are tried in decreasing similarity =
  IoU + token F1, so the result is deterministic).
* **Clue precision / recall / F1** -- matched pairs over predicted / gold clues.
* **Gold-relevant clues** -- gold clues cited by at least one step of the gold chain.
* **Relevant predicted clue** -- one matched in the one-to-one matching of the
  predicted clues against the gold-relevant clues.
* **Filter precision / recall** -- among predicted clues with a filter decision
  (``kept`` not None): kept-and-relevant over kept, and over relevant.  They
  judge the filter alone, given what the extractor produced.
* **Citation error** -- a chain citation of an id that is not a clue of the
  trace, or of a clue the filter dropped (``kept is False``).
* **Hallucinated clue** -- a predicted clue that matches no gold event at all
  (not one-to-one: a duplicate of a real event is not a hallucination).

Each function returns counts (``Counts`` / ``PRF``) so that a dataset total is
the sum of per-question counts (micro average); a rate with an empty
denominator is ``None``, never 0.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

from cluenet.schema import Clue, Step

DEFAULT_MIN_IOU = 0.3
DEFAULT_TOLERANCE_S = 0.25
DEFAULT_MIN_TEXT_F1 = 0.85
_ARTICLES = {"a", "an", "the"}


@dataclass(frozen=True)
class MatchConfig:
    """When a predicted clue matches a gold clue or event (see module docstring)."""

    min_iou: float = DEFAULT_MIN_IOU
    tolerance: float = DEFAULT_TOLERANCE_S
    min_text_f1: float = DEFAULT_MIN_TEXT_F1

    def __post_init__(self) -> None:
        if not 0.0 < self.min_iou <= 1.0:
            raise ValueError(f"min_iou must be in (0, 1], got {self.min_iou}")
        if self.tolerance < 0:
            raise ValueError(f"tolerance must be >= 0 seconds, got {self.tolerance}")
        if not 0.0 < self.min_text_f1 <= 1.0:
            raise ValueError(f"min_text_f1 must be in (0, 1], got {self.min_text_f1}")


@dataclass(frozen=True)
class Counts:
    """``hits`` out of ``total``; ``rate`` is None when ``total`` is 0.  Adds up."""

    hits: int = 0
    total: int = 0

    @property
    def rate(self) -> float | None:
        return self.hits / self.total if self.total else None

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(self.hits + other.hits, self.total + other.total)


@dataclass(frozen=True)
class PRF:
    """True positives over predicted (precision) and gold (recall) counts.  Adds up."""

    tp: int = 0
    n_pred: int = 0
    n_gold: int = 0

    @property
    def precision(self) -> float | None:
        return self.tp / self.n_pred if self.n_pred else None

    @property
    def recall(self) -> float | None:
        return self.tp / self.n_gold if self.n_gold else None

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        if p is None or r is None:
            return None
        return 2 * p * r / (p + r) if p + r else 0.0

    def __add__(self, other: "PRF") -> "PRF":
        return PRF(self.tp + other.tp, self.n_pred + other.n_pred, self.n_gold + other.n_gold)

    def as_dict(self) -> dict:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1,
                "tp": self.tp, "n_pred": self.n_pred, "n_gold": self.n_gold}


# ----------------------------------------------------------------------------- similarity
def normalize_statement(text: str) -> str:
    """Lower case, punctuation to spaces, articles dropped, whitespace collapsed."""
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return " ".join(w for w in words if w not in _ARTICLES)


def token_f1(a: str, b: str) -> float:
    """F1 of the normalised word multisets of two statements (1.0 if both empty)."""
    ta, tb = normalize_statement(a).split(), normalize_statement(b).split()
    if not ta or not tb:
        return float(ta == tb)
    common = sum((Counter(ta) & Counter(tb)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(ta), common / len(tb)
    return 2 * precision * recall / (precision + recall)


def temporal_iou(a: Clue, b: Clue, tolerance: float = 0.0) -> float:
    """IoU of two time spans, each widened by ``tolerance`` s on both sides (floor 0)."""
    a0, a1 = max(0.0, a.start - tolerance), a.end + tolerance
    b0, b1 = max(0.0, b.start - tolerance), b.end + tolerance
    inter = max(0.0, min(a1, b1) - max(a0, b0))
    union = max(a1, b1) - min(a0, b0)
    if union <= 0:  # two identical points with no tolerance
        return 1.0 if (a0, a1) == (b0, b1) else 0.0
    return inter / union


def clues_match(pred: Clue, gold: Clue, config: MatchConfig = MatchConfig()) -> bool:
    """Time match and statement match (module docstring)."""
    if temporal_iou(pred, gold, config.tolerance) < config.min_iou:
        return False
    same = normalize_statement(pred.text) == normalize_statement(gold.text)
    return same or token_f1(pred.text, gold.text) >= config.min_text_f1


def _similarity(pred: Clue, gold: Clue, config: MatchConfig) -> float:
    return temporal_iou(pred, gold, config.tolerance) + token_f1(pred.text, gold.text)


# ----------------------------------------------------------------------------- matching
def match_clues(
    pred: Sequence[Clue], gold: Sequence[Clue], config: MatchConfig = MatchConfig()
) -> list[tuple[int, int]]:
    """A maximum one-to-one matching as sorted (pred index, gold index) pairs."""
    candidates = [
        sorted((g for g in range(len(gold)) if clues_match(p, gold[g], config)),
               key=lambda g, p=p: -_similarity(p, gold[g], config))
        for p in pred
    ]
    owner: dict[int, int] = {}  # gold index -> pred index

    def augment(p: int, seen: set[int]) -> bool:
        # Kuhn's algorithm: take a free gold clue or re-route its current owner
        for g in candidates[p]:
            if g in seen:
                continue
            seen.add(g)
            if g not in owner or augment(owner[g], seen):
                owner[g] = p
                return True
        return False

    for p in range(len(pred)):
        augment(p, set())
    return sorted((p, g) for g, p in owner.items())


def clue_prf(pred: Sequence[Clue], gold: Sequence[Clue], config: MatchConfig = MatchConfig()) -> PRF:
    """Clue precision / recall / F1 counts of one question (one-to-one matching)."""
    return PRF(tp=len(match_clues(pred, gold, config)), n_pred=len(pred), n_gold=len(gold))


def relevant_gold(gold_clues: Sequence[Clue], gold_chain: Sequence[Step]) -> tuple[Clue, ...]:
    """The gold clues cited by at least one gold chain step, in clue order."""
    cited = {cid for step in gold_chain for cid in step.cites}
    return tuple(c for c in gold_clues if c.id in cited)


def relevant_predicted(
    pred: Sequence[Clue], gold_clues: Sequence[Clue], gold_chain: Sequence[Step],
    config: MatchConfig = MatchConfig(),
) -> set[int]:
    """Indices of predicted clues matched one-to-one to a gold-relevant clue."""
    relevant = relevant_gold(gold_clues, gold_chain)
    return {p for p, _ in match_clues(pred, relevant, config)}


def filter_prf(
    pred: Sequence[Clue], gold_clues: Sequence[Clue], gold_chain: Sequence[Step],
    config: MatchConfig = MatchConfig(),
) -> PRF:
    """Filter precision (``tp / n_pred``) and recall (``tp / n_gold``) counts.

    Over predicted clues with a filter decision only: ``n_pred`` = kept clues,
    ``n_gold`` = relevant clues, ``tp`` = kept and relevant.  Clues without a
    decision (``kept is None``, e.g. an unfiltered baseline) are left out.
    """
    decided = [i for i, c in enumerate(pred) if c.kept is not None]
    relevant = relevant_predicted(pred, gold_clues, gold_chain, config) & set(decided)
    kept = {i for i in decided if pred[i].kept}
    return PRF(tp=len(kept & relevant), n_pred=len(kept), n_gold=len(relevant))


def citation_errors(chain: Sequence[Step], clues: Sequence[Clue]) -> Counts:
    """Citations of a missing or filtered-out clue, out of all chain citations."""
    usable = {c.id for c in clues if c.kept is not False}
    total = sum(len(step.cites) for step in chain)
    bad = sum(1 for step in chain for cid in step.cites if cid not in usable)
    return Counts(hits=bad, total=total)


def hallucinated_clues(pred: Iterable[Clue], events: Sequence[Clue], config: MatchConfig = MatchConfig()) -> Counts:
    """Predicted clues that match no gold event, out of all predicted clues."""
    pred = list(pred)
    bad = sum(1 for p in pred if not any(clues_match(p, e, config) for e in events))
    return Counts(hits=bad, total=len(pred))
