"""The output grammar: canonical rendering, tolerant parsing, property tests."""
from hypothesis import given, settings
from hypothesis import strategies as st

from cluenet.grammar import parse, render, render_chain, render_clues
from cluenet.schema import Clue, Step

EXAMPLE = """<clues>
c1 [0.0-1.5s] the red circle enters from the left
c2 [1.2-2.0s] the blue square stops at the wall
</clues>
<chain>
1. (c1) the red circle is the first object to move
2. (c1,c2) it moves before the square stops, so the answer is B
</chain>
<answer>B</answer>"""


def test_design_example_parses_exactly():
    p = parse(EXAMPLE)
    assert p.warnings == ()
    assert p.clues == (
        Clue("c1", 0.0, 1.5, "the red circle enters from the left"),
        Clue("c2", 1.2, 2.0, "the blue square stops at the wall"),
    )
    assert p.chain == (
        Step("the red circle is the first object to move", ("c1",)),
        Step("it moves before the square stops, so the answer is B", ("c1", "c2")),
    )
    assert p.answer == 1
    assert p.has_clues and p.has_chain and p.has_answer


def test_render_is_the_design_example():
    p = parse(EXAMPLE)
    assert render(p.clues, p.chain, p.answer) == EXAMPLE


def test_missing_blocks_warn_and_keep_what_was_read():
    p = parse("<clues>\nc1 [0.0-1.0s] a thing happens\n")
    assert p.clues == (Clue("c1", 0.0, 1.0, "a thing happens"),)
    assert not p.has_clues and p.chain == () and p.answer is None
    joined = " | ".join(p.warnings)
    assert "not closed" in joined and "no <chain>" in joined and "no <answer>" in joined


def test_bad_spans_unknown_citations_and_bad_letters_are_reported():
    text = (
        "<clues>\nc1 [2.0-1.0s] backwards span\nc2 [0.5-0.7s] fine\nc2 [0.1-0.2s] duplicate\nnot a clue\n</clues>"
        "<chain>\n1. (c2,c9,x) step\n</chain><answer>Q</answer>"
    )
    p = parse(text, num_options=5)
    assert [c.id for c in p.clues] == ["c2"]
    assert p.chain == (Step("step", ("c2", "c9")),)
    assert p.answer is None
    joined = " | ".join(p.warnings)
    for expected in ("bad time span", "duplicate clue id c2", "unreadable clue line", "unknown clue c9",
                     "'x', which is not a clue id", "no answer letter"):
        assert expected in joined


def test_answer_letter_must_be_within_the_options():
    assert parse("<answer>E</answer>", num_options=5).answer == 4
    p = parse("<answer>E</answer>", num_options=4)
    assert p.answer is None and any("A, B, C, D" in w for w in p.warnings)
    assert parse("<answer> (c) </answer>", num_options=4).answer == 2


def test_expect_silences_blocks_a_pass_does_not_produce():
    p = parse("<clues>\nc1 [0.0-1.0s] x\n</clues>", expect=("clues",))
    assert p.warnings == ()


def test_known_ids_override_the_text_ids():
    p = parse("<chain>\n1. (c1) uses a filtered clue\n</chain>", known_ids={"c2"}, expect=("chain",))
    assert any("unknown clue c1" in w for w in p.warnings)


def test_statements_are_normalised_to_one_line_without_tags():
    block = render_clues([Clue("c1", 0.0, 1.0, "two\nlines <chain> inside")])
    assert block.count("\n") == 2 and "<chain>" not in block
    assert parse(block).clues[0].text == "two lines chain inside"
    assert "</chain>" not in render_chain([Step("a </chain> b")]).splitlines()[1]


# ----------------------------------------------------------------------------- properties
_words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789 ,.'", min_size=1, max_size=40).map(
    lambda s: " ".join(s.split())
).filter(bool)
_tenths = st.integers(min_value=0, max_value=6000)


@st.composite
def _clues(draw):
    n = draw(st.integers(0, 6))
    ids = draw(st.lists(st.integers(1, 99), min_size=n, max_size=n, unique=True))
    out = []
    for i in ids:
        a, b = sorted((draw(_tenths), draw(_tenths)))
        out.append(Clue(f"c{i}", a / 10, b / 10, draw(_words)))
    return tuple(out)


@st.composite
def _outputs(draw):
    clues = draw(_clues())
    ids = [c.id for c in clues]
    steps = tuple(
        Step(draw(_words).lstrip("0123456789. "), tuple(draw(st.lists(st.sampled_from(ids), max_size=3))) if ids else ())
        for _ in range(draw(st.integers(0, 4)))
    )
    steps = tuple(s for s in steps if s.text)
    answer = draw(st.integers(0, 4))
    return clues, steps, answer


@settings(max_examples=200, deadline=None)
@given(_outputs())
def test_render_then_parse_is_the_identity(out):
    clues, steps, answer = out
    p = parse(render(clues, steps, answer), num_options=5)
    assert (p.clues, p.chain, p.answer) == (clues, steps, answer)
    assert p.warnings == ()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text_never_raises(text):
    p = parse(text)
    assert isinstance(p.warnings, tuple)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["<clues>", "</clues>", "<chain>", "</chain>", "<answer>", "</answer>",
                                 "c1 [0.0-1.0s] x", "1. (c1) y", "\n", "B", "[", "(", "c3", "-"]), max_size=30))
def test_tag_soup_never_raises(parts):
    parse("".join(parts), num_options=3)
