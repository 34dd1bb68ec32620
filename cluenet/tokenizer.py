"""The small byte-level BPE tokenizer of the tiny / default ClueNet models.

Rebuild the shipped copy with::

    python -m cluenet.tokenizer --out assets/tokenizer

It is trained with the ``tokenizers`` library on ClueWorld text (questions,
options, clues, chains; ``cluenet.data.clueworld.text_corpus``) plus every fixed
string of the prompts, and saved in the standard Hugging Face format
(``tokenizer.json`` + ``tokenizer_config.json`` with a ChatML chat template), so
``AutoTokenizer.from_pretrained(folder)`` loads it offline.

Guarantees the pipeline relies on (tested):

* the grammar tags ``<clues> </clues> <chain> </chain> <answer> </answer>`` are
  single added tokens, so clue boundaries are exact token boundaries;
* option letters ``A``-``E`` are single tokens (byte-level alphabet) and stay single
  tokens right after ``<answer>``;
* every special token of the Qwen-VL processors (``<|im_start|>``, ``<|video_pad|>``,
  ...) and of LLaVA-OneVision (``<image>``, ``<video>``) exists.
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Iterable, Sequence

from .grammar import ANSWER_CLOSE, ANSWER_OPEN, CHAIN_CLOSE, CHAIN_OPEN, CLUES_CLOSE, CLUES_OPEN

DEFAULT_VOCAB_SIZE = 1536
DEFAULT_CORPUS_SIZE = 4000  # ClueWorld episodes' worth of text; enough for stable merges
CORPUS_SEED = 0

# Special tokens: Qwen-VL ChatML + vision markers, LLaVA-OneVision's placeholders, padding.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<image>",
    "<video>",
    "<pad>",
)
# Grammar tags: added as *non-special* added tokens so that decode keeps them in the text.
GRAMMAR_TOKENS = (CLUES_OPEN, CLUES_CLOSE, CHAIN_OPEN, CHAIN_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)

# ChatML; the video placeholder is a template variable so one template serves every family
# (Qwen: "<|vision_start|><|video_pad|><|vision_end|>", LLaVA-OneVision: "<video>").
CHAT_TEMPLATE = (
    "{%- set vph = video_placeholder | default('<|vision_start|><|video_pad|><|vision_end|>') -%}"
    "{%- for m in messages -%}"
    "{{ '<|im_start|>' + m['role'] + '\n' }}"
    "{%- if m['content'] is string -%}{{ m['content'] }}"
    "{%- else -%}{%- for c in m['content'] -%}"
    "{%- if c['type'] == 'video' -%}{{ vph + '\n' }}"
    "{%- elif c['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>\n' }}"
    "{%- elif c['type'] == 'text' -%}{{ c['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)


def training_corpus(n: int = DEFAULT_CORPUS_SIZE, seed: int = CORPUS_SEED) -> list[str]:
    """ClueWorld text plus the prompt templates (the tokenizer's training text)."""
    from .data.clueworld import text_corpus  # the generator covers every template it renders
    from .prompts import template_texts

    texts = list(text_corpus(n, seed))
    texts += template_texts()
    random.Random(seed).shuffle(texts)
    return texts


def train_tokenizer(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE):
    """Train a byte-level BPE on ``texts``; returns a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: no unknown tokens
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token=None,
        clean_up_tokenization_spaces=False,
    )
    tok.add_tokens(list(GRAMMAR_TOKENS))
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build(out: str | Path, n: int = DEFAULT_CORPUS_SIZE, vocab_size: int = DEFAULT_VOCAB_SIZE) -> Path:
    """Train on the ClueWorld corpus and save to ``out``; returns the folder."""
    out = Path(out)
    tok = train_tokenizer(training_corpus(n), vocab_size)
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out))
    return out


def shipped_path() -> Path:
    """The tokenizer shipped in ``assets/tokenizer`` (built by ``main``)."""
    return Path(__file__).resolve().parent.parent / "assets" / "tokenizer"


def load(path: str | Path | None = None):
    """Load a tokenizer folder (default: the shipped one) with ``AutoTokenizer``, offline."""
    from transformers import AutoTokenizer

    from .errors import ModelError

    folder = Path(path) if path is not None else shipped_path()
    if not (folder / "tokenizer.json").is_file():
        raise ModelError(f"no tokenizer.json in {folder}; rebuild with `python -m cluenet.tokenizer --out {folder}`")
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m cluenet.tokenizer --out assets/tokenizer [--vocab-size N] [--corpus N]``."""
    p = argparse.ArgumentParser(prog="python -m cluenet.tokenizer", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(shipped_path()))
    p.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE)
    p.add_argument("--corpus", type=int, default=DEFAULT_CORPUS_SIZE, help="number of ClueWorld texts")
    args = p.parse_args(argv)
    folder = build(args.out, args.corpus, args.vocab_size)
    print(f"wrote {folder} ({len(load(folder))} tokens)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
