"""Prompts of the ClueNet pipeline and of its training tasks, in one place.

Inference and training must see the *same* token sequences, so both build them here:

    prefix   = chat template( system prompt ; user: <video> + frame times + question
               + lettered options ) + assistant turn opening
    pass 1   : prefix                         -> "<clues> ... </clues>"        (task E)
    pass 2   : prefix + "<clues>kept</clues>\\n" -> "<chain> ... </chain>\\n<answer>X</answer><|im_end|>"  (task R)
    direct   : prefix(direct)                 -> "<answer>X</answer><|im_end|>"
    cot      : prefix(cot)                    -> "<chain> ... </chain>\\n<answer>X</answer><|im_end|>"

Choices written down here (the paper is silent on them):

* The sampled frames' real timestamps are written into the user text ("Frames at
  0.0, 0.5, ... s.") for every backbone, because the clue grammar asks for time spans
  in seconds and not every backbone encodes absolute time in its video tokens.
* Pieces are tokenized separately and their ids concatenated (``encode_pair``): every
  boundary falls on an added token (``<clues>``, ``</clues>``, ``<|im_end|>``) or on a
  newline, so this is what the model sees at inference too, token for token.
* The mode (cluenet / direct / cot) changes only the instruction line of the system
  prompt; the baselines share the video, the question and the options with ClueNet.
* Two option styles (``OPTION_STYLES``).  ``letter_first`` ("B. a red ring", one a
  line) is what pretrained instruct models know and the default everywhere.
  ``letter_last`` ("a red ring B") is for the small model trained from scratch: its
  chain restates the chosen option's text and then writes the letter, which is then
  the token that follows that text in the prompt -- a copy that a 3-layer model's
  induction head does.  With the letter first it has to look *back* from the option's
  words to the letter before them, and trained on ClueWorld it stays at chance on that
  step (docs/default-model-history.md).  A model folder records its style in
  ``cluenet.json``; training takes it from ``data.option_style``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .grammar import ANSWER_OPEN, CHAIN_CLOSE, CHAIN_OPEN, CLUES_OPEN, render_answer, render_chain, render_clues
from .schema import LETTERS, Clue, Step

IGNORE_INDEX = -100  # label value that cross-entropy skips (PyTorch / transformers convention)
END_OF_TURN = "<|im_end|>"

MODES = ("cluenet", "direct", "cot")
OPTION_STYLES = ("letter_first", "letter_last")
DEFAULT_OPTION_STYLE = "letter_first"

_INSTRUCTIONS = {
    "cluenet": (
        "First list the visual clues you see, each with an id and a time span in seconds, inside <clues>. "
        "Then reason step by step inside <chain>, citing clue ids. Then give the option letter inside <answer>."
    ),
    "direct": "Give only the letter of the correct option inside <answer>.",
    "cot": "Reason step by step inside <chain>, then give the option letter inside <answer>.",
}
SYSTEM_PROMPT = "You are ClueNet, a careful video analyst. Answer the multiple-choice question about the video."


def system_prompt(mode: str = "cluenet") -> str:
    """The system message for a mode (``cluenet``, ``direct`` or ``cot``)."""
    if mode not in _INSTRUCTIONS:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return f"{SYSTEM_PROMPT} {_INSTRUCTIONS[mode]}"


def frame_times_text(times: Sequence[float]) -> str:
    """"Frames at 0.0, 0.5, 1.0 s." -- one decimal, the precision of the clue grammar."""
    return "Frames at " + ", ".join(f"{t:.1f}" for t in times) + " s."


def check_option_style(style: str) -> str:
    if style not in OPTION_STYLES:
        raise ValueError(f"option style must be one of {OPTION_STYLES}, got {style!r}")
    return style


def question_text(question: str, options: Sequence[str], option_style: str = DEFAULT_OPTION_STYLE) -> str:
    """The question and its lettered options, one option a line ("B. text", or "text B"
    with ``option_style="letter_last"``)."""
    check_option_style(option_style)
    lines = [f"Question: {question.strip()}", "Options:"]
    if option_style == "letter_last":
        lines += [f"{opt.strip()} {LETTERS[i]}" for i, opt in enumerate(options)]
    else:
        lines += [f"{LETTERS[i]}. {opt.strip()}" for i, opt in enumerate(options)]
    return "\n".join(lines)


def messages(question: str, options: Sequence[str], times: Sequence[float], mode: str = "cluenet",
             option_style: str = DEFAULT_OPTION_STYLE) -> list[dict[str, Any]]:
    """Chat messages in the transformers multimodal format: one video, then text."""
    user_text = frame_times_text(times) + "\n" + question_text(question, options, option_style)
    return [
        {"role": "system", "content": [{"type": "text", "text": system_prompt(mode)}]},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": user_text}]},
    ]


def prefix_text(processor: Any, question: str, options: Sequence[str], times: Sequence[float], mode: str = "cluenet",
                option_style: str = DEFAULT_OPTION_STYLE) -> str:
    """The prefix as text (video placeholder not yet expanded), through the processor's chat template."""
    msgs = messages(question, options, times, mode, option_style)
    return processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


# ----------------------------------------------------------------------------- targets
def clues_target(clues: Sequence[Clue]) -> str:
    """Task E target / pass-1 output: the ``<clues>`` block."""
    return render_clues(clues)


def reasoning_context(clues: Sequence[Clue]) -> str:
    """What pass 2 (task R) is conditioned on after the prefix: the (kept) clues block."""
    return render_clues(clues) + "\n"


def reasoning_target(chain: Sequence[Step], answer: int) -> str:
    """Task R target / pass-2 output: chain, answer, end of turn."""
    return render_chain(chain) + "\n" + render_answer(answer) + END_OF_TURN


def direct_target(answer: int) -> str:
    """Baseline ``direct`` target: the answer block only."""
    return render_answer(answer) + END_OF_TURN


def cot_target(chain: Sequence[Step], answer: int) -> str:
    """Baseline ``cot`` target: the chain with its clue citations dropped (``cot`` sees no clues block, so
    a ``(c2)`` would name a clue that does not exist), then the answer."""
    return reasoning_target([Step(s.text) for s in chain], answer)


# ----------------------------------------------------------------------------- encoding
@dataclass(frozen=True)
class Encoded:
    """Token ids of one training example.

    ``labels`` equals ``input_ids`` on target tokens and ``IGNORE_INDEX`` elsewhere
    (prefix and context); ``answer_positions`` are the indices of the answer letter
    tokens inside ``input_ids`` (so a loss can up-weight them).
    """

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    answer_positions: tuple[int, ...] = ()


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Ids of a continuation piece, never with BOS/EOS added."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_pair(tokenizer: Any, prefix_ids: Sequence[int], target: str, context: str = "") -> Encoded:
    """Ids and labels for ``prefix + context -> target`` (loss on target tokens only).

    ``prefix_ids`` come from the processor (video placeholders expanded); ``context``
    is text that conditions but is not learned (task R's clues block).
    """
    ctx = encode_text(tokenizer, context) if context else []
    tgt = encode_text(tokenizer, target)
    ids = [*prefix_ids, *ctx, *tgt]
    labels = [IGNORE_INDEX] * (len(prefix_ids) + len(ctx)) + tgt
    start = len(prefix_ids) + len(ctx)
    return Encoded(tuple(ids), tuple(labels), tuple(start + i for i in answer_letter_positions(tokenizer, tgt)))


def answer_letter_positions(tokenizer: Any, ids: Sequence[int]) -> list[int]:
    """Positions of the decisive letters in ``ids``: the token right after each ``<answer>``
    and the letter that ends the chain ("..., so the answer is B" before ``</chain>``).

    Training up-weights both: the chain's letter is the step where the reasoning picks
    an option (one token of ~40 in a chain), and the answer letter copies it.
    """
    open_id = tokenizer.convert_tokens_to_ids(ANSWER_OPEN)
    close_id = tokenizer.convert_tokens_to_ids(CHAIN_CLOSE)
    found = [i + 1 for i, t in enumerate(ids[:-1]) if t == open_id]
    letters = set(_letter_ids(tokenizer))
    for i, t in enumerate(ids):
        if t != close_id:
            continue
        j = i - 1
        while j >= 0 and not tokenizer.decode([ids[j]]).strip():  # skip the newline before </chain>
            j -= 1
        if j >= 0 and ids[j] in letters:
            found.append(j)
    return sorted(found)


def _letter_ids(tokenizer: Any) -> list[int]:
    """Ids of the single tokens that decode to an option letter (with or without a leading space)."""
    out = []
    for letter in LETTERS:
        for text in (letter, " " + letter):
            ids = encode_text(tokenizer, text)
            if len(ids) == 1:
                out.append(ids[0])
    return out


def template_texts() -> list[str]:
    """Every fixed string of the prompts (for training the small tokenizer)."""
    out = [system_prompt(m) for m in MODES]
    out.append(frame_times_text([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]))
    out += [question_text("?", ["a", "b", "c", "d", "e"], style) for style in OPTION_STYLES]
    out += [CLUES_OPEN, CHAIN_OPEN, ANSWER_OPEN]
    return out
