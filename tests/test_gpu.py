"""GPU tier: the pipeline on CUDA in bf16 with the attention the loader picks.

    pytest -m gpu tests/test_gpu.py      # needs a CUDA device; fails (does not skip) without one

Throughput numbers come from ``python -m benchmarks.gpu``; these tests check correctness.
"""
import pytest
import torch

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda():
    if not torch.cuda.is_available():
        pytest.fail("the gpu tier needs a CUDA device (torch.cuda.is_available() is False)")
    return torch.device("cuda")


def test_attention_choice_and_bf16_default(cuda):
    from transformers.utils import is_flash_attn_2_available

    from cluenet import backbones

    expected = "flash_attention_2" if is_flash_attn_2_available() else "sdpa"
    assert backbones.attn_implementation() == expected
    assert backbones.default_dtype("cuda") == torch.bfloat16


def test_analyze_on_cuda_in_bf16_matches_the_cpu_answer_distribution(cuda, tokenizer, tiny_clip):
    from cluenet import backbones
    from cluenet.model import ClueNet

    probs = {}
    for device, dtype in (("cpu", torch.float32), ("cuda", torch.bfloat16)):
        model, processor = backbones.tiny_model("qwen2_5_vl", tokenizer, seed=0)
        net = ClueNet.from_components(model.to(device=device, dtype=dtype), processor)
        net.max_clue_tokens = net.max_chain_tokens = 8
        trace = net.analyze(tiny_clip, "what happens?", ["a", "b", "c"], num_frames=len(tiny_clip.frames))
        assert abs(sum(trace.option_probs) - 1) < 1e-4
        probs[device] = trace.option_probs
    assert trace.model.device.startswith("cuda") and trace.model.dtype == "bfloat16"
    # same weights, bf16 vs fp32: the distributions agree to bf16 precision
    assert max(abs(a - b) for a, b in zip(probs["cpu"], probs["cuda"])) < 0.05
