"""Case-study reports in JSON and Markdown.

``build_report(run)`` collects, from a ``cluenet.casestudy.Run`` (a model run or an
imported one) and its analyst tags:

* ``summary`` -- cases, answered, with gold, correct, accuracy (a case without an
  answer counts wrong; cases without gold are left out of accuracy);
* ``flags`` -- per flag kind: cases carrying it, flag instances, its one-sentence
  explanation (``cluenet.analysis.FLAG_EXPLANATIONS``);
* ``qtypes`` -- per question type: cases, correct, accuracy, cases per flag kind;
* ``tags`` -- cases per tag category (non-zero only);
* ``examples`` -- the chosen cases, each with question, options, clues, chain, answer,
  gold, flags and tags.  Chosen = the tagged cases (in run order, up to
  ``max_examples``); when nothing is tagged, the first case of each flag kind.

``to_markdown(report)`` renders it; ``export_report(run, out_dir)`` writes both files
(``report.json``, ``report.md``) and returns their paths.
"""
from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import analysis
from .errors import InputError
from .schema import LETTERS, Trace
from .tags import Tag, TagStore, category_counts, describe

REPORT_VERSION = 1
DEFAULT_MAX_EXAMPLES = 20
MAX_EXAMPLES = 500  # a report is read by people
JSON_NAME = "report.json"
MD_NAME = "report.md"


# ----------------------------------------------------------------------------- counting
def _accuracy(traces: Sequence[Trace]) -> dict[str, Any]:
    graded = [t for t in traces if t.gold is not None]
    correct = sum(1 for t in graded if t.correct)
    return {"cases": len(traces), "answered": sum(1 for t in traces if t.answer is not None),
            "with_gold": len(graded), "correct": correct,
            "accuracy": correct / len(graded) if graded else None}


def flag_table(traces: Sequence[Trace]) -> dict[str, dict[str, Any]]:
    """Per flag kind: cases carrying it, flag instances and the explanation (every kind listed)."""
    cases = analysis.flag_counts(traces)
    instances = Counter(f.kind for t in traces for f in t.flags)
    kinds = list(analysis.FLAG_KINDS) + sorted(k for k in cases if k not in analysis.FLAG_KINDS)
    return {k: {"cases": cases.get(k, 0), "flags": instances.get(k, 0),
                "explanation": analysis.FLAG_EXPLANATIONS.get(k, "")} for k in kinds}


def qtype_table(traces: Sequence[Trace]) -> dict[str, dict[str, Any]]:
    """Per question type: accuracy counts and cases per flag kind."""
    groups: dict[str, list[Trace]] = defaultdict(list)
    for t in traces:
        groups[t.qtype or "-"].append(t)
    return {q: {**_accuracy(ts), "flags": {k: v for k, v in analysis.flag_counts(ts).items() if v}}
            for q, ts in sorted(groups.items())}


# ----------------------------------------------------------------------------- examples
def _choose(traces: Sequence[Trace], tags: Mapping[str, Tag], max_examples: int) -> list[tuple[Trace, str]]:
    tagged = [(t, "tagged") for t in traces if t.sample_id in tags]
    if tagged:
        return tagged[:max_examples]
    chosen, seen = [], set()
    for kind in analysis.FLAG_KINDS:
        first = next((t for t in traces if any(f.kind == kind for f in t.flags)), None)
        if first is not None and first.sample_id not in seen:
            seen.add(first.sample_id)
            chosen.append((first, f"first case flagged {kind}"))
    return chosen[:max_examples]


def _letter(i: int | None) -> str | None:
    return None if i is None or not 0 <= i < len(LETTERS) else LETTERS[i]


def example(trace: Trace, tag: Tag | None, why: str) -> dict[str, Any]:
    """One chosen case as plain JSON data."""
    return {
        "id": trace.sample_id, "why": why, "qtype": trace.qtype, "question": trace.question,
        "options": list(trace.options), "answer": _letter(trace.answer), "gold": _letter(trace.gold),
        "correct": trace.correct, "option_probs": [round(p, 4) for p in trace.option_probs],
        "clues": [c.to_dict() for c in trace.clues], "chain": [s.to_dict() for s in trace.chain],
        "flags": [{"kind": f.kind, "message": f.message} for f in trace.flags],
        "tags": {"categories": list(tag.categories), "note": tag.note} if tag else None,
        "model": trace.model.name, "clip": trace.clip.name,
    }


def build_report(run: Any, max_examples: int = DEFAULT_MAX_EXAMPLES) -> dict[str, Any]:
    """The report of a run as JSON-ready data (module docstring)."""
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or not 0 <= max_examples <= MAX_EXAMPLES:
        raise InputError(f"max_examples must be an integer in [0, {MAX_EXAMPLES}], got {max_examples!r}")
    traces = list(run.traces)
    tags = TagStore(run.tags_path).all() if run.tags_path is not None else {}
    return {
        "version": REPORT_VERSION,
        "run": {"model": dict(run.manifest.get("model", {})).get("name", ""), "data": run.manifest.get("data", ""),
                "source": run.manifest.get("source", "case study"), "read_only": run.read_only,
                "started": run.manifest.get("started"), "finished": run.manifest.get("finished")},
        "summary": _accuracy(traces),
        "flags": flag_table(traces),
        "qtypes": qtype_table(traces),
        "tags": {c: n for c, n in category_counts({k: v for k, v in tags.items() if _in(k, traces)}).items() if n},
        "examples": [example(t, tags.get(t.sample_id), why) for t, why in _choose(traces, tags, max_examples)],
    }


def _in(case_id: str, traces: Sequence[Trace]) -> bool:
    return any(t.sample_id == case_id for t in traces)


# ----------------------------------------------------------------------------- markdown
def _md(text: Any) -> str:
    """Inline-safe text: model output must not open HTML or break a table row."""
    s = "" if text is None else str(text)
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _summary_md(r: Mapping[str, Any]) -> list[str]:
    s, run = r["summary"], r["run"]
    lines = ["# Case-study report", "",
             f"- model: `{_md(run['model'])}`" + ("  (imported predictions, read-only)" if run["read_only"] else ""),
             f"- data: `{_md(run['data'])}`",
             f"- cases: {s['cases']} (answered {s['answered']}, with gold {s['with_gold']})",
             f"- accuracy: {_pct(s['accuracy'])} ({s['correct']} / {s['with_gold']})", ""]
    lines += ["## Flags", "", "| flag | cases | flags | meaning |", "|---|---:|---:|---|"]
    lines += [f"| {k} | {v['cases']} | {v['flags']} | {_md(v['explanation'])} |" for k, v in r["flags"].items()]
    lines += ["", "## Question types", "", "| type | cases | correct | accuracy | flagged cases |", "|---|---:|---:|---:|---|"]
    for q, v in r["qtypes"].items():
        flags = ", ".join(f"{k} {n}" for k, n in v["flags"].items()) or "–"
        lines.append(f"| {_md(q)} | {v['cases']} | {v['correct']} | {_pct(v['accuracy'])} | {flags} |")
    if r["tags"]:
        lines += ["", "## Analyst tags", "", "| category | cases |", "|---|---:|"]
        lines += [f"| {_md(describe(c).split(':')[0])} | {n} |" for c, n in r["tags"].items()]
    return lines


def _example_md(e: Mapping[str, Any]) -> list[str]:
    mark = {True: "correct", False: "wrong", None: "no gold"}[e["correct"]]
    lines = ["", f"### {_md(e['id'])} ({_md(e['qtype'])}, {mark}) — {_md(e['why'])}", "",
             f"**Q:** {_md(e['question'])}", ""]
    for i, o in enumerate(e["options"]):
        marks = [m for m, on in (("answer", LETTERS[i] == e["answer"]), ("gold", LETTERS[i] == e["gold"])) if on]
        lines.append(f"- {LETTERS[i]}. {_md(o)}" + (f" **({', '.join(marks)})**" if marks else ""))
    if e["clues"]:
        lines += ["", "Clues:"]
        for c in e["clues"]:
            state = "–" if c["kept"] is None else ("kept" if c["kept"] else "dropped")
            score = "" if c["score"] is None else f" u={c['score']:.2f}"
            lines.append(f"- `{_md(c['id'])}` [{c['start']:.1f}-{c['end']:.1f} s] {_md(c['text'])} ({state}{score})")
    if e["chain"]:
        lines += ["", "Chain:"]
        lines += [f"{i}. ({', '.join(map(_md, s['cites']))}) {_md(s['text'])}" for i, s in enumerate(e["chain"], 1)]
    if e["flags"]:
        lines += ["", "Flags:"] + [f"- **{f['kind']}**: {_md(f['message'])}" for f in e["flags"]]
    if e["tags"]:
        cats = ", ".join(e["tags"]["categories"]) or "–"
        lines += ["", f"Tags: {_md(cats)}" + (f" — note: {_md(e['tags']['note'])}" if e["tags"]["note"] else "")]
    return lines


def to_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown: summary, flag and type tables, tags, then the examples."""
    lines = _summary_md(report)
    lines += ["", "## Example cases"]
    if not report["examples"]:
        lines += ["", "No case is tagged or flagged."]
    for e in report["examples"]:
        lines += _example_md(e)
    return "\n".join(lines) + "\n"


def export_report(run: Any, out_dir: str | os.PathLike, max_examples: int = DEFAULT_MAX_EXAMPLES) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``out_dir``; returns (markdown path, json path)."""
    report = build_report(run, max_examples)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / JSON_NAME, out / MD_NAME
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md_path.write_text(to_markdown(report), encoding="utf-8")
    return md_path, json_path
