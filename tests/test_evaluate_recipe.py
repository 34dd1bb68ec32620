"""training.evaluate: runs the shipped pipeline on a split, writes traces, prints the scores."""
from __future__ import annotations

import json

import pytest

from cluenet.data.jsonl import read_samples
from cluenet.errors import ConfigError, InputError
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


def test_evaluate_rejects_bad_arguments(trained, tmp_path):
    split, model = trained
    with pytest.raises(ConfigError, match="--workers is 0, must be 1 to 64"):
        evaluate.main(["--model", str(model), "--data", str(split), "--workers", "0"])
    with pytest.raises(ConfigError, match="--limit is -1, must be >= 0"):
        evaluate.main(["--model", str(model), "--data", str(split), "--limit", "-1"])


def test_missing_video_of_a_non_clueworld_sample_is_reported():
    from dataclasses import replace

    from cluenet.schema import Sample

    s = Sample(id="x1", video="/nonexistent/clip.mp4", question="what?", options=("a", "b"), answer=0, source="nextqa")
    with pytest.raises(InputError, match="video file /nonexistent/clip.mp4 not found"):
        evaluate.clip_for(s)
    assert replace(s, source="clueworld").source == "clueworld"
