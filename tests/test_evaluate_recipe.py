"""training.evaluate: runs the shipped pipeline on a split, writes traces, prints the scores."""
from __future__ import annotations

import json

import pytest

from cluenet.data.jsonl import read_samples
from cluenet.errors import InputError
from cluenet.eval import read_traces
from training import evaluate, stage1

from recipe_helpers import stage1_config, tiny_split


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ev")
    split = tiny_split(root / "train", n=3, seed=41)
    stage1.run(stage1_config(split, root / "s1", steps=1))
    return split, root / "s1" / "final"


@pytest.mark.parametrize("mode", ["cluenet", "direct"])
def test_evaluate_writes_one_trace_per_question_and_scores_them(trained, tmp_path, capsys, mode):
    split, model = trained
    traces = tmp_path / "t.jsonl"
    assert evaluate.main(["--model", str(model), "--data", str(split), "--mode", mode, "--limit", "2",
                          "--traces", str(traces), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    samples = read_samples(split)[:2]
    got = read_traces(traces)
    assert [t.sample_id for t in got] == [s.id for s in samples]
    assert all(t.answer is not None and t.gold == s.answer for t, s in zip(got, samples))
    assert result["n_samples"] == 2 and result["mode"] == mode
    assert result["correct"] == sum(t.answer == s.answer for t, s in zip(got, samples))
    assert set(result) >= {"by_qtype", "clues", "filter", "hallucinated_clue_rate", "tokens_per_answer"}
    if mode == "direct":
        assert all(t.clues == () and t.model.mode == "direct" for t in got)
    # the same traces scored again without the model give the same result
    assert evaluate.main(["--model", str(tmp_path / "no-model"), "--data", str(split), "--limit", "2",
                          "--traces", str(traces), "--json", "--score-only", "--mode", mode]) == 0
    again = json.loads(capsys.readouterr().out)
    assert {k: v for k, v in again.items() if k != "model"} == {k: v for k, v in result.items() if k != "model"}


def test_evaluate_rejects_bad_arguments_in_one_line(trained, tmp_path, capsys):
    split, model = trained
    for extra, message in ((["--workers", "0"], "--workers is 0, must be 1 to 64"),
                           (["--limit", "-1"], "--limit is -1, must be >= 0"),
                           (["--score-only", "--traces", str(tmp_path / "none.jsonl")], "needs an existing traces file")):
        assert evaluate.main(["--model", str(model), "--data", str(split), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_missing_video_of_a_non_clueworld_sample_is_reported():
    from dataclasses import replace

    from cluenet.schema import Sample

    s = Sample(id="x1", video="/nonexistent/clip.mp4", question="what?", options=("a", "b"), answer=0, source="nextqa")
    with pytest.raises(InputError, match="video file /nonexistent/clip.mp4 not found"):
        evaluate.clip_for(s)
    assert replace(s, source="clueworld").source == "clueworld"
