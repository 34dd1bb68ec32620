"""The output grammar of ClueNet: render and parse ``<clues>/<chain>/<answer>`` text.

What the model generates (DESIGN.md)::

    <clues>
    c1 [0.0-1.5s] the red circle enters from the left
    c2 [1.2-2.0s] the blue square stops at the wall
    </clues>
    <chain>
    1. (c1) the red circle is the first object to move
    2. (c1,c2) it moves before the square stops, so the answer is B
    </chain>
    <answer>B</answer>

Rendering is canonical: times with one decimal, ids ``c<number>``, one item a line.
Parsing is tolerant and **never raises**: whatever the text, ``parse`` returns a
``Parsed`` with what could be read and a warning for everything it skipped or
doubted (missing tags, bad spans, citations of unknown ids, no answer letter).
Only text that the renderer can produce round-trips exactly: statements are
single-line, free of ``<``/``>``, and stripped of surrounding whitespace.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from .schema import LETTERS, Clue, Step

CLUES_OPEN, CLUES_CLOSE = "<clues>", "</clues>"
CHAIN_OPEN, CHAIN_CLOSE = "<chain>", "</chain>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

_CLUE_LINE = re.compile(
    r"^\s*(?P<id>c\d+)\s*\[\s*(?P<start>-?\d+(?:\.\d+)?)\s*-\s*(?P<end>-?\d+(?:\.\d+)?)\s*s?\s*\]\s*(?P<text>.*?)\s*$"
)
_STEP_LINE = re.compile(r"^\s*(?:\d+[.)]\s*)?(?:\((?P<cites>[^()]*)\)\s*)?(?P<text>.*?)\s*$")
_CITE_ID = re.compile(r"^c\d+$")


@dataclass(frozen=True)
class Parsed:
    """What ``parse`` read from model text.

    ``answer`` is the 0-based option index from ``<answer>`` (``None`` if absent or
    not a valid letter for ``num_options``).  ``has_*`` say which blocks were found
    closed, so callers can tell "no clues" from "clues block missing".
    """

    clues: tuple[Clue, ...] = ()
    chain: tuple[Step, ...] = ()
    answer: int | None = None
    warnings: tuple[str, ...] = ()
    has_clues: bool = False
    has_chain: bool = False
    has_answer: bool = False


# ------------------------------------------------------------------------- rendering
def format_time(t: float) -> str:
    """Seconds with one decimal: the precision of the grammar."""
    return f"{t:.1f}"


def _one_line(text: str) -> str:
    """Statements must stay on one line and must not open or close a tag."""
    return " ".join(text.replace("<", " ").replace(">", " ").split())


def render_clue(clue: Clue) -> str:
    return f"{clue.id} [{format_time(clue.start)}-{format_time(clue.end)}s] {_one_line(clue.text)}"


def render_clues(clues: Iterable[Clue]) -> str:
    """``<clues>`` block, one clue a line (an empty block when there are none)."""
    lines = [render_clue(c) for c in clues]
    return "\n".join([CLUES_OPEN, *lines, CLUES_CLOSE])


def render_step(number: int, step: Step) -> str:
    cites = f"({','.join(step.cites)}) " if step.cites else ""
    return f"{number}. {cites}{_one_line(step.text)}"


def render_chain(steps: Iterable[Step]) -> str:
    lines = [render_step(i, s) for i, s in enumerate(steps, start=1)]
    return "\n".join([CHAIN_OPEN, *lines, CHAIN_CLOSE])


def render_answer(index: int) -> str:
    return f"{ANSWER_OPEN}{LETTERS[index]}{ANSWER_CLOSE}"


def render(clues: Sequence[Clue], chain: Sequence[Step], answer: int | None) -> str:
    """The full canonical output: clues, chain and answer blocks on separate lines."""
    parts = [render_clues(clues), render_chain(chain)]
    if answer is not None:
        parts.append(render_answer(answer))
    return "\n".join(parts)


# ------------------------------------------------------------------------- parsing
def _block(text: str, open_tag: str, close_tag: str, warnings: list[str]) -> tuple[str | None, bool]:
    """Body of the first ``open_tag ... close_tag`` block.

    Returns (body, closed).  An unclosed block yields what follows the open tag
    (generation may have been cut off) with a warning; a missing block yields None.
    """
    start = text.find(open_tag)
    if start < 0:
        return None, False
    body_start = start + len(open_tag)
    end = text.find(close_tag, body_start)
    if end < 0:
        warnings.append(f"{open_tag} is not closed by {close_tag}; read to the end of the text")
        body = text[body_start:]
        # do not swallow a following block when the close tag is missing
        nxt = min((i for i in (body.find("<chain>"), body.find("<answer>")) if i >= 0), default=-1)
        return (body[:nxt] if nxt >= 0 else body), False
    return text[body_start:end], True


def parse_clues(body: str, warnings: list[str]) -> tuple[Clue, ...]:
    """Clue lines of a ``<clues>`` body; bad lines are skipped with a warning."""
    clues: list[Clue] = []
    seen: set[str] = set()
    for raw in body.splitlines():
        if not raw.strip():
            continue
        m = _CLUE_LINE.match(raw)
        if m is None:
            warnings.append(f"unreadable clue line: {raw.strip()[:80]!r}")
            continue
        cid, start, end = m["id"], float(m["start"]), float(m["end"])
        if cid in seen:
            warnings.append(f"duplicate clue id {cid}; kept the first")
            continue
        if start < 0 or end < start:
            warnings.append(f"clue {cid} has a bad time span [{m['start']}-{m['end']}s]; skipped")
            continue
        seen.add(cid)
        clues.append(Clue(id=cid, start=start, end=end, text=m["text"]))
    return tuple(clues)


def parse_chain(body: str, known_ids: set[str] | None, warnings: list[str]) -> tuple[Step, ...]:
    """Step lines of a ``<chain>`` body.  Citations of ids not in ``known_ids`` are
    kept (the analysis flags them) but recorded as a warning."""
    steps: list[Step] = []
    for raw in body.splitlines():
        if not raw.strip():
            continue
        m = _STEP_LINE.match(raw)
        assert m is not None  # the pattern matches every line
        cites: list[str] = []
        for token in (m["cites"] or "").split(","):
            token = token.strip()
            if not token:
                continue
            if not _CITE_ID.match(token):
                warnings.append(f"step {len(steps) + 1} cites {token!r}, which is not a clue id")
                continue
            cites.append(token)
            if known_ids is not None and token not in known_ids:
                warnings.append(f"step {len(steps) + 1} cites unknown clue {token}")
        steps.append(Step(text=m["text"], cites=tuple(cites)))
    return tuple(steps)


def parse_answer(body: str, num_options: int, warnings: list[str]) -> int | None:
    """Option index of an ``<answer>`` body such as ``B`` or ``(B)``."""
    letters = LETTERS[:num_options]
    m = re.fullmatch(r"\s*\(?\s*([A-Za-z])\s*[).]?\s*", body)
    if m is None or m.group(1).upper() not in letters:
        warnings.append(f"no answer letter among {', '.join(letters)} in <answer>{body.strip()[:20]}</answer>")
        return None
    return letters.index(m.group(1).upper())


BLOCKS = ("clues", "chain", "answer")


def parse(
    text: str,
    num_options: int = 5,
    known_ids: Iterable[str] | None = None,
    expect: Sequence[str] = BLOCKS,
) -> Parsed:
    """Parse model output; never raises.

    ``known_ids`` are the clue ids citations may point at; by default the ids of
    the clues found in ``text`` itself (the second pass passes the kept ids).
    ``expect`` names the blocks whose absence is worth a warning: pass 1 of the
    pipeline expects only ``("clues",)``, pass 2 ``("chain", "answer")``.
    """
    try:
        n = max(1, min(int(num_options), len(LETTERS)))
        return _parse(str(text), n, known_ids, tuple(expect))
    except Exception as exc:  # last line of defence: the contract is "never raises"
        return Parsed(warnings=(f"parser error: {type(exc).__name__}: {exc}",))


def _parse(text: str, num_options: int, known_ids: Iterable[str] | None, expect: tuple[str, ...]) -> Parsed:
    warnings: list[str] = []
    clues_body, clues_closed = _block(text, CLUES_OPEN, CLUES_CLOSE, warnings)
    if clues_body is None and "clues" in expect:
        warnings.append("no <clues> block")
    clues = parse_clues(clues_body, warnings) if clues_body is not None else ()

    ids = set(known_ids) if known_ids is not None else {c.id for c in clues}
    chain_body, chain_closed = _block(text, CHAIN_OPEN, CHAIN_CLOSE, warnings)
    if chain_body is None and "chain" in expect:
        warnings.append("no <chain> block")
    chain = parse_chain(chain_body, ids, warnings) if chain_body is not None else ()

    answer_body, answer_closed = _block(text, ANSWER_OPEN, ANSWER_CLOSE, warnings)
    if answer_body is None:
        if "answer" in expect:
            warnings.append("no <answer> block")
        answer = None
    else:
        answer = parse_answer(answer_body, num_options, warnings)
    return Parsed(
        clues=clues,
        chain=chain,
        answer=answer,
        warnings=tuple(warnings),
        has_clues=clues_closed,
        has_chain=chain_closed,
        has_answer=answer_closed and answer is not None,
    )
