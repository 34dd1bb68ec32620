"""The analyst tabs of ClueNet Explorer: Case study, Side by side, Dashboard.

``build_tabs(holder, views, roots)`` lays the three tabs out inside the app's Blocks
and wires their events; the handlers below it are plain functions that tests call
directly.  The library does the work (``cluenet.casestudy``, ``tags``, ``report``,
``imports``, ``dashboard``); this module adds the checks a server needs:

* **Paths.**  Which datasets may be read and where runs and imports are kept is
  ``cluenet.runstore`` (``Roots``, checked dataset paths and run names).  A case's
  clip is shown only when it lies under a data root or the runs root.
* **One model job at a time.**  Running a case study and the side-by-side comparison
  share the app's ``MODEL_JOBS`` concurrency id; loading, filtering, tagging and
  exporting read files only (tags are flock'ed by ``cluenet.tags``).
* **Errors.**  A ``ClueNetError`` becomes a one-line message in the tab's status box
  and a warning toast; anything else is logged server side and shown as one line.

What this module does not cover: it does not stop a running case study (stop the
server; the run resumes on the next click), and it does not limit which files a
dataset's own ``video`` fields point at (the model reads them, as the CLI does).
"""
from __future__ import annotations

import atexit
import hashlib
import html
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import gradio as gr
import pandas as pd

from . import analysis, casestudy, dashboard, report
from .errors import ClueNetError, InputError
from .runstore import MAX_RUN_NAME_CHARS, Roots, import_predictions, is_under, list_runs, open_run, start_run
from .schema import LETTERS
from .tags import CATEGORIES, TAXONOMY, BENCHMARK_NAMES, TagStore, describe, tag_case

log = logging.getLogger("cluenet.app")

MAX_TABLE_ROWS = 2000  # a table longer than this is cut (the report and dashboard use every case)
MAX_CASE_VIDEO_BYTES = 500 * 1000**2  # a clip outside gradio's served folders is copied: bounded
MAX_EXPORTS_KEPT = 32  # report folders kept in this process's temp folder
DEFAULT_LIMIT = 20  # questions per case study unless the analyst asks for more
SOURCES = ("Run the model on a dataset", "Load a saved run", "Import predictions")
ANY = "any"
CORRECTNESS = ("all", "right", "wrong")
FIGURES = ("accuracy_by_type", "calibration", "accuracy_by_kept", "stage_costs")
CORRECT_MARKS = {True: "✓", False: "✗", None: "–"}
# table column widths in CASE_COLUMNS order (id, qtype, correct, answer, gold, flags, kept_clues, tags, question)
COLUMN_WIDTHS = ["11%", "6%", "6%", "6%", "5%", "20%", "7%", "17%", "22%"]
EMPTY_RUN = casestudy.Run(samples={}, traces=(), manifest={})


# ----------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class TraceViews:
    """The app's trace view, handed in by ``app.py`` (this module does not import the app).

    ``view`` is app.View; ``build_panel(left)`` lays out a panel; ``render_view(view)``
    fills ``panel.outputs()``; ``strip_frames(path, n)`` decodes the strip;
    ``wire_panel(panel)`` adds step selection and what-if; ``check_request`` and
    ``check_clip`` validate an uploaded clip and question like the Inspect tab.
    """

    view: type
    build_panel: Callable[[Callable[[], Any]], Any]
    render_view: Callable[..., list]
    strip_frames: Callable[[str | None, int], tuple]
    wire_panel: Callable[[Any], None]
    check_request: Callable[..., tuple]
    check_clip: Callable[[str], None]
    model_jobs: str
    panel_outputs: int  # len(app.Panel.OUTPUTS)
    max_question_chars: int  # browser hints for the side-by-side form; check_request enforces them
    max_option_chars: int
    frames: tuple[int, int, int]  # min, max, default



# ----------------------------------------------------------------------------- sources

# ----------------------------------------------------------------------------- table and case
def _filters(flag: str | None, qtype: str | None, correctness: str | None) -> tuple:
    if correctness not in (None, *CORRECTNESS):
        raise InputError(f"correctness filter is {correctness!r}, expected one of {', '.join(CORRECTNESS)}")
    correct = {"right": True, "wrong": False}.get(correctness or "all")
    return (None if flag in (None, "", ANY) else flag, None if qtype in (None, ANY) else qtype, correct)


def table(run: casestudy.Run | None, flag: str | None = ANY, qtype: str | None = ANY,
          correctness: str | None = "all") -> tuple[pd.DataFrame, str]:
    """The case table (``casestudy.CASE_COLUMNS``) filtered, and a line saying how many rows show."""
    if run is None:
        return pd.DataFrame(columns=list(casestudy.CASE_COLUMNS)), "No run loaded yet."
    rows = casestudy.case_table(run, *_filters(flag, qtype, correctness))
    for r in rows:
        r["correct"] = CORRECT_MARKS[r["correct"]]
    shown = rows[:MAX_TABLE_ROWS]
    note = f"{len(rows)} of {len(run.traces)} cases match"
    if len(rows) > len(shown):
        note += f"; the first {MAX_TABLE_ROWS} are shown"
    return pd.DataFrame(shown, columns=list(casestudy.CASE_COLUMNS)), note


def _case_video(run: casestudy.Run, case_id: str, roots: Roots) -> str | None:
    """The clip of a case if it exists under a data root or the runs root (else None)."""
    sample = run.samples.get(case_id)
    if sample is None or not sample.video:
        return None
    path = Path(sample.video).resolve()
    if not path.is_file() or not is_under(path, (*roots.data, roots.runs)):
        return None
    return _servable(path)


def _servable(path: Path) -> str | None:
    """gradio serves files from the working directory and the temp folder; copy others there."""
    served = (Path.cwd().resolve(), Path(tempfile.gettempdir()).resolve())
    if is_under(path, served) and not path.name.startswith("."):  # gradio refuses dot files in the cwd
        return str(path)
    size = path.stat().st_size
    if size > MAX_CASE_VIDEO_BYTES:
        log.warning("clip %s is %d bytes, limit %d: not shown", path.name, size, MAX_CASE_VIDEO_BYTES)
        return None
    stat = path.stat()
    key = hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    copy = _temp_dir() / "clips" / f"{key}{path.suffix.lower()}"
    if not copy.is_file():
        copy.parent.mkdir(exist_ok=True)
        shutil.copyfile(path, copy)
    return str(copy)


def open_case(views: TraceViews, run: casestudy.Run, case_id: str, roots: Roots) -> dict[str, Any]:
    """Everything the case view shows for one case: its trace view, clip and current tag."""
    trace = run.trace(case_id)
    video = _case_video(run, case_id, roots)
    frames, times = views.strip_frames(video, len(trace.clip.frame_times))
    view = views.view(trace=trace, base=trace, video=video, frames=frames, frame_times=times)
    tag = TagStore(run.tags_path).get(case_id) if run.tags_path is not None else None
    return {"video": video, "panel": views.render_view(view), "trace": trace,
            "categories": list(tag.categories) if tag else [], "note": tag.note if tag else ""}


def save_tag(run: casestudy.Run | None, case_id: str | None, categories: Sequence[str] | None,
             note: str | None) -> str:
    """Tag the open case (``tags.tag_case``); returns the confirmation line."""
    if run is None or not case_id:
        raise InputError("no case open: pick a row of the table first")
    tag = tag_case(run, case_id, list(categories or []), note or "")
    return f"✓ saved tag of {case_id}: {tag.label() or 'cleared'}"


# ----------------------------------------------------------------------------- export
_TEMP_DIR: Path | None = None


def _temp_dir() -> Path:
    """This process's temp folder for reports and copied clips (removed at exit)."""
    global _TEMP_DIR
    if _TEMP_DIR is None:
        _TEMP_DIR = Path(tempfile.mkdtemp(prefix="cluenet-analyst-"))
        atexit.register(shutil.rmtree, _TEMP_DIR, True)
    return _TEMP_DIR


def export(run: casestudy.Run | None) -> tuple[str, str]:
    """Write the run's report (Markdown, JSON) to a fresh temp folder; returns both paths."""
    if run is None:
        raise InputError("no run loaded: run, load or import one first")
    reports = _temp_dir() / "reports"
    reports.mkdir(exist_ok=True)
    for old in sorted(reports.iterdir(), key=lambda p: p.stat().st_mtime)[:-MAX_EXPORTS_KEPT]:
        shutil.rmtree(old, ignore_errors=True)
    md, js = report.export_report(run, tempfile.mkdtemp(dir=reports))
    return str(md), str(js)


# ----------------------------------------------------------------------------- side by side
def side_by_side(get_model: Callable[[], Any], views: TraceViews, video: str | None, question: str, options: Sequence[str],
                 gold: str | None, frames: float,
                 baselines: Mapping[str, Any] | None = None) -> tuple[pd.DataFrame, Any]:
    """ClueNet, direct and cot on one uploaded clip: the comparison table and figure.

    ``baselines`` maps ``"direct"`` / ``"cot"`` to holders (``.get()``) of trained baseline models;
    a mode without one is the ClueNet model prompted in that mode.  ``get_model`` and the holders
    are called only after the request and the clip passed their checks."""
    q, opts, n = views.check_request(video, question, options, frames)
    gold_index = None if gold in (None, "", "none") else LETTERS.index(gold)
    if gold_index is not None and gold_index >= len(opts):
        raise InputError(f"gold answer {gold} is not one of the {len(opts)} options (A-{LETTERS[len(opts) - 1]})")
    views.check_clip(video)
    trained = {mode: holder.get() for mode, holder in (baselines or {}).items()}
    traces = casestudy.compare(get_model(), video, q, opts, gold=gold_index, num_frames=n, baselines=trained)
    rows = casestudy.compare_table(traces)
    return pd.DataFrame(rows), dashboard.side_by_side(traces)


# ----------------------------------------------------------------------------- UI helpers
def status_html(text: str, error: bool = False) -> str:
    """A one-line status box (the app's CSS classes)."""
    return f'<div class="{"status error" if error else "status"}">{html.escape(text)}</div>'


def _refused(exc: Exception) -> str:
    if isinstance(exc, ClueNetError):
        gr.Warning(str(exc))
        return status_html(f"✗ {exc}", error=True)
    log.exception("analyst tab handler failed")
    return status_html(f"✗ internal error ({type(exc).__name__}); nothing was changed", error=True)


def run_summary(run: casestudy.Run | None) -> str:
    """One Markdown line naming the current run."""
    if run is None:
        return "No run loaded yet: run the model on a dataset, load a saved run, or import predictions."
    model = dict(run.manifest.get("model", {})).get("name", "?")
    where = run.folder.name if run.folder is not None else "?"
    ro = " · read-only import" if run.read_only else ""
    notes = "".join(f"\n\n⚠ {html.escape(n)}" for n in run.notes)
    return f"**Run** `{where}` · model `{model}` · {len(run.traces)} cases{ro}{notes}"


def figures(run: casestudy.Run | None) -> list:
    """The dashboard's four figures (notes on empty plots when no run is loaded)."""
    figs = dashboard.all_figures(run if run is not None else EMPTY_RUN)
    return [figs[k] for k in FIGURES]


def flag_help(flag: str | None) -> str:
    """What the chosen flag means (every flag when none is chosen)."""
    if flag and flag != ANY:
        return f"**{flag}**: {analysis.FLAG_EXPLANATIONS.get(flag, '')}"
    return "\n".join(f"- **{k}**: {v}" for k, v in analysis.FLAG_EXPLANATIONS.items())


def category_label(category: str) -> str:
    """Checkbox label of a tag category: benchmark and name (the full text is in the help)."""
    return describe(category).split(":")[0]


def _category_help() -> str:
    lines = []
    for bench, cats in TAXONOMY.items():
        lines.append(f"**{BENCHMARK_NAMES[bench]}**")
        lines += [f"- {text}" for text in cats.values()]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- handlers (UI values)
def _table_outputs(run: casestudy.Run | None, flag: str | None, qtype: str | None, correctness: str | None) -> list:
    df, note = table(run, flag, qtype, correctness)
    return [df, note]


def run_outputs(run: casestudy.Run, roots: Roots, message: str) -> list:
    """Values after a run was set: [state, status, summary, flag, qtype, correctness, table,
    count, saved-runs list, open case, case header]; the filters are reset."""
    choices = [ANY, *casestudy.qtypes(run)]
    names = list_runs(roots)
    current = run.folder.name if run.folder is not None and run.folder.name in names else None
    return [run, status_html(message), run_summary(run), gr.update(value=ANY), gr.update(choices=choices, value=ANY),
            gr.update(value="all"), *_table_outputs(run, ANY, ANY, "all"), gr.update(choices=names, value=current),
            None, "Pick a row of the table to open a case."]


RUN_OUTPUTS = 11  # len(run_outputs(...))


def on_run(holder: Any, roots: Roots, data: str, name: str, limit: float | None, probes: bool,
           progress: Callable[..., Any] | None = None) -> list:
    """Run button: run or resume a case study, then show it (errors: status box only)."""
    def tick(i: int, n: int) -> None:
        if progress is not None:
            progress(i / n if n else 1.0, desc=f"{i}/{n} cases")

    try:
        run, message = start_run(holder.get, roots, data, name, limit, probes, tick)
    except Exception as exc:  # noqa: BLE001 -- shown as one line; bugs are logged in _refused
        return [gr.skip(), _refused(exc), *[gr.skip()] * (RUN_OUTPUTS - 2)]
    return run_outputs(run, roots, message)


def on_load(roots: Roots, name: str | None) -> list:
    """Load button: a saved run or an earlier import from the runs root."""
    try:
        run = open_run(name or "", roots)
    except Exception as exc:  # noqa: BLE001
        return [gr.skip(), _refused(exc), *[gr.skip()] * (RUN_OUTPUTS - 2)]
    return run_outputs(run, roots, f"✓ loaded {name}")


def on_import(roots: Roots, lmms: str | None, nextqa_json: str | None, nextqa_csv: str | None) -> list:
    """Import button: uploaded predictions as a read-only run."""
    try:
        run = import_predictions(roots, lmms, nextqa_json, nextqa_csv)
    except Exception as exc:  # noqa: BLE001
        return [gr.skip(), _refused(exc), *[gr.skip()] * (RUN_OUTPUTS - 2)]
    return run_outputs(run, roots, f"✓ imported as {run.folder.name} (read-only)")


def on_filter(run: casestudy.Run | None, flag: str | None, qtype: str | None, correctness: str | None) -> list:
    """A filter changed: [table, count line, flag meaning]."""
    try:
        return [*_table_outputs(run, flag, qtype, correctness), flag_help(flag)]
    except Exception as exc:  # noqa: BLE001
        return [gr.skip(), _refused(exc), gr.skip()]


def on_open_case(views: TraceViews, roots: Roots, run: casestudy.Run | None, case_id: str | None) -> list:
    """A table row was picked: [case id, header, categories, note, clip, *panel, what-if, tag status]."""
    try:
        if run is None or not case_id:
            raise InputError("no case to open: load a run and pick a row")
        case = open_case(views, run, str(case_id), roots)
    except Exception as exc:  # noqa: BLE001
        return [gr.skip()] * (5 + views.panel_outputs + 1) + [_refused(exc)]
    t = case["trace"]
    mark = {True: "right", False: "wrong", None: "no gold"}[t.correct]
    header = f"### Case `{html.escape(t.sample_id)}` · {html.escape(t.qtype or '-')} · {mark}"
    return [t.sample_id, header, case["categories"], case["note"], case["video"], *case["panel"], "", ""]


def on_save_tag(run: casestudy.Run | None, case_id: str | None, categories: Sequence[str] | None, note: str | None,
                flag: str | None, qtype: str | None, correctness: str | None) -> list:
    """Save tag: [tag status, table, count line] (the table shows the new tag)."""
    try:
        message = save_tag(run, case_id, categories, note)
    except Exception as exc:  # noqa: BLE001
        return [_refused(exc), gr.skip(), gr.skip()]
    try:
        return [status_html(message), *_table_outputs(run, flag, qtype, correctness)]
    except ClueNetError:
        return [status_html(message), gr.skip(), gr.skip()]  # saved; a stale filter must not hide that


def on_export(run: casestudy.Run | None) -> list:
    """Export: [Markdown file, JSON file, status]."""
    try:
        md, js = export(run)
    except Exception as exc:  # noqa: BLE001
        return [gr.skip(), gr.skip(), _refused(exc)]
    return [md, js, status_html(f"✓ report of {len(run.traces)} cases written: report.md, report.json")]


def on_compare(holder: Any, views: TraceViews, video: str | None, question: str, *rest: Any,
               baselines: Mapping[str, Any] | None = None) -> list:
    """Side-by-side button; ``rest`` = the option boxes, the gold letter, the frame count.
    Returns [status, table, figure]."""
    options, gold, frames = rest[:-2], rest[-2], rest[-1]
    try:
        df, fig = side_by_side(holder.get, views, video, question, options, gold, frames, baselines)
    except Exception as exc:  # noqa: BLE001
        return [_refused(exc), gr.skip(), gr.skip()]
    return [status_html("✓ answered by ClueNet, direct and cot on the same frames"), df, fig]


def on_dashboard(run: casestudy.Run | None) -> list:
    """Dashboard refresh: [run line, *the four figures]."""
    try:
        return [run_summary(run), *figures(run)]
    except Exception as exc:  # noqa: BLE001
        return [_refused(exc), *[gr.skip()] * len(FIGURES)]


# ----------------------------------------------------------------------------- layout
def _source_groups(roots: Roots) -> dict[str, Any]:
    c: dict[str, Any] = {}
    c["source"] = gr.Radio(list(SOURCES), value=SOURCES[0], label="Source", elem_id="cs-source")
    roots_text = ", ".join(f"`{r}`" for r in roots.data)
    with gr.Group(visible=True) as c["g_run"]:
        with gr.Row():
            c["data"] = gr.Textbox(label="Dataset JSONL (project schema)", scale=3, elem_id="cs-data",
                                   placeholder="e.g. data/clueworld/test/clueworld.jsonl",
                                   info=f"a path under {roots_text}")
            c["name"] = gr.Textbox(label="Run name", scale=2, elem_id="cs-name", max_length=MAX_RUN_NAME_CHARS,
                                   placeholder="default: the dataset's file name", info=f"folder under `{roots.runs}`")
            c["limit"] = gr.Number(value=DEFAULT_LIMIT, precision=0, minimum=1, label="Questions (empty: all)",
                                   scale=1, elem_id="cs-limit")
        with gr.Row():
            c["probes"] = gr.Checkbox(label="Model probes (clue necessity, blanked / shuffled frames: extra passes "
                                            "per case)", elem_id="cs-probes")
            c["run"] = gr.Button("Run (a second click continues an interrupted run)", variant="primary",
                                 elem_id="cs-run")
    with gr.Group(visible=False) as c["g_load"]:
        with gr.Row(equal_height=False):
            c["runs"] = gr.Dropdown(list_runs(roots), value=None, label=f"Saved runs and imports in {roots.runs}",
                                    allow_custom_value=True, scale=5, elem_id="cs-runs")
            c["refresh"] = gr.Button("↻", scale=0, min_width=60, elem_id="cs-refresh")
            c["load"] = gr.Button("Load", variant="primary", scale=1, min_width=120, elem_id="cs-load")
    with gr.Group(visible=False) as c["g_import"]:
        with gr.Row():
            c["lmms"] = gr.File(label="lmms-eval --log_samples JSONL", file_types=[".jsonl"], elem_id="cs-lmms")
            c["nq_json"] = gr.File(label="or: NExT-QA prediction JSON", file_types=[".json"], elem_id="cs-nq-json")
            c["nq_csv"] = gr.File(label="and its annotation csv", file_types=[".csv"], elem_id="cs-nq-csv")
        c["import"] = gr.Button("Import as a read-only run", variant="primary", elem_id="cs-import")
    return c


def _case_left(c: dict[str, Any]) -> None:
    """Beside the answer: the clip, then the analyst's tag form."""
    c["case_md"] = gr.Markdown("Pick a row of the table to open a case.", elem_id="cs-case")
    c["video"] = gr.Video(label="Clip", interactive=False, height=240)
    c["cats"] = gr.CheckboxGroup([(category_label(k), k) for k in CATEGORIES], label="Hallucination categories",
                                 elem_id="cs-cats")
    c["note"] = gr.Textbox(label="Note", lines=2, max_length=2000, elem_id="cs-note")
    c["save"] = gr.Button("Save tag", elem_id="cs-save")
    c["tag_status"] = gr.HTML(elem_id="cs-tag-status")
    with gr.Accordion("What the categories mean", open=False):
        gr.Markdown(_category_help())


def _case_study_tab(views: TraceViews, roots: Roots) -> dict[str, Any]:
    gr.Markdown("Run the model over a dataset split, load a saved run or import another model's predictions; "
                "filter the cases, open one in the trace view, tag it, export a report.")
    c = _source_groups(roots)
    c["status"] = gr.HTML(elem_id="cs-status")
    c["summary"] = gr.Markdown(run_summary(None), elem_id="cs-summary")
    with gr.Row(equal_height=True):
        c["flag"] = gr.Dropdown([ANY, *analysis.FLAG_KINDS], value=ANY, label="Flag", elem_id="cs-flag")
        c["qtype"] = gr.Dropdown([ANY], value=ANY, label="Question type", allow_custom_value=True,
                                 elem_id="cs-qtype")
        c["correct"] = gr.Radio(list(CORRECTNESS), value="all", label="Answer", elem_id="cs-correct")
    with gr.Accordion("What the flags mean", open=False):
        c["flag_help"] = gr.Markdown(flag_help(None), elem_id="cs-flag-help")
    c["count"] = gr.Markdown(elem_id="cs-count")
    c["table"] = gr.Dataframe(headers=list(casestudy.CASE_COLUMNS), interactive=False, wrap=True, max_height=320,
                              column_widths=COLUMN_WIDTHS, elem_id="cs-table")
    with gr.Row(equal_height=True):
        c["export"] = gr.Button("Export report (Markdown + JSON)", elem_id="cs-export", scale=1)
        c["report_md"] = gr.File(label="report.md", interactive=False, elem_id="cs-report-md", scale=2)
        c["report_json"] = gr.File(label="report.json", interactive=False, elem_id="cs-report-json", scale=2)
    c["panel"] = views.build_panel(lambda: _case_left(c))
    c["run_state"], c["case_state"] = gr.State(None), gr.State(None)
    return c


def baselines_note(trained: Sequence[str]) -> str:
    """What answers the baseline rows of the Side by side tab."""
    prompted = [m for m in ("direct", "cot") if m not in trained]
    parts = [f"`{m}` by its trained baseline model" for m in ("direct", "cot") if m in trained]
    if prompted:
        parts.append(" and ".join(f"`{m}`" for m in prompted) + " by the ClueNet model prompted in that mode "
                     "(a prompt ablation; start the app with `--direct-model` / `--cot-model` for trained baselines)")
    return "The same clip, question and frames through ClueNet; " + "; ".join(parts) + "."


def _side_by_side_tab(views: TraceViews, trained: Sequence[str] = ()) -> dict[str, Any]:
    c: dict[str, Any] = {}
    gr.Markdown(baselines_note(trained), elem_id="sbs-note")
    with gr.Row():
        with gr.Column(scale=2):
            c["video"] = gr.Video(label="Clip", sources=["upload"], height=240, elem_id="sbs-video")
        with gr.Column(scale=3):
            c["question"] = gr.Textbox(label="Question", max_length=views.max_question_chars, elem_id="sbs-question")
            with gr.Row():
                c["options"] = [gr.Textbox(label=f"Option {L}", max_length=views.max_option_chars, min_width=100,
                                           elem_id=f"sbs-option-{L}") for L in LETTERS[:5]]
            with gr.Row():
                c["gold"] = gr.Radio(["none", *LETTERS[:5]], value="none", label="Gold answer (optional)",
                                     elem_id="sbs-gold")
                lo, hi, default = views.frames
                c["frames"] = gr.Slider(lo, hi, value=default, step=1, label="Frames to sample", elem_id="sbs-frames")
            c["run"] = gr.Button("Compare", variant="primary", elem_id="sbs-run")
    c["status"] = gr.HTML(elem_id="sbs-status")
    c["table"] = gr.Dataframe(interactive=False, elem_id="sbs-table")
    c["plot"] = gr.Plot(show_label=False, elem_id="sbs-plot")
    return c


def _dashboard_tab() -> dict[str, Any]:
    c: dict[str, Any] = {"summary": gr.Markdown(run_summary(None), elem_id="dash-summary")}
    plots = []
    for row in (FIGURES[:2], FIGURES[2:]):
        with gr.Row(equal_height=False):
            plots += [gr.Plot(show_label=False, elem_id=f"dash-{name}") for name in row]
    c["plots"] = plots
    return c


@dataclass
class AnalystTabs:
    """The components of the three tabs (by name), for wiring and tests."""

    case: dict[str, Any]
    sbs: dict[str, Any]
    dash: dict[str, Any]


def build_tabs(holder: Any, views: TraceViews, roots: Roots, baselines: Mapping[str, Any] | None = None) -> AnalystTabs:
    """Lay out the Case study, Side by side and Dashboard tabs in the current Blocks and wire them.
    ``baselines``: holders of trained ``direct`` / ``cot`` models for Side by side (see ``side_by_side``)."""
    with gr.Tab("Case study"):
        case = _case_study_tab(views, roots)
    with gr.Tab("Side by side"):
        sbs = _side_by_side_tab(views, list(baselines or {}))
    with gr.Tab("Dashboard"):
        dash = _dashboard_tab()
    tabs = AnalystTabs(case, sbs, dash)
    _wire_case_study(tabs, holder, views, roots)
    _wire_side_by_side(sbs, holder, views, baselines)
    return tabs


def _wire_case_study(tabs: AnalystTabs, holder: Any, views: TraceViews, roots: Roots) -> None:
    c, dash = tabs.case, tabs.dash
    run_out = [c["run_state"], c["status"], c["summary"], c["flag"], c["qtype"], c["correct"], c["table"],
               c["count"], c["runs"], c["case_state"], c["case_md"]]
    dash_out = [dash["summary"], *dash["plots"]]

    def show_source(source: str) -> list:
        return [gr.update(visible=source == s) for s in SOURCES] + [gr.update(choices=list_runs(roots))]

    c["source"].change(show_source, c["source"], [c["g_run"], c["g_load"], c["g_import"], c["runs"]], queue=False)
    c["refresh"].click(lambda: gr.update(choices=list_runs(roots)), None, c["runs"], queue=False)
    c["run"].click(lambda *a, progress=gr.Progress(): on_run(holder, roots, *a, progress=progress),
                   [c["data"], c["name"], c["limit"], c["probes"]], run_out,
                   concurrency_id=views.model_jobs, concurrency_limit=1).then(on_dashboard, c["run_state"], dash_out)
    c["load"].click(lambda name: on_load(roots, name), c["runs"], run_out).then(on_dashboard, c["run_state"], dash_out)
    c["import"].click(lambda *a: on_import(roots, *a), [c["lmms"], c["nq_json"], c["nq_csv"]], run_out).then(
        on_dashboard, c["run_state"], dash_out)
    filters = [c["run_state"], c["flag"], c["qtype"], c["correct"]]
    for comp in (c["flag"], c["qtype"], c["correct"]):
        comp.input(on_filter, filters, [c["table"], c["count"], c["flag_help"]], queue=False)
    panel = c["panel"]
    case_out = [c["case_state"], c["case_md"], c["cats"], c["note"], c["video"], *panel.outputs(), panel.whatif,
                c["tag_status"]]

    def select(run: Any, evt: gr.SelectData) -> list:
        row = evt.row_value or []
        return on_open_case(views, roots, run, row[0] if row else None)

    c["table"].select(select, c["run_state"], case_out)
    c["save"].click(on_save_tag, [c["run_state"], c["case_state"], c["cats"], c["note"], c["flag"], c["qtype"],
                                  c["correct"]], [c["tag_status"], c["table"], c["count"]])
    c["export"].click(on_export, c["run_state"], [c["report_md"], c["report_json"], c["status"]])
    views.wire_panel(panel)


def _wire_side_by_side(c: dict[str, Any], holder: Any, views: TraceViews, baselines: Mapping[str, Any] | None) -> None:
    c["run"].click(lambda *a: on_compare(holder, views, *a, baselines=baselines),
                   [c["video"], c["question"], *c["options"], c["gold"], c["frames"]],
                   [c["status"], c["table"], c["plot"]], concurrency_id=views.model_jobs, concurrency_limit=1)
