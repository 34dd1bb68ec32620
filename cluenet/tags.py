"""Analyst tags on case-study cases: hallucination categories plus a free note.

Categories follow three video-hallucination benchmarks (DESIGN.md asks for them):

* **VideoHallucer** (Wang et al. 2024) -- intrinsic: object-relation, temporal, semantic
  detail; extrinsic: factual, non-factual;
* **EventHallusion** (Zhang et al. 2024) -- entire (a whole event that is not there),
  mix (a real event mixed with an invented one; "interleave" in the first version),
  misleading (the question's wording leads the model to a prior);
* **VidHalluc** (Li et al. 2025) -- action, temporal sequence, scene transition.

A category id is ``"<benchmark>/<name>"``, e.g. ``"videohallucer/object_relation"``.

Storage: ``tags.jsonl`` beside the run, one record a line,
``{"case_id", "categories", "note", "time"}``.  Records are only ever appended, each
under an exclusive ``fcntl.flock`` and fsynced, so concurrent requests (threads or
processes: each call opens its own file description) never interleave or lose a
write.  Reading takes the shared lock; the **last record of a case wins**, and a record
with no categories and no note clears the case.  A torn last line (a crash mid-write)
is skipped.  flock is advisory and local: it does not cover NFS mounts without lock
support.
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from .errors import InputError

TAXONOMY: dict[str, dict[str, str]] = {
    "videohallucer": {
        "object_relation": "Object-relation: wrong objects or relations between them (intrinsic).",
        "temporal": "Temporal: wrong order, timing or duration of events (intrinsic).",
        "semantic_detail": "Semantic detail: wrong attribute such as colour, count or fine detail (intrinsic).",
        "extrinsic_factual": "Extrinsic factual: true world knowledge that the clip does not show.",
        "extrinsic_non_factual": "Extrinsic non-factual: content neither in the clip nor true.",
    },
    "eventhallusion": {
        "entire_event": "Entire event: a whole event that never happens in the clip.",
        "mix_event": "Mix event: a real event mixed with an invented one.",
        "misleading_event": "Misleading: the question's wording led the answer, not the clip.",
    },
    "vidhalluc": {
        "action": "Action: a wrong or invented action.",
        "temporal_sequence": "Temporal sequence: actions or events in the wrong order.",
        "scene_transition": "Scene transition: a scene change that is missed or invented.",
    },
}
BENCHMARK_NAMES = {"videohallucer": "VideoHallucer", "eventhallusion": "EventHallusion", "vidhalluc": "VidHalluc"}
CATEGORIES: tuple[str, ...] = tuple(f"{b}/{c}" for b, cats in TAXONOMY.items() for c in cats)
MAX_NOTE_CHARS = 2000
MAX_CASE_ID_CHARS = 300
MAX_LINE_BYTES = 64_000  # a valid record is far smaller; longer lines are not ours


def describe(category: str) -> str:
    """One-sentence explanation of a category id (for the UI's tooltip / help)."""
    bench, _, name = category.partition("/")
    return f"{BENCHMARK_NAMES[bench]} -- {TAXONOMY[bench][name]}"


@dataclass(frozen=True)
class Tag:
    """The current tag of one case."""

    case_id: str
    categories: tuple[str, ...] = ()
    note: str = ""
    time: str = ""

    @property
    def empty(self) -> bool:
        return not self.categories and not self.note

    def label(self) -> str:
        """Short text for a table cell: the category names, then the note's start."""
        parts = [c.split("/", 1)[1] for c in self.categories]
        if self.note:
            parts.append(self.note if len(self.note) <= 40 else self.note[:39] + "…")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return {"case_id": self.case_id, "categories": list(self.categories), "note": self.note, "time": self.time}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Tag":
        return cls(case_id=str(d["case_id"]), categories=tuple(str(c) for c in d.get("categories", ())),
                   note=str(d.get("note", "")), time=str(d.get("time", "")))


def validate(case_id: str, categories: Iterable[str], note: str) -> tuple[str, tuple[str, ...], str]:
    """Checked (case_id, categories in canonical order without repeats, note); InputError otherwise."""
    if not isinstance(case_id, str) or not case_id.strip():
        raise InputError(f"case id must be a non-empty string, got {case_id!r}")
    if len(case_id) > MAX_CASE_ID_CHARS:
        raise InputError(f"case id is {len(case_id)} characters, limit {MAX_CASE_ID_CHARS}")
    if isinstance(categories, str):
        categories = [categories]  # one category passed bare: accept, do not iterate its letters
    cats = [str(c) for c in categories]
    unknown = [c for c in cats if c not in CATEGORIES]
    if unknown:
        raise InputError(f"unknown tag categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown))}; "
                         f"allowed: {', '.join(CATEGORIES)}")
    if not isinstance(note, str):
        raise InputError(f"note must be a string, got {type(note).__name__}")
    note = note.strip()
    if len(note) > MAX_NOTE_CHARS:
        raise InputError(f"note is {len(note)} characters, limit {MAX_NOTE_CHARS}")
    return case_id, tuple(c for c in CATEGORIES if c in cats), note


class TagStore:
    """Tags of one run in an append-only JSONL file (module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def set(self, case_id: str, categories: Iterable[str] = (), note: str = "") -> Tag:
        """Replace the tag of ``case_id`` (no categories and no note clears it); returns it."""
        case_id, cats, note = validate(case_id, categories, note)
        tag = Tag(case_id, cats, note, _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"))
        line = (json.dumps(tag.to_dict(), ensure_ascii=False) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND + one write under the exclusive lock: records never interleave
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)  # closing releases the lock
        return tag

    def clear(self, case_id: str) -> Tag:
        """Remove the tag of a case (appends an empty record; history stays in the file)."""
        return self.set(case_id, (), "")

    def all(self) -> dict[str, Tag]:
        """Current tag of every tagged case (last record wins; cleared cases left out)."""
        latest: dict[str, Tag] = {}
        for tag in self._records():
            latest[tag.case_id] = tag
        return {k: t for k, t in latest.items() if not t.empty}

    def get(self, case_id: str) -> Tag | None:
        """Current tag of one case, or None."""
        return self.all().get(case_id)

    def history(self, case_id: str) -> list[Tag]:
        """Every record written for one case, oldest first."""
        return [t for t in self._records() if t.case_id == case_id]

    def _records(self) -> list[Tag]:
        if not self.path.is_file():
            return []
        with self.path.open("rb") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
            lines = fh.read().split(b"\n")
        records = []
        for raw in lines[:-1]:  # the piece after the last newline is empty or a torn write
            tag = _parse(raw)
            if tag is not None:
                records.append(tag)
        return records


def _parse(raw: bytes) -> Tag | None:
    if not raw.strip() or len(raw) > MAX_LINE_BYTES:
        return None
    try:
        return Tag.from_dict(json.loads(raw))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # a foreign or damaged line: skipped, never fatal for the UI


def category_counts(tags: Mapping[str, Tag]) -> dict[str, int]:
    """Cases per category (every category listed, 0 when unused)."""
    counts = {c: 0 for c in CATEGORIES}
    for tag in tags.values():
        for c in tag.categories:
            counts[c] += 1
    return counts


def tag_case(run, case_id: str, categories: Iterable[str] = (), note: str = "") -> Tag:
    """Tag a case of a ``cluenet.casestudy.Run``: the case must exist, the run have a tags file."""
    if run.tags_path is None:
        raise InputError("this run has no tags file (it was not loaded from a folder or file)")
    run.trace(case_id)  # InputError naming the id when the case is not in the run
    return TagStore(run.tags_path).set(case_id, categories, note)
