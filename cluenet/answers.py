"""Answer extraction from free model text: which option did it choose?

``extract_answer(text, options)`` tries, in this order, and stops at the first
rule that decides:

1. the ``<answer>`` tag -- its body is then read with rules 2-4 instead of the
   whole text (``<answer>B</answer>``, ``<answer>(B) red</answer>``);
2. a letter at the very start: ``(B)``, ``B.``, ``B)``, ``B:``, ``B `` or just ``B``;
3. an explicit statement anywhere: ``answer is B``, ``answer: (B)``,
   ``option B`` -- all such statements must agree;
4. an option's text and then its own letter at the very end: ``... so the answer is
   because it hit the red ring D`` when D is "because it hit the red ring" (the
   ClueWorld chains' closing, which other words of the step may not override);
5. the option text: the text equals one option after normalisation (case,
   punctuation, articles), or contains exactly one option's text as whole
   words (an option contained in a longer matched option does not count).

Only letters valid for the number of options count (``E`` with 4 options is not
an answer).  Bare letters must be upper case (``a red cup`` is not option A);
``A`` and ``I`` are English words too: at the start they count only when
followed by punctuation, the end, or that option's own text, and after
"answer is" not when a lower-case word follows ("the answer is A because"
is then undecided by rule 3 and falls to rule 4).  Anything else
returns ``None``: an unparseable answer is scored wrong and reported, never
guessed.
"""
from __future__ import annotations

import re
from typing import Sequence

from cluenet.schema import LETTERS

_TAG = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.IGNORECASE | re.DOTALL)
_START = re.compile(r"^\s*(?:\(\s*([A-Za-z])\s*\)|([A-Z])(?=$|[\s.):,;]))(.*)$", re.DOTALL)
# keywords in any case, a bare letter only in upper case
_STATED = re.compile(
    r"(?i:\b(?:answer|option|choice)\b)\s*(?i:is|would\s+be)?\s*:?\s*"
    r"(?:\(\s*([A-Za-z])\s*\)|([A-Z])(?![A-Za-z]))"
)
_ENGLISH_WORD_LETTERS = {"A", "I"}
_ARTICLES = {"a", "an", "the"}


def normalize(text: str) -> str:
    """Lower case, punctuation to spaces, articles dropped, whitespace collapsed."""
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return " ".join(w for w in words if w not in _ARTICLES)


def _valid(letter: str, num_options: int) -> int | None:
    letter = letter.upper()
    index = LETTERS.find(letter)
    return index if 0 <= index < num_options else None


def _from_start(text: str, options: Sequence[str]) -> int | None:
    m = _START.match(text)
    if m is None:
        return None
    paren, bare, rest = m.group(1), m.group(2), m.group(3)
    if paren:
        return _valid(paren, len(options))
    index = _valid(bare, len(options))
    if index is None:
        return None
    if bare in _ENGLISH_WORD_LETTERS and rest[:1].isspace():
        # "A man ..." is a sentence; "A red cup" when option A is "red cup" is an answer
        return index if normalize(rest) == normalize(options[index]) else None
    return index


def _from_statement(text: str, num_options: int) -> int | None:
    found = set()
    for m in _STATED.finditer(text):
        bare = m.group(2)
        if bare in _ENGLISH_WORD_LETTERS and re.match(r"\s+[a-z]", text[m.end():]):
            continue  # "the answer is a red cup" / "answer is A man ...": an article, not a letter
        index = _valid(m.group(1) or bare, num_options)
        if index is not None:
            found.add(index)
    return found.pop() if len(found) == 1 else None


def _contains(haystack: str, needle: str) -> bool:
    return bool(needle) and re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", haystack) is not None


def _from_option_text(text: str, options: Sequence[str]) -> int | None:
    said = normalize(text)
    if not said:
        return None
    normed = [normalize(o) for o in options]
    exact = [i for i, o in enumerate(normed) if o and o == said]
    if len(exact) == 1:
        return exact[0]
    hits = [i for i, o in enumerate(normed) if _contains(said, o)]
    # "red cup" contains "cup": keep only the longest, non-nested mentions
    hits = [i for i in hits if not any(j != i and normed[i] != normed[j] and _contains(normed[j], normed[i]) for j in hits)]
    return hits[0] if len(hits) == 1 else None


_TRAILING_LETTER = re.compile(r"^(.*\S)\s+\(?([A-Z])\)?\s*\.?\s*$", re.DOTALL)


def _from_text_and_letter(text: str, options: Sequence[str]) -> int | None:
    m = _TRAILING_LETTER.match(text)
    if m is None:
        return None
    index = _valid(m.group(2), len(options))
    if index is None:
        return None
    said, option = normalize(m.group(1)), normalize(options[index])
    return index if option and (said == option or said.endswith(" " + option)) else None


def _decide(text: str, options: Sequence[str]) -> int | None:
    for rule in (lambda: _from_start(text, options), lambda: _from_statement(text, len(options)),
                 lambda: _from_text_and_letter(text, options)):
        index = rule()
        if index is not None:
            return index
    return _from_option_text(text, options)


def extract_answer(text: str, options: Sequence[str]) -> int | None:
    """0-based index of the option ``text`` chooses, or ``None`` if it is unclear.

    See the module docstring for the exact rules and their order.
    """
    if not isinstance(text, str) or not options:
        return None
    options = list(options)[: len(LETTERS)]
    tag = _TAG.search(text)
    if tag is not None:
        index = _decide(tag.group(1).strip(), options)
        if index is not None:
            return index
    return _decide(text, options)
