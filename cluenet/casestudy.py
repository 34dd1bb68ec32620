"""Case studies: run a model over a dataset split, resumably, and browse the cases.

    python -m cluenet.casestudy --data D.jsonl --out DIR [--model M] [--limit N] [--probes]

``run_case_study`` answers every question of a project JSONL file (``cluenet.data.jsonl``)
with ``ClueNet.analyze``, attaches the hallucination flags of ``cluenet.analysis`` (the
sample's gold events ground the ``ungrounded_clue`` check; ``probes=True`` adds the
model probes) and writes the run folder::

    DIR/
      traces.jsonl   one Trace a line, appended + flushed + fsynced per case
      run.json       manifest: model info, data path as given, counts, started/finished
      tags.jsonl     analyst tags (``cluenet.tags``), written by the UI, never by the run
      .lock          held (flock) while a run writes, so two runs cannot share a folder

**Resuming.**  A run that stops (crash, Ctrl-C, SIGKILL) loses at most the case in
flight: on restart the finished sample ids are read back from ``traces.jsonl`` and
skipped.  A torn last line (the process died mid-write) is detected -- it does not end
in a newline or is not a whole Trace -- and cut off before appending.  A bad line
*followed* by good ones is not a torn tail but damage, and is refused.

``load_run`` reads a folder back as a ``Run`` (read-only on disk); ``case_table`` builds
the rows of the filterable case table; ``compare`` answers one question with ClueNet
and the ``direct`` / ``cot`` baselines for the side-by-side view.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import fcntl
import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

from tqdm import tqdm

from . import analysis
from .errors import ClueNetError, InputError
from .schema import LETTERS, Sample, Trace
from .tags import TagStore

TRACES_FILE = "traces.jsonl"
MANIFEST_FILE = "run.json"
TAGS_FILE = "tags.jsonl"
LOCK_FILE = ".lock"
MANIFEST_VERSION = 1
MAX_CASES = 100_000  # a case study is for reading cases, not for full benchmark sweeps
MAX_TRACE_LINE_BYTES = 10_000_000  # same bound as cluenet.eval.MAX_TRACE_LINE_CHARS
MAX_REPORTED_FAILURES = 50  # failed cases listed in run.json (all are counted)
EXIT_BAD_INPUT = 2
MODES = ("cluenet", "direct", "cot")  # the side-by-side columns

Progress = Callable[[int, int], None]


class Analyzer(Protocol):
    """What a case study needs of the model (``cluenet.model.ClueNet`` satisfies it)."""

    info: Any
    num_frames: int

    def analyze(self, video: Any, question: str, options: Sequence[str], **kwargs: Any) -> Trace: ...


@dataclass(frozen=True)
class Run:
    """A finished, interrupted or imported run, as the views read it.

    ``samples`` maps sample id -> Sample (empty when the data file is gone; the traces
    then carry question, options, gold and qtype themselves).  ``read_only`` marks an
    imported run (predictions only: no clues, so clue-based flags cannot fire).
    ``tags_path`` is where ``cluenet.tags`` keeps this run's analyst tags.
    """

    samples: Mapping[str, Sample]
    traces: tuple[Trace, ...]
    manifest: Mapping[str, Any]
    read_only: bool = False
    tags_path: Path | None = None
    folder: Path | None = None
    notes: tuple[str, ...] = field(default=())  # e.g. "dropped a torn last line"

    def trace(self, case_id: str) -> Trace:
        """The trace of one case (``InputError`` naming the id when absent)."""
        for t in self.traces:
            if t.sample_id == case_id:
                return t
        raise InputError(f"no case {case_id!r} in this run ({len(self.traces)} cases)")


# ----------------------------------------------------------------------------- trace file
@dataclass(frozen=True)
class _Scan:
    traces: tuple[Trace, ...]
    good_bytes: int  # length of the file up to the end of the last whole line
    torn: bool  # a partial last line follows good_bytes


def _parse_line(raw: bytes) -> Trace | None:
    if not raw.endswith(b"\n") or len(raw) > MAX_TRACE_LINE_BYTES:
        return None
    try:
        trace = Trace.from_dict(json.loads(raw))
    except (ValueError, KeyError, TypeError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    return trace if trace.sample_id else None


def _scan(path: Path) -> _Scan:
    """Whole traces of ``path``; a bad *last* line is a torn write, a bad earlier one is damage."""
    if not path.is_file():
        return _Scan((), 0, False)
    traces, good, bad_at = [], 0, None
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if bad_at is not None:
                raise InputError(f"{path}: line {bad_at} is not a whole trace but more lines follow; "
                                 f"the file is damaged, not interrupted (fix or remove that line)")
            if not raw.strip():
                good += len(raw)
                continue
            trace = _parse_line(raw)
            if trace is None:
                bad_at = lineno
                continue
            traces.append(trace)
            good += len(raw)
    return _Scan(tuple(traces), good, bad_at is not None)


def _append(fh, trace: Trace) -> None:
    """One line, flushed and fsynced: after this returns the case survives a crash."""
    fh.write((json.dumps(trace.to_dict(), ensure_ascii=False) + "\n").encode("utf-8"))
    fh.flush()
    os.fsync(fh.fileno())


# ----------------------------------------------------------------------------- manifest
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write to a temp file, fsync, rename: a reader never sees half a manifest."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, ensure_ascii=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable run manifest ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: manifest is a JSON {type(data).__name__}, expected an object")
    return data


def _model_dict(model: Any) -> dict[str, Any]:
    info = getattr(model, "info", None)
    return info.to_dict() if hasattr(info, "to_dict") else {"name": type(model).__name__}


def _check_same_run(old: Mapping[str, Any], data: str, model: dict[str, Any], folder: Path) -> None:
    """Resuming into a folder made from other data or another model would mix two runs."""
    if not old:
        return
    if old.get("data_resolved") != str(Path(data).resolve()):
        raise InputError(f"{folder} holds a run over {old.get('data')!r}, not {data!r}; use another --out folder")
    if old.get("model", {}).get("name") != model.get("name"):
        raise InputError(f"{folder} holds a run of model {old.get('model', {}).get('name')!r}, "
                         f"not {model.get('name')!r}; use another --out folder")


# ----------------------------------------------------------------------------- running
@contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """Hold ``folder/.lock`` for the whole run; a second writer is refused, not interleaved."""
    with (folder / LOCK_FILE).open("a") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{folder} is in use by another case-study run") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _select(data_jsonl: str | os.PathLike, limit: int | None) -> list[Sample]:
    from .data.jsonl import read_samples

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"limit must be a positive integer, got {limit!r}")
    samples = read_samples(data_jsonl)[:limit]
    if len(samples) > MAX_CASES:
        raise InputError(f"the split has {len(samples)} questions, limit {MAX_CASES} per case study (use --limit)")
    missing = [s.video for s in samples if not Path(s.video).is_file()]
    if missing:
        raise InputError(f"{len(missing)} of {len(samples)} videos do not exist (first: {missing[0]}); "
                         f"a case study needs the clips")
    return samples


@dataclass(frozen=True)
class _NamedClip:
    """A sampled clip with a display name, as ``ClueNet.analyze`` and the probes accept."""

    frames: Any
    times: tuple[float, ...]
    info: Any
    name: str


def _answer(model: Analyzer, sample: Sample, probes: bool) -> Trace:
    """One case: the model's trace with every applicable flag."""
    video: Any = sample.video
    if probes or sample.start is not None or sample.end is not None:
        # the probes need the sampled frames; a start/end window needs sampling by us
        from . import video as vid
        from .model import DECODE_MAX_SIDE

        clip = vid.sample(sample.video, num_frames=model.num_frames, start=sample.start, end=sample.end,
                          max_side=DECODE_MAX_SIDE)
        video = _NamedClip(clip.frames, clip.times, clip.info, Path(sample.video).name)
    trace = model.analyze(video, sample.question, sample.options, gold=sample.answer, sample_id=sample.id,
                          qtype=sample.qtype)
    if probes:
        return analysis.add_flags(trace, sample.events, model=model, clip=video)
    return analysis.add_flags(trace, sample.events)


def _base_manifest(model: Analyzer, data: str, limit: int | None, probes: bool, old: Mapping[str, Any]) -> dict:
    return {
        "version": MANIFEST_VERSION, "model": _model_dict(model), "data": data,
        "data_resolved": str(Path(data).resolve()), "limit": limit, "probes": probes,
        "started": old.get("started", _now()), "resumed": list(old.get("resumed", [])) + ([_now()] if old else []),
        "finished": None,
    }


def _counts(traces: Sequence[Trace], n: int, failures: Sequence[dict]) -> dict[str, int]:
    return {"samples": n, "done": len(traces), "failed": len(failures),
            "correct": sum(1 for t in traces if t.correct), "flagged": sum(1 for t in traces if t.flags)}


def run_case_study(model: Analyzer, data_jsonl: str | os.PathLike, out_dir: str | os.PathLike,
                   limit: int | None = None, probes: bool = False, progress: Progress | None = None) -> Path:
    """Answer every question of ``data_jsonl`` (the first ``limit``) into ``out_dir``; returns ``out_dir``.

    Resumable (module docstring).  ``progress(done, total)`` is called once before the
    first case and after each one (the UI's progress bar); the CLI shows tqdm.  A case
    whose video or question the model refuses (``ClueNetError``) is recorded under
    ``failed`` in ``run.json`` and retried on the next resume; other exceptions stop the
    run (finished cases stay on disk).
    """
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    data = str(data_jsonl)
    samples = _select(data, limit)
    with _exclusive(folder):
        old = _read_manifest(folder)
        _check_same_run(old, data, _model_dict(model), folder)
        manifest = _base_manifest(model, data, limit, probes, old)
        traces = _resume(folder / TRACES_FILE, {s.id for s in samples})
        _work(model, samples, traces, folder, manifest, probes, progress)
    return folder


def _resume(path: Path, ids: set[str]) -> list[Trace]:
    """Finished traces of this split; cuts a torn last line off the file first."""
    scan = _scan(path)
    if scan.torn:
        with path.open("r+b") as fh:
            fh.truncate(scan.good_bytes)
    return [t for t in scan.traces if t.sample_id in ids]


def _work(model: Analyzer, samples: Sequence[Sample], traces: list[Trace], folder: Path, manifest: dict,
          probes: bool, progress: Progress | None) -> None:
    done = {t.sample_id for t in traces}
    todo = [s for s in samples if s.id not in done]
    failures: list[dict] = []
    manifest["counts"] = _counts(traces, len(samples), failures)
    _write_json_atomic(folder / MANIFEST_FILE, manifest)
    if progress:
        progress(len(done), len(samples))
    bar = tqdm(todo, desc="case study", unit="case", initial=len(done), total=len(samples), disable=None)
    with (folder / TRACES_FILE).open("ab") as fh:
        for sample in bar:
            try:
                trace = _answer(model, sample, probes)
            except ClueNetError as exc:
                failures.append({"id": sample.id, "error": str(exc)})
            else:
                _append(fh, trace)
                traces.append(trace)
            if progress:
                progress(len(traces) + len(failures), len(samples))
    manifest["counts"] = _counts(traces, len(samples), failures)
    manifest["failed"] = failures[:MAX_REPORTED_FAILURES]
    manifest["finished"] = _now()
    _write_json_atomic(folder / MANIFEST_FILE, manifest)


# ----------------------------------------------------------------------------- reading back
def load_run(out_dir: str | os.PathLike) -> Run:
    """Read a case-study folder (never modifies it; a torn last line is skipped and noted).

    Samples come from the manifest's data path when that file still exists; without it
    the table works from the traces alone.
    """
    folder = Path(out_dir)
    if not (folder / TRACES_FILE).is_file() and not (folder / MANIFEST_FILE).is_file():
        raise InputError(f"{folder}: not a case-study run (no {TRACES_FILE} or {MANIFEST_FILE})")
    manifest = _read_manifest(folder)
    scan = _scan(folder / TRACES_FILE)
    notes = ("the last line of traces.jsonl is incomplete (a run was interrupted) and was skipped",) if scan.torn else ()
    samples: dict[str, Sample] = {}
    data = manifest.get("data")
    if data and Path(data).is_file():
        from .data.jsonl import read_samples

        samples = {s.id: s for s in read_samples(data)}
    elif data:
        notes += (f"the data file {data!r} is not there; gold clues are unavailable",)
    return Run(samples=samples, traces=_dedupe(scan.traces), manifest=manifest, read_only=False,
               tags_path=folder / TAGS_FILE, folder=folder, notes=notes)


def _dedupe(traces: Sequence[Trace]) -> tuple[Trace, ...]:
    """One trace per case: the first written (a later duplicate can only come from a hand edit)."""
    seen: set[str] = set()
    out = []
    for t in traces:
        if t.sample_id not in seen:
            seen.add(t.sample_id)
            out.append(t)
    return tuple(out)


# ----------------------------------------------------------------------------- table
CASE_COLUMNS = ("id", "qtype", "correct", "answer", "gold", "flags", "kept_clues", "tags", "question")


def _letter(i: int | None) -> str:
    return "" if i is None or not 0 <= i < len(LETTERS) else LETTERS[i]


def _check_filters(flag: str | None, correct: bool | None) -> None:
    if flag is not None and flag not in analysis.FLAG_KINDS:
        raise InputError(f"unknown flag {flag!r}; expected one of {', '.join(analysis.FLAG_KINDS)}")
    if correct is not None and not isinstance(correct, bool):
        raise InputError(f"correct must be True, False or None, got {correct!r}")


def case_table(run: Run, flag: str | None = None, qtype: str | None = None,
               correct: bool | None = None) -> list[dict[str, Any]]:
    """Rows of the case table (columns ``CASE_COLUMNS``), filtered; every filter optional.

    ``flag``: only cases carrying that flag kind; ``qtype``: only that question type;
    ``correct``: only right (True) or wrong (False) answers -- a case without gold is
    neither.  Values are plain strings / numbers / bools so a UI table shows them as is:
    ``flags`` and ``tags`` are comma-joined, ``answer``/``gold`` option letters.
    """
    _check_filters(flag, correct)
    tags = TagStore(run.tags_path).all() if run.tags_path is not None else {}
    rows = []
    for t in run.traces:
        kinds = sorted({f.kind for f in t.flags})
        if flag is not None and flag not in kinds:
            continue
        if qtype is not None and t.qtype != qtype:
            continue
        if correct is not None and t.correct is not correct:
            continue
        tag = tags.get(t.sample_id)
        rows.append({
            "id": t.sample_id, "qtype": t.qtype, "correct": t.correct, "answer": _letter(t.answer),
            "gold": _letter(t.gold), "flags": ", ".join(kinds), "kept_clues": len(t.kept_clues),
            "tags": tag.label() if tag else "", "question": t.question,
        })
    return rows


def qtypes(run: Run) -> list[str]:
    """The question types present in a run, sorted (choices for the table's type filter)."""
    return sorted({t.qtype for t in run.traces})


# ----------------------------------------------------------------------------- side by side
def compare(model: Any, video: Any, question: str, options: Sequence[str], gold: int | None = None,
            num_frames: int | None = None, baselines: Mapping[str, Any] | None = None) -> dict[str, Trace]:
    """ClueNet and the ``direct`` / ``cot`` baselines on the same clip and question.

    ``baselines`` maps ``"direct"`` / ``"cot"`` to separately trained baseline models
    (``training.baselines``); a mode without one is answered by ``model`` prompted in that
    mode, which is a prompt ablation, not the trained baseline.  Returns
    ``{"cluenet": ..., "direct": ..., "cot": ...}``; every trace carries its static flags and
    names the model that answered.  Each model decodes the clip once (its clip cache).
    """
    unknown = set(baselines or {}) - {"direct", "cot"}
    if unknown:
        raise InputError(f"baselines: unknown mode(s) {sorted(unknown)}; expected 'direct' and/or 'cot'")
    by = {"direct": model, "cot": model, **(baselines or {})}
    kw = {"num_frames": num_frames, "gold": gold}
    traces = {
        "cluenet": model.analyze(video, question, options, **kw),
        "direct": by["direct"].answer_direct(video, question, options, **kw),
        "cot": by["cot"].answer_cot(video, question, options, **kw),
    }
    return {mode: analysis.add_flags(t) for mode, t in traces.items()}


def compare_table(traces: Mapping[str, Trace]) -> list[dict[str, Any]]:
    """One row per mode: the model that answered, its answer and that answer's probability, correctness,
    clue/step counts, tokens, seconds."""
    rows = []
    for mode, t in traces.items():
        p = t.option_probs[t.answer] if t.answer is not None and t.answer < len(t.option_probs) else None
        rows.append({
            "mode": mode, "model": t.model.name, "answer": _letter(t.answer),
            "p_answer": None if p is None else round(float(p), 4),
            "correct": t.correct, "clues": len(t.clues), "kept_clues": len(t.kept_clues), "steps": len(t.chain),
            "tokens": int(sum(t.tokens.values())), "seconds": round(float(sum(t.timings.values())), 3),
            "flags": ", ".join(sorted({f.kind for f in t.flags})),
        })
    return rows


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cluenet.casestudy", description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="project JSONL file (cluenet.data.jsonl schema)")
    p.add_argument("--out", required=True, help="run folder (created; an existing run there is resumed)")
    p.add_argument("--model", default=None, help="model name or folder (default: the embedded ClueWorld model)")
    p.add_argument("--limit", type=int, default=None, help="only the first N questions")
    p.add_argument("--probes", action="store_true", help="also run the model probes (necessity, blanked/shuffled)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from .model import ClueNet

        _select(str(args.data), args.limit)  # bad data fails here, before a model loads
        net = ClueNet.from_pretrained(args.model, device=args.device)
        folder = run_case_study(net, args.data, args.out, limit=args.limit, probes=args.probes)
    except ClueNetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    counts = _read_manifest(folder).get("counts", {})
    print(json.dumps({"out": str(folder), **counts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
