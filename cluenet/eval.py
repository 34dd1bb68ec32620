"""Evaluation: benchmark accuracy and the project's own trace metrics.

    python -m cluenet.eval nextqa  --annotations val.csv --predictions P.json [--json]
    python -m cluenet.eval star    --annotations STAR_val.json --predictions P.json [--json]
    python -m cluenet.eval mvbench --annotations MVBench/json --predictions P.json [--json]
    python -m cluenet.eval traces  --data D.jsonl --traces T.jsonl [--json]
    python -m cluenet.eval write-nextqa --annotations val.csv --traces T.jsonl --out P.json

``nextqa`` reproduces NExT-QA's ``eval_mc.py`` (TP scored as TN, per-question
accuracy per group); ``--json`` prints exactly ``{"C", "T", "D", "all"}`` in
percent.  ``star`` / ``mvbench`` print per-type / per-task accuracy, ``all``
(per question) and ``mean`` (of the types / tasks); their predictions may be
indices, letters or free text (``cluenet.answers.extract_answer``).  ``traces``
scores the project's own ``Trace`` JSONL against ``Sample`` JSONL
(``evaluate_traces``).  Everywhere a question without a usable prediction is
counted wrong and reported (missing / unparseable), never dropped or guessed.
On bad input every command prints one line to stderr and exits 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from tqdm import tqdm

from cluenet.answers import extract_answer
from cluenet.cli import run as run_cli
from cluenet.data.star import DEFAULT_FPS as STAR_FPS
from cluenet.errors import ConfigError, InputError
from cluenet.metrics import PRF, Counts, MatchConfig, citation_errors, clue_prf, filter_prf, hallucinated_clues
from cluenet.schema import Sample, Trace

MAX_TRACE_LINE_CHARS = 10_000_000  # a trace with raw text of both passes stays far below
INPUT_TOKEN_STAGES = ("prefix", "context")  # counted in Trace.tokens but fed, not generated


# ----------------------------------------------------------------------------- multiple choice
def resolve_prediction(value: Any, options: Sequence[str]) -> int | None:
    """Option index of one prediction: an int in range, or a letter / free text
    read by ``extract_answer``; anything else is ``None`` (counted wrong)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value if 0 <= value < len(options) else None
    if isinstance(value, str):
        return extract_answer(value, options)
    return None


def _pct(hits: int, total: int) -> float | None:
    return round(100.0 * hits / total, 2) if total else None


def score_choices(
    samples: Iterable[Sample], predictions: Mapping[str, Any], group: Callable[[Sample], str] = lambda s: s.qtype
) -> dict:
    """Accuracy in percent per group, ``all`` (per question) and ``mean`` (of groups).

    Returns ``{"accuracy": {...}, "count": {...}, "missing": n, "unparseable": n,
    "unknown_ids": n}``.  Raises ``InputError`` when no prediction id matches a sample.
    """
    samples = list(samples)
    ids = {s.id for s in samples}
    unknown = [k for k in predictions if k not in ids]
    if samples and len(unknown) == len(predictions):
        raise InputError(f"none of the {len(predictions)} prediction ids match the {len(samples)} questions "
                         f"(e.g. prediction {next(iter(predictions), '-')!r} vs question {samples[0].id!r})")
    correct: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    missing = unparseable = 0
    for s in samples:
        g = group(s)
        total[g] += 1
        if s.id not in predictions:
            missing += 1
            continue
        index = resolve_prediction(predictions[s.id], s.options)
        unparseable += index is None
        correct[g] += index == s.answer
    accuracy = {g: _pct(correct[g], total[g]) for g in total}
    accuracy["all"] = _pct(sum(correct.values()), sum(total.values()))
    per_group = [100.0 * correct[g] / total[g] for g in total]
    accuracy["mean"] = round(sum(per_group) / len(per_group), 2) if per_group else None
    return {"accuracy": accuracy, "count": dict(total), "missing": missing,
            "unparseable": unparseable, "unknown_ids": len(unknown)}


# ----------------------------------------------------------------------------- traces
def read_traces(path: str | os.PathLike) -> list[Trace]:
    """One ``Trace`` JSON object a line; errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such trace file")
    traces = []
    with path.open(encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            if len(raw) > MAX_TRACE_LINE_CHARS:
                raise InputError(f"{path.name} line {lineno}: {len(raw)} characters, limit {MAX_TRACE_LINE_CHARS}")
            try:
                traces.append(Trace.from_dict(json.loads(raw)))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise InputError(f"{path.name} line {lineno}: not a trace ({type(exc).__name__}: {exc})") from None
    return traces


def _pair(samples: Sequence[Sample], traces: Sequence[Trace]) -> dict[str, Trace]:
    ids = {s.id for s in samples}
    by_id: dict[str, Trace] = {}
    for t in traces:
        if t.sample_id not in ids:
            raise InputError(f"trace for sample {t.sample_id!r} matches no sample of the data")
        if t.sample_id in by_id:
            raise InputError(f"two traces for sample {t.sample_id!r}")
        by_id[t.sample_id] = t
    return by_id


class _Totals:
    """Running sums over questions; every metric is a micro average of counts."""

    def __init__(self) -> None:
        self.correct: dict[str, int] = defaultdict(int)
        self.total: dict[str, int] = defaultdict(int)
        self.missing = self.unparseable = self.gold_mismatch = 0
        self.clues, self.filter = PRF(), PRF()
        self.clue_questions = self.filter_questions = 0
        self.citations, self.hallucinated = Counts(), Counts()
        self.tokens: list[int] = []

    def add(self, sample: Sample, trace: Trace | None, config: MatchConfig) -> None:
        self.total[sample.qtype] += 1
        if trace is None:
            self.missing += 1
            return
        self.unparseable += trace.answer is None
        self.correct[sample.qtype] += trace.answer == sample.answer
        self.gold_mismatch += trace.gold is not None and trace.gold != sample.answer
        self._add_clue_metrics(sample, trace, config)
        self.citations += citation_errors(trace.chain, trace.clues)
        if trace.tokens:
            self.tokens.append(sum(v for k, v in trace.tokens.items() if k not in INPUT_TOKEN_STAGES))

    def _add_clue_metrics(self, sample: Sample, trace: Trace, config: MatchConfig) -> None:
        gold = sample.clues or sample.events
        if gold:
            self.clue_questions += 1
            self.clues += clue_prf(trace.clues, gold, config)
            self.hallucinated += hallucinated_clues(trace.clues, sample.events or sample.clues, config)
        if sample.clues and sample.chain and any(c.kept is not None for c in trace.clues):
            self.filter_questions += 1
            self.filter += filter_prf(trace.clues, sample.clues, sample.chain, config)

    def result(self, n_traces: int) -> dict:
        n = sum(self.total.values())
        by_qtype = {q: {"n": self.total[q], "correct": self.correct[q], "accuracy": self.correct[q] / self.total[q]}
                    for q in sorted(self.total)}
        return {
            "n_samples": n, "n_traces": n_traces, "missing": self.missing, "unparseable": self.unparseable,
            "gold_mismatch": self.gold_mismatch,
            "correct": sum(self.correct.values()), "accuracy": sum(self.correct.values()) / n if n else None,
            "by_qtype": by_qtype,
            "clues": {**self.clues.as_dict(), "n_questions": self.clue_questions},
            "filter": {"precision": self.filter.precision, "recall": self.filter.recall, "tp": self.filter.tp,
                       "n_kept": self.filter.n_pred, "n_relevant": self.filter.n_gold,
                       "n_questions": self.filter_questions},
            "citation_error_rate": self.citations.rate, "citation_errors": self.citations.hits,
            "citations": self.citations.total,
            "hallucinated_clue_rate": self.hallucinated.rate, "hallucinated_clues": self.hallucinated.hits,
            "clues_checked": self.hallucinated.total,
            "tokens_per_answer": sum(self.tokens) / len(self.tokens) if self.tokens else None,
        }


def evaluate_traces(samples: Iterable[Sample], traces: Iterable[Trace], config: MatchConfig = MatchConfig()) -> dict:
    """Score pipeline traces against annotated samples (``trace.sample_id == sample.id``).

    All rates are fractions in [0, 1] (``None`` when undefined):

    * ``accuracy`` over every sample -- a sample without a trace (``missing``)
      or with ``trace.answer is None`` (``unparseable``) counts as wrong;
      ``by_qtype`` splits it; ``gold_mismatch`` counts traces whose own
      ``gold`` disagrees with the sample (the sample wins);
    * ``clues``: precision / recall / F1 of the trace's clues against the gold
      clues (the events where a sample has no gold clues);
    * ``filter``: precision / recall of the filter against gold-relevant clues
      (samples with gold clues and chain, traces with filter decisions);
    * ``citation_error_rate``: chain citations of missing or filtered clues;
    * ``hallucinated_clue_rate``: clues matching no gold event (the gold clues
      where a sample has no events);
    * ``tokens_per_answer``: mean number of *generated* tokens (``trace.tokens`` without
      the fed ``prefix`` and ``context`` counts) over traces that recorded tokens.

    Matching rules are those of ``cluenet.metrics`` under ``config``.  Raises
    ``InputError`` for a trace whose sample is unknown or duplicated.
    """
    samples, traces = list(samples), list(traces)
    by_id = _pair(samples, traces)
    totals = _Totals()
    for sample in tqdm(samples, desc="evaluate traces", disable=None, leave=False):
        totals.add(sample, by_id.get(sample.id), config)
    return totals.result(len(traces))


# ----------------------------------------------------------------------------- printing
def _fmt(x: float | None, scale: float = 100.0) -> str:
    return "n/a" if x is None else f"{scale * x:.2f}"


def _print_table(rows: Iterable[tuple[str, Any]]) -> None:
    rows = list(rows)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def _print_choices(result: dict, label: str) -> None:
    rows = [(g, f"{v:.2f}" if v is not None else "n/a") for g, v in result["accuracy"].items()]
    _print_table([(label, "accuracy %"), *rows])
    print(f"questions: {sum(result['count'].values())}, missing predictions: {result['missing']}, "
          f"unparseable: {result['unparseable']}, prediction ids not in the annotations: {result['unknown_ids']}")


def _print_traces(r: dict) -> None:
    rows = [("accuracy %", _fmt(r["accuracy"]))]
    rows += [(f"  {q} (n={v['n']})", _fmt(v["accuracy"])) for q, v in r["by_qtype"].items()]
    c, f = r["clues"], r["filter"]
    rows += [
        ("clue precision / recall / F1 %", f"{_fmt(c['precision'])} / {_fmt(c['recall'])} / {_fmt(c['f1'])}"),
        ("filter precision / recall %", f"{_fmt(f['precision'])} / {_fmt(f['recall'])}"),
        ("citation error rate %", f"{_fmt(r['citation_error_rate'])} ({r['citation_errors']}/{r['citations']})"),
        ("hallucinated clue rate %",
         f"{_fmt(r['hallucinated_clue_rate'])} ({r['hallucinated_clues']}/{r['clues_checked']})"),
        ("tokens per answer", _fmt(r["tokens_per_answer"], 1.0)),
        ("unparseable answers", r["unparseable"]),
        ("samples without a trace", r["missing"]),
    ]
    _print_table(rows)


# ----------------------------------------------------------------------------- commands
def _emit(result: dict, as_json: bool, label: str) -> None:
    if as_json:
        print(json.dumps(result))
    else:
        _print_choices(result, label)


def _cmd_nextqa(args: argparse.Namespace) -> int:
    from cluenet.data import nextqa

    result = nextqa.score(nextqa.load_nextqa(args.annotations), nextqa.read_predictions(args.predictions))
    if args.json:
        print(json.dumps({k: result[k] for k in ("C", "T", "D", "all")}))
        return 0
    rows = [(f"{t} ({nextqa.TYPE_NAMES[t]}, n={result['count'][t]})", f"{v:.2f}") for t, v in result["types"].items()]
    rows += [(g, f"{result[g]:.2f}") for g in (*nextqa.GROUPS, "all")]
    _print_table([("type", "accuracy %"), *rows])
    if result["missing"]:
        print(f"{len(result['missing'])} questions had no prediction (counted wrong), e.g. {result['missing'][0]}")
    return 0


def _cmd_star(args: argparse.Namespace) -> int:
    from cluenet.data import star

    samples = star.load_star(args.annotations, fps=args.fps)
    result = score_choices(samples, star.read_predictions(args.predictions))
    _emit(result, args.json, "type")
    return 0


def _cmd_mvbench(args: argparse.Namespace) -> int:
    from cluenet.data import mvbench

    result = score_choices(mvbench.load_mvbench(args.annotations), mvbench.read_predictions(args.predictions))
    _emit(result, args.json, "task")
    return 0


def _cmd_traces(args: argparse.Namespace) -> int:
    from cluenet.data.jsonl import read_samples

    try:
        config = MatchConfig(min_iou=args.min_iou, tolerance=args.tolerance, min_text_f1=args.min_text_f1)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    result = evaluate_traces(read_samples(args.data), read_traces(args.traces), config)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_traces(result)
    return 0


def _cmd_write_nextqa(args: argparse.Namespace) -> int:
    from cluenet.data import nextqa

    n = nextqa.write_predictions(args.out, read_traces(args.traces), nextqa.load_nextqa(args.annotations))
    print(f"wrote {n} predictions to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cluenet.eval", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, ann_help in (
        ("nextqa", _cmd_nextqa, "NExT-QA csv (val.csv / test.csv)"),
        ("star", _cmd_star, "STAR QA json (STAR_val.json)"),
        ("mvbench", _cmd_mvbench, "MVBench json folder or one task json"),
    ):
        p = sub.add_parser(name, help=f"accuracy on {name}")
        p.add_argument("--annotations", required=True, help=ann_help)
        p.add_argument("--predictions", required=True, help="prediction json")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(func=func)
        if name == "star":
            p.add_argument("--fps", type=float, default=STAR_FPS, help="Charades frame rate for keyframe times")
    p = sub.add_parser("traces", help="accuracy and clue / filter / chain metrics of project traces")
    p.add_argument("--data", required=True, help="project JSONL of samples")
    p.add_argument("--traces", required=True, help="JSONL, one Trace a line")
    p.add_argument("--json", action="store_true", help="print the evaluate_traces dict (fractions)")
    p.add_argument("--min-iou", type=float, default=MatchConfig.min_iou)
    p.add_argument("--tolerance", type=float, default=MatchConfig.tolerance, help="seconds")
    p.add_argument("--min-text-f1", type=float, default=MatchConfig.min_text_f1)
    p.set_defaults(func=_cmd_traces)
    p = sub.add_parser("write-nextqa", help="write project traces in NExT-QA's prediction format")
    p.add_argument("--annotations", required=True, help="NExT-QA csv the traces answer")
    p.add_argument("--traces", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_write_nextqa)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m cluenet.eval``; returns the exit status."""
    return run_cli(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
