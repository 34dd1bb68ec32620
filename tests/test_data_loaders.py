"""Dataset loaders: project JSONL validation, NExT-QA (real files), STAR and MVBench (fixtures
in the official formats, made up for these tests)."""
from __future__ import annotations

import collections
import csv
import json
import os
import re
from pathlib import Path

import pytest

from cluenet.data import mvbench, nextqa, star
from cluenet.data.jsonl import load_jsonl, read_samples, validate_record, write_jsonl
from cluenet.errors import InputError
from cluenet.schema import Clue, Sample, Step

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
NEXTQA_DIR = Path(os.environ.get("CLUENET_NEXTQA_DIR", ROOT / "tests" / "fixtures" / "nextqa"))

# counted once with `collections.Counter(row["type"] for row in csv.DictReader(open("val.csv")))`
VAL_TYPE_COUNTS = {"CW": 1924, "CH": 683, "TN": 895, "TC": 663, "TP": 54, "DC": 177, "DL": 295, "DO": 305}


# ----------------------------------------------------------------------------- NExT-QA
def test_nextqa_val_loads_every_question_with_its_type():
    samples = nextqa.load_nextqa(NEXTQA_DIR / "val.csv")
    with open(NEXTQA_DIR / "val.csv", newline="") as fh:
        independent = collections.Counter(row["type"] for row in csv.DictReader(fh))
    loaded = collections.Counter(s.qtype for s in samples)
    assert len(samples) == 4996 == sum(VAL_TYPE_COUNTS.values())
    assert loaded == independent == VAL_TYPE_COUNTS
    assert len({s.id for s in samples}) == 4996
    assert all(len(s.options) == 5 and 0 <= s.answer < 5 and s.source == "nextqa" for s in samples)


def test_nextqa_sample_fields_and_video_path():
    video_map = json.loads((NEXTQA_DIR / "map_vid_vidorID.json").read_text())
    samples = nextqa.load_nextqa(NEXTQA_DIR / "val.csv", video_root="/videos", map_path=NEXTQA_DIR / "map_vid_vidorID.json")
    first = samples[0]  # the csv's first data row
    assert first.id == "4010069381_6" and first.qtype == "CH" and first.answer == 0
    assert first.question == "how do the two man play the instrument"
    assert first.options == ("roll the handle", "tap their feet", "strum the string", "hit with sticks", "pat with hand")
    assert first.video == f"/videos/{video_map['4010069381']}.mp4"
    assert nextqa.load_nextqa(NEXTQA_DIR / "val.csv")[0].video == "4010069381.mp4"


def test_nextqa_type_groups():
    assert nextqa.scored_type("TP") == "TN" and nextqa.group_of("TP") == "T"
    assert [nextqa.group_of(t) for t in ("CW", "CH", "TC", "DC", "DL", "DO")] == list("CCTDDD")
    with pytest.raises(InputError, match="'XX'"):
        nextqa.group_of("XX")


HEADER = "video,frame_count,width,height,question,answer,qid,type,a0,a1,a2,a3,a4\n"


@pytest.mark.parametrize(
    "row, message",
    [
        ("11,10,640,480,why,7,1,CW,a,b,c,d,e\n", "line 3: field 'answer' is 7, but there are 5 options"),
        ("11,10,640,480,why,x,1,CW,a,b,c,d,e\n", "line 3: field 'answer' is 'x'"),
        ("11,10,640,480,why,1,1,ZZ,a,b,c,d,e\n", "NExT-QA type is 'ZZ'"),
        ("11,10,640,480,why,1,1,CW,a,,c,d,e\n", "line 3: an option among a0..a4 is empty"),
        ("10,10,640,480,why,1,1,CW,a,b,c,d,e\n", "line 3: question 10_1 appears twice"),
    ],
)
def test_nextqa_bad_rows_name_the_line(tmp_path, row, message):
    path = tmp_path / "val.csv"
    path.write_text(HEADER + "10,10,640,480,what,0,1,DO,a,b,c,d,e\n" + row)
    with pytest.raises(InputError, match=message):
        nextqa.load_nextqa(path)


def test_nextqa_missing_column_and_unmapped_video(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("video,question,answer\n1,q,0\n")
    with pytest.raises(InputError, match="missing column"):
        nextqa.load_nextqa(bad)
    good = tmp_path / "val.csv"
    good.write_text(HEADER + "10,10,640,480,what,0,1,DO,a,b,c,d,e\n")
    (tmp_path / "map.json").write_text(json.dumps({"99": "0001/99"}))
    with pytest.raises(InputError, match="video 10 is not in the video map"):
        nextqa.load_nextqa(good, map_path=tmp_path / "map.json")


# ----------------------------------------------------------------------------- project JSONL
def _sample(i: int, **kw) -> Sample:
    base = dict(
        id=f"q{i}", video=f"clips/q{i}.mp4", question="which shape moves first?",
        options=("red circle", "blue square", "green triangle", "yellow star", "none"), answer=1,
        qtype="TN", start=0.0, end=6.0,
        clues=(Clue("c1", 0.0, 1.5, "the red circle enters"), Clue("c2", 1.2, 2.0, "the blue square stops")),
        chain=(Step("the square stops after the circle enters", ("c1", "c2")),),
        events=(Clue("e1", 0.0, 1.5, "the red circle enters"),), source="clueworld",
    )
    base.update(kw)
    return Sample(**base)


def test_jsonl_round_trip_and_relative_videos(tmp_path):
    samples = [_sample(i) for i in range(3)]
    path = tmp_path / "sub" / "data.jsonl"
    assert write_jsonl(samples, path) == 3
    back = read_samples(path)
    assert [s.video for s in back] == [str(path.parent / f"clips/q{i}.mp4") for i in range(3)]
    assert read_samples(path, resolve_paths=False) == samples


def _write_lines(path: Path, records) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_jsonl_error_names_file_line_and_field(tmp_path):
    good = [_sample(i).to_dict() for i in range(2)]
    bad = {**_sample(2).to_dict(), "answer": 7}
    path = _write_lines(tmp_path / "data.jsonl", [*good, bad])
    with pytest.raises(InputError, match=r"data\.jsonl line 3: field 'answer' is 7, but there are 5 options"):
        read_samples(path)
    report = load_jsonl(path, strict=False)
    assert [s.id for s in report.samples] == ["q0", "q1"]
    assert report.errors == ("data.jsonl line 3: field 'answer' is 7, but there are 5 options",)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"options": ["only one"], "answer": 0}, "field 'options' has 1 options, expected 2 to"),
        ({"answer": True}, "field 'answer' is True, expected an integer"),
        ({"start": 5.0, "end": 2.0}, "field 'end' is 2.0, but it must be after 'start'"),
        ({"clues": [{"id": "c1", "start": 3.0, "end": 1.0, "text": "x"}], "chain": []}, r"'clues'\[0\] has span \[3.0, 1.0\]"),
        ({"chain": [{"text": "x", "cites": ["c7"]}]}, r"'chain'\[0\] cites c7, not among the clues"),
        ({"events": [{"id": "e1", "start": 0.0, "text": "x"}]}, r"'events'\[0\] lacks 'end'"),
        ({"question": ""}, "field 'question' is '', expected a non-empty string"),
    ],
)
def test_jsonl_field_checks(change, message):
    problems = validate_record({**_sample(0).to_dict(), **change})
    assert any(re.search(message, p) for p in problems), problems


def test_jsonl_line_level_errors(tmp_path):
    record = _sample(0).to_dict()
    no_video = {k: v for k, v in record.items() if k != "video"}
    path = _write_lines(tmp_path / "d.jsonl", [record, "{not json", json.dumps(record), json.dumps(no_video), "[1, 2]"])
    errors = load_jsonl(path, strict=False).errors
    assert errors[0].startswith("d.jsonl line 2: not valid JSON")
    assert errors[1] == "d.jsonl line 3: field 'id' is 'q0', already used on line 1"
    assert errors[2] == "d.jsonl line 4: missing field 'video'"
    assert errors[3] == "d.jsonl line 5: the line is a JSON list, expected an object"
    with pytest.raises(InputError, match="no such JSONL file"):
        read_samples(tmp_path / "absent.jsonl")
    assert validate_record(record) == []


# ----------------------------------------------------------------------------- STAR
STAR_FILE = FIXTURES / "star" / "STAR_val_mini.json"


def test_star_fixture_loads():
    samples = star.load_star(STAR_FILE, video_root="/charades")
    assert [s.qtype for s in samples] == ["Interaction", "Interaction", "Sequence", "Prediction", "Feasibility"]
    assert [s.answer for s in samples] == [1, 2, 2, 2, 0]
    first = samples[0]
    assert first.id == "Interaction_T1_100" and first.video == "/charades/6H78U.mp4"
    assert (first.start, first.end) == (11.1, 19.6)
    assert first.options == ("The pillow.", "The cup/glass/bottle.", "The book.", "The box.")
    assert first.clues == () and samples[3].events == ()  # no gold clues unless asked; empty situations


def test_star_situation_graph_becomes_timed_events():
    events = {e.text: (e.start, e.end) for e in star.load_star(STAR_FILE)[0].events}
    # keyframes 340, 352, 365 at 30 fps -> (f - 1) / 30 s
    assert events == {
        "person holding cup": (11.3, 11.7),
        "person take a cup/glass/bottle from somewhere": (11.3, 11.7),
        "person in front of cup": (11.3, 11.3),
        "person in front of table": (12.133, 12.133),
    }
    at_25 = {e.text: (e.start, e.end) for e in star.load_star(STAR_FILE, fps=25)[0].events}
    assert at_25["person holding cup"] == (13.56, 14.04)
    per_video = star.load_star(STAR_FILE, fps={"6H78U": 24.0, "Q0LX2": 30.0})
    assert {e.text: e.start for e in per_video[0].events}["person holding cup"] == pytest.approx(339 / 24, abs=1e-3)
    with_clues = star.load_star(STAR_FILE, as_clues=True)[0]
    assert [c.id for c in with_clues.clues] == ["c1", "c2", "c3", "c4"]
    assert [c.text for c in with_clues.clues] == [e.text for e in with_clues.events]


def test_star_runs_break_at_gaps():
    hold = {"rel_pairs": [["o000", "o010"]], "rel_labels": ["r009"], "actions": []}
    none = {"rel_pairs": [], "rel_labels": [], "actions": []}
    situations = {"000011": hold, "000021": hold, "000031": none, "000041": hold}
    events = star.situation_events(situations, fps=10.0)
    assert [(e.id, e.start, e.end, e.text) for e in events] == [
        ("e1", 1.0, 2.0, "person holding cup"), ("e2", 4.0, 4.0, "person holding cup")]


def _star_item(**change):
    item = json.loads(STAR_FILE.read_text())[0]
    item.update(change)
    return item


@pytest.mark.parametrize(
    "change, message",
    [
        ({"answer": "The sofa."}, "Interaction_T1_100.*answer 'The sofa.' matches no choice"),
        ({"question_id": "Other_T1_1"}, "does not start with one of Interaction"),
        ({"situations": {"000001": {"rel_pairs": [["o000", "o010"]], "rel_labels": ["r999"]}}}, "unknown STAR relationship class 'r999'"),
        ({"situations": {"000001": {"rel_pairs": [["o000", "o010"]], "rel_labels": []}}}, "1 rel_pairs but 0 rel_labels"),
    ],
)
def test_star_bad_questions(tmp_path, change, message):
    item = _star_item(**change)
    path = tmp_path / "STAR_val.json"
    path.write_text(json.dumps([item]))
    with pytest.raises(InputError, match=message):
        star.load_star(path)


def test_star_fps_checks(tmp_path):
    with pytest.raises(InputError, match="no fps given for STAR video 6H78U"):
        star.load_star(STAR_FILE, fps={"Q0LX2": 30.0})
    with pytest.raises(InputError, match="fps for STAR video 6H78U is 0.5, expected 1.0-120.0"):
        star.load_star(STAR_FILE, fps=0.5)


# ----------------------------------------------------------------------------- MVBench
MVB_JSON = FIXTURES / "mvbench" / "json"


def test_mvbench_task_table_matches_the_official_twenty():
    assert len(mvbench.TASKS) == 20
    assert len({spec[0] for spec in mvbench.TASKS.values()}) == 20
    assert mvbench.task_of("some/where/fine_grained_pose.json") == "Fine-grained Pose"
    with pytest.raises(InputError, match="not_a_task.json is not an MVBench task file"):
        mvbench.task_of("not_a_task.json")


def test_mvbench_fixture_loads():
    samples = mvbench.load_mvbench(MVB_JSON)
    assert [s.id for s in samples] == [
        "action_sequence_0", "action_sequence_1", "action_sequence_2", "object_existence_0", "object_existence_1"]
    assert [s.qtype for s in samples] == ["Action Sequence"] * 3 + ["Object Existence"] * 2
    assert [s.answer for s in samples] == [1, 2, 2, 2, 0]
    assert (samples[0].start, samples[0].end) == (12.0, 31.2)
    assert (samples[3].start, samples[3].end) == (None, None)  # unbounded task
    assert samples[0].video == str(FIXTURES / "mvbench" / "video" / "star/Charades_v1_480" / "ZS9XR.mp4")
    assert mvbench.load_mvbench(MVB_JSON / "object_existence.json", video_root="/v")[1].video == \
        "/v/clevrer/video_validation/video_10047.mp4"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"answer": "Slept."}, "answer 'Slept.' matches 0 of the candidates"),
        ({"candidates": ["a"], "answer": "a"}, "field 'candidates' is \\['a'\\], expected 2-"),
        ({"start": 9.0, "end": 3.0}, r"bound is \[9.0, 3.0\] s"),
    ],
)
def test_mvbench_bad_questions(tmp_path, change, message):
    item = {**json.loads((MVB_JSON / "action_sequence.json").read_text())[0], **change}
    (tmp_path / "action_sequence.json").write_text(json.dumps([item]))
    with pytest.raises(InputError, match=f"action_sequence.json question 0: {message}"):
        mvbench.load_mvbench(tmp_path)


def test_mvbench_folder_without_tasks(tmp_path):
    with pytest.raises(InputError, match="contains none of the 20 MVBench task files"):
        mvbench.load_mvbench(tmp_path)
