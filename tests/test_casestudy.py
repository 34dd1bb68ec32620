"""Case studies: a resumable run over ClueWorld questions with the tiny random model,
torn-line recovery, run folders that refuse to mix, the case table's filters, the
side-by-side comparison and the CLI.

    pytest tests/test_casestudy.py -q              # default tier, ~30 s on 2 cores
    pytest tests/test_casestudy.py -q -m slow      # 200 questions with the default model (long)
"""
from __future__ import annotations

import fcntl
import json
from dataclasses import replace
from pathlib import Path

import pytest

from cluenet import analysis, casestudy
from cluenet.data.clueworld import WorldConfig, generate
from cluenet.errors import InputError
from cluenet.model import ClueNet
from cluenet.schema import ClipInfo, Clue, Flag, ModelInfo, Step, Trace
from cluenet.tags import TagStore

N_QUESTIONS = 6
CAP = 12  # generated-token caps: a random model babbles to the cap


@pytest.fixture(scope="module")
def clueworld(tmp_path_factory):
    """Six ClueWorld questions with their clips (10 frames, 64 px: the smallest the generator makes)."""
    return generate(tmp_path_factory.mktemp("cw"), N_QUESTIONS, seed=4242, cfg=WorldConfig(frames=10, size=64))


@pytest.fixture(scope="module")
def net(tiny_qwen):
    model, processor = tiny_qwen
    net = ClueNet.from_components(model, processor, name="tiny-qwen-casestudy")
    net.max_clue_tokens = net.max_chain_tokens = CAP
    net.num_frames = 4
    return net


class Counting:
    """Wraps the model: counts analyze calls (by sample id) and can die on the k-th call."""

    def __init__(self, net, die_on_call: int | None = None):
        self.net, self.die_on_call, self.calls = net, die_on_call, []
        self.info, self.num_frames = net.info, net.num_frames

    def analyze(self, video, question, options, **kw):
        if self.die_on_call is not None and len(self.calls) + 1 == self.die_on_call:
            raise KeyboardInterrupt  # the run is stopped in the middle of a case
        self.calls.append(kw["sample_id"])
        return self.net.analyze(video, question, options, **kw)

    def reason(self, trace, kept_ids):
        return self.net.reason(trace, kept_ids)


def _ids_on_disk(folder: Path) -> list[str]:
    return [json.loads(line)["sample_id"] for line in (folder / casestudy.TRACES_FILE).read_text().splitlines()]


# ----------------------------------------------------------------------------- the acceptance run
def test_run_stops_midway_resumes_without_redoing_and_keeps_tags(net, clueworld, tmp_path):
    out = tmp_path / "run"
    first = Counting(net, die_on_call=4)
    seen = []
    with pytest.raises(KeyboardInterrupt):
        casestudy.run_case_study(first, clueworld, out, progress=lambda i, n: seen.append((i, n)))
    assert first.calls == _ids_on_disk(out) and len(first.calls) == 3
    assert seen == [(0, 6), (1, 6), (2, 6), (3, 6)]
    assert json.loads((out / casestudy.MANIFEST_FILE).read_text())["finished"] is None

    # an analyst tags a finished case; then the process dies mid-write of a trace line
    TagStore(out / casestudy.TAGS_FILE).set(first.calls[0], ["videohallucer/temporal"], "order is wrong")
    with (out / casestudy.TRACES_FILE).open("ab") as fh:
        fh.write(b'{"schema_version": "1.0", "clip": {"name": "cw')

    # restart with fresh objects: only the three unfinished cases are run
    again = Counting(net)
    seen.clear()
    casestudy.run_case_study(again, clueworld, out, progress=lambda i, n: seen.append((i, n)))
    assert len(again.calls) == 3 and not set(again.calls) & set(first.calls)
    assert seen[0] == (3, 6) and seen[-1] == (6, 6)
    on_disk = _ids_on_disk(out)  # the torn line was cut off, every case is there once
    assert sorted(on_disk) == sorted(first.calls + again.calls) and len(set(on_disk)) == N_QUESTIONS

    manifest = json.loads((out / casestudy.MANIFEST_FILE).read_text())
    assert manifest["data"] == str(clueworld) and manifest["model"]["name"] == "tiny-qwen-casestudy"
    assert manifest["counts"]["done"] == 6 and manifest["finished"] and len(manifest["resumed"]) == 1

    run = casestudy.load_run(out)
    assert len(run.traces) == 6 and len(run.samples) == 6 and not run.read_only and not run.notes
    rows = {r["id"]: r for r in casestudy.case_table(run)}
    assert rows[first.calls[0]]["tags"] == "temporal, order is wrong"
    assert all(rows[t.sample_id]["gold"] == "ABCDE"[run.samples[t.sample_id].answer] for t in run.traces)

    third = Counting(net)
    casestudy.run_case_study(third, clueworld, out)
    assert third.calls == []  # nothing left to do


def test_probes_and_a_start_end_window_sample_the_clip_themselves(net, clueworld, tmp_path):
    from dataclasses import replace

    from cluenet.data.jsonl import read_samples, write_jsonl

    sample = replace(read_samples(clueworld)[0], start=0.5, end=2.0)
    data = tmp_path / "one.jsonl"
    write_jsonl([sample], data)
    casestudy.run_case_study(net, data, tmp_path / "run", probes=True)
    (trace,) = casestudy.load_run(tmp_path / "run").traces
    times = trace.clip.frame_times
    assert len(times) == net.num_frames and 0.5 <= times[0] and times[-1] <= 2.0  # the window, not the whole clip
    assert trace.clip.name == Path(sample.video).name


# ----------------------------------------------------------------------------- flags and folders
class Scripted:
    """A stand-in model that answers with fixed clues, so the flag wiring is what is tested."""

    info = ModelInfo(name="scripted")
    num_frames = 4

    def analyze(self, video, question, options, **kw):
        clues = (Clue("c1", 0.0, 0.5, "a purple elephant flies in", 0.9, True),)
        return Trace(clip=ClipInfo(name="x.mp4"), question=question, options=tuple(options), clues=clues,
                     chain=(Step("so the answer is B", ("c1", "c7")),), answer=0, option_probs=(0.6, 0.4, 0, 0, 0),
                     gold=kw["gold"], sample_id=kw["sample_id"], qtype=kw["qtype"], model=self.info)


def test_flags_use_the_samples_gold_events(clueworld, tmp_path):
    casestudy.run_case_study(Scripted(), clueworld, tmp_path / "run", limit=2)
    for t in casestudy.load_run(tmp_path / "run").traces:
        kinds = sorted(f.kind for f in t.flags)
        assert kinds == ["chain_answer_inconsistency", "ungrounded_clue", "unsupported_citation"]


def test_damaged_file_and_mixed_runs_are_refused(net, clueworld, tmp_path):
    out = tmp_path / "run"
    casestudy.run_case_study(Scripted(), clueworld, out, limit=2)
    other = Path(clueworld).parent / "other.jsonl"  # same clips, another data file
    other.write_text(Path(clueworld).read_text())
    with pytest.raises(InputError, match="holds a run over"):
        casestudy.run_case_study(Scripted(), other, out)
    with pytest.raises(InputError, match="holds a run of model 'scripted'"):
        casestudy.run_case_study(Counting(net), clueworld, out)
    with (out / casestudy.LOCK_FILE).open("a") as fh:  # another run is writing here
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        with pytest.raises(InputError, match="in use by another"):
            casestudy.run_case_study(Scripted(), clueworld, out)
    lines = (out / casestudy.TRACES_FILE).read_text().splitlines()
    (out / casestudy.TRACES_FILE).write_text("\n".join([lines[0][:50], lines[1]]) + "\n")
    with pytest.raises(InputError, match="line 1 is not a whole trace but more lines follow"):
        casestudy.load_run(out)


def test_bad_inputs_say_what_is_wrong(tmp_path, clueworld):
    with pytest.raises(InputError, match="not a case-study run"):
        casestudy.load_run(tmp_path)
    with pytest.raises(InputError, match="limit must be a positive integer, got 0"):
        casestudy.run_case_study(Scripted(), clueworld, tmp_path / "r", limit=0)
    lines = Path(clueworld).read_text().splitlines()
    moved = tmp_path / "moved.jsonl"  # relative video paths now point nowhere
    moved.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=f"{N_QUESTIONS} of {N_QUESTIONS} videos do not exist"):
        casestudy.run_case_study(Scripted(), moved, tmp_path / "r")


# ----------------------------------------------------------------------------- case table
def _trace(i: int, qtype: str, answer: int, gold: int | None, kinds: tuple[str, ...], kept: int = 1) -> Trace:
    clues = tuple(Clue(f"c{k}", 0.0, 1.0, "x", 0.5, k < kept) for k in range(2))
    return Trace(clip=ClipInfo(name="v.mp4"), question=f"q{i}?", options=("a", "b", "c"), clues=clues,
                 answer=answer, gold=gold, qtype=qtype, sample_id=f"s{i}",
                 flags=tuple(Flag(k, "m") for k in kinds))


def constructed_run(tmp_path: Path) -> casestudy.Run:
    traces = (
        _trace(0, "CW", 1, 1, ("unsupported_citation", "unsupported_citation")),
        _trace(1, "CW", 0, 1, ("ungrounded_clue",)),
        _trace(2, "TN", 2, 2, ("ungrounded_clue", "chain_answer_inconsistency"), kept=2),
        _trace(3, "TN", 0, None, ("clue_necessity",)),
        _trace(4, "DC", 1, 2, ("video_independent_answer", "ungrounded_clue")),
        _trace(5, "DC", 2, 2, ()),
    )
    return casestudy.Run(samples={}, traces=traces, manifest={"model": {"name": "m"}, "data": "d.jsonl"},
                         tags_path=tmp_path / "tags.jsonl")


def test_case_table_counts_each_flag_kind_and_filters(tmp_path):
    run = constructed_run(tmp_path)
    expected = {"unsupported_citation": 1, "chain_answer_inconsistency": 1, "ungrounded_clue": 3,
                "clue_necessity": 1, "video_independent_answer": 1}
    assert set(expected) == set(analysis.FLAG_KINDS)
    assert {k: len(casestudy.case_table(run, flag=k)) for k in analysis.FLAG_KINDS} == expected
    assert [r["id"] for r in casestudy.case_table(run, qtype="TN")] == ["s2", "s3"]
    assert [r["id"] for r in casestudy.case_table(run, correct=True)] == ["s0", "s2", "s5"]
    assert [r["id"] for r in casestudy.case_table(run, correct=False)] == ["s1", "s4"]  # s3 has no gold
    assert [r["id"] for r in casestudy.case_table(run, flag="ungrounded_clue", qtype="DC", correct=False)] == ["s4"]
    row = casestudy.case_table(run)[2]
    assert list(row) == list(casestudy.CASE_COLUMNS)
    assert row == {"id": "s2", "qtype": "TN", "correct": True, "answer": "C", "gold": "C",
                   "flags": "chain_answer_inconsistency, ungrounded_clue", "kept_clues": 2, "tags": "", "question": "q2?"}
    assert casestudy.qtypes(run) == ["CW", "DC", "TN"]
    with pytest.raises(InputError, match="unknown flag 'made_up'; expected one of unsupported_citation"):
        casestudy.case_table(run, flag="made_up")


# ----------------------------------------------------------------------------- side by side
def test_compare_runs_cluenet_and_both_baselines_on_one_clip(net, tiny_clip):
    traces = casestudy.compare(net, tiny_clip, "What moves first?", ["the red square", "the blue circle", "nothing"], gold=1)
    assert list(traces) == ["cluenet", "direct", "cot"]
    assert [t.model.mode for t in traces.values()] == ["training-free", "direct", "cot"]
    assert traces["direct"].clues == () and traces["direct"].chain == ()
    assert all(t.gold == 1 and len(t.option_probs) == 3 for t in traces.values())
    rows = casestudy.compare_table(traces)
    assert [r["mode"] for r in rows] == ["cluenet", "direct", "cot"]
    assert rows[1]["tokens"] == sum(traces["direct"].tokens.values()) and rows[1]["steps"] == 0
    assert rows[0]["p_answer"] == round(traces["cluenet"].option_probs[traces["cluenet"].answer], 4)
    assert rows[0]["model"] == net.info.name


def test_compare_asks_a_trained_baseline_when_given_one(net, tiny_clip):
    calls = []

    class Baseline:  # answers like a separately trained direct model; must not be asked anything else
        def answer_direct(self, *args, **kw):
            calls.append(kw)
            trace = net.answer_direct(*args, **kw)
            return trace.with_(model=replace(trace.model, name="runs/x/direct/final"))

    opts = ["the red square", "the blue circle"]
    traces = casestudy.compare(net, tiny_clip, "What moves first?", opts, gold=0, baselines={"direct": Baseline()})
    assert calls == [{"num_frames": None, "gold": 0}]
    assert traces["direct"].model.name == "runs/x/direct/final" and traces["cot"].model.name == net.info.name
    assert [r["model"] for r in casestudy.compare_table(traces)][1] == "runs/x/direct/final"
    with pytest.raises(InputError, match=r"unknown mode\(s\) \['clues'\]"):
        casestudy.compare(net, tiny_clip, "What moves first?", opts, baselines={"clues": Baseline()})


# ----------------------------------------------------------------------------- CLI
def test_cli_reports_bad_data_in_one_line(tmp_path, capsys):
    assert casestudy.main(["--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no such JSONL file" in err and err.count("\n") == 1


# ----------------------------------------------------------------------------- slow tier
@pytest.mark.slow
@pytest.mark.timeout(4 * 3600)
def test_200_clueworld_questions_with_the_default_model(tmp_path):
    """The issue's acceptance run: 200 ClueWorld test questions, the default model on CPU,
    stopped after 100 cases and resumed without redoing any; a tag survives the restart."""
    data = generate(tmp_path / "cw", 200, seed=777)
    out = tmp_path / "run"
    first = Counting(ClueNet.from_pretrained())

    def stop_at_100(done, total):
        if done == 100:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        casestudy.run_case_study(first, data, out, progress=stop_at_100)
    assert len(first.calls) == 100 == len(_ids_on_disk(out))
    TagStore(out / casestudy.TAGS_FILE).set(first.calls[7], ["eventhallusion/misleading_event"], "before restart")
    again = Counting(ClueNet.from_pretrained())
    casestudy.run_case_study(again, data, out)
    assert len(again.calls) == 100 and not set(again.calls) & set(first.calls)
    run = casestudy.load_run(out)
    assert len(run.traces) == 200 and len({t.sample_id for t in run.traces}) == 200
    assert {r["id"]: r["tags"] for r in casestudy.case_table(run)}[first.calls[7]] == "misleading_event, before restart"
