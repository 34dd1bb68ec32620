"""The evaluator: NExT-QA's published numbers, STAR / MVBench fixtures end to end through the
CLI, trace metrics on a constructed case, and answer extraction from free text."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluenet.answers import extract_answer
from cluenet.data import nextqa
from cluenet.data.jsonl import write_jsonl
from cluenet.errors import InputError
from cluenet.eval import evaluate_traces, resolve_prediction, score_choices
from cluenet.schema import LETTERS, ClipInfo, Clue, Sample, Step, Trace

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
NEXTQA_DIR = Path(os.environ.get("CLUENET_NEXTQA_DIR", ROOT / "tests" / "fixtures" / "nextqa"))


def run_eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluenet.eval", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


# ----------------------------------------------------------------------------- NExT-QA
def test_stvqa_published_numbers_exactly():
    proc = run_eval("nextqa", "--annotations", NEXTQA_DIR / "val.csv",
                    "--predictions", NEXTQA_DIR / "STVQA-bert-ft-h256-val.json", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"C": 45.22, "T": 48.82, "D": 54.95, "all": 47.90}


def test_nextqa_text_report_and_missing_predictions(tmp_path):
    samples = nextqa.load_nextqa(NEXTQA_DIR / "val.csv")
    preds = nextqa.read_predictions(NEXTQA_DIR / "STVQA-bert-ft-h256-val.json")
    full = nextqa.score(samples, preds)
    assert full["count"]["TN"] == 895 + 54  # TP scored as TN
    # drop one correct prediction: it must count as wrong, not vanish from the denominator
    correct_id = next(s.id for s in samples if preds[s.id]["prediction"] == s.answer)
    fewer = nextqa.score(samples, {k: v for k, v in preds.items() if k != correct_id})
    assert fewer["missing"] == [correct_id]
    assert fewer["all"] == round(100 * (round(full["all"] * 4996 / 100) - 1) / 4996, 2)
    bad = dict(preds)
    bad[correct_id] = {"prediction": 0, "answer": (preds[correct_id]["answer"] + 1) % 5}
    with pytest.raises(InputError, match=f"gives answer .* for {correct_id}"):
        nextqa.score(samples, bad)


def test_nextqa_writer_round_trip(tmp_path):
    samples = nextqa.load_nextqa(NEXTQA_DIR / "val.csv")[:10]
    answers = [s.answer for s in samples[:6]] + [(s.answer + 1) % 5 for s in samples[6:9]] + [None]
    traces = [_trace(s.id, a, s.options) for s, a in zip(samples, answers)]
    out = tmp_path / "pred.json"
    assert nextqa.write_predictions(out, traces, samples) == 10
    written = json.loads(out.read_text())
    assert written[samples[9].id] == {"prediction": -1, "answer": samples[9].answer}
    assert nextqa.score(samples, nextqa.read_predictions(out))["all"] == 60.0
    # the CLI writer gives the same file from a trace JSONL
    traces_path = tmp_path / "traces.jsonl"
    traces_path.write_text("".join(t.to_json(indent=None) + "\n" for t in traces))
    proc = run_eval("write-nextqa", "--annotations", NEXTQA_DIR / "val.csv", "--traces", traces_path,
                    "--out", tmp_path / "cli.json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "cli.json").read_text()) == written


# ----------------------------------------------------------------------------- STAR and MVBench
def test_star_fixture_end_to_end():
    proc = run_eval("star", "--annotations", FIXTURES / "star" / "STAR_val_mini.json",
                    "--predictions", FIXTURES / "star" / "predictions_challenge.json", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    # Interaction 1 of 2, Sequence 1/1, Prediction 1/1, Feasibility 0/1 (no prediction)
    assert result["accuracy"] == {"Interaction": 50.0, "Sequence": 100.0, "Prediction": 100.0,
                                  "Feasibility": 0.0, "all": 60.0, "mean": 62.5}
    assert (result["missing"], result["unparseable"]) == (1, 0)
    text = run_eval("star", "--annotations", FIXTURES / "star" / "STAR_val_mini.json",
                    "--predictions", FIXTURES / "star" / "predictions_challenge.json")
    assert "Interaction  50.00" in text.stdout and "missing predictions: 1" in text.stdout


def test_star_flat_predictions_with_free_text(tmp_path):
    preds = {"Interaction_T1_100": "The answer is (B).", "Interaction_T2_101": "opened",
             "Sequence_T1_200": "no idea", "Prediction_T1_300": "C", "Feasibility_T1_400": 0}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(preds))
    proc = run_eval("star", "--annotations", FIXTURES / "star" / "STAR_val_mini.json", "--predictions", path, "--json")
    result = json.loads(proc.stdout)
    assert result["accuracy"]["all"] == 80.0 and result["unparseable"] == 1


def test_mvbench_fixture_end_to_end():
    proc = run_eval("mvbench", "--annotations", FIXTURES / "mvbench" / "json",
                    "--predictions", FIXTURES / "mvbench" / "predictions.json", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    # action_sequence: index 1 right, "(B) ..." wrong, answer text right; object_existence: "no" right,
    # an undecidable sentence wrong and reported as unparseable
    assert result["accuracy"] == {"Action Sequence": 66.67, "Object Existence": 50.0, "all": 60.0, "mean": 58.33}
    assert result["count"] == {"Action Sequence": 3, "Object Existence": 2}
    assert (result["missing"], result["unparseable"], result["unknown_ids"]) == (0, 1, 0)


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"nope_1": 0}))
    proc = run_eval("mvbench", "--annotations", FIXTURES / "mvbench" / "json", "--predictions", path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: none of the 1 prediction ids match the 5 questions")
    assert proc.stderr.count("\n") == 1


def test_resolve_prediction():
    options = ("yes", "no", "not sure")
    assert [resolve_prediction(v, options) for v in (0, 2, 3, -1, True, None, "B", "not sure", 1.0)] == \
        [0, 2, None, None, None, None, 1, 2, None]


def test_score_choices_counts_wrong_and_reports():
    samples = [Sample(id=f"q{i}", video="v.mp4", question="?", options=("a x", "b y"), answer=i % 2, qtype=t)
               for i, t in enumerate("XXY")]
    result = score_choices(samples, {"q0": 0, "q1": "garbled", "zz": 1})
    assert result["accuracy"] == {"X": 50.0, "Y": 0.0, "all": 33.33, "mean": 25.0}
    assert (result["missing"], result["unparseable"], result["unknown_ids"]) == (1, 1, 1)


# ----------------------------------------------------------------------------- traces
def _trace(sample_id: str, answer: int | None, options=("a", "b", "c"), clues=(), chain=(), tokens=None) -> Trace:
    return Trace(clip=ClipInfo(name="clip.mp4"), question="?", options=tuple(options), clues=tuple(clues),
                 chain=tuple(chain), answer=answer, sample_id=sample_id, tokens=tokens or {})


GOLD_C1 = Clue("c1", 0.0, 1.5, "the red circle enters from the left")
GOLD_C2 = Clue("c2", 1.2, 2.0, "the blue square stops at the wall")
DISTRACTOR = Clue("e3", 3.0, 4.0, "a green triangle changes colour")
OPTS = ("red circle", "blue square", "green triangle")


def _trace_case() -> tuple[list[Sample], list[Trace]]:
    samples = [
        Sample(id="s1", video="v1.mp4", question="?", options=OPTS, answer=1, qtype="TN",
               clues=(GOLD_C1, GOLD_C2), chain=(Step("circle then square", ("c1", "c2")),),
               events=(GOLD_C1, GOLD_C2, DISTRACTOR)),
        Sample(id="s2", video="v2.mp4", question="?", options=OPTS, answer=0, qtype="CW",
               clues=(GOLD_C1,), chain=(Step("the circle", ("c1",)),), events=(GOLD_C1,)),
        Sample(id="s3", video="v3.mp4", question="?", options=OPTS, answer=2, qtype="CW"),
    ]
    t1_clues = (
        Clue("c1", 0.1, 1.4, "red circle enters from the left", kept=True),  # gold c1, relevant, kept
        Clue("c2", 3.0, 4.0, "the green triangle changes colour", kept=False),  # the distractor event
        Clue("c3", 6.0, 7.0, "a purple star explodes", kept=True),  # matches nothing: hallucinated
    )
    t1_chain = (Step("x", ("c1", "c2")), Step("y", ("c9", "c3")))  # c2 filtered, c9 missing
    traces = [
        _trace("s1", 1, OPTS, t1_clues, t1_chain, {"clues": 30, "chain": 20}),
        _trace("s2", None, OPTS, (Clue("c1", 0.0, 1.6, "the red circle enters from left", kept=True),),
               (Step("z", ("c1",)),), {"clues": 10, "chain": 10}),
    ]  # s3 has no trace
    return samples, traces


def test_evaluate_traces_on_a_constructed_case():
    r = evaluate_traces(*_trace_case())
    assert (r["n_samples"], r["n_traces"], r["missing"], r["unparseable"], r["correct"]) == (3, 2, 1, 1, 1)
    assert r["accuracy"] == pytest.approx(1 / 3)
    assert r["by_qtype"] == {"CW": {"n": 2, "correct": 0, "accuracy": 0.0}, "TN": {"n": 1, "correct": 1, "accuracy": 1.0}}
    c = r["clues"]  # s1: 1 of 3 predicted match the 2 gold clues; s2: 1 of 1 vs 1
    assert (c["tp"], c["n_pred"], c["n_gold"], c["n_questions"]) == (2, 4, 3, 2)
    assert c["precision"] == 0.5 and c["recall"] == pytest.approx(2 / 3) and c["f1"] == pytest.approx(4 / 7)
    f = r["filter"]  # kept: s1 c1 (relevant), c3 (not); s2 c1 (relevant)
    assert (f["tp"], f["n_kept"], f["n_relevant"]) == (2, 3, 2)
    assert f["precision"] == pytest.approx(2 / 3) and f["recall"] == 1.0
    assert (r["citation_errors"], r["citations"], r["citation_error_rate"]) == (2, 5, 0.4)
    assert (r["hallucinated_clues"], r["clues_checked"], r["hallucinated_clue_rate"]) == (1, 4, 0.25)
    assert r["tokens_per_answer"] == 35.0


def test_evaluate_traces_rejects_unknown_or_duplicate_traces():
    samples, traces = _trace_case()
    with pytest.raises(InputError, match="trace for sample 'nope' matches no sample"):
        evaluate_traces(samples, [*traces, _trace("nope", 0)])
    with pytest.raises(InputError, match="two traces for sample 's1'"):
        evaluate_traces(samples, [*traces, traces[0]])


def test_traces_cli_matches_the_api(tmp_path):
    samples, traces = _trace_case()
    write_jsonl(samples, tmp_path / "data.jsonl")
    (tmp_path / "traces.jsonl").write_text("".join(t.to_json(indent=None) + "\n" for t in traces))
    proc = run_eval("traces", "--data", tmp_path / "data.jsonl", "--traces", tmp_path / "traces.jsonl", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == json.loads(json.dumps(evaluate_traces(samples, traces)))
    text = run_eval("traces", "--data", tmp_path / "data.jsonl", "--traces", tmp_path / "traces.jsonl").stdout
    assert "accuracy %" in text and "33.33" in text and "unparseable answers" in text
    bad = run_eval("traces", "--data", tmp_path / "data.jsonl", "--traces", tmp_path / "traces.jsonl", "--min-iou", "0")
    assert bad.returncode == 2 and "min_iou must be in (0, 1], got 0.0" in bad.stderr
    (tmp_path / "broken.jsonl").write_text('{"clip": {}}\n')
    broken = run_eval("traces", "--data", tmp_path / "data.jsonl", "--traces", tmp_path / "broken.jsonl")
    assert broken.returncode == 2 and "broken.jsonl line 1: not a trace" in broken.stderr


# ----------------------------------------------------------------------------- answer extraction
FIVE = ("red circle", "blue square", "the cup", "dog", "cat")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<answer>B</answer>", 1),
        ("<answer>(C)</answer>", 2),
        ("<chain>1. (c1) so the answer is A</chain><answer>D</answer>", 3),  # the tag wins
        ("<answer>dog</answer>", 3),  # option text inside the tag
        ("(C) the cup", 2),
        ("B.", 1),
        ("B because it stops", 1),
        ("E", 4),
        ("The answer is B.", 1),
        ("Answer: (e)", 4),
        ("I think option C", 2),
        ("A red circle", 0),  # "A" followed by option A's own text
        ("it was the blue square", 1),
        ("cup", 2),  # normalised equality with "the cup"
        ("a cat and a dog came, so the answer is the blue square B", 1),  # option text + its own letter at the end
        ("so the answer is dog (D)", 3),
    ],
)
def test_extract_answer_decides(text, expected):
    assert extract_answer(text, FIVE) == expected


@pytest.mark.parametrize(
    "text",
    [
        "", "F", "(F)", "b", "the answer is a red circle or a blue square",  # lower-case letters are words
        "A man walks in", "answer is A because", "answer is B, no wait, the answer is C",
        "red circle and blue square", "I do not know", "<answer></answer>",
        "a cat came, so the answer is dog E",  # the letter is not the named option's, and two options are named
    ],
)
def test_extract_answer_never_guesses(text):
    assert extract_answer(text, FIVE) is None


def test_extract_answer_respects_the_number_of_options():
    assert extract_answer("D", ("yes", "no", "not sure")) is None
    assert extract_answer("C", ("yes", "no", "not sure")) == 2
    assert extract_answer("anything", ()) is None


words = st.sampled_from(["red", "blue", "green", "circle", "square", "enters", "stops", "wall", "left"])
option_lists = st.lists(st.lists(words, min_size=1, max_size=3).map(" ".join), min_size=2, max_size=5, unique=True)


@settings(max_examples=80, deadline=None)
@given(option_lists, st.data())
def test_extract_answer_reads_every_letter_form(options, data):
    i = data.draw(st.integers(0, len(options) - 1))
    letter = LETTERS[i]
    for text in (f"<answer>{letter}</answer>", f"({letter}) {options[i]}", f"The answer is ({letter}).",
                 f"{letter}. {options[i]}"):
        assert extract_answer(text, options) == i, text


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=80), option_lists)
def test_extract_answer_never_raises(text, options):
    result = extract_answer(text, options)
    assert result is None or 0 <= result < len(options)
