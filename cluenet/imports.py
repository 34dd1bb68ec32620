"""Imported predictions as read-only runs: lmms-eval sample logs and NExT-QA prediction files.

Both load as a ``cluenet.casestudy.Run`` with ``read_only=True``: one ``Trace`` per
question with the predicted answer, the gold answer, the question type and the raw
response -- no clues and no chain, so the clue-based flags simply do not fire.  The
case table, the report and the dashboard take them like any run; tags go to
``<file>.tags.jsonl`` beside the imported file unless ``tags_path`` says otherwise.

**lmms-eval** ``--log_samples`` writes one JSON object a line (``*_samples_<task>.jsonl``)::

    {"doc_id": 0, "doc": {...the task's document...}, "target": ..., "arguments": [...],
     "resps": [["model text"]], "filtered_resps": ["model text"], "doc_hash": "...",
     "prompt_hash": "...", "target_hash": "...", "<metric>": ...}

The options are read from the document: ``a0, a1, ...`` (NExT-QA), or a list under
``options`` / ``candidates`` (MVBench) / ``choices``.  The prediction is the first
filtered response, read with ``cluenet.answers.extract_answer`` (an unreadable one is
an unanswered case, never a guess).  The gold answer is ``target`` -- an index, a letter
or the option text -- or the document's integer ``answer``.  The case id is
``<video>_<qid>`` when the document has both (NExT-QA's own key), else its ``id`` /
``question_id``, else the ``doc_id``.

**NExT-QA** prediction JSON ``{"<video>_<qid>": {"prediction": i, "answer": j}}`` is
joined with the annotation csv (``cluenet.data.nextqa``); the csv's answer wins over
the file's ``answer`` (a disagreement becomes a warning on the trace).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

from tqdm import tqdm

from . import analysis
from .answers import extract_answer
from .casestudy import Run
from .errors import InputError
from .schema import LETTERS, MAX_OPTIONS, ClipInfo, ModelInfo, Sample, Trace

MAX_LINE_CHARS = 5_000_000  # one logged sample with a long document and response
MAX_IMPORTED_CASES = 1_000_000
MIN_OPTIONS = 2
OPTION_LIST_KEYS = ("options", "candidates", "choices")
QTYPE_KEYS = ("type", "question_type", "task_type", "qtype")
ID_KEYS = ("id", "question_id", "sample_id")
IMPORTED_MODE = "imported"


def _tags_path(path: Path, tags_path: str | os.PathLike | None) -> Path:
    return Path(tags_path) if tags_path is not None else path.with_name(path.name + ".tags.jsonl")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- lmms-eval
def _records(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, decoded object) of a JSONL file; errors name the line."""
    with path.open(encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            if len(raw) > MAX_LINE_CHARS:
                raise InputError(f"{path.name} line {lineno}: {len(raw)} characters, limit {MAX_LINE_CHARS}")
            try:
                yield lineno, json.loads(raw)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path.name} line {lineno}: not JSON ({exc.msg} at column {exc.colno})") from None


def doc_options(doc: Mapping[str, Any]) -> list[str]:
    """Option texts of an lmms-eval document (``a0..aN`` or an options list); [] if none."""
    if "a0" in doc:
        out, i = [], 0
        while f"a{i}" in doc:
            out.append(str(doc[f"a{i}"]).strip())
            i += 1
        return out
    for key in OPTION_LIST_KEYS:
        if isinstance(doc.get(key), list):
            return [str(o).strip() for o in doc[key]]
    return []


def _first_text(resp: Any) -> str | None:
    """The first string inside a (possibly nested) response list."""
    while isinstance(resp, (list, tuple)):
        if not resp:
            return None
        resp = resp[0]
    return resp if isinstance(resp, str) else None


def _gold(record: Mapping[str, Any], options: list[str]) -> int | None:
    target = record.get("target")
    if isinstance(target, int) and not isinstance(target, bool):
        return target if 0 <= target < len(options) else None
    if isinstance(target, str) and target.strip():
        return extract_answer(target.strip(), options)
    answer = record["doc"].get("answer")
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(options):
        return answer
    return None


def _case_id(record: Mapping[str, Any]) -> str:
    doc = record["doc"]
    if "video" in doc and "qid" in doc:
        return f"{doc['video']}_{doc['qid']}"
    for key in ID_KEYS:
        if doc.get(key) not in (None, ""):
            return str(doc[key])
    return str(record["doc_id"])


def _check_record(record: Any, where: str) -> list[str]:
    if not isinstance(record, dict):
        raise InputError(f"{where}: a JSON {type(record).__name__}, expected an lmms-eval sample object")
    missing = [k for k in ("doc_id", "doc", "target", "filtered_resps") if k not in record]
    if missing:
        raise InputError(f"{where}: missing {', '.join(missing)}; not an lmms-eval --log_samples line")
    if not isinstance(record["doc"], dict):
        raise InputError(f"{where}: 'doc' is a {type(record['doc']).__name__}, expected an object")
    options = doc_options(record["doc"])
    if not MIN_OPTIONS <= len(options) <= MAX_OPTIONS:
        raise InputError(f"{where}: {len(options)} options found in 'doc' (a0.. or {'/'.join(OPTION_LIST_KEYS)}), "
                         f"expected {MIN_OPTIONS} to {MAX_OPTIONS}: only multiple-choice tasks import")
    if not str(record["doc"].get("question", "")).strip():
        raise InputError(f"{where}: 'doc' has no question")
    return options


def _lmms_trace(record: Mapping[str, Any], options: list[str], model: ModelInfo) -> Trace:
    doc = record["doc"]
    text = _first_text(record["filtered_resps"])
    if text is None:
        text = _first_text(record.get("resps"))
    answer = extract_answer(text, options) if text is not None else None
    warnings = () if answer is not None else (f"the response {text!r:.80} names no option",)
    video = str(doc.get("video", doc.get("video_path", "")))
    qtype = next((str(doc[k]) for k in QTYPE_KEYS if doc.get(k) not in (None, "")), "")
    trace = Trace(clip=ClipInfo(name=Path(video).name), question=str(doc["question"]).strip(),
                  options=tuple(options), answer=answer, generated_answer=answer, gold=_gold(record, options),
                  qtype=qtype, sample_id=_case_id(record), warnings=warnings,
                  raw={"response": text or ""}, model=model)
    return analysis.add_flags(trace)


def _sample_of(trace: Trace, video: str, source: str) -> Sample | None:
    if trace.gold is None:
        return None
    return Sample(id=trace.sample_id, video=video, question=trace.question, options=trace.options,
                  answer=trace.gold, qtype=trace.qtype, source=source)


def load_lmms_eval(path: str | os.PathLike, name: str | None = None,
                   tags_path: str | os.PathLike | None = None) -> Run:
    """An lmms-eval ``--log_samples`` JSONL file as a read-only run (module docstring).

    ``name`` is the model name shown in views and reports (default ``lmms-eval:<file stem>``).
    Raises ``InputError`` naming the line for a record that is not a multiple-choice
    sample, and for a case id that appears twice.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such lmms-eval samples file")
    model = ModelInfo(name=name or f"lmms-eval:{path.stem}", mode=IMPORTED_MODE)
    traces: list[Trace] = []
    samples: dict[str, Sample] = {}
    seen: dict[str, int] = {}
    for lineno, record in tqdm(_records(path), desc=f"import {path.name}", unit="case", disable=None, leave=False):
        where = f"{path.name} line {lineno}"
        options = _check_record(record, where)
        trace = _lmms_trace(record, options, model)
        if trace.sample_id in seen:
            raise InputError(f"{where}: case {trace.sample_id!r} already on line {seen[trace.sample_id]}")
        if len(traces) >= MAX_IMPORTED_CASES:
            raise InputError(f"{path.name}: more than {MAX_IMPORTED_CASES} cases, limit {MAX_IMPORTED_CASES}")
        seen[trace.sample_id] = lineno
        traces.append(trace)
        sample = _sample_of(trace, str(record["doc"].get("video", "")), "lmms-eval")
        if sample is not None:
            samples[sample.id] = sample
    if not traces:
        raise InputError(f"{path}: no samples in the file")
    manifest = {"source": "lmms-eval", "data": str(path), "model": model.to_dict(), "imported": _now(),
                "counts": _import_counts(traces)}
    return Run(samples=samples, traces=tuple(traces), manifest=manifest, read_only=True,
               tags_path=_tags_path(path, tags_path), folder=path.parent)


def _import_counts(traces: list[Trace], **extra: int) -> dict[str, int]:
    return {"done": len(traces), "answered": sum(t.answer is not None for t in traces),
            "with_gold": sum(t.gold is not None for t in traces), "correct": sum(bool(t.correct) for t in traces),
            **extra}


# ----------------------------------------------------------------------------- NExT-QA
def _nextqa_trace(sample: Sample, pred: Mapping[str, int], model: ModelInfo) -> Trace:
    p = pred["prediction"]
    answer = p if 0 <= p < len(sample.options) else None
    warnings = []
    if answer is None:
        warnings.append(f"prediction {p} is not an option index (0-{len(sample.options) - 1})")
    if pred.get("answer", -1) not in (-1, sample.answer):
        warnings.append(f"the prediction file gives answer {pred['answer']}, the annotations {sample.answer} "
                        f"({LETTERS[sample.answer]}); the annotations are used")
    trace = Trace(clip=ClipInfo(name=Path(sample.video).name), question=sample.question, options=sample.options,
                  answer=answer, generated_answer=answer, gold=sample.answer, qtype=sample.qtype,
                  sample_id=sample.id, warnings=tuple(warnings), model=model)
    return analysis.add_flags(trace)


def load_nextqa_predictions(predictions: str | os.PathLike, annotations: str | os.PathLike,
                            video_root: str | None = None, map_path: str | os.PathLike | None = None,
                            name: str | None = None, tags_path: str | os.PathLike | None = None) -> Run:
    """A NExT-QA prediction JSON joined with its annotation csv, as a read-only run.

    Questions without a prediction are counted (``manifest["counts"]["missing"]``) and
    left out of the cases; prediction ids absent from the csv are counted as
    ``unknown_ids``.  ``InputError`` when no prediction id matches the csv.
    """
    from .data.nextqa import load_nextqa, read_predictions

    pred_path = Path(predictions)
    preds = read_predictions(pred_path)
    samples = load_nextqa(annotations, video_root=video_root, map_path=map_path)
    matched = [s for s in samples if s.id in preds]
    if preds and not matched:
        raise InputError(f"none of the {len(preds)} prediction ids match the {len(samples)} questions of "
                         f"{Path(annotations).name} (e.g. {next(iter(preds))!r} vs {samples[0].id if samples else '-'!r})")
    model = ModelInfo(name=name or f"nextqa:{pred_path.stem}", mode=IMPORTED_MODE)
    traces = [_nextqa_trace(s, preds[s.id], model) for s in tqdm(matched, desc="import NExT-QA", disable=None, leave=False)]
    ids = {s.id for s in samples}
    counts = _import_counts(traces, missing=len(samples) - len(matched), unknown_ids=sum(k not in ids for k in preds))
    manifest = {"source": "nextqa predictions", "data": str(pred_path), "annotations": str(annotations),
                "model": model.to_dict(), "imported": _now(), "counts": counts}
    return Run(samples={s.id: s for s in matched}, traces=tuple(traces), manifest=manifest, read_only=True,
               tags_path=_tags_path(pred_path, tags_path), folder=pred_path.parent)
