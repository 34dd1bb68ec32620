"""The shipped tokenizer: offline load, single-token tags and letters, chat template."""
from cluenet import prompts
from cluenet.grammar import ANSWER_CLOSE, ANSWER_OPEN, CHAIN_CLOSE, CHAIN_OPEN, CLUES_CLOSE, CLUES_OPEN
from cluenet.tokenizer import SPECIAL_TOKENS, train_tokenizer


def test_tags_and_letters_are_single_tokens(tokenizer):
    for tag in (CLUES_OPEN, CLUES_CLOSE, CHAIN_OPEN, CHAIN_CLOSE, ANSWER_OPEN, ANSWER_CLOSE, *"ABCDE"):
        assert len(prompts.encode_text(tokenizer, tag)) == 1, tag
    ids = prompts.encode_text(tokenizer, "<answer>C</answer>")
    assert len(ids) == 3 and tokenizer.decode(ids[1:2]) == "C"


def test_special_tokens_exist_and_round_trip(tokenizer):
    for tok in SPECIAL_TOKENS:
        assert tokenizer.convert_tokens_to_ids(tok) != tokenizer.unk_token_id
    text = "<clues>\nc1 [0.0-1.5s] the red circle enters from the left\n</clues>"
    assert tokenizer.decode(prompts.encode_text(tokenizer, text)) == text
    assert 256 < len(tokenizer) <= 4096  # byte alphabet + merges: small


def test_chat_template_renders_video_placeholder(tokenizer):
    msgs = prompts.messages("what moves first?", ["red", "blue"], [0.0, 0.5])
    text = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert "<|vision_start|><|video_pad|><|vision_end|>" in text
    assert text.endswith("<|im_start|>assistant\n") and "A. red\nB. blue" in text


def test_training_is_deterministic_and_merges_corpus_words():
    texts = ["the red circle enters from the left"] * 50
    a, b = train_tokenizer(texts, 300), train_tokenizer(texts, 300)
    assert a.get_vocab() == b.get_vocab()
    assert len(prompts.encode_text(a, "the red circle")) < len("the red circle")


def test_letter_last_puts_each_letter_right_after_its_option(tokenizer):
    import pytest

    text = prompts.question_text("why did it stop?", ["because it hit the red ring", "because it hit the blue cross"],
                                 "letter_last")
    assert text.endswith("Options:\nbecause it hit the red ring A\nbecause it hit the blue cross B")
    ids = prompts.encode_text(tokenizer, text)
    words = tokenizer.convert_ids_to_tokens(ids)
    # the chain's closing "... the blue cross B" can copy B: it is the token after "cross" in the prompt
    assert words[words.index("Ġcross") + 1].strip("Ġ") == "B"
    with pytest.raises(ValueError, match="option style must be one of"):
        prompts.question_text("q", ["a", "b"], "sideways")
