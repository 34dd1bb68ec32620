"""The app's handlers, called directly (no browser): input checks, example loading,
rendering, step selection, what-if re-runs with a tiny real model.

    pytest tests/test_app.py -q
"""
from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from test_plots import make_trace

import app
from cluenet.errors import InputError
from cluenet.schema import ModelInfo, Step, Trace

OPTS = ["red circle", "blue square", "", "", ""]


# ----------------------------------------------------------------------------- input checks
def test_check_request_accepts_and_cleans():
    q, opts, n = app.check_request("/tmp/x.mp4", "  Which moves first? ", ["a ", " b", "c", "", ""], 16.0)
    assert (q, opts, n) == ("Which moves first?", ("a", "b", "c"), 16)


@pytest.mark.parametrize(
    "video, question, options, frames, message",
    [
        (None, "q", OPTS, 16, "no clip uploaded"),
        ("v.mp4", "   ", OPTS, 16, "question is empty"),
        ("v.mp4", "x" * (app.MAX_QUESTION_CHARS + 1), OPTS, 16,
         f"{app.MAX_QUESTION_CHARS + 1} characters, limit {app.MAX_QUESTION_CHARS}"),
        ("v.mp4", "q", ["only one", "", "", "", ""], 16, "got 1 option(s), need 2-5"),
        ("v.mp4", "q", ["a", "", "c", "", ""], 16, "option B is empty"),
        ("v.mp4", "q", ["a", "y" * (app.MAX_OPTION_CHARS + 5), "", "", ""], 16,
         f"option B is {app.MAX_OPTION_CHARS + 5} characters"),
        ("v.mp4", "q", ["Same", "other", "same", "", ""], 16, "options A and C are the same"),
        ("v.mp4", "q", OPTS, 2, f"allowed {app.MIN_FRAMES}-{app.MAX_FRAMES}"),
        ("v.mp4", "q", OPTS, 8.5, "number of frames is 8.5"),
    ],
)
def test_check_request_rejects_with_a_specific_message(video, question, options, frames, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        app.check_request(video, question, options, frames)


def test_analyze_upload_shows_bad_input_in_status_and_raises_gr_error():
    loads = []
    holder = app.ModelHolder(lambda: loads.append(1))
    gen = app.analyze_upload(holder, None, "q", *OPTS, 16)
    status = next(gen)[0]
    assert "no clip uploaded" in status and "error" in status
    with pytest.raises(gr.Error, match="no clip uploaded"):
        next(gen)
    assert loads == []  # bad input never reaches the model


def test_analyze_upload_rejects_a_corrupt_clip_before_the_model(tmp_path):
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00\x01 not a video" * 100)
    loads = []
    holder = app.ModelHolder(lambda: loads.append(1))
    outs = []
    with pytest.raises(gr.Error):
        for out in app.analyze_upload(holder, str(bad), "Which moves first?", *OPTS, 16):
            outs.append(out[0])
    assert "✗" in outs[-1] and loads == []


# ----------------------------------------------------------------------------- model holder / banner
def test_build_demo_loads_no_model_and_holder_loads_once():
    calls = []
    demo = app.build_demo(model_loader=lambda: calls.append(1) or "model", examples_dir=Path("/nonexistent"))
    assert isinstance(demo, gr.Blocks) and calls == []
    holder = app.ModelHolder(lambda: calls.append(1) or "model")
    assert not holder.loaded and holder.get() == "model" and holder.get() == "model" and calls == [1]


def test_banner_and_notice_say_what_the_model_knows():
    rnd = ModelInfo(name="tiny", trained_on="nothing: random weights")
    cw = ModelInfo(name="cluenet-clueworld", trained_on="ClueWorld seeds 0-20000")
    other = ModelInfo(name="qwen", trained_on="NExT-QA train")
    assert "random weights" in app.model_banner(rnd) and "tiny" in app.model_banner(rnd)
    assert "ClueWorld" in app.model_banner(cw) and "random" not in app.model_banner(cw)
    assert "only knows ClueWorld" in app.upload_notice(cw) and app.upload_notice(other) == ""


# ----------------------------------------------------------------------------- rendering
def test_chain_html_marks_cites_of_dropped_and_unknown_clues():
    trace = make_trace()  # c1, c3 kept; c2, c4 dropped
    trace = trace.with_(chain=trace.chain + (Step(text="x <b>", cites=("c2", "c9")),))
    html = app.chain_html(trace, selected=2)
    assert html.count("<li") == 3 and "cite-kept" in html
    assert "c2 (not kept)" in html and "c9 (no such clue)" in html
    assert "&lt;b&gt;" in html and 'class="step selected"' in html  # escaped, selection shown


def test_answer_md_reports_gold_and_disagreement():
    md = app.answer_md(make_trace(answer=1, gold=2).with_(generated_answer=0))
    assert "Answer: B. blue square" in md and "Ground truth:** C. green triangle" in md and "wrong" in md
    assert "<answer>A</answer>" in md
    assert "correct" in app.answer_md(make_trace(answer=2, gold=2))


def test_render_view_fills_every_output():
    trace = make_trace(n_frames=4)
    frames = np.full((4, 24, 32, 3), 90, np.uint8)
    view = app.View(trace=trace, base=trace, frames=frames, frame_times=trace.clip.frame_times, step=0)
    out = app.render_view(view)
    assert len(out) == len(app.Panel.OUTPUTS)
    named = dict(zip(app.Panel.OUTPUTS, out))
    assert named["strip"].dtype == np.uint8
    assert named["step"]["choices"][1][0].startswith("1. (c1)")
    assert [c[1] for c in named["drop"]["choices"]] == ["c1", "c3"]
    saved = Trace.from_json(Path(named["download"]["value"]).read_text())
    assert saved == trace


def test_select_step_highlights_the_cited_clues():
    trace = make_trace()
    view = app.View(trace=trace, base=trace)
    strip, timeline, scores, chain, view2 = app.select_step(view, 1)  # step 2 cites c1, c3
    kept = [t for t in timeline.data if t.name == "kept"][0]
    assert list(kept.marker.line.color) == [app.plots.HIGHLIGHT_COLOR] * 2
    assert strip is None and view2.step == 1 and 'class="step selected"' in chain


# ----------------------------------------------------------------------------- examples on disk
def _write_examples(folder: Path, n: int = 2) -> None:
    from cluenet.video import write_video

    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n):
        trace = make_trace(n_frames=6).with_(sample_id=f"ex{i}")
        frames = np.zeros((24, 64, 64, 3), np.uint8)
        frames[:, 10:30, 5 + i:25 + i] = (200, 30, 30)
        write_video(folder / f"ex{i}.mp4", frames, fps=4)
        (folder / f"ex{i}.trace.json").write_text(trace.to_json())
        entries.append({"id": f"ex{i}", "video": f"ex{i}.mp4", "poster": "", "trace": f"ex{i}.trace.json"})
    entries.append({"id": "gone", "video": "gone.mp4", "trace": "gone.trace.json"})
    (folder / "index.json").write_text(json.dumps({"examples": entries}))


def test_load_and_open_example_without_a_model(tmp_path):
    _write_examples(tmp_path)
    examples = app.load_examples(tmp_path)
    assert [e.id for e in examples] == ["ex0", "ex1"]  # the entry with missing files is skipped
    out = app.open_example(examples, 1)
    assert out[0] == str(tmp_path / "ex1.mp4")
    named = dict(zip(app.Panel.OUTPUTS, out[1:]))
    assert named["state"].trace.sample_id == "ex1"
    assert named["strip"] is not None and named["strip"].shape[0] > 0  # frames decoded from the mp4
    with pytest.raises(gr.Error, match="no example #5"):
        app.open_example(examples, 5)


# ----------------------------------------------------------------------------- what-if
def test_compare_md_says_whether_the_answer_changed():
    before = make_trace(answer=1)
    assert "Answer changed: B → D" in app.compare_md(before, before.with_(answer=3), ["c1"])
    assert "Answer unchanged: B" in app.compare_md(before, before, [])
