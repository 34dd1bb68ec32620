"""The backbone registry: every family builds a tiny model of the real class, its
processor turns frames + times into inputs the model runs, LoRA targets the LM only."""
import pytest
import torch

from cluenet import backbones, prompts
from cluenet.errors import ModelError

from tests.conftest import make_frames


@pytest.mark.parametrize("family", sorted(backbones.FAMILIES))
def test_tiny_family_runs_forward_on_frames(family, tokenizer):
    model, proc = backbones.tiny_model(family, tokenizer, seed=0)
    fam = backbones.get_family(family)
    assert backbones.family_of(model) is fam
    times = [0.25, 0.75, 1.25, 1.75]
    text = prompts.prefix_text(proc, "What moves?", ["a", "b"], times)
    assert text.count(fam.video_placeholder) == 1 and "Frames at 0.2, 0.8, 1.2, 1.8 s." in text
    inputs = fam.processor_inputs(proc, text, make_frames(), times)
    calls = []
    fam.vision_module(model).register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits.shape[:2] == inputs["input_ids"].shape and len(calls) == 1
    cfg = model.config.get_text_config()
    assert cfg.hidden_size == backbones.TINY_TEXT_HIDDEN and cfg.num_hidden_layers == backbones.TINY_TEXT_LAYERS
    assert cfg.vocab_size == len(tokenizer)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_onevision"])
def test_lora_targets_only_the_language_model(family, tokenizer):
    from peft import LoraConfig, get_peft_model

    model, _ = backbones.tiny_model(family, tokenizer)
    peft = get_peft_model(model, LoraConfig(r=2, target_modules=backbones.get_family(family).lora_targets))
    names = [n for n, _ in peft.named_modules() if n.endswith("lora_A")]
    assert names and all("language_model" in n for n in names)
    assert not any("visual" in n or "vision_tower" in n for n in names)


def test_same_seed_same_weights(tokenizer):
    a, _ = backbones.tiny_model("qwen2_5_vl", tokenizer, seed=3)
    b, _ = backbones.tiny_model("qwen2_5_vl", tokenizer, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_unknown_family_and_sampled_fps():
    with pytest.raises(ModelError, match="unsupported backbone 'gpt2'; supported: qwen2_5_vl"):
        backbones.get_family("gpt2")
    assert backbones.sampled_fps([0.0, 0.5, 1.0]) == pytest.approx(2.0)
    assert backbones.sampled_fps([1.0]) == 1.0


def test_attention_choice_on_cpu():
    assert backbones.attn_implementation() in ("sdpa", "flash_attention_2")
    if not torch.cuda.is_available():
        assert backbones.attn_implementation() == "sdpa"
        assert backbones.default_dtype("cpu") == torch.float32
