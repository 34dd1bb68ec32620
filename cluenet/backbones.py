"""Registry of the supported multimodal backbones, all through transformers' own classes.

One code path serves every family: the pipeline asks a ``Family`` for

* ``processor_inputs`` -- model inputs from sampled frames + their real timestamps
  and the prefix text (the processor expands the video placeholder);
* the video placeholder the chat template writes (``video_placeholder``);
* ``lora_targets`` -- LoRA target modules, language model only;
* ``tiny_config`` / ``tiny_processor`` -- small random models of the real classes
  (text hidden 128, 2 layers; vision hidden 64, 2 layers) for tests and the default
  model;
* ``vision_module`` -- the vision encoder (the reuse tests hook it);
* loading real checkpoints by name or path (``load_pretrained``).

Families: ``qwen2_5_vl`` (primary), ``qwen2_vl`` and ``qwen3_vl`` (same API), and
``llava_onevision`` as the second family.  LLaVA-OneVision was chosen over
SmolVLM2/Idefics3 because its video path is a plain (frames, C, H, W) tensor with a
fixed token count per frame and it accepts precomputed video features
(``mm_encoder_outputs``) like Qwen-VL, so the clip cache works the same way; SmolVLM's
processor needs a dozen extra grid tokens and samples frames itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .errors import ModelError

# Tiny model sizes (ENVIRONMENT.md: these build and train on CPU in milliseconds a step).
TINY_TEXT_HIDDEN = 128
TINY_TEXT_LAYERS = 2
TINY_TEXT_HEADS = 4  # head_dim 32 -> mrope sections must sum to 16
TINY_VISION_HIDDEN = 64
TINY_VISION_LAYERS = 2
TINY_PATCH = 14
TINY_FRAME_SIDE = 56  # frames are resized so one side is this many pixels (4 patches)
TINY_MAX_POSITIONS = 4096

# LoRA on the language model's attention only.  A regex (peft full-matches it against module
# names) rather than bare names, because SigLIP (LLaVA-OneVision's vision tower) also has q_proj.
LM_LORA_TARGETS = r".*language_model\..*\.(q_proj|k_proj|v_proj|o_proj)"


@dataclass(frozen=True)
class Family:
    """What the pipeline needs to know about one model family."""

    name: str  # the config's model_type
    model_class: str  # transformers class names, resolved lazily (imports are heavy)
    processor_class: str
    video_placeholder: str  # what the chat template writes where the video goes
    vision_attr: str  # dotted path of the vision encoder inside the ...ForConditionalGeneration model
    lora_targets: str  # peft ``target_modules`` regex
    video_feature_inputs: tuple[str, ...]  # processor outputs that ``get_video_features`` takes
    tiny_config: Callable[[Any], Any]
    tiny_processor: Callable[[Any], Any]

    def model_cls(self):
        import transformers

        return getattr(transformers, self.model_class)

    def vision_module(self, model: Any):
        """The vision encoder module of ``model`` (unwraps PEFT wrappers first)."""
        obj = unwrap(model)
        for part in self.vision_attr.split("."):
            obj = getattr(obj, part)
        return obj

    def language_model(self, model: Any):
        """The decoder stack (its final norm gives the last-layer hidden states)."""
        return unwrap(model).model.language_model

    def processor_inputs(self, processor: Any, prompt: str, frames: np.ndarray, times: Sequence[float]) -> dict:
        """Model inputs (torch tensors) for one prefix text and one sampled clip."""
        from transformers.video_utils import VideoMetadata

        frames = np.ascontiguousarray(frames, dtype=np.uint8)
        metadata = VideoMetadata(
            total_num_frames=len(frames), fps=sampled_fps(times), width=frames.shape[2], height=frames.shape[1],
            frames_indices=list(range(len(frames))),
        )
        out = processor(
            text=[prompt], videos=[frames], video_metadata=[metadata], do_sample_frames=False, return_tensors="pt"
        )
        return dict(out)


def sampled_fps(times: Sequence[float]) -> float:
    """Frames per second of the sampled frames (the processors turn it into time positions)."""
    if len(times) < 2 or times[-1] <= times[0]:
        return 1.0
    return (len(times) - 1) / (times[-1] - times[0])


def unwrap(model: Any) -> Any:
    """The transformers model inside a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


# ----------------------------------------------------------------------------- tiny configs
def _token_ids(tokenizer: Any, **names: str) -> dict[str, int]:
    ids = {}
    for key, tok in names.items():
        tid = tokenizer.convert_tokens_to_ids(tok)
        if tid is None or tid == tokenizer.unk_token_id:
            raise ModelError(f"tokenizer has no {tok!r} token, which the {key} needs")
        ids[key] = tid
    return ids


def _text_config(tokenizer: Any, mrope: bool) -> dict:
    head_dim = TINY_TEXT_HIDDEN // TINY_TEXT_HEADS
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": 10000.0}
    if mrope:  # temporal / height / width sections of the rotary half-dimension
        rope["mrope_section"] = [head_dim // 4, head_dim // 8, head_dim // 2 - head_dim // 4 - head_dim // 8]
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=TINY_TEXT_HIDDEN,
        intermediate_size=TINY_TEXT_HIDDEN * 2,
        num_hidden_layers=TINY_TEXT_LAYERS,
        num_attention_heads=TINY_TEXT_HEADS,
        num_key_value_heads=2,
        max_position_embeddings=TINY_MAX_POSITIONS,
        rope_parameters=rope,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _qwen_token_ids(tokenizer: Any) -> dict[str, int]:
    return _token_ids(
        tokenizer,
        image_token_id="<|image_pad|>",
        video_token_id="<|video_pad|>",
        vision_start_token_id="<|vision_start|>",
        vision_end_token_id="<|vision_end|>",
    )


def _tiny_qwen2_5_vl(tokenizer: Any):
    from transformers import Qwen2_5_VLConfig

    vision = dict(
        depth=TINY_VISION_LAYERS, hidden_size=TINY_VISION_HIDDEN, intermediate_size=TINY_VISION_HIDDEN * 2,
        num_heads=4, patch_size=TINY_PATCH, spatial_merge_size=2, temporal_patch_size=2,
        out_hidden_size=TINY_TEXT_HIDDEN, window_size=TINY_PATCH * 4, fullatt_block_indexes=[1], tokens_per_second=2,
    )
    return Qwen2_5_VLConfig(
        text_config=_text_config(tokenizer, mrope=True), vision_config=vision, tie_word_embeddings=True,
        **_qwen_token_ids(tokenizer),
    )


def _tiny_qwen2_vl(tokenizer: Any):
    from transformers import Qwen2VLConfig

    vision = dict(
        depth=TINY_VISION_LAYERS, embed_dim=TINY_VISION_HIDDEN, hidden_size=TINY_TEXT_HIDDEN, mlp_ratio=2,
        num_heads=4, patch_size=TINY_PATCH, spatial_merge_size=2, temporal_patch_size=2,
    )
    return Qwen2VLConfig(
        text_config=_text_config(tokenizer, mrope=True), vision_config=vision, tie_word_embeddings=True,
        **_qwen_token_ids(tokenizer),
    )


def _tiny_qwen3_vl(tokenizer: Any):
    from transformers import Qwen3VLConfig

    text = _text_config(tokenizer, mrope=True)
    text["head_dim"] = TINY_TEXT_HIDDEN // TINY_TEXT_HEADS
    text["rope_parameters"]["mrope_interleaved"] = True
    vision = dict(
        depth=TINY_VISION_LAYERS, hidden_size=TINY_VISION_HIDDEN, intermediate_size=TINY_VISION_HIDDEN * 2,
        num_heads=4, patch_size=TINY_PATCH, spatial_merge_size=2, temporal_patch_size=2,
        out_hidden_size=TINY_TEXT_HIDDEN, num_position_embeddings=64, deepstack_visual_indexes=[1],
    )
    return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **_qwen_token_ids(tokenizer))


def _tiny_llava_onevision(tokenizer: Any):
    from transformers import LlavaOnevisionConfig

    vision = dict(
        model_type="siglip_vision_model", hidden_size=TINY_VISION_HIDDEN, intermediate_size=TINY_VISION_HIDDEN * 2,
        num_hidden_layers=TINY_VISION_LAYERS, num_attention_heads=4, image_size=TINY_FRAME_SIDE, patch_size=TINY_PATCH,
    )
    text = _text_config(tokenizer, mrope=False)
    text["model_type"] = "qwen2"
    ids = _token_ids(tokenizer, image_token_index="<image>", video_token_index="<video>")
    return LlavaOnevisionConfig(
        vision_config=vision, text_config=text, vision_feature_select_strategy="full", vision_feature_layer=-1,
        image_grid_pinpoints=[[TINY_FRAME_SIDE, TINY_FRAME_SIDE]], tie_word_embeddings=True, **ids,
    )


# ----------------------------------------------------------------------------- tiny processors
def _qwen_video_size() -> dict[str, int]:
    # Qwen's processors count pixels; without this they upsample 56x56 frames to 336x336.
    side = TINY_FRAME_SIDE
    return {"shortest_edge": side * side, "longest_edge": 4 * side * side}


def _tiny_qwen_processor(processor_cls: str, tokenizer: Any):
    import transformers

    from .tokenizer import CHAT_TEMPLATE

    video_cls = "Qwen3VLVideoProcessor" if processor_cls == "Qwen3VLProcessor" else "Qwen2VLVideoProcessor"
    image_cls = "Qwen2VLImageProcessor"
    kw = dict(patch_size=TINY_PATCH, merge_size=2, temporal_patch_size=2, size=_qwen_video_size())
    video = getattr(transformers, video_cls)(**kw)
    image = getattr(transformers, image_cls)(**kw)
    return getattr(transformers, processor_cls)(
        image_processor=image, tokenizer=tokenizer, video_processor=video, chat_template=CHAT_TEMPLATE
    )


def _tiny_llava_processor(tokenizer: Any):
    from transformers import LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor

    from .tokenizer import CHAT_TEMPLATE

    side = {"height": TINY_FRAME_SIDE, "width": TINY_FRAME_SIDE}
    return LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=side, image_grid_pinpoints=[[TINY_FRAME_SIDE] * 2]),
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(size=side),
        num_image_tokens=(TINY_FRAME_SIDE // TINY_PATCH) ** 2,
        vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE.replace("default('<|vision_start|><|video_pad|><|vision_end|>')", "default('<video>')"),
    )


QWEN_PLACEHOLDER = "<|vision_start|><|video_pad|><|vision_end|>"
QWEN_VIDEO_INPUTS = ("pixel_values_videos", "video_grid_thw")

FAMILIES: dict[str, Family] = {
    "qwen2_5_vl": Family(
        "qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor", QWEN_PLACEHOLDER,
        "model.visual", LM_LORA_TARGETS, QWEN_VIDEO_INPUTS, _tiny_qwen2_5_vl,
        lambda tok: _tiny_qwen_processor("Qwen2_5_VLProcessor", tok),
    ),
    "qwen2_vl": Family(
        "qwen2_vl", "Qwen2VLForConditionalGeneration", "Qwen2VLProcessor", QWEN_PLACEHOLDER,
        "model.visual", LM_LORA_TARGETS, QWEN_VIDEO_INPUTS, _tiny_qwen2_vl,
        lambda tok: _tiny_qwen_processor("Qwen2VLProcessor", tok),
    ),
    "qwen3_vl": Family(
        "qwen3_vl", "Qwen3VLForConditionalGeneration", "Qwen3VLProcessor", QWEN_PLACEHOLDER,
        "model.visual", LM_LORA_TARGETS, QWEN_VIDEO_INPUTS, _tiny_qwen3_vl,
        lambda tok: _tiny_qwen_processor("Qwen3VLProcessor", tok),
    ),
    "llava_onevision": Family(
        "llava_onevision", "LlavaOnevisionForConditionalGeneration", "LlavaOnevisionProcessor", "<video>",
        "model.vision_tower", LM_LORA_TARGETS, ("pixel_values_videos",), _tiny_llava_onevision, _tiny_llava_processor,
    ),
}
PRIMARY = "qwen2_5_vl"


def get_family(name: str) -> Family:
    """The registered family for a config ``model_type``; ModelError lists the supported ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ModelError(f"unsupported backbone {name!r}; supported: {', '.join(FAMILIES)}") from None


def family_of(model: Any) -> Family:
    """The family of a loaded model (from its config's model_type)."""
    return get_family(unwrap(model).config.model_type)


def tiny_model(family: str = PRIMARY, tokenizer: Any = None, seed: int = 0):
    """A tiny random model of a real class and its processor: ``(model, processor)``.

    ``tokenizer`` defaults to the shipped one (assets/tokenizer).  The same ``seed``
    gives the same weights.
    """
    import torch

    from . import tokenizer as tokmod

    fam = get_family(family)
    tok = tokenizer if tokenizer is not None else tokmod.load()
    config = fam.tiny_config(tok)
    torch.manual_seed(seed)
    model = fam.model_cls()(config).eval()
    return model, fam.tiny_processor(tok)


# ----------------------------------------------------------------------------- real checkpoints
def attn_implementation() -> str:
    """FlashAttention-2 when it imports and CUDA is there, else PyTorch SDPA."""
    import torch
    from transformers.utils import is_flash_attn_2_available

    return "flash_attention_2" if torch.cuda.is_available() and is_flash_attn_2_available() else "sdpa"


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str):
    """bf16 on GPU, float32 on CPU (CPU bf16 matmuls are slow and lossy)."""
    import torch

    return torch.bfloat16 if str(device).startswith("cuda") else torch.float32


def load_pretrained(name_or_path: str, device: str | None = None, dtype: Any = None, trust_remote_code: bool = False):
    """Load a real checkpoint (hub name or local folder): ``(model, processor, family)``.

    Weights load from safetensors only; ``trust_remote_code`` stays off unless the
    caller sets it, and then only for the processor/config of a registered family.
    """
    from transformers import AutoConfig, AutoProcessor

    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load a model config from {name_or_path!r}: {exc}") from exc
    fam = get_family(config.model_type)
    device = device or default_device()
    dtype = dtype or default_dtype(device)
    try:
        model = fam.model_cls().from_pretrained(
            name_or_path, dtype=dtype, attn_implementation=attn_implementation() if device.startswith("cuda") else "sdpa",
            use_safetensors=True, trust_remote_code=trust_remote_code,
        )
        processor = AutoProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load {fam.name} model from {name_or_path!r}: {exc}") from exc
    return model.to(device).eval(), processor, fam
