"""The app's handlers, called directly (no browser): input checks, example loading,
rendering, step selection, what-if re-runs with a tiny real model.

    pytest tests/test_app.py -q
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from test_plots import make_trace

import app
from cluenet.errors import InputError
from cluenet.schema import Flag, ModelInfo, Step, Trace

OPTS = ["red circle", "blue square", "", "", ""]
TEST_CLUE_TOKENS, TEST_CHAIN_TOKENS = 40, 24  # random weights write noise: short caps keep tests fast
TEST_FRAMES = 4


@functools.lru_cache(maxsize=1)
def tiny_model():
    """The tiny random Qwen2.5-VL ClueNet (shipped tokenizer, no download), shared by
    this module and tests/test_browser.py; built once per session."""
    from cluenet import backbones
    from cluenet.filter import FilterHead
    from cluenet.model import ClueNet

    net, proc = backbones.tiny_model(backbones.PRIMARY, seed=0)
    head = FilterHead(int(net.config.get_text_config().hidden_size)).eval()
    model = ClueNet.from_components(net, proc, head, name="tiny-test", trained_on="nothing: random weights (test)")
    model.max_clue_tokens, model.max_chain_tokens = TEST_CLUE_TOKENS, TEST_CHAIN_TOKENS
    return model


def square_clip(path: Path, seconds: float = 3.0, fps: int = 8) -> Path:
    """A small clip of a red square moving right (written with PyAV)."""
    from cluenet.video import write_video

    n = int(seconds * fps)
    frames = np.full((n, 96, 128, 3), 235, np.uint8)
    for k in range(n):
        frames[k, 30:60, 5 + 3 * k:35 + 3 * k] = (220, 40, 40)
    return write_video(path, frames, fps=fps)


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


def test_analyze_upload_shows_bad_input_in_the_status_box_only():
    loads = []
    holder = app.ModelHolder(lambda: loads.append(1))
    (out,) = list(app.analyze_upload(holder, None, "q", *OPTS, 16))
    assert "no clip uploaded" in out[0] and "error" in out[0]
    assert all(isinstance(o, type(gr.skip())) for o in out[1:])  # the last view stays
    assert loads == []  # bad input never reaches the model


def test_analyze_upload_rejects_a_corrupt_clip_before_the_model(tmp_path):
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00\x01 not a video" * 100)
    loads = []
    holder = app.ModelHolder(lambda: loads.append(1))
    outs = [o[0] for o in app.analyze_upload(holder, str(bad), "Which moves first?", *OPTS, 16)]
    assert "Checking the clip" in outs[0]
    assert "✗ cannot open clip.mp4 as a video" in outs[-1] and loads == []


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


def test_trace_file_name_never_comes_from_a_path_in_the_trace():
    path = Path(app.trace_file(make_trace().with_(sample_id="../../etc/passwd")))
    assert path.parent.name.startswith("cluenet-traces-") and path.name.startswith("trace-______etc_passwd-")


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


def _with_clues(trace: Trace, scores=(0.9, 0.6, 0.2)) -> Trace:
    """The tiny random model writes no parsable clues: give its trace scored clues
    (the cached prefix is keyed by clip and question, so pass 2 can reason over them)."""
    clues = make_trace(scores=scores).clues
    stale = Flag(kind="clue_necessity", message="stale: about the base chain")
    return trace.with_(clues=clues, filter=app.FilterSettings(tau_min=0.3, rho=0.5), flags=(stale,))


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory):
    """One example on disk whose trace came from the tiny model (clip + trace JSON)."""
    folder = tmp_path_factory.mktemp("ex")
    clip = square_clip(folder / "ex0.mp4")
    trace = tiny_model().analyze(str(clip), "Which way does the square move?", ("left", "right", "up"),
                                 num_frames=TEST_FRAMES, sample_id="ex0")
    tiny_model().cache.clear()  # as after a restart: no prefix cached for this example
    (folder / "ex0.trace.json").write_text(_with_clues(trace).to_json())
    (folder / "index.json").write_text(json.dumps(
        {"examples": [{"id": "ex0", "video": "ex0.mp4", "trace": "ex0.trace.json"}]}))
    return folder


def test_whatif_rebuilds_an_example_prefix_and_reasons_over_the_kept_clues(example_dir):
    (ex,) = app.load_examples(example_dir)
    holder = app.ModelHolder(tiny_model)
    view = dict(zip(app.Panel.OUTPUTS, app.open_example([ex], 0)[1:]))["state"]
    # threshold max(0.3, 0.5 * 0.9) = 0.45 keeps c1 (0.9) and c2 (0.6); the user drops c1
    out = app.run_whatif(holder, view, 0.3, 0.5, ["c1"])
    after = out[app.Panel.OUTPUTS.index("state")].trace
    assert [c.kept for c in after.clues] == [False, True, False]
    assert after.threshold == pytest.approx(0.45)
    context = after.raw["reasoning"]
    assert "c2 [" in context and "c1 [" not in context and "c3 [" not in context
    assert after.answer is not None and len(after.option_probs) == 3
    assert "you dropped c1" in out[-1] and "Answer" in out[-1]
    assert not [f for f in after.flags if f.message.startswith("stale")]  # flags recomputed for the new chain


def test_whatif_threshold_changes_the_kept_set(example_dir):
    (ex,) = app.load_examples(example_dir)
    after = app.rerun_reasoning(tiny_model(), ex.trace, tau_min=0.1, rho=0.1, dropped=[], video_path=str(ex.video))
    assert all(c.kept for c in after.clues) and after.threshold == pytest.approx(0.1)
    assert "c3 [" in after.raw["reasoning"]
    with pytest.raises(InputError, match="keep at least one clue"):
        app.rerun_reasoning(tiny_model(), ex.trace, 0.95, 0.5, ["c1"], str(ex.video))
    out = app.run_whatif(app.ModelHolder(tiny_model), None, 0.3, 0.5, [])
    assert "nothing to re-run yet" in out[-1] and len(out) == len(app.Panel.OUTPUTS) + 1


def test_analyze_upload_streams_to_an_answer(tmp_path):
    clip = square_clip(tmp_path / "clip.mp4")
    holder = app.ModelHolder(tiny_model)
    outs = list(app.analyze_upload(holder, str(clip), "Which way does the square move?",
                                   "left", "right", "up", "", "", TEST_FRAMES))
    statuses = [o[0] for o in outs if not isinstance(o[0], dict)]
    assert "Checking the clip" in statuses[0] and "Done" in statuses[-1]
    final = dict(zip(app.Panel.OUTPUTS, outs[-1][1:]))
    trace = final["state"].trace
    assert trace.answer in (0, 1, 2) and len(trace.clip.frame_times) == TEST_FRAMES
    assert "Answer:" in final["answer"] and "only knows ClueWorld" in final["answer"]
    assert final["strip"] is not None  # frames decoded for the strip
    assert Trace.from_json(Path(final["download"]["value"]).read_text()) == trace


# ----------------------------------------------------------------------------- example assets
def test_examples_build_writes_clip_poster_trace_and_index(tmp_path):
    from cluenet import examples

    index = examples.build(tmp_path, n=1, seed=examples.EXAMPLE_SEED, model=tiny_model(), num_frames=TEST_FRAMES,
                           command="pytest")
    meta = json.loads(index.read_text())
    (entry,) = meta["examples"]
    assert meta["command"] == "pytest" and meta["model"]["name"] == "tiny-test"
    assert meta["total_bytes"] < examples.MAX_TOTAL_BYTES
    (ex,) = app.load_examples(tmp_path)
    assert ex.poster is not None and ex.trace.sample_id == entry["id"] == "ex90001"
    assert ex.trace.gold is not None and len(ex.trace.clip.frame_times) == TEST_FRAMES
    with pytest.raises(app.ClueNetError, match="--n is 0"):
        examples.build(tmp_path, n=0, model=tiny_model())
    with pytest.raises(app.ClueNetError, match="reserved"):
        examples.build(tmp_path, n=1, seed=7, model=tiny_model())


def test_shipped_examples_load_and_stay_small():
    from cluenet import examples

    index = json.loads((app.EXAMPLES_DIR / "index.json").read_text())
    loaded = app.load_examples()
    assert len(loaded) == len(index["examples"]) >= 1
    assert sum(p.stat().st_size for p in app.EXAMPLES_DIR.iterdir()) < examples.MAX_TOTAL_BYTES
    assert index["command"].startswith("python -m cluenet.examples")


def test_main_loads_trained_baselines_for_side_by_side_and_names_a_bad_one(monkeypatch, tmp_path):
    loaded, served = [], []
    monkeypatch.setattr(app, "default_loader", lambda path=None, *a, **kw: lambda: loaded.append(path) or tiny_model())
    monkeypatch.setattr(app, "launch", lambda demo, *a, **kw: served.append(demo))
    app.main(["--cot-model", "runs/x/cot/final", "--runs-root", str(tmp_path / "runs")])
    assert loaded == [None, "runs/x/cot/final"] and len(served) == 1
    notes = [b.value for b in served[0].blocks.values() if getattr(b, "elem_id", None) == "sbs-note"]
    assert notes and "`cot` by its trained baseline model; `direct` by the ClueNet model" in notes[0]

    def refuse(path=None, *a, **kw):
        def load():
            if path:
                raise InputError(f"cannot load a model config from {path!r}")
            return tiny_model()
        return load

    monkeypatch.setattr(app, "default_loader", refuse)
    with pytest.raises(SystemExit, match="error: --direct-model: cannot load a model config from 'nowhere'"):
        app.main(["--direct-model", "nowhere", "--runs-root", str(tmp_path / "runs")])
