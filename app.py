"""ClueNet Explorer: see which visual clues a video QA model extracts, keeps and cites.

    python app.py [--model M] [--adapter A] [--filter-head F] [--device D] [--host H] [--port P]

serves on http://127.0.0.1:7860 with the embedded default model (a Hugging Face
Space runs the same file).  Two tabs for one clip:

* **Explore** -- example ClueWorld clips with traces precomputed by
  ``python -m cluenet.examples``; opening one calls no model.
* **Inspect** -- upload a clip, ask a question with 2-5 options; clues stream in,
  then filter scores, the chain and the answer.

Both show the same trace view (frame strip, clue timeline, filter scores, chain
with citations, answer) and the same what-if controls, which re-run only the
reasoning pass with another filter threshold or with clues dropped.

and three analyst tabs (``cluenet.ui_analyst``): **Case study** (run the model over
a dataset JSONL under ``--data-root``, load a run from ``--runs-root`` or import
lmms-eval / NExT-QA predictions; filter, open, tag, export a report), **Side by side**
(ClueNet vs the direct and cot baselines: trained ones given ``--direct-model`` /
``--cot-model``, else the ClueNet model prompted in each mode) and **Dashboard**.

This module is a thin consumer of ``cluenet``: importing it builds ``demo``
but loads no model; the model is loaded on first use through ``ModelHolder``
(tests pass their own loader to ``build_demo``).
"""
from __future__ import annotations

import argparse
import atexit
import dataclasses
import hashlib
import html
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import gradio as gr
import numpy as np

from cluenet import frames as fr
from cluenet import plots, runstore, ui_analyst, video
from cluenet.errors import ClueNetError, InputError
from cluenet.schema import LETTERS, FilterSettings, ModelInfo, Trace

log = logging.getLogger("cluenet.app")

ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "assets" / "examples"
# a Space sets GRADIO_SERVER_NAME=0.0.0.0; locally the app listens on loopback only
DEFAULT_HOST = os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
DEFAULT_PORT = int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
MAX_QUESTION_CHARS = 300
MAX_OPTION_CHARS = 150
MIN_OPTIONS, MAX_OPTIONS = 2, 5
MIN_FRAMES, MAX_FRAMES, DEFAULT_FRAMES = 4, 32, 8
UPLOAD_MAX_BYTES = 100 * 1000**2  # a public CPU Space: far below video.MAX_FILE_BYTES
UPLOAD_MAX_DURATION_S = 180.0  # three minutes; the library allows video.MAX_DURATION_S
UPLOAD_LIMITS = dataclasses.replace(video.DEFAULT_LIMITS, max_file_bytes=UPLOAD_MAX_BYTES,
                                    max_duration_s=UPLOAD_MAX_DURATION_S)
QUEUE_MAX_SIZE = 20  # waiting jobs beyond this are refused with "queue is full"
DELETE_CACHE = (1800, 3600)  # every 30 min gradio deletes uploads/outputs older than 1 h
MAX_DOWNLOADS_KEPT = 64  # trace JSON files kept in this process's temp folder
STRIP_MAX_SIDE = 160  # frames for the strip are decoded small: they are thumbnails
MODEL_JOBS = "model"  # concurrency id shared by every event that runs the model
EXAMPLE_JOBS = 4  # concurrent example opens (no model; decoding a few small frames)
ASSETS_DIR = ROOT / "assets"
# case-study runs and imported predictions; a Space can point this at persistent storage
DEFAULT_RUNS_ROOT = Path(os.environ.get("CLUENET_RUNS_ROOT", ROOT / "runs" / "casestudy"))


# ----------------------------------------------------------------------------- model
class ModelHolder:
    """Loads the model once, on first use, behind a lock (page loads and jobs race)."""

    def __init__(self, loader: Callable[[], Any]):
        self._loader = loader
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def get(self) -> Any:
        with self._lock:
            if self._model is None:
                self._model = self._loader()
            return self._model


def default_loader(model: str | None = None, adapter: str | None = None,
                   filter_head: str | None = None, device: str | None = None) -> Callable[[], Any]:
    """A loader for ``ClueNet.from_pretrained``; without ``device`` it picks cuda when
    available, else cpu."""

    def load() -> Any:
        import torch

        from cluenet.model import ClueNet  # heavy import (torch, transformers): only when used

        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return ClueNet.from_pretrained(model=model, adapter=adapter, filter_head=filter_head, device=dev)

    return load


def knows_only_clueworld(info: ModelInfo) -> bool:
    """True for the shipped default: trained on ClueWorld only, or still random."""
    text = info.trained_on.lower()
    return "clueworld" in text or "random" in text or not text


def model_banner(info: ModelInfo) -> str:
    """Markdown that says which model is loaded and what it was trained on."""
    line = (f"**Model:** `{info.name}` · backbone `{info.backbone or '?'}` · {info.mode} · "
            f"{info.device}/{info.dtype} · **trained on:** {info.trained_on or 'unknown'}")
    if "random" in info.trained_on.lower():
        line += ("\n\n⚠ **This model has random weights: nothing is trained yet.** Its clues, scores "
                 "and answers are noise; the page shows the pipeline, not a result.")
    return line


def upload_notice(info: ModelInfo) -> str:
    """The notice shown with answers on uploaded clips from the ClueWorld default."""
    if not knows_only_clueworld(info):
        return ""
    return ("⚠ This model only knows ClueWorld scenes (coloured shapes that move, collide and "
            "change colour). On other videos its clues and answer are not meaningful.")


# ----------------------------------------------------------------------------- examples
@dataclass(frozen=True)
class Example:
    """One precomputed example: clip, poster image and trace, all under EXAMPLES_DIR."""

    id: str
    video: Path
    poster: Path | None
    trace: Trace


def load_examples(folder: Path = EXAMPLES_DIR) -> list[Example]:
    """Examples listed in ``folder/index.json`` (written by ``python -m cluenet.examples``).

    Entries whose files are missing are skipped with a log line, so a half-built
    folder still gives a working page.
    """
    index = folder / "index.json"
    if not index.is_file():
        return []
    out = []
    for entry in json.loads(index.read_text())["examples"]:
        video, trace = folder / entry["video"], folder / entry["trace"]
        poster = folder / entry["poster"] if entry.get("poster") else None
        if not (video.is_file() and trace.is_file()):
            log.warning("example %s is missing %s or %s; skipped", entry.get("id"), video, trace)
            continue
        out.append(Example(entry["id"], video, poster if poster and poster.is_file() else None,
                           Trace.from_json(trace.read_text())))
    return out


# ----------------------------------------------------------------------------- view state
@dataclass
class View:
    """What one trace view shows: the trace, the trace before any what-if, the
    strip frames and the clip path (an example asset or a gradio upload)."""

    trace: Trace
    base: Trace
    video: str | None = None
    frames: np.ndarray | None = None
    frame_times: tuple[float, ...] = ()
    step: int = -1  # selected chain step, -1 = none
    dropped: tuple[str, ...] = ()  # clue ids the user dropped in the last what-if


def strip_frames(video_path: str | None, num_frames: int) -> tuple[np.ndarray | None, tuple[float, ...]]:
    """Small frames for the strip, sampled like the model sampled them; None if unreadable
    (the strip is decoration: a decode problem must not hide the trace)."""
    if not video_path or num_frames < 1:
        return None, ()
    try:
        clip = video.sample(video_path, num_frames=num_frames, max_side=STRIP_MAX_SIDE)
    except ClueNetError as exc:
        log.warning("no frame strip for %s: %s", Path(video_path).name, exc)
        return None, ()
    return np.asarray(clip.frames), tuple(float(t) for t in clip.times)


# ----------------------------------------------------------------------------- rendering
def _cite_chip(cid: str, trace: Trace) -> str:
    state = {c.id: ("kept" if c.kept is not False else "dropped") for c in trace.clues}.get(cid, "unknown")
    note = "" if state == "kept" else f" ({'not kept' if state == 'dropped' else 'no such clue'})"
    return f'<span class="cite cite-{state}">{html.escape(cid)}{note}</span>'


def chain_html(trace: Trace, selected: int = -1) -> str:
    """The reasoning chain as an ordered list; cited clue ids as chips coloured by
    whether the filter kept them (red when a step cites a dropped or unknown clue)."""
    if not trace.chain:
        return '<div class="chain empty">No reasoning chain yet.</div>'
    items = []
    for i, step in enumerate(trace.chain):
        chips = " ".join(_cite_chip(c, trace) for c in step.cites) or '<span class="cite cite-none">no cites</span>'
        cls = "step selected" if i == selected else "step"
        items.append(f'<li class="{cls}">{chips} {html.escape(step.text)}</li>')
    return f'<ol class="chain">{"".join(items)}</ol>'


def clues_html(trace: Trace) -> str:
    """Clue list (streamed in during inference): id, span, score, statement."""
    if not trace.clues:
        return '<div class="clues empty">No clues yet.</div>'
    rows = []
    for c in trace.clues:
        state = "unscored" if c.kept is None else ("kept" if c.kept else "dropped")
        score = "" if c.score is None else f"{c.score:.2f}"
        rows.append(f'<tr class="clue-{state}"><td>{c.id}</td><td>{c.start:.1f}–{c.end:.1f} s</td>'
                    f"<td>{score}</td><td>{state}</td><td>{html.escape(c.text)}</td></tr>")
    head = "<tr><th>id</th><th>span</th><th>score</th><th>filter</th><th>statement</th></tr>"
    return f'<table class="clues">{head}{"".join(rows)}</table>'


def answer_md(trace: Trace, notice: str = "") -> str:
    """The answer with its probability, the ground truth when known, and who made it."""
    parts = []
    if trace.answer is None:
        parts.append("### Answer: —\nNo answer could be decided.")
    else:
        p = trace.option_probs[trace.answer] if trace.answer < len(trace.option_probs) else float("nan")
        parts.append(f"### Answer: {LETTERS[trace.answer]}. {html.escape(trace.options[trace.answer])}"
                     f"  (p = {p:.2f})")
    if trace.gold is not None:
        verdict = "✓ correct" if trace.correct else "✗ wrong"
        parts.append(f"**Ground truth:** {LETTERS[trace.gold]}. {html.escape(trace.options[trace.gold])} — {verdict}")
    if trace.generated_answer is not None and trace.generated_answer != trace.answer:
        parts.append(f"The model wrote <answer>{LETTERS[trace.generated_answer]}</answer>, "
                     "which is not the most probable option.")
    parts.append(f"**Q:** {html.escape(trace.question)}")
    kept = len(trace.kept_clues)
    thr = "—" if trace.threshold is None else f"{trace.threshold:.2f}"
    parts.append(f"{len(trace.clues)} clues, {kept} kept (threshold {thr}, τ_min {trace.filter.tau_min:.2f}, "
                 f"ρ {trace.filter.rho:.2f}) · model `{trace.model.name}` (trained on: "
                 f"{trace.model.trained_on or 'unknown'})")
    if notice:
        parts.append(notice)
    return "\n\n".join(parts)


def flags_md(trace: Trace) -> str:
    """Hallucination / faithfulness flags (hover a flag for what it means) and parser
    or pipeline warnings."""
    from cluenet.analysis import FLAG_EXPLANATIONS

    lines = [f'- ⚑ <b title="{html.escape(FLAG_EXPLANATIONS.get(f.kind, ""))}">{f.kind.replace("_", " ")}</b>: '
             f"{html.escape(f.message)}" for f in trace.flags]
    lines += [f"- ⚠ {html.escape(w)}" for w in trace.warnings]
    return "\n".join(lines) if lines else "No flags or warnings."


def step_choices(trace: Trace) -> list[tuple[str, int]]:
    """Radio choices: 'none' plus one per chain step, labelled with its cites."""
    choices = [("none", -1)]
    for i, s in enumerate(trace.chain):
        cites = ",".join(s.cites) or "no cites"
        text = s.text if len(s.text) <= 60 else s.text[:59] + "…"
        choices.append((f"{i + 1}. ({cites}) {text}", i))
    return choices


def highlight_ids(trace: Trace, step: int) -> set[str]:
    return set(trace.chain[step].cites) if 0 <= step < len(trace.chain) else set()


def strip_image(view: View, highlight: set[str]) -> np.ndarray | None:
    if view.frames is None or not len(view.frames):
        return None
    return fr.frame_strip(view.frames, view.frame_times, view.trace.clues, highlight=highlight)


# ----------------------------------------------------------------------------- downloads
_DOWNLOAD_DIR: Path | None = None


def trace_file(trace: Trace) -> str:
    """Write the trace JSON to this process's temp folder (removed at exit, oldest
    files pruned) and return its path for the download button."""
    global _DOWNLOAD_DIR
    if _DOWNLOAD_DIR is None:
        _DOWNLOAD_DIR = Path(tempfile.mkdtemp(prefix="cluenet-traces-"))
        atexit.register(shutil.rmtree, _DOWNLOAD_DIR, True)
    text = trace.to_json()
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", trace.sample_id)[:40] or "upload"  # never a path from the trace
    path = _DOWNLOAD_DIR / f"trace-{stem}-{digest}.json"
    path.write_text(text)
    old = sorted(_DOWNLOAD_DIR.glob("*.json"), key=lambda p: p.stat().st_mtime)[:-MAX_DOWNLOADS_KEPT]
    for p in old:
        p.unlink(missing_ok=True)
    return str(path)


# ----------------------------------------------------------------------------- input checks
def check_request(video_path: str | None, question: str, options: Sequence[str], num_frames: float) -> tuple[str, tuple[str, ...], int]:
    """Validate an Inspect request on the server (the browser's limits are only a hint).

    Returns (question, options, num_frames) cleaned; raises InputError saying what
    was got and what is allowed.  Options must be filled from A without gaps.
    """
    if not video_path:
        raise InputError("no clip uploaded: upload a video file first")
    question = (question or "").strip()
    if not question:
        raise InputError("the question is empty: type a question about the clip")
    if len(question) > MAX_QUESTION_CHARS:
        raise InputError(f"the question is {len(question)} characters, limit {MAX_QUESTION_CHARS}")
    opts = [(o or "").strip() for o in options]
    while opts and not opts[-1]:
        opts.pop()
    if "" in opts:
        gap = LETTERS[opts.index("")]
        raise InputError(f"option {gap} is empty but a later option is filled: fill options from A without gaps")
    if not MIN_OPTIONS <= len(opts) <= MAX_OPTIONS:
        raise InputError(f"got {len(opts)} option(s), need {MIN_OPTIONS}-{MAX_OPTIONS}")
    for i, o in enumerate(opts):
        if len(o) > MAX_OPTION_CHARS:
            raise InputError(f"option {LETTERS[i]} is {len(o)} characters, limit {MAX_OPTION_CHARS}")
    lowered = [o.lower() for o in opts]
    for i, o in enumerate(lowered):
        if o in lowered[:i]:
            raise InputError(f"options {LETTERS[lowered.index(o)]} and {LETTERS[i]} are the same: {opts[i]!r}")
    try:
        n = int(num_frames)
    except (TypeError, ValueError):
        raise InputError(f"number of frames must be a whole number, got {num_frames!r}") from None
    if n != num_frames or not MIN_FRAMES <= n <= MAX_FRAMES:
        raise InputError(f"number of frames is {num_frames}, allowed {MIN_FRAMES}-{MAX_FRAMES}")
    return question, tuple(opts), n


def check_clip(video_path: str) -> None:
    """Probe the upload against UPLOAD_LIMITS (video.py's limits, tighter size and
    duration) before any model work; raises VideoError with the limit in the message."""
    video.probe(video_path, limits=UPLOAD_LIMITS)


# ----------------------------------------------------------------------------- the trace panel
@dataclass
class Panel:
    """The components of one trace view (Explore and Inspect each have one)."""

    strip: Any
    timeline: Any
    scores: Any
    probs: Any
    answer: Any
    chain: Any
    step: Any
    clues: Any
    flags: Any
    tau: Any
    rho: Any
    drop: Any
    rerun: Any
    whatif: Any
    download: Any
    state: Any

    OUTPUTS = ("strip", "timeline", "scores", "probs", "answer", "chain", "step", "clues", "flags",
               "tau", "rho", "drop", "download", "state")

    def outputs(self) -> list:
        """Components ``render_view`` fills, in its order."""
        return [getattr(self, name) for name in self.OUTPUTS]


def render_view(view: View, notice: str = "", final: bool = True, keep_controls: bool = False) -> list:
    """Values for ``Panel.outputs()`` from a View.

    ``final=False`` (streaming) leaves the download button off; ``keep_controls``
    (after a what-if) leaves the sliders where the user put them.
    """
    t = view.trace
    hl = highlight_ids(t, view.step)
    drop_choices = [(f"{c.id}  {c.text[:48]}", c.id) for c in t.clues if c.kept or c.id in view.dropped]
    skip = gr.skip()
    return [
        strip_image(view, hl),
        plots.clue_timeline(t, hl),
        plots.filter_scores(t, hl),
        plots.option_probs(t),
        answer_md(t, notice),
        chain_html(t, view.step),
        gr.update(choices=step_choices(t), value=view.step),
        clues_html(t),
        flags_md(t),
        skip if keep_controls else gr.update(value=t.filter.tau_min),
        skip if keep_controls else gr.update(value=t.filter.rho),
        gr.update(choices=drop_choices, value=list(view.dropped)),
        gr.update(value=trace_file(t), interactive=True) if final else gr.update(interactive=False),
        view,
    ]


def build_panel(left: Callable[[], Any]) -> Panel:
    """Lay out one trace view inside the current tab; ``left()`` builds what goes
    beside the answer (the example video, or the upload form)."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            left()
        with gr.Column(scale=2):
            answer = gr.Markdown(elem_classes=["answer"])
            probs = gr.Plot(label="Option probabilities", show_label=False)
    gr.Markdown("#### Sampled frames\nBars under a frame: the clues that span it, coloured by filter score "
                "(grey: dropped). Red border: frames spanned by the clues of the selected chain step.")
    strip = gr.Image(show_label=False, interactive=False, type="numpy", elem_classes=["strip"],
                     buttons=["fullscreen"])
    with gr.Row(equal_height=False):
        timeline = gr.Plot(label="Clue timeline", show_label=False, scale=3)
        scores = gr.Plot(label="Filter scores", show_label=False, scale=2)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            gr.Markdown("#### Reasoning chain")
            step = gr.Radio(label="Select a step to highlight the clues and frames it cites",
                            choices=[("none", -1)], value=-1, elem_classes=["steps"])
            chain = gr.HTML()
        with gr.Column(scale=2):
            gr.Markdown("#### Flags and warnings")
            flags = gr.Markdown(elem_classes=["flags"])
    with gr.Accordion("Clues", open=False):
        clues = gr.HTML()
    with gr.Accordion("What if? Re-run only the reasoning pass", open=True):
        with gr.Row():
            tau = gr.Slider(0.0, 1.0, value=FilterSettings().tau_min, step=0.01, label="τ_min (absolute floor)")
            rho = gr.Slider(0.0, 1.0, value=FilterSettings().rho, step=0.01, label="ρ (fraction of the best score)")
        drop = gr.CheckboxGroup(label="Drop kept clues", choices=[])
        with gr.Row():
            rerun = gr.Button("Re-run reasoning", variant="primary")
            download = gr.DownloadButton("Download trace (JSON)", interactive=False)
        whatif = gr.Markdown(elem_classes=["whatif"])
    state = gr.State(None)
    return Panel(strip, timeline, scores, probs, answer, chain, step, clues, flags, tau, rho, drop, rerun,
                 whatif, download, state)


# ----------------------------------------------------------------------------- handlers
def open_example(examples: Sequence[Example], index: int) -> list:
    """Show a precomputed example (no model call). Returns [video, *panel outputs, what-if text]."""
    if not 0 <= index < len(examples):
        raise gr.Error(f"no example #{index}: there are {len(examples)}")
    ex = examples[index]
    frames, times = strip_frames(str(ex.video), len(ex.trace.clip.frame_times))
    view = View(trace=ex.trace, base=ex.trace, video=str(ex.video), frames=frames, frame_times=times)
    return [str(ex.video), *render_view(view), ""]


def select_step(view: View | None, step: int | None) -> list:
    """Highlight the clues (and their frames) that one chain step cites."""
    if view is None:
        return [gr.skip()] * 5
    view.step = -1 if step is None else int(step)
    hl = highlight_ids(view.trace, view.step)
    return [strip_image(view, hl), plots.clue_timeline(view.trace, hl), plots.filter_scores(view.trace, hl),
            chain_html(view.trace, view.step), view]


def rerun_reasoning(model: Any, base: Trace, tau_min: float, rho: float, dropped: Sequence[str],
                    video_path: str | None = None) -> Trace:
    """Apply new filter settings to ``base``'s stored scores and re-run only the
    reasoning pass over the kept clues minus ``dropped`` (one pass 2, no decoding).

    The model keeps the prefix KV cache of recent analyses.  A precomputed example
    has none yet: with ``video_path`` the clip is analyzed once to rebuild it (same
    frames, question and options), then the stored trace's clues are reasoned over.
    Raises InputError if nothing would be kept or the prefix cannot be rebuilt.
    """
    from cluenet.analysis import add_flags
    from cluenet.filter import select, threshold

    try:
        settings = FilterSettings(tau_min=float(tau_min), rho=float(rho), m_max=base.filter.m_max)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    scores = [c.score if c.score is not None else 0.0 for c in base.clues]
    mask = select(scores, settings)
    trace = base.with_(clues=tuple(dataclasses.replace(c, kept=k) for c, k in zip(base.clues, mask)),
                       filter=settings, threshold=threshold(scores, settings))
    kept = [c.id for c in trace.clues if c.kept and c.id not in set(dropped)]
    if not kept:
        raise InputError(f"every kept clue is dropped ({', '.join(dropped)}): keep at least one clue")
    trace = trace.with_(flags=())  # the base's flags describe the base's chain, not the new one
    try:
        return add_flags(model.reason(trace, kept))
    except InputError:
        if not video_path:
            raise
    # no cached prefix (e.g. an example opened from disk): rebuild it, then retry once
    model.analyze(video_path, base.question, base.options, num_frames=len(base.clip.frame_times) or None)
    return add_flags(model.reason(trace, kept))


def compare_md(before: Trace, after: Trace, dropped: Sequence[str]) -> str:
    """One paragraph: did the answer change, and with which clues."""
    def name(t: Trace) -> str:
        return "—" if t.answer is None else LETTERS[t.answer]

    def prob(t: Trace) -> float:
        return t.option_probs[t.answer] if t.answer is not None and t.answer < len(t.option_probs) else float("nan")

    kept = ", ".join(c.id for c in after.clues if c.kept) or "none"
    head = (f"**Answer changed: {name(before)} → {name(after)}**" if after.answer != before.answer
            else f"**Answer unchanged: {name(after)}** (p {prob(before):.2f} → {prob(after):.2f})")
    extra = f"; you dropped {', '.join(dropped)}" if dropped else ""
    return f"{head}\n\nReasoned over {kept}{extra} · threshold {after.threshold if after.threshold is not None else '—'}"


def run_whatif(holder: ModelHolder, view: View | None, tau_min: float, rho: float, dropped: list[str] | None) -> list:
    """What-if button: returns [*panel outputs, what-if text].

    A refused request (nothing kept, no trace yet) leaves the view as it is and
    says why in the what-if box and a warning toast.
    """
    dropped = list(dropped or [])
    try:
        if view is None:
            raise InputError("nothing to re-run yet: open an example or analyze a clip first")
        model = holder.get()
        after = rerun_reasoning(model, view.base, tau_min, rho, dropped, view.video)
    except ClueNetError as exc:
        gr.Warning(str(exc))
        return [gr.skip()] * len(Panel.OUTPUTS) + [f"✗ {exc}"]
    note = ""
    if view.base.model.name and view.base.model.name != model.info.name:
        note = (f"\n\n⚠ This trace was made by `{view.base.model.name}`; the re-run used the loaded "
                f"model `{model.info.name}`.")
    new = View(trace=after, base=view.base, video=view.video, frames=view.frames,
               frame_times=view.frame_times, dropped=tuple(dropped))
    return [*render_view(new, keep_controls=True), compare_md(view.base, after, dropped) + note]


PROGRESS = {"status": 0.1, "clue": 0.35, "scores": 0.6, "step": 0.8, "answer": 1.0}


def analyze_upload(holder: ModelHolder, video_path: str | None, question: str, *rest: Any,
                   progress: gr.Progress = gr.Progress()) -> Iterator[list]:
    """Inspect: stream the pipeline on an uploaded clip.

    ``rest`` is the MAX_OPTIONS option boxes then the frame count. Yields
    [status, *panel outputs, what-if text].  Bad input ends the stream with the
    message in the status box and a warning toast (the last view stays), never a
    traceback; unexpected failures are logged server side and shown as one line.
    """
    skip = [gr.skip()] * (len(Panel.OUTPUTS) + 1)  # everything after the status box
    try:
        q, opts, n = check_request(video_path, question, rest[:MAX_OPTIONS], rest[MAX_OPTIONS])
        yield [status_md("Checking the clip…"), *skip]
        check_clip(video_path)
        model = holder.get()
        yield from _stream(model, video_path, q, opts, n, progress)
    except ClueNetError as exc:
        gr.Warning(str(exc))
        yield [status_md(f"✗ {exc}", error=True), *skip]
    except Exception as exc:  # a bug: log it server side, show one line
        log.exception("analysis failed")
        yield [status_md(f"✗ internal error ({type(exc).__name__}); the clip was not analyzed", error=True), *skip]


def _stream(model: Any, video_path: str, question: str, options: tuple[str, ...], n: int,
            progress: gr.Progress) -> Iterator[list]:
    from cluenet.analysis import add_flags

    notice = upload_notice(model.info)
    last: Trace | None = None
    for ev in model.analyze_stream(video_path, question, options, num_frames=n):
        progress(PROGRESS.get(ev.kind, 0.5), desc=ev.message or ev.kind)
        last = ev.trace
        if ev.kind != "answer":
            view = View(trace=last, base=last)
            yield [status_md(f"… {ev.message or ev.kind}"), *render_view(view, final=False), ""]
    if last is None:
        raise InputError("the model produced no result for this clip")
    last = add_flags(last)  # the flags that need no extra model run (citations, consistency)
    frames, times = strip_frames(video_path, len(last.clip.frame_times))
    view = View(trace=last, base=last, video=video_path, frames=frames, frame_times=times)
    secs = sum(last.timings.values()) if last.timings else 0.0
    yield [status_md(f"✓ Done in {secs:.1f} s."), *render_view(view, notice), ""]


def status_md(text: str, error: bool = False) -> str:
    cls = "status error" if error else "status"
    return f'<div class="{cls}">{html.escape(text)}</div>'


def banner(holder: ModelHolder) -> tuple[str, str, Any]:
    """Page load: load the model (first visit), say which it is, and preset the frame
    count to the one the model was trained with."""
    try:
        model = holder.get()
    except ClueNetError as exc:
        return f"✗ **The model could not be loaded:** {html.escape(str(exc))}", "", gr.skip()
    notice = upload_notice(model.info)
    frames = getattr(model, "num_frames", None)
    frames_update = gr.update(value=frames) if frames and MIN_FRAMES <= frames <= MAX_FRAMES else gr.skip()
    return (model_banner(model.info), f'<div class="notice">{html.escape(notice)}</div>' if notice else "",
            frames_update)


# ----------------------------------------------------------------------------- layout
CSS = """
.gradio-container {max-width: 1400px !important}
#model-banner {border-left: 4px solid #2b6cb0; padding: 4px 12px; background: #f4f8fc}
.notice {border-left: 4px solid #d97706; background: #fff8eb; padding: 8px 12px; border-radius: 4px}
.status {padding: 6px 10px; border-radius: 4px; background: #f1f5f9}
.status.error {background: #fdecea; color: #9b1c1c; font-weight: 600}
ol.chain {padding-left: 1.4em; margin: 0}
ol.chain li.step {margin: 4px 0; padding: 3px 6px; border-radius: 4px}
ol.chain li.selected {background: #fdecea; outline: 2px solid #e8453c}
.cite {display: inline-block; padding: 0 6px; margin-right: 2px; border-radius: 9px; font-size: 0.85em;
       font-family: monospace}
.cite-kept {background: #dbeafe; color: #1e3a8a}
.cite-dropped, .cite-unknown {background: #fdecea; color: #9b1c1c}
.cite-none {background: #eee; color: #555}
table.clues {font-size: 0.9em; width: 100%}
table.clues tr.clue-dropped {color: #888}
.strip img {object-fit: contain !important}
"""


def _explore_tab(examples: list[Example]) -> tuple[Any, Any, Panel]:
    if examples:
        gr.Markdown("Precomputed traces on ClueWorld clips the model never saw in training. "
                    "Pick one: opening it calls no model.")
    else:
        gr.Markdown("No examples are built yet: run `python -m cluenet.examples`.")
    items = [(str(ex.poster or ex.video), f"{ex.id}: {ex.trace.question}") for ex in examples]
    gallery = gr.Gallery(value=items, columns=6, height=230, allow_preview=False, show_label=False,
                         object_fit="contain", elem_id="examples")
    video = {}
    panel = build_panel(lambda: video.setdefault("v", gr.Video(label="Clip", interactive=False, height=320)))
    return gallery, video["v"], panel


def _inspect_form() -> dict:
    form: dict[str, Any] = {}
    form["notice"] = gr.HTML(elem_id="upload-notice")
    form["video"] = gr.Video(label="Clip", sources=["upload"], height=260, elem_id="upload-video")
    form["question"] = gr.Textbox(label=f"Question (up to {MAX_QUESTION_CHARS} characters)",
                                  max_length=MAX_QUESTION_CHARS, elem_id="question")
    with gr.Row():
        form["options"] = [gr.Textbox(label=f"Option {LETTERS[i]}", max_length=MAX_OPTION_CHARS,
                                      elem_id=f"option-{LETTERS[i]}", min_width=120) for i in range(MAX_OPTIONS)]
    with gr.Row():
        form["frames"] = gr.Slider(MIN_FRAMES, MAX_FRAMES, value=DEFAULT_FRAMES, step=1, label="Frames to sample",
                                   elem_id="frames")
        form["run"] = gr.Button("Analyze", variant="primary", elem_id="analyze")
    form["status"] = gr.HTML(elem_id="inspect-status")
    return form


def _wire_panel(panel: Panel, holder: ModelHolder) -> None:
    """Step selection and what-if events of one panel."""
    panel.step.change(select_step, [panel.state, panel.step],
                      [panel.strip, panel.timeline, panel.scores, panel.chain, panel.state], queue=False)
    panel.rerun.click(lambda *a: run_whatif(holder, *a), [panel.state, panel.tau, panel.rho, panel.drop],
                      [*panel.outputs(), panel.whatif], concurrency_id=MODEL_JOBS, concurrency_limit=1)


def trace_views() -> ui_analyst.TraceViews:
    """This module's trace view, for the analyst tabs (which do not import the app)."""
    return ui_analyst.TraceViews(
        view=View, build_panel=build_panel, render_view=render_view, strip_frames=strip_frames,
        wire_panel=lambda panel: None, check_request=check_request, check_clip=check_clip, model_jobs=MODEL_JOBS,
        panel_outputs=len(Panel.OUTPUTS), max_question_chars=MAX_QUESTION_CHARS, max_option_chars=MAX_OPTION_CHARS,
        frames=(MIN_FRAMES, MAX_FRAMES, DEFAULT_FRAMES))


def build_demo(model_loader: Callable[[], Any] | None = None, examples_dir: Path = EXAMPLES_DIR,
               data_roots: Sequence[str | os.PathLike] | None = None,
               runs_root: str | os.PathLike = DEFAULT_RUNS_ROOT,
               baseline_loaders: Mapping[str, Callable[[], Any]] | None = None) -> gr.Blocks:
    """Build the Blocks app.  No model is loaded here: ``model_loader`` (default: the
    embedded model via ``ClueNet.from_pretrained``) runs on first use.  The Case study
    tab reads datasets under ``data_roots`` (default: the working directory and the
    assets) and keeps runs under ``runs_root`` (created on the first run).
    ``baseline_loaders`` (``"direct"`` / ``"cot"``) load trained baselines for Side by side."""
    holder = ModelHolder(model_loader or default_loader())
    baselines = {mode: ModelHolder(load) for mode, load in (baseline_loaders or {}).items()}
    roots = runstore.Roots.make(data_roots or (Path.cwd(), ASSETS_DIR), runs_root)
    examples = load_examples(examples_dir)
    with gr.Blocks(title="ClueNet Explorer", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown("# ClueNet Explorer\nWhich visual clues does a video QA model extract, keep and cite? "
                    "Clues → adaptive filter → reasoning chain → answer.")
        model_md = gr.Markdown("**Model:** loads on first use…", elem_id="model-banner")
        with gr.Tab("Explore"):
            gallery, ex_video, ex_panel = _explore_tab(examples)
        with gr.Tab("Inspect"):
            form: dict[str, Any] = {}
            in_panel = build_panel(lambda: form.update(_inspect_form()))
        demo.load(lambda: banner(holder), None, [model_md, form["notice"], form["frames"]],
                  concurrency_id=MODEL_JOBS, concurrency_limit=1)
        ex_outputs = [ex_video, *ex_panel.outputs(), ex_panel.whatif]
        # opening an example reads files only: several may run while a model job runs
        gallery.select(_example_from_event(examples), None, ex_outputs, concurrency_limit=EXAMPLE_JOBS)
        if examples:
            demo.load(lambda: open_example(examples, 0), None, ex_outputs, concurrency_limit=EXAMPLE_JOBS)
        for panel in (ex_panel, in_panel):
            _wire_panel(panel, holder)
        views = dataclasses.replace(trace_views(), wire_panel=lambda panel: _wire_panel(panel, holder))
        ui_analyst.build_tabs(holder, views, roots, baselines)
        form["run"].click(
            lambda *a, progress=gr.Progress(): (yield from analyze_upload(holder, *a, progress=progress)),
            [form["video"], form["question"], *form["options"], form["frames"]],
            [form["status"], *in_panel.outputs(), in_panel.whatif],
            concurrency_id=MODEL_JOBS, concurrency_limit=1,
        )
    return demo


def _example_from_event(examples: list[Example]) -> Callable:
    def on_select(evt: gr.SelectData) -> list:
        return open_example(examples, evt.index)

    return on_select


def launch(demo: gr.Blocks, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
           examples_dir: Path = EXAMPLES_DIR, **kwargs: Any) -> Any:
    """Queue (one model job at a time, bounded) and serve with the upload size limit.

    Only ``examples_dir`` is added to gradio's allowed paths; uploads are read from
    gradio's own upload folder, never from a path the user typed.
    """
    demo.queue(default_concurrency_limit=1, max_size=QUEUE_MAX_SIZE)
    return demo.launch(server_name=host, server_port=port, max_file_size=UPLOAD_LIMITS.max_file_bytes,
                       allowed_paths=[str(examples_dir)], css=CSS, theme=gr.themes.Soft(), **kwargs)


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, load the model and serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model name or path (default: the embedded model)")
    parser.add_argument("--adapter", default=None, help="PEFT adapter folder (safetensors)")
    parser.add_argument("--filter-head", default=None, help="filter head .safetensors")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--direct-model", default=None,
                        help="a trained `direct` baseline (training.baselines output) for the Side by side tab")
    parser.add_argument("--cot-model", default=None, help="a trained `cot` baseline, likewise")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--data-root", default=None,
                        help="folder whose JSONL datasets the Case study tab may read (default: the working directory)")
    parser.add_argument("--runs-root", default=str(DEFAULT_RUNS_ROOT),
                        help="folder for case-study runs and imported predictions (env CLUENET_RUNS_ROOT)")
    args = parser.parse_args(argv)
    # load before serving: a bad --model fails here, in one line, not on the first visit
    try:
        model = default_loader(args.model, args.adapter, args.filter_head, args.device)()
    except ClueNetError as exc:
        raise SystemExit(f"error: {exc}") from None
    baselines = {}
    for mode, path in (("direct", args.direct_model), ("cot", args.cot_model)):
        if path:
            try:
                baselines[mode] = default_loader(path, device=args.device)()
            except ClueNetError as exc:
                raise SystemExit(f"error: --{mode}-model: {exc}") from None
    try:
        built = build_demo(lambda: model, data_roots=[args.data_root or Path.cwd(), ASSETS_DIR],
                           runs_root=args.runs_root,
                           baseline_loaders={mode: (lambda m=m: m) for mode, m in baselines.items()})
    except ClueNetError as exc:
        raise SystemExit(f"error: {exc}") from None
    launch(built, args.host, args.port)


demo = build_demo()

if __name__ == "__main__":
    main()
