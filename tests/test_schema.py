"""Typed records: lossless JSON round trips and checked values."""
import json

import pytest

from cluenet.schema import (
    ClipInfo, Clue, FilterSettings, Flag, ModelInfo, Sample, Step, Trace, letter,
)


def _trace() -> Trace:
    return Trace(
        clip=ClipInfo(name="a.mp4", sha256="ab" * 32, duration=4.0, fps=4.0, width=112, height=112,
                      frame_times=(0.0, 0.25, 0.5)),
        question="why did the blue square stop?",
        options=("a", "b", "c", "d", "e"),
        clues=(Clue("c1", 0.0, 1.0, "x", score=0.9, kept=True), Clue("c2", 1.0, 2.5, "y", score=0.1, kept=False)),
        chain=(Step("because", ("c1",)),),
        answer=1, generated_answer=2, option_probs=(0.1, 0.5, 0.2, 0.1, 0.1), gold=1, qtype="CW",
        sample_id="cw-1", filter=FilterSettings(0.2, 0.4, 3), threshold=0.36,
        flags=(Flag("unsupported_citation", "step 1 cites c2", ("c2",), 0, None),),
        warnings=("w",), timings={"prefill": 0.5}, tokens={"clues": 12}, raw={"pass1": "<clues>"},
        model=ModelInfo(name="tiny", backbone="qwen2_5_vl", trained_on="ClueWorld"),
    )


def test_trace_json_round_trip_is_lossless():
    t = _trace()
    again = Trace.from_json(t.to_json())
    assert again == t
    assert again.kept_clues == (t.clues[0],)
    assert again.correct is True
    assert json.loads(t.to_json(indent=None))["clues"][1]["kept"] is False


def test_trace_rejects_an_incompatible_schema_version():
    d = _trace().to_dict()
    d["schema_version"] = "2.0"
    with pytest.raises(ValueError, match="2.0"):
        Trace.from_dict(d)


def test_sample_round_trip_and_optional_fields():
    s = Sample(id="q1", video="clips/q1.mp4", question="what?", options=("a", "b"), answer=1, qtype="DC",
               start=1.0, end=3.0, clues=(Clue("c1", 0.0, 1.0, "x"),), chain=(Step("s", ("c1",)),),
               events=(Clue("e1", 0.0, 1.0, "x"),), source="clueworld")
    assert Sample.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    bare = Sample(id="q2", video="v.mp4", question="q", options=("a", "b"), answer=0)
    assert "clues" not in bare.to_dict() and Sample.from_dict(bare.to_dict()) == bare


@pytest.mark.parametrize("kwargs, name", [({"tau_min": 1.5}, "tau_min"), ({"rho": -0.1}, "rho"), ({"m_max": 0}, "m_max")])
def test_filter_settings_name_the_bad_value(kwargs, name):
    with pytest.raises(ValueError, match=name):
        FilterSettings(**kwargs)


def test_letters():
    assert letter(0) == "A" and letter(4) == "E"
    with pytest.raises(ValueError):
        letter(-1)
