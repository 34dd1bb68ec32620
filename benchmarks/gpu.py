"""GPU checks: python -m benchmarks.gpu [--quick] [--json out.json]

On a CUDA device, with a randomly initialised Qwen2.5-VL of the real 3B shape (no
download: the architecture is what costs time, not the weights' values), measures:

* bf16 prefill and decode throughput (tokens/s) for each attention implementation
  that is available: ``sdpa`` always, ``eager`` as the reference, ``flash_attention_2``
  when flash-attn imports (the optional GPU extra);
* the pipeline ratios of ``benchmarks/inference.py`` on the GPU (analyze / direct,
  second question / first, reason / analyze, analyze / unavoidable work, filter share)
  on a 16-frame 448x448 ClueWorld clip held in memory;
* the largest frame count whose prefix prefill (vision encoder + language model) fits,
  with the peak memory of each tried count.

Without CUDA it prints a message and exits 0.  Throughput of random weights equals that
of trained weights of the same shape; the vocabulary is the real 151,936 so the output
layer costs what it costs in the released model.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from benchmarks import emit

# Qwen2.5-VL-3B-Instruct's published config.json (text and vision shapes).
QWEN25_3B_TEXT = dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                      num_key_value_heads=2, max_position_embeddings=128000, vocab_size=151936)
QWEN25_3B_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                        patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                        fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2)
FRAME_SIDE = 448
ROPE = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}  # head_dim 128


def build(attn: str, layers: int | None = None):
    """(model, processor) of a random Qwen2.5-VL-3B-shaped model in bf16 on the GPU."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    from cluenet import tokenizer as tokmod
    from cluenet.backbones import _qwen_token_ids

    tok = tokmod.load()
    text = dict(QWEN25_3B_TEXT, rope_parameters=ROPE, bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if layers:
        text["num_hidden_layers"] = layers
    config = Qwen2_5_VLConfig(text_config=text, vision_config=QWEN25_3B_VISION, tie_word_embeddings=True,
                              **_qwen_token_ids(tok))
    config._attn_implementation = attn
    with torch.device("cuda"):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, torch_dtype=torch.bfloat16,
                                                                 attn_implementation=attn).eval()
    pixels = FRAME_SIDE * FRAME_SIDE
    kw = dict(patch_size=14, merge_size=2, temporal_patch_size=2, size={"shortest_edge": pixels, "longest_edge": pixels})
    proc = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**kw), video_processor=Qwen2VLVideoProcessor(**kw),
                               tokenizer=tok, chat_template=tokmod.CHAT_TEMPLATE)
    return model, proc


def _cuda_time(fn, repeats: int = 3) -> float:
    """Median seconds of ``fn()`` over ``repeats`` after one warm-up, with CUDA events."""
    fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return float(np.median(times))


@torch.no_grad()
def throughput(model, prefill_len: int, decode_steps: int) -> tuple[float, float]:
    """(prefill tokens/s, decode tokens/s) of the language model at batch 1."""
    from transformers import DynamicCache

    ids = torch.randint(10, 500, (1, prefill_len), device="cuda")
    t_prefill = _cuda_time(lambda: model(input_ids=ids, use_cache=False))

    def decode():
        cache = DynamicCache()
        out = model(input_ids=ids[:, :64], past_key_values=cache, use_cache=True)
        nxt = out.logits[:, -1:].argmax(-1)
        for _ in range(decode_steps):
            out = model(input_ids=nxt, past_key_values=cache, use_cache=True)
            nxt = out.logits[:, -1:].argmax(-1)

    t_decode = _cuda_time(decode, repeats=2)
    return prefill_len / t_prefill, decode_steps / t_decode


def attention_rows(quick: bool) -> list[dict]:
    from transformers.utils import is_flash_attn_2_available

    impls = ["sdpa", "eager"] + (["flash_attention_2"] if is_flash_attn_2_available() else [])
    rows, base = [], None
    for attn in impls:
        model, _ = build(attn, layers=8 if quick else None)
        pre, dec = throughput(model, 2048 if quick else 8192, 32 if quick else 128)
        base = base or (pre, dec)
        layers = model.config.get_text_config().num_hidden_layers
        rows.append(_row(f"prefill tokens/s, {attn}", pre, f"{layers} layers, bf16; {pre / base[0]:.2f}x sdpa"))
        rows.append(_row(f"decode tokens/s, {attn}", dec, f"batch 1; {dec / base[1]:.2f}x sdpa"))
        del model
        torch.cuda.empty_cache()
    if "flash_attention_2" not in impls:
        rows.append(_row("flash_attention_2", 0.0, "flash-attn not installed here: sdpa is the fallback"))
    return rows


def _clip(frames: int, seed: int = 0):
    """A ClueWorld episode upscaled to FRAME_SIDE, as an in-memory sampled clip."""
    from types import SimpleNamespace

    from cluenet.data.clueworld import WorldConfig, make_episode

    cfg = WorldConfig()
    vid, times, sample = make_episode(seed, cfg)
    reps = int(np.ceil(frames / len(vid)))
    vid = np.concatenate([vid] * reps)[:frames]
    step = times[1] - times[0] if len(times) > 1 else 0.25
    scale = FRAME_SIDE // vid.shape[1]
    vid = vid.repeat(scale, axis=1).repeat(scale, axis=2)
    return SimpleNamespace(frames=vid, times=tuple(round(i * step, 3) for i in range(frames)), name="clueworld"), sample


def pipeline_rows(quick: bool) -> list[dict]:
    from benchmarks.inference import QUICK_CAP, measure
    from cluenet.model import ClueNet

    model, proc = build("sdpa", layers=8 if quick else None)
    net = ClueNet.from_components(model, proc, name="random Qwen2.5-VL-3B shape", num_frames=16)
    net.max_clue_tokens = net.max_chain_tokens = QUICK_CAP if quick else 96
    clip, sample = _clip(16)
    rows = measure(net, clip, sample.options, benchmark="gpu")
    del net, model
    torch.cuda.empty_cache()
    return rows


@torch.no_grad()
def max_frames_rows(quick: bool) -> list[dict]:
    """Prefill (vision + LM) at growing frame counts until out of memory."""
    from cluenet import prompts

    model, proc = build("sdpa", layers=8 if quick else None)
    fam_inputs = __import__("cluenet.backbones", fromlist=["get_family"]).get_family("qwen2_5_vl").processor_inputs
    rows, fits = [], 0
    for frames in (16, 64, 128, 256, 512, 768, 1024):
        clip, sample = _clip(frames)
        text = prompts.prefix_text(proc, sample.question, sample.options, clip.times)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            inputs = {k: (v.to("cuda") if hasattr(v, "to") else v) for k, v in
                      fam_inputs(proc, text, clip.frames, clip.times).items()}
            inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(torch.bfloat16)
            t0 = time.perf_counter()
            model(**inputs, use_cache=True)
            torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
        except torch.cuda.OutOfMemoryError:
            rows.append(_row(f"prefill {frames} frames", 0.0, "out of memory"))
            break
        peak = torch.cuda.max_memory_allocated() / 2**30
        tokens = int(inputs["input_ids"].shape[1])
        rows.append(_row(f"prefill {frames} frames: peak GiB", peak, f"{tokens} tokens, {seconds:.2f} s"))
        fits = frames
        if seconds > 60:
            break
    rows.append(_row("largest frame count that fits (tried)", float(fits), f"{FRAME_SIDE}x{FRAME_SIDE} frames, bf16, sdpa"))
    return rows


def _row(metric: str, value: float, note: str = "") -> dict:
    return {"benchmark": "gpu", "metric": metric, "value": round(float(value), 4), "note": note}


def run(quick: bool = True) -> list[dict]:
    if not torch.cuda.is_available():
        return [_row("cuda", 0.0, "no CUDA device: nothing measured")]
    rows = [_row("device", 0.0, f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}")]
    for section in (attention_rows, pipeline_rows, max_frames_rows):
        try:
            rows.extend(section(quick))
        except Exception as exc:  # report and go on: one section's failure must not hide the others
            rows.append(_row(section.__name__, 0.0, f"failed: {type(exc).__name__}: {exc}"[:300]))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="8 layers instead of 36, shorter sequences")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks.gpu: no CUDA device on this machine; nothing to measure.")
        return 0
    rows = run(args.quick)
    emit(rows, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
