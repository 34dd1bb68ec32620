"""Typed records shared by the whole project.

Two families live here:

* ``Sample`` -- one annotated multiple-choice video question, the single JSONL
  schema that every dataset loader (NExT-QA, STAR, MVBench, ClueWorld) produces.
* ``Trace`` -- everything one run of the pipeline produced for one question:
  clues with their filter scores, the reasoning chain, the answer, option
  probabilities, flags, warnings and timings.  The app, the plots and the
  evaluator consume Traces, never raw model text.

All records are frozen dataclasses with a lossless JSON round trip
(``to_dict`` / ``from_dict``; ``Trace.to_json`` / ``Trace.from_json``).
Sequences are stored as tuples so that the records stay immutable; JSON turns
them into lists and ``from_dict`` turns them back.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

SCHEMA_VERSION = "1.0"
LETTERS = "ABCDEFGHIJ"  # option letters; MVBench has at most 5, NExT-QA 5, STAR 4
MAX_OPTIONS = len(LETTERS)


def letter(index: int) -> str:
    """Option letter for a 0-based option index (0 -> "A")."""
    if not 0 <= index < MAX_OPTIONS:
        raise ValueError(f"option index must be in [0, {MAX_OPTIONS}), got {index}")
    return LETTERS[index]


# --------------------------------------------------------------------- clues / chain
@dataclass(frozen=True)
class Clue:
    """One visual clue: an id like ``c1``, a time span in seconds and a statement.

    ``score`` is the adaptive filter's utility in [0, 1] and ``kept`` whether the
    filter kept it; both are ``None`` before filtering (e.g. gold clues).
    """

    id: str
    start: float
    end: float
    text: str
    score: float | None = None
    kept: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Clue":
        return cls(
            id=str(d["id"]),
            start=float(d["start"]),
            end=float(d["end"]),
            text=str(d["text"]),
            score=None if d.get("score") is None else float(d["score"]),
            kept=None if d.get("kept") is None else bool(d["kept"]),
        )


@dataclass(frozen=True)
class Step:
    """One reasoning step and the clue ids it cites."""

    text: str
    cites: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "cites": list(self.cites)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Step":
        return cls(text=str(d["text"]), cites=tuple(str(c) for c in d.get("cites", ())))


# --------------------------------------------------------------------- dataset sample
@dataclass(frozen=True)
class Sample:
    """One multiple-choice video question in the project's JSONL schema.

    ``video`` is a path (relative paths are resolved against the JSONL file's
    folder by the loaders); ``start``/``end`` optionally restrict the clip (seconds).
    ``answer`` is the 0-based index of the correct option. ``clues`` and ``chain``
    are gold annotations when the source has them.  ``events`` are gold events
    (grounding for hallucination checks) in the same shape as clues.
    """

    id: str
    video: str
    question: str
    options: tuple[str, ...]
    answer: int
    qtype: str = ""
    start: float | None = None
    end: float | None = None
    clues: tuple[Clue, ...] = ()
    chain: tuple[Step, ...] = ()
    events: tuple[Clue, ...] = ()
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "video": self.video,
            "question": self.question,
            "options": list(self.options),
            "answer": self.answer,
            "qtype": self.qtype,
            "source": self.source,
        }
        if self.start is not None:
            d["start"] = self.start
        if self.end is not None:
            d["end"] = self.end
        if self.clues:
            d["clues"] = [c.to_dict() for c in self.clues]
        if self.chain:
            d["chain"] = [s.to_dict() for s in self.chain]
        if self.events:
            d["events"] = [e.to_dict() for e in self.events]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Sample":
        return cls(
            id=str(d["id"]),
            video=str(d["video"]),
            question=str(d["question"]),
            options=tuple(str(o) for o in d["options"]),
            answer=int(d["answer"]),
            qtype=str(d.get("qtype", "")),
            start=None if d.get("start") is None else float(d["start"]),
            end=None if d.get("end") is None else float(d["end"]),
            clues=tuple(Clue.from_dict(c) for c in d.get("clues", ())),
            chain=tuple(Step.from_dict(s) for s in d.get("chain", ())),
            events=tuple(Clue.from_dict(e) for e in d.get("events", ())),
            source=str(d.get("source", "")),
        )


# --------------------------------------------------------------------- trace
@dataclass(frozen=True)
class ClipInfo:
    """What the pipeline saw of the clip.

    ``name`` is a display name (never a server path); ``sha256`` identifies the
    file; ``frame_times`` are the real timestamps (seconds) of the sampled frames.
    """

    name: str
    sha256: str = ""
    duration: float = 0.0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    frame_times: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["frame_times"] = list(self.frame_times)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ClipInfo":
        return cls(
            name=str(d.get("name", "")),
            sha256=str(d.get("sha256", "")),
            duration=float(d.get("duration", 0.0)),
            fps=float(d.get("fps", 0.0)),
            width=int(d.get("width", 0)),
            height=int(d.get("height", 0)),
            frame_times=tuple(float(t) for t in d.get("frame_times", ())),
        )


@dataclass(frozen=True)
class ModelInfo:
    """Which model produced a trace, and what it was trained on."""

    name: str
    backbone: str = ""
    adapter: str = ""
    filter_head: str = ""
    device: str = "cpu"
    dtype: str = "float32"
    attn_implementation: str = ""
    trained_on: str = ""
    mode: str = "cluenet"  # "cluenet" | "training-free" | "direct" | "cot"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelInfo":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: str(v) for k, v in d.items() if k in known})


@dataclass(frozen=True)
class Flag:
    """One hallucination / faithfulness finding on a trace.

    ``kind`` is a stable machine name (e.g. ``unsupported_citation``), ``message``
    one human sentence, ``clue_ids`` / ``step`` point at what it concerns and
    ``value`` carries a number when the flag has one (e.g. a probability change).
    """

    kind: str
    message: str
    clue_ids: tuple[str, ...] = ()
    step: int | None = None
    value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "clue_ids": list(self.clue_ids),
            "step": self.step,
            "value": self.value,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Flag":
        return cls(
            kind=str(d["kind"]),
            message=str(d.get("message", "")),
            clue_ids=tuple(str(c) for c in d.get("clue_ids", ())),
            step=None if d.get("step") is None else int(d["step"]),
            value=None if d.get("value") is None else float(d["value"]),
        )


@dataclass(frozen=True)
class FilterSettings:
    """The adaptive filter's knobs (DESIGN.md): keep u_i >= max(tau_min, rho * max_j u_j),
    at least one clue and at most ``m_max``."""

    tau_min: float = 0.3
    rho: float = 0.5
    m_max: int = 8

    def __post_init__(self) -> None:
        if not 0.0 <= self.tau_min <= 1.0:
            raise ValueError(f"tau_min must be in [0, 1], got {self.tau_min}")
        if not 0.0 <= self.rho <= 1.0:
            raise ValueError(f"rho must be in [0, 1], got {self.rho}")
        if self.m_max < 1:
            raise ValueError(f"m_max must be >= 1, got {self.m_max}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FilterSettings":
        return cls(tau_min=float(d["tau_min"]), rho=float(d["rho"]), m_max=int(d["m_max"]))


@dataclass(frozen=True)
class Trace:
    """Everything one pipeline run produced for one question on one clip.

    ``answer`` is the 0-based index chosen (argmax of ``option_probs``), or ``None``
    when nothing could be decided; ``generated_answer`` is the letter index the
    model wrote in ``<answer>`` (may disagree: a warning is recorded then).
    ``threshold`` is the effective cut the filter applied.  ``timings`` maps a stage
    name to seconds, ``tokens`` a stage name to generated token counts, and ``raw``
    holds the generated text of each pass for debugging.
    """

    clip: ClipInfo
    question: str
    options: tuple[str, ...]
    clues: tuple[Clue, ...] = ()
    chain: tuple[Step, ...] = ()
    answer: int | None = None
    generated_answer: int | None = None
    option_probs: tuple[float, ...] = ()
    gold: int | None = None
    qtype: str = ""
    sample_id: str = ""
    filter: FilterSettings = field(default_factory=FilterSettings)
    threshold: float | None = None
    flags: tuple[Flag, ...] = ()
    warnings: tuple[str, ...] = ()
    timings: Mapping[str, float] = field(default_factory=dict)
    tokens: Mapping[str, int] = field(default_factory=dict)
    raw: Mapping[str, str] = field(default_factory=dict)
    model: ModelInfo = field(default_factory=lambda: ModelInfo(name=""))
    schema_version: str = SCHEMA_VERSION

    # convenience views --------------------------------------------------------
    @property
    def kept_clues(self) -> tuple[Clue, ...]:
        return tuple(c for c in self.clues if c.kept)

    @property
    def correct(self) -> bool | None:
        if self.gold is None:
            return None
        return self.answer == self.gold

    def with_(self, **changes: Any) -> "Trace":
        """A copy with some fields replaced (dataclasses.replace)."""
        return replace(self, **changes)

    # serialisation ------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "clip": self.clip.to_dict(),
            "question": self.question,
            "options": list(self.options),
            "clues": [c.to_dict() for c in self.clues],
            "chain": [s.to_dict() for s in self.chain],
            "answer": self.answer,
            "generated_answer": self.generated_answer,
            "option_probs": list(self.option_probs),
            "gold": self.gold,
            "qtype": self.qtype,
            "sample_id": self.sample_id,
            "filter": self.filter.to_dict(),
            "threshold": self.threshold,
            "flags": [f.to_dict() for f in self.flags],
            "warnings": list(self.warnings),
            "timings": dict(self.timings),
            "tokens": dict(self.tokens),
            "raw": dict(self.raw),
            "model": self.model.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Trace":
        version = str(d.get("schema_version", ""))
        if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
            raise ValueError(f"trace schema version {version!r} is not compatible with {SCHEMA_VERSION}")
        opt = lambda k: None if d.get(k) is None else int(d[k])  # noqa: E731
        return cls(
            schema_version=version,
            clip=ClipInfo.from_dict(d["clip"]),
            question=str(d["question"]),
            options=tuple(str(o) for o in d["options"]),
            clues=tuple(Clue.from_dict(c) for c in d.get("clues", ())),
            chain=tuple(Step.from_dict(s) for s in d.get("chain", ())),
            answer=opt("answer"),
            generated_answer=opt("generated_answer"),
            option_probs=tuple(float(p) for p in d.get("option_probs", ())),
            gold=opt("gold"),
            qtype=str(d.get("qtype", "")),
            sample_id=str(d.get("sample_id", "")),
            filter=FilterSettings.from_dict(d["filter"]) if d.get("filter") else FilterSettings(),
            threshold=None if d.get("threshold") is None else float(d["threshold"]),
            flags=tuple(Flag.from_dict(f) for f in d.get("flags", ())),
            warnings=tuple(str(w) for w in d.get("warnings", ())),
            timings={str(k): float(v) for k, v in d.get("timings", {}).items()},
            tokens={str(k): int(v) for k, v in d.get("tokens", {}).items()},
            raw={str(k): str(v) for k, v in d.get("raw", {}).items()},
            model=ModelInfo.from_dict(d.get("model", {"name": ""})),
        )

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "Trace":
        return cls.from_dict(json.loads(text))
