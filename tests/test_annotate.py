"""Annotation recipe: leakage and consistency checks, the teacher path on a tiny model, STAR without a teacher."""
from __future__ import annotations

import json
from pathlib import Path


from cluenet.data.jsonl import read_samples
from cluenet.schema import Clue, Sample, Step
from training import annotate

from recipe_helpers import tiny_split

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _clue(i: int, text: str) -> Clue:
    return Clue(f"c{i}", 0.0, 1.0, text)


def test_leakage_flags_restated_options_and_answer_talk_but_not_short_names():
    options = ("picks up the red cup", "the dog", "waves at the camera")
    clues = [_clue(1, "the boy picks up the red cup quickly"), _clue(2, "the dog runs in"),
             _clue(3, "this is the answer"), _clue(4, "a man waves at a camera")]
    # c1 restates option A; c3 talks about the answer; c2 names a 2-word option (allowed);
    # c4 matches option C after article normalisation
    assert annotate.leaked_clues(clues, options) == ["c1", "c3", "c4"]
    assert annotate.leaked_clues([_clue(1, "the boy holds a cup")], options) == []


def test_hinted_question_tells_the_teacher_the_answer():
    s = Sample(id="q", video="v.mp4", question="what did he pick up?", options=("a cup", "a ball"), answer=1)
    assert annotate.hinted_question(s) == "what did he pick up? (The correct answer is B. a ball.)"


def test_check_rejects_missing_parts_and_leaks_without_running_a_model():
    s = Sample(id="q", video="v.mp4", question="why?", options=("hit the red wall", "it stopped"), answer=0)
    chain = (Step("so the answer is A", ("c1",)),)
    assert annotate.check(None, s, [], chain, ()).reason == "teacher wrote 0 clues and 1 chain steps"
    v = annotate.check(None, s, [_clue(1, "the ball hit the red wall")], chain, ())
    assert not v.kept and v.reason.startswith("leakage: clues ['c1']")
    ok = annotate.check(None, s, [_clue(1, "the ball moves left")], chain, ())
    assert ok.kept and ok.sample.clues[0].text == "the ball moves left" and ok.sample.chain == chain


def test_teacher_annotation_runs_on_a_tiny_model_and_sorts_every_sample(tmp_path):
    split = tiny_split(tmp_path / "cw", n=2, seed=51)
    from training import stage1

    from recipe_helpers import stage1_config

    stage1.run(stage1_config(split, tmp_path / "s1", steps=1))
    out = tmp_path / "annotated.jsonl"
    assert annotate.main(["teacher", "--model", str(tmp_path / "s1" / "final"), "--data", str(split),
                          "--out", str(out), "--max-tokens", "24"]) == 0
    kept = out.read_text().splitlines()
    rejected = [json.loads(x) for x in out.with_suffix(".rejected.jsonl").read_text().splitlines()]
    assert len(kept) + len(rejected) == 2  # every sample is accounted for
    for r in rejected:
        assert r["reason"].startswith(("teacher wrote", "leakage", "inconsistent"))
    for line in kept:
        s = Sample.from_dict(json.loads(line))
        assert s.clues and s.chain


def test_consistency_check_reasons_from_the_clues_over_a_blank_clip(tmp_path):
    """The check's answer comes from ClueNet.reason on a blank clip: deterministic for a fixed model."""
    from cluenet import backbones
    from cluenet.model import ClueNet

    model, proc = backbones.tiny_model("qwen2_vl", seed=0)
    net = ClueNet.from_components(model, proc)
    net.max_chain_tokens = 16  # an untrained model never closes its chain
    s = read_samples(tiny_split(tmp_path / "cw", n=1, seed=52))[0]
    a = annotate.consistent_answer(net, s, s.clues, [0.0, 0.5, 1.0, 1.5])
    b = annotate.consistent_answer(net, s, s.clues, [0.0, 0.5, 1.0, 1.5])
    assert a == b and a in range(len(s.options))
    assert annotate.consistent_answer(net, s, [], [0.0, 0.5]) is None


def test_star_situation_graphs_become_clues_and_a_citing_chain(tmp_path):
    out = tmp_path / "star.jsonl"
    assert annotate.main(["star", "--star", str(FIXTURES / "star" / "STAR_val_mini.json"), "--out", str(out)]) == 0
    kept = [Sample.from_dict(json.loads(x)) for x in out.read_text().splitlines()]
    rejected = out.with_suffix(".rejected.jsonl").read_text().splitlines()
    assert kept and len(kept) + len(rejected) == len(json.loads((FIXTURES / "star" / "STAR_val_mini.json").read_text()))
    for s in kept:
        ids = {c.id for c in s.clues}
        assert len(s.chain) == 1 and set(s.chain[0].cites) <= ids and s.chain[0].cites
        assert s.chain[0].text.endswith(f"so the answer is {'ABCD'[s.answer]}")
        assert annotate.leaked_clues(s.clues, s.options) == []
