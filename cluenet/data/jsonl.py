"""The project's JSONL dataset format: one ``cluenet.schema.Sample`` per line.

Every loader (NExT-QA, STAR, MVBench, ClueWorld) produces Samples; this module
reads, validates and writes them as JSONL so that any of them can be cached and
read back the same way::

    {"id": "q1", "video": "clips/q1.mp4", "question": "...", "options": ["..", ".."],
     "answer": 1, "qtype": "CW", "start": 2.0, "end": 9.5,
     "clues": [{"id": "c1", "start": 0.0, "end": 1.5, "text": "..."}],
     "chain": [{"text": "...", "cites": ["c1"]}], "events": [...], "source": "clueworld"}

Validation names the file, the line and the field ("data.jsonl line 17: field
'answer' is 7, but there are 5 options").  ``strict=True`` raises
``InputError`` on the first bad file (listing every bad line found, up to
``MAX_REPORTED_ERRORS``); ``strict=False`` skips bad lines and returns their
messages.  Relative ``video`` paths are resolved against the JSONL file's folder.
Times are seconds on the source video's timeline; clue/event spans are not
checked against ``start``/``end`` (a clue may legitimately lie just outside).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from cluenet.errors import InputError
from cluenet.schema import MAX_OPTIONS, Sample

MIN_OPTIONS = 2
MAX_LINE_CHARS = 1_000_000  # one sample with a few hundred clues is ~100 kB
MAX_REPORTED_ERRORS = 20  # how many bad lines a strict failure lists
REQUIRED_FIELDS = ("id", "video", "question", "options", "answer")


@dataclass(frozen=True)
class LoadReport:
    """What ``load_jsonl`` read: the valid samples and one message per bad line."""

    samples: tuple[Sample, ...]
    errors: tuple[str, ...] = ()


# ----------------------------------------------------------------------------- validation

def read_json(path: str | os.PathLike, what: str, kind: type = dict, expected: str = "") -> Any:
    """A JSON file that must hold a ``kind`` (dict or list), e.g. a benchmark's annotation
    or prediction file; ``InputError`` naming the file and ``what`` it should be otherwise."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read the {what} ({exc})") from exc
    if not isinstance(data, kind):
        expected = expected or ("an object" if kind is dict else "a list")
        raise InputError(f"{path}: the {what} is a JSON {type(data).__name__}, expected {expected}")
    return data

def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _span_problems(item: Any, field: str, index: int) -> list[str]:
    """Problems of one clue/event dict (id, start <= end, non-empty text)."""
    where = f"field '{field}'[{index}]"
    if not isinstance(item, Mapping):
        return [f"{where} is {type(item).__name__}, expected an object with id/start/end/text"]
    missing = [k for k in ("id", "start", "end", "text") if k not in item]
    if missing:
        return [f"{where} lacks {', '.join(repr(k) for k in missing)}"]
    start, end = item["start"], item["end"]
    if not (_is_number(start) and _is_number(end)):
        return [f"{where} has start/end {start!r}/{end!r}, expected finite numbers (seconds)"]
    if start < 0 or end < start:
        return [f"{where} has span [{start}, {end}] s, expected 0 <= start <= end"]
    if not str(item["text"]).strip():
        return [f"{where} has an empty text"]
    return []


def _options_problems(record: Mapping[str, Any]) -> list[str]:
    options = record["options"]
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        return [f"field 'options' is {options!r:.60}, expected a list of strings"]
    if not MIN_OPTIONS <= len(options) <= MAX_OPTIONS:
        return [f"field 'options' has {len(options)} options, expected {MIN_OPTIONS} to {MAX_OPTIONS}"]
    if any(not o.strip() for o in options):
        return ["field 'options' contains an empty option"]
    answer = record["answer"]
    if not isinstance(answer, int) or isinstance(answer, bool):
        return [f"field 'answer' is {answer!r}, expected an integer option index"]
    if not 0 <= answer < len(options):
        return [f"field 'answer' is {answer}, but there are {len(options)} options"]
    return []


def _time_problems(record: Mapping[str, Any]) -> list[str]:
    start, end = record.get("start"), record.get("end")
    for name, value in (("start", start), ("end", end)):
        if value is not None and (not _is_number(value) or value < 0):
            return [f"field '{name}' is {value!r}, expected a number of seconds >= 0"]
    if start is not None and end is not None and end <= start:
        return [f"field 'end' is {end}, but it must be after 'start' ({start})"]
    return []


def _annotation_problems(record: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    for field in ("clues", "events"):
        items = record.get(field, [])
        if not isinstance(items, list):
            problems.append(f"field '{field}' is {type(items).__name__}, expected a list")
            continue
        for i, item in enumerate(items):
            problems += _span_problems(item, field, i)
    clue_ids = [c.get("id") for c in record.get("clues", []) if isinstance(c, Mapping)]
    if len(set(clue_ids)) != len(clue_ids):
        problems.append("field 'clues' repeats a clue id")
    chain = record.get("chain", [])
    if not isinstance(chain, list):
        return problems + [f"field 'chain' is {type(chain).__name__}, expected a list"]
    for i, step in enumerate(chain):
        if not isinstance(step, Mapping) or "text" not in step:
            problems.append(f"field 'chain'[{i}] must be an object with 'text' and 'cites'")
            continue
        unknown = [c for c in step.get("cites", []) if c not in clue_ids]
        if unknown:
            problems.append(f"field 'chain'[{i}] cites {', '.join(map(str, unknown))}, not among the clues")
    return problems


def validate_record(record: Any) -> list[str]:
    """Problems of one decoded JSONL record, each naming the field; [] if valid."""
    if not isinstance(record, Mapping):
        return [f"the line is a JSON {type(record).__name__}, expected an object"]
    missing = [f for f in REQUIRED_FIELDS if f not in record]
    if missing:
        return [f"missing field {', '.join(repr(f) for f in missing)}"]
    for field in ("id", "video", "question"):
        if not isinstance(record[field], str) or not record[field].strip():
            return [f"field '{field}' is {record[field]!r:.60}, expected a non-empty string"]
    return _options_problems(record) + _time_problems(record) + _annotation_problems(record)


# ----------------------------------------------------------------------------- reading
def _resolve_video(sample: Sample, folder: Path) -> Sample:
    """Relative video paths are relative to the JSONL file's folder (schema contract)."""
    if os.path.isabs(sample.video):
        return sample
    return replace(sample, video=str(folder / sample.video))


def _parse_line(raw: str) -> tuple[dict | None, list[str]]:
    if len(raw) > MAX_LINE_CHARS:
        return None, [f"line is {len(raw)} characters, limit {MAX_LINE_CHARS}"]
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, [f"not valid JSON ({exc.msg} at column {exc.colno})"]
    return record, validate_record(record)


def load_jsonl(path: str | os.PathLike, *, strict: bool = True, resolve_paths: bool = True) -> LoadReport:
    """Read and validate a project JSONL file.

    Blank lines are skipped; ids must be unique.  With ``strict`` a file with
    any bad line raises ``InputError`` (message lists up to
    ``MAX_REPORTED_ERRORS`` bad lines); without it the bad lines are left out
    and reported in ``LoadReport.errors``.  ``resolve_paths`` turns relative
    video paths into paths under the file's folder.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such JSONL file")
    samples: list[Sample] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            record, problems = _parse_line(raw)
            if not problems and record["id"] in seen:
                problems = [f"field 'id' is {record['id']!r}, already used on line {seen[record['id']]}"]
            if problems:
                errors += [f"{path.name} line {lineno}: {p}" for p in problems]
                continue
            seen[record["id"]] = lineno
            sample = Sample.from_dict(record)
            samples.append(_resolve_video(sample, path.parent) if resolve_paths else sample)
    if strict and errors:
        more = f" (and {len(errors) - MAX_REPORTED_ERRORS} more)" if len(errors) > MAX_REPORTED_ERRORS else ""
        raise InputError("; ".join(errors[:MAX_REPORTED_ERRORS]) + more)
    return LoadReport(samples=tuple(samples), errors=tuple(errors))


def read_samples(path: str | os.PathLike, *, resolve_paths: bool = True) -> list[Sample]:
    """All samples of a JSONL file; raises ``InputError`` on any bad line."""
    return list(load_jsonl(path, strict=True, resolve_paths=resolve_paths).samples)


def write_jsonl(samples: Iterable[Sample], path: str | os.PathLike) -> int:
    """Write samples one a line (UTF-8, compact); returns how many were written.

    Each sample is validated first, so a file this writes always reads back.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as fh:
        for sample in samples:
            record = sample.to_dict()
            problems = validate_record(record)
            if problems:
                raise InputError(f"sample {sample.id!r} cannot be written: {problems[0]}")
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count
