"""The analyst tabs' handlers, called directly (no browser): path restrictions, the
case table's filters, opening a case, tags across a fresh load, report export on a
read-only import, a resumable run and the side-by-side comparison with a tiny model.

    pytest tests/test_ui_analyst.py -q          (~40 s on 2 cores)
"""
from __future__ import annotations

import html
import json
import os
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

import app
from cluenet import casestudy, runstore, ui_analyst
from cluenet.data.jsonl import write_jsonl
from cluenet.errors import ConfigError, InputError
from cluenet.schema import ClipInfo, Clue, Flag, ModelInfo, Sample, Step, Trace

LMMS = Path(__file__).resolve().parent / "fixtures" / "lmms_eval" / "samples_nextqa_mc_test.jsonl"
FRAME_TIMES = (0.25, 0.75, 1.25, 1.75)
OPTIONS = ("red circle", "blue square", "green triangle")
# (qtype, answer, gold, flag kinds) of the constructed cases c0..c5
CASES = [
    ("CW", 1, 1, ("unsupported_citation",)),
    ("CW", 0, 1, ("unsupported_citation", "ungrounded_clue")),
    ("TN", 2, 2, ()),
    ("TN", 1, 0, ("chain_answer_inconsistency",)),
    ("DC", 0, 0, ("ungrounded_clue",)),
    ("DC", None, 2, ()),
]
SKIP = type(gr.skip())


def case_trace(i: int, qtype: str, answer: int | None, gold: int, kinds: tuple[str, ...]) -> Trace:
    """A finished trace as a case study writes it, with the flags given."""
    clues = (Clue("c1", 0.0, 1.0, f"shape {i} moves right", 0.9, True),
             Clue("c2", 1.0, 2.0, "the blue square stops", 0.2, False))
    probs = tuple(0.8 if k == answer else 0.1 for k in range(3)) if answer is not None else ()
    return Trace(clip=ClipInfo(name="clip.mp4", duration=2.0, frame_times=FRAME_TIMES),
                 question=f"What moves first in scene {i}?", options=OPTIONS, clues=clues,
                 chain=(Step(f"c1 shows shape {i} first, so {'ABC'[answer or 0]}", ("c1",)),), answer=answer,
                 option_probs=probs, gold=gold, qtype=qtype, sample_id=f"c{i}",
                 flags=tuple(Flag(k, f"{k} on case {i}") for k in kinds),
                 timings={"clues": 0.5 + i / 10, "chain": 0.2}, tokens={"clues": 30 + i, "chain": 12},
                 model=ModelInfo(name="tiny-constructed"))


def write_run(data_root: Path, runs_root: Path, name: str = "demo-run") -> Path:
    """A finished case-study folder of CASES (traces.jsonl + run.json) whose data JSONL
    and clip live under ``data_root``; returns the run folder."""
    from cluenet.video import write_video

    frames = np.full((16, 64, 64, 3), 200, np.uint8)
    for k in range(16):
        frames[k, 20:40, 2 + 2 * k:22 + 2 * k] = (220, 40, 40)
    clip = write_video(data_root / "clip.mp4", frames, fps=8)
    samples = [Sample(id=f"c{i}", video=str(clip), question=f"What moves first in scene {i}?", options=OPTIONS,
                      answer=gold, qtype=q, clues=(Clue("g1", 0.0, 1.0, f"shape {i} moves right"),),
                      chain=(Step("g1 comes first", ("g1",)),)) for i, (q, _, gold, _) in enumerate(CASES)]
    data = data_root / "cases.jsonl"
    write_jsonl(samples, data)
    folder = runs_root / name
    folder.mkdir(parents=True)
    lines = [json.dumps(case_trace(i, *c).to_dict()) for i, c in enumerate(CASES)]
    (folder / casestudy.TRACES_FILE).write_text("\n".join(lines) + "\n")
    (folder / casestudy.MANIFEST_FILE).write_text(json.dumps(
        {"version": 1, "model": {"name": "tiny-constructed"}, "data": str(data), "finished": "2025-01-01T00:00:00"}))
    return folder


@pytest.fixture
def roots(tmp_path):
    (tmp_path / "data").mkdir()
    return runstore.Roots.make([tmp_path / "data"], tmp_path / "runs")


@pytest.fixture
def saved(roots):
    return write_run(roots.data[0], roots.runs)


# ----------------------------------------------------------------------------- paths
def test_data_paths_outside_the_roots_are_refused(roots, tmp_path):
    inside = roots.data[0] / "split.jsonl"
    inside.write_text("")
    assert runstore.resolve_data_path("split.jsonl", roots) == inside  # relative to the data root
    assert runstore.resolve_data_path(str(inside), roots) == inside
    (tmp_path / "secret.jsonl").write_text("")
    os.symlink(tmp_path / "secret.jsonl", roots.data[0] / "link.jsonl")
    for text in ("/etc/passwd", "../secret.jsonl", str(tmp_path / "secret.jsonl"), "link.jsonl"):
        with pytest.raises(InputError, match="outside the allowed data folders"):
            runstore.resolve_data_path(text, roots)
    (roots.data[0] / "notes.txt").write_text("")
    with pytest.raises(InputError, match="is a .txt file, expected a .jsonl"):
        runstore.resolve_data_path("notes.txt", roots)
    with pytest.raises(InputError, match="does not exist"):
        runstore.resolve_data_path("missing.jsonl", roots)
    with pytest.raises(InputError, match="no dataset given"):
        runstore.resolve_data_path("  ", roots)


def test_run_names_are_sanitised_and_loads_stay_in_the_runs_root(roots, saved):
    assert runstore.run_name("../../etc/cron.d") == "etc_cron.d"
    assert runstore.run_name("my run: v2") == "my_run_v2"
    assert runstore.run_name("", fallback="clueworld") == "clueworld"
    with pytest.raises(InputError, match="has no letters or digits"):
        runstore.run_name("../")
    with pytest.raises(InputError, match=f"limit {runstore.MAX_RUN_NAME_CHARS}"):
        runstore.run_name("x" * 65)
    assert runstore.list_runs(roots) == ["demo-run"]
    assert runstore.run_folder("demo-run", roots) == saved
    for bad, message in (("../demo-run", "is not a run name"), (str(saved), "is not a run name"),
                         ("other", "no run 'other'"), (None, "no run chosen")):
        with pytest.raises(InputError, match=message):
            runstore.run_folder(bad, roots)


def test_a_bad_run_request_never_reaches_the_model(roots):
    loads = []
    holder = app.ModelHolder(lambda: loads.append(1))
    out = ui_analyst.on_run(holder, roots, "/etc/passwd", "x", 3, False)
    assert len(out) == ui_analyst.RUN_OUTPUTS and "outside the allowed data folders" in out[1]
    assert isinstance(out[0], SKIP) and loads == [] and not roots.runs.exists()


# ----------------------------------------------------------------------------- table and case
def _ids(df) -> list[str]:
    return list(df["id"])


def test_table_filters_by_flag_type_and_correctness(roots, saved):
    run = runstore.open_run("demo-run", roots)
    df, note = ui_analyst.table(run)
    assert _ids(df) == [f"c{i}" for i in range(6)] and note == "6 of 6 cases match"
    assert list(df.columns) == list(casestudy.CASE_COLUMNS)
    expect = {kind: [f"c{i}" for i, c in enumerate(CASES) if kind in c[3]] for kind in ("unsupported_citation",
                                                                                         "ungrounded_clue")}
    assert _ids(ui_analyst.table(run, flag="unsupported_citation")[0]) == expect["unsupported_citation"] == ["c0", "c1"]
    assert _ids(ui_analyst.table(run, flag="ungrounded_clue")[0]) == expect["ungrounded_clue"]
    assert _ids(ui_analyst.table(run, qtype="TN")[0]) == ["c2", "c3"]
    assert _ids(ui_analyst.table(run, correctness="wrong")[0]) == ["c1", "c3", "c5"]  # unanswered c5 is wrong
    right, note = ui_analyst.table(run, flag="ungrounded_clue", qtype="DC", correctness="right")
    assert _ids(right) == ["c4"] and note == "1 of 6 cases match" and list(right["correct"]) == ["✓"]
    with pytest.raises(InputError, match="unknown flag 'nope'"):
        ui_analyst.table(run, flag="nope")
    out = ui_analyst.on_filter(run, "any", "any", "maybe")
    assert "correctness filter is 'maybe'" in html.unescape(out[1]) and isinstance(out[0], SKIP)


def test_opening_a_case_fills_the_trace_view_with_its_clip(roots, saved):
    run = runstore.open_run("demo-run", roots)
    views = app.trace_views()
    out = ui_analyst.on_open_case(views, roots, run, "c3")
    assert len(out) == 5 + views.panel_outputs + 2
    case_id, header, cats, note, video = out[:5]
    panel = dict(zip(app.Panel.OUTPUTS, out[5:5 + views.panel_outputs]))
    assert case_id == "c3" and "wrong" in header and cats == [] and note == ""
    assert video == str(roots.data[0] / "clip.mp4")
    assert panel["state"].trace == run.trace("c3") and panel["state"].video == video
    assert panel["strip"] is not None  # frames decoded from the clip
    assert "chain_answer_inconsistency" in panel["flags"].replace(" ", "_")
    bad = ui_analyst.on_open_case(views, roots, run, "c99")
    assert "no case 'c99'" in html.unescape(bad[-1]) and all(isinstance(o, SKIP) for o in bad[:-1])


def test_a_clip_outside_the_roots_is_not_shown(roots, tmp_path):
    write_run(tmp_path, roots.runs, "elsewhere")  # the data file and clip are outside the data root
    run = runstore.open_run("elsewhere", roots)
    assert Path(run.samples["c0"].video).is_file()
    assert ui_analyst.open_case(app.trace_views(), run, "c0", roots)["video"] is None


# ----------------------------------------------------------------------------- tags and reports
def test_tags_persist_across_a_fresh_load(roots, saved):
    run = runstore.open_run("demo-run", roots)
    out = ui_analyst.on_save_tag(run, "c1", ["videohallucer/temporal", "vidhalluc/action"], " order wrong ",
                                 "unsupported_citation", "any", "all")
    assert "saved tag of c1" in out[0] and "error" not in out[0]
    assert dict(zip(out[1]["id"], out[1]["tags"]))["c1"] == "temporal, action, order wrong"
    fresh = runstore.open_run("demo-run", roots)  # as after a restart: a new Run from disk
    case = ui_analyst.open_case(app.trace_views(), fresh, "c1", roots)
    assert case["categories"] == ["videohallucer/temporal", "vidhalluc/action"] and case["note"] == "order wrong"
    refused = ui_analyst.on_save_tag(fresh, "c1", ["made/up"], "", "any", "any", "all")
    assert "unknown tag category 'made/up'" in html.unescape(refused[0])
    assert "no case open" in ui_analyst.on_save_tag(fresh, None, [], "", "any", "any", "all")[0]


def test_export_writes_markdown_and_json_with_the_tag(roots, saved):
    run = runstore.open_run("demo-run", roots)
    ui_analyst.save_tag(run, "c4", ["eventhallusion/entire_event"], "invented collision")
    md, js, status = ui_analyst.on_export(run)
    report = json.loads(Path(js).read_text())
    assert [e["id"] for e in report["examples"]] == ["c4"]
    assert report["examples"][0]["tags"] == {"categories": ["eventhallusion/entire_event"], "note": "invented collision"}
    assert "invented collision" in Path(md).read_text() and "6 cases" in status
    assert "no run loaded" in ui_analyst.on_export(None)[-1]


def test_import_is_copied_under_the_runs_root_and_exports_read_only(roots, tmp_path):
    upload = tmp_path / "gradio-upload" / "samples_nextqa_mc_test.jsonl"  # as gradio hands an upload over
    upload.parent.mkdir()
    upload.write_bytes(LMMS.read_bytes())
    out = ui_analyst.on_import(roots, str(upload), None, None)
    run = out[0]
    assert run.read_only and len(run.traces) == 6 and "read-only" in out[1]
    assert run.folder.parent == roots.runs and run.folder.name.startswith("import-samples_nextqa_mc_test-")
    assert run.tags_path.parent == run.folder  # tags beside the copy, not in the upload folder
    ui_analyst.save_tag(run, "4010069381_6", ["eventhallusion/misleading_event"], "prior")
    upload.unlink()  # gradio empties its cache: the import and its tags stay
    again = runstore.open_run(run.folder.name, roots)
    md, js = ui_analyst.export(again)
    report = json.loads(Path(js).read_text())
    assert report["run"]["read_only"] and [e["id"] for e in report["examples"]] == ["4010069381_6"]
    assert "imported predictions, read-only" in Path(md).read_text()
    assert runstore.list_runs(roots) == [run.folder.name]
    upload.write_bytes(LMMS.read_bytes())  # the same file uploaded again: same folder, tags kept
    again = runstore.import_predictions(roots, str(upload), None, None)
    assert again.folder == run.folder and ui_analyst.table(again)[0]["tags"][0] == "misleading_event, prior"


@pytest.mark.parametrize("files, message", [
    ((None, None, None), "nothing to import"),
    (("x.csv", None, None), "expected a .jsonl file"),
    ((None, "p.json", None), "no NExT-QA annotation csv uploaded"),
])
def test_bad_imports_say_what_is_wrong(roots, tmp_path, files, message):
    paths = []
    for f in files:
        if f:
            (tmp_path / f).write_text("{}")
        paths.append(str(tmp_path / f) if f else None)
    out = ui_analyst.on_import(roots, *paths)
    assert message in out[1] and "error" in out[1] and isinstance(out[0], SKIP)


def test_dashboard_gives_four_figures_for_a_run_and_notes_without_one(roots, saved):
    run = runstore.open_run("demo-run", roots)
    summary, *figs = ui_analyst.on_dashboard(run)
    assert "demo-run" in summary and "6 cases" in summary and len(figs) == 4
    assert sorted(figs[0].data[0].x) == ["CW", "DC", "TN"]
    # gold clue g1 matches every case's c1 (score 0.9), never c2 (0.2): 12 scored clues judged
    assert "12 clues" in figs[1].layout.title.text
    _, *empty = ui_analyst.on_dashboard(None)
    assert empty[0].layout.annotations[0].text == "no cases with a gold answer in this run"


# ----------------------------------------------------------------------------- with a tiny model
@pytest.fixture(scope="module")
def net(tiny_qwen):
    from cluenet.model import ClueNet

    model, processor = tiny_qwen
    net = ClueNet.from_components(model, processor, name="tiny-ui-analyst")
    net.max_clue_tokens = net.max_chain_tokens = 12  # a random model writes to the cap
    net.num_frames = 4
    return net


def test_run_then_second_click_resumes(net, roots):
    from cluenet.data.clueworld import WorldConfig, generate

    data = generate(roots.data[0] / "cw", 3, seed=777, cfg=WorldConfig(frames=10, size=64))
    holder = app.ModelHolder(lambda: net)
    ticks = []
    out = ui_analyst.on_run(holder, roots, "cw/clueworld.jsonl", "cw test", 2, False,
                            progress=lambda p, desc: ticks.append(desc))
    run = out[0]
    assert len(out) == ui_analyst.RUN_OUTPUTS and run.folder == roots.runs / "cw_test" and len(run.traces) == 2
    assert "2 of 2 cases" in out[1] and ticks == ["0/2 cases", "1/2 cases", "2/2 cases"]
    assert list(out[6]["id"]) == [t.sample_id for t in run.traces]
    out = ui_analyst.on_run(holder, roots, str(data), "cw test", 3, False)  # same run, one more question
    assert "3 of 3 cases, 2 were already done" in out[1] and len(out[0].traces) == 3
    assert "limit must be a whole number" in ui_analyst.on_run(holder, roots, str(data), "cw test", 1.5, False)[1]
    assert out[8]["choices"] == ["cw_test"]  # the saved-runs list now offers it


def test_side_by_side_compares_the_three_modes(net, tiny_video_file):
    views = app.trace_views()
    loads = []
    holder = app.ModelHolder(lambda: loads.append(1) or net)
    bad = ui_analyst.on_compare(holder, views, str(tiny_video_file), "", "a", "b", "", "", "", "none", 4)
    assert "question is empty" in bad[0] and loads == []
    bad = ui_analyst.on_compare(holder, views, str(tiny_video_file), "Which?", "a", "b", "", "", "", "D", 4)
    assert "gold answer D is not one of the 2 options" in bad[0] and loads == []
    status, df, fig = ui_analyst.on_compare(holder, views, str(tiny_video_file), "Which way does it move?",
                                            "left", "right", "up", "", "", "B", 4)
    assert "✓" in status and list(df["mode"]) == ["cluenet", "direct", "cot"] and loads == [1]
    assert {tr.name.split(" ")[0] for tr in fig.data} == {"cluenet", "direct", "cot"}
    assert all(c is not None for c in df["correct"])  # gold B was passed to every mode


def test_side_by_side_loads_a_trained_baseline_only_for_a_valid_request(net, tiny_video_file):
    views, loads = app.trace_views(), []
    holder = app.ModelHolder(lambda: net)
    cot = app.ModelHolder(lambda: loads.append("cot") or net)
    bad = ui_analyst.on_compare(holder, views, str(tiny_video_file), "", "a", "b", "", "", "", "none", 4,
                                baselines={"cot": cot})
    assert "question is empty" in bad[0] and loads == []
    status, df, _ = ui_analyst.on_compare(holder, views, str(tiny_video_file), "Which way?", "left", "right", "",
                                          "", "", "none", 4, baselines={"cot": cot})
    assert "✓" in status and loads == ["cot"] and list(df["model"]) == [net.info.name] * 3


def test_the_side_by_side_note_says_what_answers_each_baseline():
    assert "prompt ablation" in ui_analyst.baselines_note([]) and "`direct` and `cot` by the ClueNet" in \
        ui_analyst.baselines_note([])
    both = ui_analyst.baselines_note(["direct", "cot"])
    assert "`direct` by its trained baseline model; `cot` by its trained" in both and "ablation" not in both
    one = ui_analyst.baselines_note(["direct"])
    assert "`direct` by its trained baseline model; `cot` by the ClueNet model prompted" in one


def test_build_demo_takes_the_roots_and_refuses_a_missing_data_root(tmp_path):
    demo = app.build_demo(model_loader=lambda: None, examples_dir=tmp_path / "none",
                          data_roots=[tmp_path], runs_root=tmp_path / "runs")
    assert isinstance(demo, gr.Blocks) and not (tmp_path / "runs").exists()  # created on the first run only
    with pytest.raises(ConfigError, match="is not a folder"):
        app.build_demo(model_loader=lambda: None, data_roots=[tmp_path / "nope"], runs_root=tmp_path)
