"""The ClueNet pipeline: extract clues, filter them, reason over the kept ones.

Inference runs two passes over one shared prefix (DESIGN.md)::

    prefix  = system prompt + video tokens + frame times + question + lettered options
    pass 1  : prefix -> "<clues> c1 [..] ... </clues>"          (KV cache grows past the prefix)
    filter  : u_i from the hidden states pass 1 already computed (no extra decoding)
    crop    : the KV cache back to the prefix length (DynamicCache.crop), no re-prefill
    pass 2  : cache + "<clues> kept </clues>\\n<chain>" -> "... </chain>\\n<answer>X</answer>"
    answer  : softmax over the option letters' log-likelihoods at the answer position

Decoding is a small greedy loop over ``model(...)`` with the cache, so we see the
last-layer hidden state of every fed token (a hook on the decoder's final norm), count
exactly what is prefilled, and crop the cache between passes.  The opening tag of each
pass (``<clues>``, ``<chain>``, ``<answer>`` for the direct baseline) is written, not
generated, so every pass yields a block to parse even from an untrained model.

Reuse: sampled frames and vision features are cached per clip (``cluenet.cache``); a
second question on the same clip feeds the cached video features to the language
model through transformers' own ``mm_encoder_outputs`` input (the model embeds the
text, scatters the features into the video-pad positions and computes the (m)rope
positions from ``input_ids`` / ``mm_token_type_ids`` / ``video_grid_thw``).  The prefix
KV cache of recent questions is kept too, so ``reason`` / ``refilter`` run pass 2 only.
Not thread-safe: one ClueNet serves one request at a time.

Reading and writing weights (the saved folder, the embedded default model) is
``cluenet.pretrained``; the ``infer`` command line is ``cluenet.cli``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from . import backbones, pretrained, prompts
from .cache import ClipCache, frames_digest
from .errors import InputError, ModelError
from .filter import FilterHead, select, similarity_scores, threshold
from .grammar import ANSWER_CLOSE, ANSWER_OPEN, CHAIN_OPEN, CLUES_CLOSE, CLUES_OPEN, parse, parse_clues
from .schema import LETTERS, Clue, ClipInfo, FilterSettings, ModelInfo, Trace

# ----------------------------------------------------------------------------- limits
MAX_QUESTION_CHARS = 1000
MAX_OPTION_CHARS = 300
MIN_OPTIONS, MAX_OPTIONS = 2, 5
MAX_CLUE_TOKENS = 320  # pass 1 cap (about 12 clue lines)
MAX_CHAIN_TOKENS = 320  # pass 2 / cot cap
MIN_FRAMES, MAX_FRAMES = 2, 64
DEFAULT_NUM_FRAMES = 8
DECODE_MAX_SIDE = 448  # frames are decoded at most this large; processors resize further
PREFIX_STATES = 8  # prefix KV caches kept for reason / refilter (LRU, also bounded in bytes)


@dataclass(frozen=True)
class Event:
    """One step of ``analyze_stream``: ``kind`` is status | clue | scores | step | answer;
    ``trace`` is the partial Trace so far (the full one on the last, "answer", event)."""

    kind: str
    trace: Trace
    message: str = ""


@dataclass
class _Clip:
    frames: np.ndarray
    times: tuple[float, ...]
    info: ClipInfo
    key: str  # file sha256 or frame digest


@dataclass
class _Vision:
    outputs: Any  # the model's video-encoder output (pooler_output [+ deepstack]) for mm_encoder_outputs
    extras: dict  # non-pixel processor outputs the forward needs (video_grid_thw, second_per_grid_ts)
    num_tokens: int  # video placeholder tokens in the prompt


@dataclass
class _Prefix:
    ids: torch.Tensor  # [1, P]
    cache: Any  # DynamicCache holding exactly the prefix after every use
    rope_deltas: Any  # Qwen-VL's position offset of the text after the video
    h_q: torch.Tensor  # [D] mean last-layer state of the question+options tokens
    logits: torch.Tensor  # [V] next-token logits after the prefix
    clip: _Clip


@dataclass
class _Gen:
    ids: list[int] = field(default_factory=list)  # generated (not forced) tokens
    fed: list[int] = field(default_factory=list)  # every token fed after the prefix, forced or generated
    hidden: list[torch.Tensor] = field(default_factory=list)  # last-layer state per fed token
    answer_logits: torch.Tensor | None = None  # logits right after <answer> was fed
    stopped: bool = False  # hit a stop token (vs the token cap)


class _Clock:
    """Per-stage wall time that excludes the time a stream consumer holds an event."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.times[stage] = self.times.get(stage, 0.0) + seconds


class ClueNet:
    """Clue extraction -> adaptive filter -> chain reasoning over one cached prefix.

    Build with ``from_pretrained`` (a checkpoint, a saved folder or the embedded
    default) or ``from_components`` (an in-memory model, for tests and training).
    """

    def __init__(self, model: Any, processor: Any, filter_head: FilterHead | None, info: ModelInfo,
                 num_frames: int = DEFAULT_NUM_FRAMES, cache_bytes: int | None = None,
                 option_style: str = prompts.DEFAULT_OPTION_STYLE):
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.family = backbones.family_of(model)
        self.filter_head = filter_head
        self.info = info
        self.num_frames = num_frames
        self.option_style = prompts.check_option_style(option_style)  # how the prompt letters options
        self.max_clue_tokens = MAX_CLUE_TOKENS  # instance copies so tests / the app can lower the caps
        self.max_chain_tokens = MAX_CHAIN_TOKENS
        self.device = next(model.parameters()).device
        self.cache = ClipCache(cache_bytes) if cache_bytes is not None else ClipCache()
        self._prefix_keys: list[tuple] = []
        self._ids = self._special_ids()
        self._hidden_size = int(backbones.unwrap(model).config.get_text_config().hidden_size)
        if filter_head is not None:
            filter_head.check_hidden(self._hidden_size)
            filter_head.to(self.device)
        self._last_hidden: torch.Tensor | None = None
        self.family.language_model(model).norm.register_forward_hook(self._keep_hidden)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_components(cls, model: Any, processor: Any, filter_head: FilterHead | None = None,
                        name: str = "in-memory", trained_on: str = "", num_frames: int = DEFAULT_NUM_FRAMES,
                        **kw: Any) -> "ClueNet":
        """Wrap an in-memory transformers model + processor (tests, training)."""
        info = pretrained.model_info(model, name, trained_on, filter_head="in-memory" if filter_head is not None else "")
        return cls(model, processor, filter_head, info, num_frames=num_frames, **kw)

    @classmethod
    def from_pretrained(cls, model: str | Path | None = None, adapter: str | None = None,
                        filter_head: str | None = None, device: str | None = None, dtype: Any = None,
                        trust_remote_code: bool = False, option_style: str | None = None) -> "ClueNet":
        """Load a model by hub name or folder; ``None`` means the embedded default.

        The default is ``assets/model/`` when it exists (a trained ClueWorld model), else
        a tiny random Qwen2.5-VL built from ``backbones.tiny_config`` with the shipped
        tokenizer and a fixed seed (``info.trained_on`` then says so).  ``adapter`` is a
        PEFT folder (safetensors); ``filter_head`` a ``FilterHead`` safetensors file
        (default: the folder's ``filter_head.safetensors`` if present).  ``option_style``
        overrides the folder's (``cluenet.json``; default ``letter_first``).  The files
        are read by ``cluenet.pretrained.load``.
        """
        got = pretrained.load(model, adapter, filter_head, device, dtype, trust_remote_code)
        num_frames = got.num_frames if got.num_frames is not None else DEFAULT_NUM_FRAMES
        return cls(got.model, got.processor, got.filter_head, got.info, num_frames=num_frames,
                   option_style=option_style or got.option_style)

    def save(self, folder: str | Path, trained_on: str | None = None) -> Path:
        """Write a folder that ``from_pretrained(folder)`` loads back (layout: ``cluenet.pretrained``);
        ``trained_on`` defaults to this model's ``info.trained_on``."""
        return pretrained.save(folder, self.model, self.processor, self.filter_head, self.family.name,
                               self.info.trained_on if trained_on is None else trained_on, self.num_frames,
                               self.option_style)

    # ------------------------------------------------------------------ public API
    def analyze(self, video: Any, question: str, options: Sequence[str], num_frames: int | None = None,
                filter: FilterSettings | None = None, gold: int | None = None, sample_id: str = "",
                qtype: str = "") -> Trace:
        """Full ClueNet run on one question; returns the Trace (never raises on model output)."""
        last = None
        for last in self.analyze_stream(video, question, options, num_frames, filter, gold, sample_id, qtype):
            pass
        assert last is not None and last.kind == "answer"
        return last.trace

    def analyze_stream(self, video: Any, question: str, options: Sequence[str], num_frames: int | None = None,
                       filter: FilterSettings | None = None, gold: int | None = None, sample_id: str = "",
                       qtype: str = "") -> Iterator[Event]:
        """``analyze`` as a stream of Events (status, clue, scores, step, answer)."""
        options = _check_question(question, options, gold)
        settings = filter or FilterSettings()
        clock = _Clock()
        trace = Trace(clip=ClipInfo(name=""), question=question, options=tuple(options), gold=gold,
                      sample_id=sample_id, qtype=qtype, filter=settings, model=self.info)
        yield from _pause(clock, Event("status", trace, "sampling frames"))
        prefix = self._prefix(video, question, options, num_frames, "cluenet", clock)
        trace = trace.with_(clip=prefix.clip.info)
        yield from _pause(clock, Event("status", trace, "extracting clues"))
        gen, clues, warns = yield from self._pass1(prefix, trace, clock)
        trace = trace.with_(clues=clues, warnings=tuple(warns), raw={"clues": self._text(gen.fed)},
                            tokens={"prefix": int(prefix.ids.shape[1]), "clues": len(gen.ids)})
        t0 = time.perf_counter()
        scores = self._scores(gen, clues, prefix)
        trace = self._apply_filter(trace, scores, settings)
        clock.add("filter", time.perf_counter() - t0)
        yield from _pause(clock, Event("scores", trace, f"kept {len(trace.kept_clues)} of {len(clues)} clues"))
        trace = yield from self._pass2(prefix, trace, clock)
        yield Event("answer", trace.with_(timings={**trace.timings, **clock.times}), "done")

    def reason(self, trace: Trace, kept_ids: Sequence[str]) -> Trace:
        """Re-run pass 2 only, with ``kept_ids`` as the kept clues (no decode, no vision).

        The prefix KV cache of ``trace`` must still be cached (InputError otherwise);
        the returned trace's ``timings`` hold only this re-run's stages (chain, answer)."""
        known = [c.id for c in trace.clues]
        unknown = [k for k in kept_ids if k not in known]
        if unknown:
            raise InputError(f"kept ids {unknown} are not clues of this trace (clues: {known})")
        kept = set(kept_ids)
        trace = trace.with_(clues=tuple(replace(c, kept=c.id in kept) for c in trace.clues))
        prefix = self._stored_prefix(trace)
        clock = _Clock()
        trace = trace.with_(warnings=tuple(w for w in trace.warnings if not w.startswith("pass 2")))
        out = None
        for out in _drain(self._pass2(prefix, trace, clock)):
            pass
        return out.with_(timings=dict(clock.times))

    def refilter(self, trace: Trace, settings: FilterSettings) -> Trace:
        """Apply new filter settings to the trace's stored scores, then ``reason``."""
        scores = [c.score if c.score is not None else 0.0 for c in trace.clues]
        trace = self._apply_filter(trace, scores, settings)
        return self.reason(trace, [c.id for c in trace.clues if c.kept])

    def answer_direct(self, video: Any, question: str, options: Sequence[str], num_frames: int | None = None,
                      gold: int | None = None, sample_id: str = "", qtype: str = "") -> Trace:
        """Baseline ``direct``: prefix -> <answer>X</answer> (one forced step)."""
        return self._baseline("direct", video, question, options, num_frames, gold, sample_id, qtype)

    def answer_cot(self, video: Any, question: str, options: Sequence[str], num_frames: int | None = None,
                   gold: int | None = None, sample_id: str = "", qtype: str = "") -> Trace:
        """Baseline ``cot``: prefix -> free <chain> + <answer>, no clues."""
        return self._baseline("cot", video, question, options, num_frames, gold, sample_id, qtype)

    # ------------------------------------------------------------------ passes
    def _pass1(self, prefix: _Prefix, trace: Trace, clock: _Clock):
        """Generate the clues block; yields a "clue" event per finished clue line."""
        t0 = time.perf_counter()
        self._restore(prefix)
        logits = self._feed([self._ids["clues_open"]], prefix, gen := _Gen())
        shown = 0
        for _ in self._generate(logits, prefix, gen, {self._ids["clues_close"], *self._ids["eos"]}, self.max_clue_tokens):
            if self._text(gen.ids[-1:]).endswith("\n"):
                clues = parse(self._text(gen.fed), len(trace.options), expect=("clues",)).clues
                if len(clues) > shown:
                    shown = len(clues)
                    clock.add("clues", time.perf_counter() - t0)
                    yield from _pause(clock, Event("clue", trace.with_(clues=clues), f"clue {clues[-1].id}"))
                    t0 = time.perf_counter()
        parsed = parse(self._text(gen.fed), len(trace.options), expect=("clues",))
        warns = list(parsed.warnings)
        if not gen.stopped:
            warns.append(f"pass 1 stopped at the {self.max_clue_tokens}-token cap before {CLUES_CLOSE}")
        clock.add("clues", time.perf_counter() - t0)
        return gen, parsed.clues, warns

    def _pass2(self, prefix: _Prefix, trace: Trace, clock: _Clock):
        """Continue the prefix cache with the kept clues; generate chain and answer."""
        t0 = time.perf_counter()
        kept = trace.kept_clues
        context = prompts.encode_text(self.tokenizer, prompts.reasoning_context(kept))
        trace = yield from self._reason_from(prefix, trace, context + [self._ids["chain_open"]], t0, clock,
                                             known_ids=[c.id for c in kept])
        return trace

    def _reason_from(self, prefix: _Prefix, trace: Trace, forced: list[int], t0: float, clock: _Clock,
                     known_ids: Sequence[str] | None):
        """Shared by pass 2 and the cot baseline: feed ``forced``, generate to </answer>, score options."""
        self._restore(prefix)
        gen = _Gen()
        logits = self._feed(forced, prefix, gen)
        steps_shown = 0
        stops = {self._ids["answer_close"], *self._ids["eos"]}
        for _ in self._generate(logits, prefix, gen, stops, self.max_chain_tokens):
            if self._text(gen.ids[-1:]).endswith("\n"):
                chain = parse(self._text(gen.fed), len(trace.options), known_ids, expect=("chain",)).chain
                if len(chain) > steps_shown and self._text(gen.fed).count("\n") > 0:
                    steps_shown = len(chain)
                    clock.add("chain", time.perf_counter() - t0)
                    yield from _pause(clock, Event("step", trace.with_(chain=chain), f"step {len(chain)}"))
                    t0 = time.perf_counter()
        clock.add("chain", time.perf_counter() - t0)
        context_len = len(forced)
        text = self._text(gen.fed)
        t1 = time.perf_counter()
        probs, forced_answer = self._option_probs(gen, prefix, len(trace.options))
        clock.add("answer", time.perf_counter() - t1)
        parsed = parse(text, len(trace.options), known_ids, expect=("chain", "answer"))
        warns = [f"pass 2: {w}" for w in parsed.warnings]
        if not gen.stopped:
            warns.append(f"pass 2 stopped at the {self.max_chain_tokens}-token cap before {ANSWER_CLOSE}")
        if forced_answer:
            warns.append(f"pass 2: no {ANSWER_OPEN} generated; option probabilities read after a forced {ANSWER_OPEN}")
        answer = int(np.argmax(probs))
        if parsed.answer is not None and parsed.answer != answer:
            warns.append(f"generated answer {LETTERS[parsed.answer]} disagrees with the most likely option {LETTERS[answer]}")
        self._crop(prefix)
        return trace.with_(
            chain=parsed.chain, answer=answer, generated_answer=parsed.answer, option_probs=tuple(probs),
            warnings=tuple(trace.warnings) + tuple(warns),
            raw={**trace.raw, "reasoning": text},
            tokens={**trace.tokens, "context": context_len, "chain": len(gen.ids)},
        )

    def _baseline(self, mode: str, video: Any, question: str, options: Sequence[str], num_frames: int | None,
                  gold: int | None, sample_id: str, qtype: str) -> Trace:
        options = _check_question(question, options, gold)
        clock = _Clock()
        prefix = self._prefix(video, question, options, num_frames, mode, clock)
        trace = Trace(clip=prefix.clip.info, question=question, options=tuple(options), gold=gold, sample_id=sample_id,
                      qtype=qtype, model=replace(self.info, mode=mode), tokens={"prefix": int(prefix.ids.shape[1])})
        if mode == "cot":
            gen = self._reason_from(prefix, trace, [self._ids["chain_open"]], time.perf_counter(), clock, None)
            out = None
            for out in _drain(gen):
                pass
            trace = out
        else:
            trace = self._direct(prefix, trace, clock)
        return trace.with_(timings={**trace.timings, **clock.times})

    def _direct(self, prefix: _Prefix, trace: Trace, clock: _Clock) -> Trace:
        t0 = time.perf_counter()
        self._restore(prefix)
        gen = _Gen()
        logits = self._feed([self._ids["answer_open"]], prefix, gen)
        probs = self._letter_probs(logits, len(trace.options))
        greedy = int(logits.argmax())
        letters = self._ids["letters"][: len(trace.options)]
        generated = letters.index(greedy) if greedy in letters else None
        answer = int(np.argmax(probs))
        warns = []
        if generated is None:
            warns.append(f"direct: the most likely next token {self._text([greedy])!r} is not an option letter")
        elif generated != answer:
            warns.append(f"generated answer {LETTERS[generated]} disagrees with the most likely option {LETTERS[answer]}")
        self._crop(prefix)
        clock.add("answer", time.perf_counter() - t0)
        return trace.with_(answer=answer, generated_answer=generated, option_probs=tuple(probs), warnings=tuple(warns),
                           raw={"answer": ANSWER_OPEN + self._text([greedy])}, tokens={**trace.tokens, "answer": 1})

    # ------------------------------------------------------------------ prefix and clip
    def _prefix(self, video: Any, question: str, options: Sequence[str], num_frames: int | None, mode: str,
                clock: _Clock) -> _Prefix:
        """Prefill the prefix (reusing cached frames, vision features and prefix states)."""
        n = _check_frames(num_frames if num_frames is not None else self.num_frames)
        t0 = time.perf_counter()
        clip = self._clip(video, n)
        clock.add("decode", time.perf_counter() - t0)
        key = ("prefix", clip.key, clip.times, question, tuple(options), mode, self.option_style)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        text = prompts.prefix_text(self.processor, question, options, clip.times, mode, self.option_style)
        t0 = time.perf_counter()
        vision, inputs = self._vision(clip, text)
        clock.add("vision", time.perf_counter() - t0)
        t0 = time.perf_counter()
        prefix = self._prefill(clip, vision, inputs, question, options)
        clock.add("prefill", time.perf_counter() - t0)
        self.cache.put(key, prefix, size=_prefix_bytes(prefix))
        return prefix

    def _clip(self, video: Any, num_frames: int) -> _Clip:
        if isinstance(video, (str, Path)):
            from . import video as vid

            sha = vid.file_sha256(video)
            key = ("clip", sha, num_frames, DECODE_MAX_SIDE)
            hit = self.cache.get(key)
            if hit is not None:
                return hit
            sampled = vid.sample(video, num_frames=num_frames, max_side=DECODE_MAX_SIDE)
            clip = _clip_of(sampled, Path(video).name, sha)
            self.cache.put(key, clip)
            return clip
        if hasattr(video, "frames") and hasattr(video, "times"):
            return _clip_of(video, str(getattr(video, "name", "") or "clip"), None)
        raise InputError(f"video must be a file path or a sampled Clip, got {type(video).__name__}")

    def _vision(self, clip: _Clip, text: str) -> tuple[_Vision, dict]:
        """Vision features of the clip (cached) and the prefix's model inputs."""
        key = ("vision", clip.key, clip.times, id(self.model))
        vision = self.cache.get(key)
        if vision is None:
            inputs = self.family.processor_inputs(self.processor, text, clip.frames, clip.times)
            vision = self._encode_video(inputs)
            self.cache.put(key, vision)
            inputs = {k: v for k, v in inputs.items() if k not in self.family.video_feature_inputs or k == "video_grid_thw"}
            return vision, inputs
        return vision, self._text_inputs(text, vision)

    @torch.no_grad()
    def _encode_video(self, inputs: dict) -> _Vision:
        inner = backbones.unwrap(self.model).model
        feats_in = {k: inputs[k].to(self.device) for k in self.family.video_feature_inputs}
        dtype = next(self.family.vision_module(self.model).parameters()).dtype
        feats_in["pixel_values_videos"] = feats_in["pixel_values_videos"].to(dtype)
        out = inner.get_video_features(**feats_in, return_dict=True)
        keep = {"pooler_output": out.pooler_output}
        if getattr(out, "deepstack_features", None) is not None:
            keep["deepstack_features"] = out.deepstack_features
        extras = {k: v for k, v in inputs.items() if k in ("video_grid_thw", "second_per_grid_ts")}
        num = int((inputs["input_ids"] == self._ids["video"]).sum())
        return _Vision(type(out)(**keep), extras, num)

    def _text_inputs(self, text: str, vision: _Vision) -> dict:
        """Prefix inputs for a cached clip: expand the video placeholder ourselves, as the processor does."""
        vtok = self.tokenizer.convert_ids_to_tokens(self._ids["video"])
        if text.count(vtok) != 1:
            raise ModelError(f"the chat template wrote {text.count(vtok)} video placeholders, expected 1")
        enc = self.tokenizer(text.replace(vtok, vtok * vision.num_tokens), add_special_tokens=False, return_tensors="pt")
        inputs = dict(enc)
        if "second_per_grid_ts" in vision.extras or "video_grid_thw" in vision.extras:  # Qwen-VL wants token types
            inputs["mm_token_type_ids"] = (enc["input_ids"] == self._ids["video"]).long() * 2
        return {**inputs, **vision.extras}

    @torch.no_grad()
    def _prefill(self, clip: _Clip, vision: _Vision, inputs: dict, question: str, options: Sequence[str]) -> _Prefix:
        from transformers import DynamicCache

        ids = inputs["input_ids"].to(self.device)
        extra = {k: (torch.as_tensor(v).to(self.device) if not isinstance(v, torch.Tensor) else v.to(self.device))
                 for k, v in {**vision.extras, **inputs}.items() if k not in ("input_ids", "attention_mask")}
        cache = DynamicCache()
        out = self.model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1,
                         mm_encoder_outputs={"video": vision.outputs}, **extra)
        hidden = self._last_hidden[0]
        span = self._question_positions(ids[0])
        inner = backbones.unwrap(self.model).model
        return _Prefix(ids, out.cache if getattr(out, "cache", None) is not None else cache,
                       getattr(inner, "rope_deltas", None), hidden[span].mean(0), out.logits[0, -1].float(), clip)

    def _question_positions(self, ids: torch.Tensor) -> slice:
        """Token positions of question + options: the user turn's text after the frame-times line."""
        im_end = (ids == self._ids["im_end"]).nonzero().flatten().tolist()
        video = (ids == self._ids["video"]).nonzero().flatten().tolist()
        end = next((e for e in im_end if video and e > video[-1]), len(ids))
        newline_after_times = self._ids["question"]
        start = next((i for i in range(video[-1] + 1 if video else 0, end)
                      if ids[i].item() == newline_after_times[0]
                      and ids[i:i + len(newline_after_times)].tolist() == newline_after_times), None)
        return slice(start if start is not None else (video[-1] + 1 if video else 0), end)

    def _stored_prefix(self, trace: Trace) -> _Prefix:
        key = ("prefix", trace.clip.sha256 or None, trace.clip.frame_times, trace.question, tuple(trace.options),
               "cluenet", self.option_style)
        for k in self._candidate_keys(key):
            hit = self.cache.get(k)
            if hit is not None:
                return hit
        raise InputError("the prefix of this trace is no longer cached (or it came from another model); "
                         "run analyze again")

    def _candidate_keys(self, key: tuple) -> list[tuple]:
        # clips given as arrays are keyed by frame digest, not file sha: match on the rest of the key
        return [k for k in self.cache.keys() if isinstance(k, tuple) and k[0] == "prefix"
                and k[2] == key[2] and k[3:] == key[3:] and (key[1] is None or k[1] == key[1])]

    # ------------------------------------------------------------------ decoding
    def _keep_hidden(self, module, args, output) -> None:
        self._last_hidden = output[0] if isinstance(output, tuple) else output

    @torch.no_grad()
    def _feed(self, ids: list[int], prefix: _Prefix, gen: _Gen) -> torch.Tensor:
        """Run ``ids`` through the model on the cache; returns next-token logits [V]."""
        x = torch.tensor([ids], device=self.device)
        out = self.model(input_ids=x, cache=prefix.cache, use_cache=True, logits_to_keep=1)
        gen.fed.extend(ids)
        gen.hidden.extend(self._last_hidden[0].float())
        logits = out.logits[0, -1].float()
        if ids[-1] == self._ids["answer_open"]:
            gen.answer_logits = logits
        return logits

    def _generate(self, logits: torch.Tensor, prefix: _Prefix, gen: _Gen, stops: set[int], cap: int):
        """Greedy decoding; yields after each generated token (the caller may stream)."""
        for _ in range(cap):
            nxt = int(logits.argmax())
            gen.ids.append(nxt)
            if nxt in stops:
                gen.fed.append(nxt)  # part of the text, not fed: nothing follows it
                gen.stopped = True
                yield nxt
                return
            logits = self._feed([nxt], prefix, gen)
            yield nxt

    def _option_probs(self, gen: _Gen, prefix: _Prefix, k: int) -> tuple[list[float], bool]:
        """Softmax over option-letter log-likelihoods at the answer position (forcing <answer> if needed)."""
        if gen.answer_logits is not None:
            return self._letter_probs(gen.answer_logits, k), False
        if gen.stopped:
            gen.fed.pop()  # the stop token was never fed: the cache ends before it
        text = self._text(gen.fed)
        forced = ([] if text.endswith("\n") else prompts.encode_text(self.tokenizer, "\n")) + [self._ids["answer_open"]]
        logits = self._feed(forced, prefix, gen)
        return self._letter_probs(logits, k), True

    def _letter_probs(self, logits: torch.Tensor, k: int) -> list[float]:
        logp = torch.log_softmax(logits.float(), dim=-1)[self._ids["letters"][:k]]
        return [float(p) for p in torch.softmax(logp, dim=-1).cpu()]

    def _restore(self, prefix: _Prefix) -> None:
        """Make the model continue this prefix: cache at prefix length, its rope offset."""
        self._crop(prefix)
        inner = backbones.unwrap(self.model).model
        if hasattr(inner, "rope_deltas"):
            inner.rope_deltas = prefix.rope_deltas

    @staticmethod
    def _crop(prefix: _Prefix) -> None:
        extra = prefix.cache.get_seq_length() - prefix.ids.shape[1]
        if extra > 0:
            prefix.cache.crop(-extra)

    def _text(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    # ------------------------------------------------------------------ filter
    def _scores(self, gen: _Gen, clues: Sequence[Clue], prefix: _Prefix) -> list[float]:
        """u_i per clue from h_ci (mean state over the clue line's tokens) and h_q."""
        if not clues:
            return []
        spans = self._clue_token_spans(gen, clues)
        h = torch.stack([torch.stack(gen.hidden[a:b]).mean(0) if b > a else prefix.h_q * 0 for a, b in spans])
        if self.filter_head is not None:
            return self.filter_head.score(h.to(self.device), prefix.h_q)
        return similarity_scores(h, prefix.h_q)

    def _clue_token_spans(self, gen: _Gen, clues: Sequence[Clue]) -> list[tuple[int, int]]:
        """[start, end) indices into ``gen.fed`` / ``gen.hidden`` of each clue's line."""
        ends, text = [], ""
        for i in range(len(gen.hidden)):  # char end of each fed token (decode handles multi-byte pieces)
            text = self._text(gen.fed[: i + 1])
            ends.append(len(text))
        lines, pos = {}, 0
        for line in text.split("\n"):
            found = parse_clues(line.replace(CLUES_OPEN, ""), [])
            if found and found[0].id not in lines:
                lines[found[0].id] = (pos, pos + len(line))
            pos += len(line) + 1
        spans = []
        for c in clues:
            a, b = lines.get(c.id, (0, 0))
            idx = [i for i, e in enumerate(ends) if e > a and (ends[i - 1] if i else 0) < b]
            spans.append((idx[0], idx[-1] + 1) if idx else (0, 0))
        return spans

    @staticmethod
    def _apply_filter(trace: Trace, scores: Sequence[float], settings: FilterSettings) -> Trace:
        mask = select(scores, settings)
        clues = tuple(replace(c, score=float(s), kept=bool(k)) for c, s, k in zip(trace.clues, scores, mask))
        return trace.with_(clues=clues, filter=settings, threshold=threshold(scores, settings))

    # ------------------------------------------------------------------ ids
    def _special_ids(self) -> dict[str, Any]:
        tok = self.tokenizer

        def one(text: str) -> int:
            ids = prompts.encode_text(tok, text)
            if len(ids) != 1:
                raise ModelError(f"the tokenizer splits {text!r} into {len(ids)} tokens; ClueNet needs 1")
            return ids[0]

        eos = {tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id}
        return {
            "clues_open": one(CLUES_OPEN), "clues_close": one(CLUES_CLOSE), "chain_open": one(CHAIN_OPEN),
            "answer_open": one(ANSWER_OPEN), "answer_close": one(ANSWER_CLOSE),
            "letters": [one(x) for x in LETTERS[:MAX_OPTIONS]],
            "eos": {i for i in eos if i is not None}, "im_end": tok.convert_tokens_to_ids("<|im_end|>"),
            "video": self.processor.video_token_id,
            "question": prompts.encode_text(tok, "\nQuestion:"),
        }


# ----------------------------------------------------------------------------- helpers
def _pause(clock: _Clock, event: Event):
    """Yield an event.  Stages are timed in windows that close before each yield, so the
    time a stream consumer holds an event is not charged to any stage."""
    yield event


def _drain(gen):
    """Run a pass generator to its return value, dropping its events."""
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        yield stop.value


def _check_question(question: str, options: Sequence[str], gold: int | None) -> list[str]:
    if not isinstance(question, str) or not question.strip():
        raise InputError("question is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise InputError(f"question is {len(question)} characters, limit {MAX_QUESTION_CHARS}")
    options = [str(o) for o in options]
    if not MIN_OPTIONS <= len(options) <= MAX_OPTIONS:
        raise InputError(f"got {len(options)} options, need {MIN_OPTIONS} to {MAX_OPTIONS}")
    for i, o in enumerate(options):
        if not o.strip():
            raise InputError(f"option {LETTERS[i]} is empty")
        if len(o) > MAX_OPTION_CHARS:
            raise InputError(f"option {LETTERS[i]} is {len(o)} characters, limit {MAX_OPTION_CHARS}")
    norm = [" ".join(o.lower().split()) for o in options]
    dups = sorted({LETTERS[i] for i, o in enumerate(norm) if norm.count(o) > 1})
    if dups:
        raise InputError(f"options {', '.join(dups)} are duplicates")
    if gold is not None and not 0 <= gold < len(options):
        raise InputError(f"gold answer index {gold} is outside the {len(options)} options")
    return options


def _check_frames(n: int) -> int:
    if not MIN_FRAMES <= int(n) <= MAX_FRAMES:
        raise InputError(f"num_frames is {n}, must be {MIN_FRAMES} to {MAX_FRAMES}")
    return int(n)


def _clip_of(sampled: Any, name: str, sha: str | None) -> _Clip:
    frames = np.asarray(sampled.frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise InputError(f"clip frames must be [T, H, W, 3], got shape {tuple(frames.shape)}")
    times = tuple(float(t) for t in sampled.times)
    if len(times) != len(frames):
        raise InputError(f"clip has {len(frames)} frames but {len(times)} timestamps")
    probe = getattr(sampled, "info", None)
    info = ClipInfo(
        name=name, sha256=sha or "", duration=float(getattr(probe, "duration", 0.0) or (times[-1] if times else 0.0)),
        fps=float(getattr(probe, "fps", 0.0) or 0.0), width=int(getattr(probe, "width", 0) or frames.shape[2]),
        height=int(getattr(probe, "height", 0) or frames.shape[1]), frame_times=times,
    )
    return _Clip(frames, times, info, sha or frames_digest(frames))


def _prefix_bytes(prefix: _Prefix) -> int:
    layers = getattr(prefix.cache, "layers", [])
    kv = sum(int(l.keys.numel() * l.keys.element_size() * 2) for l in layers if getattr(l, "keys", None) is not None)
    return kv + int(prefix.logits.numel() * 4)
