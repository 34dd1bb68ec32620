"""Samples + clips -> encoded training examples and padded batches.

Every recipe builds its examples here so that training sees exactly the token
sequences inference builds (``cluenet.prompts``):

    stage 1   prefix(cluenet) + [clues block] + "\\n" + [chain + answer]     tasks E and R
    direct    prefix(direct)  + [answer]
    cot       prefix(cot)     + [chain + answer]
    stage 2   three rows per sample (see ``stage2_rows``)

(brackets: target tokens, loss on them only).

**E and R share one row in stage 1.**  Task R's context is ``prefix + clues block +
"\\n"`` and task E's target is that same clues block, so under the causal mask one
forward over ``prefix + clues + "\\n" + chain + answer`` gives L_E on the clue tokens
and L_R on the chain and answer tokens, exactly as two separate rows would, at half
the compute.  The per-token ``weights`` carry ``loss.extraction_weight`` on clue
tokens, ``loss.reasoning_weight`` on chain tokens and ``reasoning_weight *
answer_weight`` on the answer letter.

**Clips.**  A ``FrameSource`` turns a sample into ``(frames, times)``: ``VideoFrames``
decodes the file (``cluenet.video.sample``); ``ClueWorldFrames`` re-renders a
ClueWorld clip in memory from its (seed, index) -- identical pixels to the mp4
before H.264, and no decoding.  Processor outputs (pixel values, grid, prefix ids)
are computed once per clip and mode and kept in a byte-bounded LRU
(``cluenet.cache.ClipCache``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from cluenet import prompts
from cluenet.backbones import Family
from cluenet.cache import ClipCache
from cluenet.errors import ConfigError, InputError
from cluenet.grammar import render_clue
from cluenet.schema import Clue, Sample, Step
from training.config import LossConfig
from training.grounding import letter_targets

IGNORE_INDEX = prompts.IGNORE_INDEX
VIDEO_TOKEN_TYPE = 2  # Qwen-VL mm_token_type_ids: 0 text, 1 image, 2 video
PROCESSOR_CACHE_BYTES = 2 * 1024**3  # processor outputs kept per dataset (about 800 ClueWorld clips)
MAX_SEQ_TOKENS = 4096  # longer rows are refused: they would not fit the tiny models' positions
TASKS = ("stage1", "direct", "cot")
_CLUEWORLD_ID = re.compile(r"^cw(\d+)-(\d+)$")


# ----------------------------------------------------------------------------- frame sources
class FrameSource(Protocol):
    def __call__(self, sample: Sample) -> tuple[np.ndarray, tuple[float, ...]]: ...


@dataclass(frozen=True)
class VideoFrames:
    """Decode ``sample.video`` with ``cluenet.video.sample`` (``num_frames`` uniform frames)."""

    num_frames: int = 16
    max_side: int = 448

    def __call__(self, sample: Sample) -> tuple[np.ndarray, tuple[float, ...]]:
        from cluenet import video

        clip = video.sample(sample.video, num_frames=self.num_frames, start=sample.start, end=sample.end,
                            max_side=self.max_side)
        return np.asarray(clip.frames), tuple(float(t) for t in clip.times)


def clueworld_seed_index(sample_id: str) -> tuple[int, int]:
    """(seed, index) of a ClueWorld sample id ``cw<seed>-<index>``; InputError for any other id."""
    m = _CLUEWORLD_ID.match(sample_id)
    if m is None:
        raise InputError(f"sample id {sample_id!r} is not a ClueWorld id cw<seed>-<index>")
    return int(m.group(1)), int(m.group(2))


@dataclass(frozen=True)
class ClueWorldFrames:
    """Re-render a ClueWorld clip from its id ``cw<seed>-<index>`` (no video file needed)."""

    config: Any = None  # cluenet.data.clueworld.WorldConfig; None = the generator's default

    def __call__(self, sample: Sample) -> tuple[np.ndarray, tuple[float, ...]]:
        from cluenet.data import clueworld

        seed, index = clueworld_seed_index(sample.id)
        frames, times, regen = clueworld.make_episode(clueworld.clip_rng(seed, index), self.config, sample.id)
        if regen.question != sample.question or regen.options != sample.options:
            raise InputError(f"sample {sample.id}: the re-rendered clip asks {regen.question!r}, the record asks "
                             f"{sample.question!r}; was it generated with another WorldConfig?")
        return frames, times


# ----------------------------------------------------------------------------- examples
@dataclass
class Row:
    """One encoded sequence: ids, labels, per-token loss weights and its clip's vision inputs."""

    input_ids: list[int]
    labels: list[int]
    weights: list[float]
    vision: dict[str, torch.Tensor]
    kind: str = "lm"  # "lm" (loss on labels) or "filter" (hidden states for the filter head)
    clue_spans: list[tuple[int, int]] = field(default_factory=list)  # filter rows: token [start, end) per clue
    clue_labels: list[float] = field(default_factory=list)
    question_span: tuple[int, int] = (0, 0)
    group: str = ""  # loss bucket for metrics: "E", "R", "direct", "cot"
    ground: list[tuple[int, tuple[int, ...]]] = field(default_factory=list)  # (query, video token positions)
    ground_letters: list[tuple[int, tuple[int, ...]]] = field(default_factory=list)  # (query, prompt/chain positions)

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class Prefix:
    """Processor output for one (clip, question, mode): prompt ids + vision tensors."""

    ids: list[int]
    vision: dict[str, torch.Tensor]
    times: tuple[float, ...] = ()  # the clip's frame times (s)


def make_prefix(processor: Any, family: Family, sample: Sample, frames: np.ndarray, times: Sequence[float],
                mode: str, option_style: str = prompts.DEFAULT_OPTION_STYLE) -> Prefix:
    """Run the processor once: prefix ids (video placeholder expanded) and vision inputs."""
    text = prompts.prefix_text(processor, sample.question, sample.options, times, mode, option_style)
    out = family.processor_inputs(processor, text, frames, times)
    vision = {k: v for k, v in out.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
    return Prefix(out["input_ids"][0].tolist(), vision, tuple(float(t) for t in times))


def _weights_for(labels: Sequence[int], answer_positions: Sequence[int], weight: float, answer_weight: float,
                 ) -> list[float]:
    w = [weight if lab != IGNORE_INDEX else 0.0 for lab in labels]
    for p in answer_positions:
        w[p] = weight * answer_weight
    return w


def stage1_row(tokenizer: Any, prefix: Prefix, sample: Sample, loss: LossConfig,
               grounder: Callable[[Sample, Prefix, int], list] | None = None) -> Row:
    """prefix + gold clues (E) + "\\n" + gold chain and answer (R) in one row (see the module docstring);
    ``grounder`` (``training.grounding.ClueGrounder``) adds the clue grounding targets, and with
    ``loss.grounding_letters`` those of the chain's and the answer's letters (``grounding.letter_targets``)."""
    _require_annotation(sample)
    clues_ids = prompts.encode_text(tokenizer, prompts.clues_target(sample.clues))
    nl = prompts.encode_text(tokenizer, "\n")
    r = prompts.encode_pair(tokenizer, [*prefix.ids, *clues_ids, *nl], prompts.reasoning_target(sample.chain, sample.answer))
    labels = list(r.labels)
    n = len(prefix.ids)
    labels[n:n + len(clues_ids)] = clues_ids  # E target: the clues block
    weights = _weights_for(labels, r.answer_positions, loss.reasoning_weight, loss.answer_weight)
    weights[n:n + len(clues_ids)] = [loss.extraction_weight] * len(clues_ids)
    ground = grounder(sample, prefix, n) if grounder is not None else []
    letters = (letter_targets(tokenizer, r.input_ids, n, r.answer_positions, sample.answer,
                              loss.grounding_letter_target == "letter")
               if grounder is not None and loss.grounding_letters else [])
    return _checked(Row(list(r.input_ids), labels, weights, prefix.vision, group="E+R", ground=ground,
                        ground_letters=letters))


def baseline_row(tokenizer: Any, prefix: Prefix, sample: Sample, kind: str, loss: LossConfig) -> Row:
    """``direct``: prefix -> answer; ``cot``: prefix -> chain + answer.  With ``loss.grounding_weight``
    above 0 and ``loss.grounding_letters``, the letters get the grounding targets ClueNet's get."""
    target = prompts.direct_target(sample.answer) if kind == "direct" else prompts.cot_target(sample.chain, sample.answer)
    e = prompts.encode_pair(tokenizer, prefix.ids, target)
    weights = _weights_for(e.labels, e.answer_positions, loss.reasoning_weight, loss.answer_weight)
    letters = (letter_targets(tokenizer, e.input_ids, len(prefix.ids), e.answer_positions, sample.answer,
                              loss.grounding_letter_target == "letter")
               if loss.grounding_weight > 0 and loss.grounding_letters else [])
    return _checked(Row(list(e.input_ids), list(e.labels), weights, prefix.vision, group=kind, ground_letters=letters))


def extraction_row(tokenizer: Any, prefix: Prefix, sample: Sample, weight: float) -> Row:
    """Task E alone: prefix -> gold clues block (stage 2 replay)."""
    e = prompts.encode_pair(tokenizer, prefix.ids, prompts.clues_target(sample.clues))
    return _checked(Row(list(e.input_ids), list(e.labels), _weights_for(e.labels, (), weight, 1.0), prefix.vision,
                        group="E"))


def reasoning_row(tokenizer: Any, prefix: Prefix, clues: Sequence[Clue], chain: Sequence[Step], answer: int,
                  loss: LossConfig) -> Row:
    """Task R: prefix + clues context -> chain + answer."""
    e = prompts.encode_pair(tokenizer, prefix.ids, prompts.reasoning_target(chain, answer), prompts.reasoning_context(clues))
    weights = _weights_for(e.labels, e.answer_positions, loss.reasoning_weight, loss.answer_weight)
    return _checked(Row(list(e.input_ids), list(e.labels), weights, prefix.vision, group="R"))


def filter_row(tokenizer: Any, prefix: Prefix, clues: Sequence[Clue], labels: Sequence[float]) -> Row:
    """prefix + the self-generated clues block; token spans of each clue line for the filter head.

    The spans are the tokens overlapping each clue's line (the rule inference uses on
    generated text), found through the fast tokenizer's character offsets.
    """
    ids, _, lines = clue_line_tokens(tokenizer, clues)
    n = len(prefix.ids)
    spans = [(n + idx[0], n + idx[-1] + 1) if idx else (n, n) for _, idx in lines]
    row = Row([*prefix.ids, *ids], [IGNORE_INDEX] * (n + len(ids)), [0.0] * (n + len(ids)), prefix.vision,
              kind="filter", clue_spans=spans, clue_labels=[float(y) for y in labels],
              question_span=question_span(tokenizer, prefix.ids), group="filter")
    return _checked(row)


def clue_line_tokens(tokenizer: Any, clues: Sequence[Clue]
                     ) -> tuple[list[int], list[tuple[int, int]], list[tuple[int, list[int]]]]:
    """The clues block (``prompts.clues_target``) encoded on its own: token ids, their character
    offsets, and per clue its line's first character and the indices of the tokens overlapping
    the line (through the fast tokenizer's offsets)."""
    text = prompts.clues_target(clues)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    lines, pos = [], text.index("\n") + 1
    for c in clues:
        a, b = pos, pos + len(render_clue(c))
        lines.append((a, [i for i, (s, e) in enumerate(offsets) if e > a and s < b]))
        pos = b + 1
    return ids, offsets, lines


def question_span(tokenizer: Any, ids: Sequence[int]) -> tuple[int, int]:
    """Token [start, end) of question + options: from "\\nQuestion:" after the video to the next <|im_end|>.

    The same positions inference pools h_q over (``ClueNet._question_positions``)."""
    marker = prompts.encode_text(tokenizer, "\nQuestion:")
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    starts = [i for i in range(len(ids) - len(marker) + 1) if list(ids[i:i + len(marker)]) == marker]
    if not starts:
        raise InputError("the prefix has no '\\nQuestion:' line; the chat template dropped the question")
    start = starts[-1]
    end = next((i for i in range(start, len(ids)) if ids[i] == im_end), len(ids))
    return start, end


def _require_annotation(sample: Sample) -> None:
    if not sample.clues or not sample.chain:
        raise InputError(f"sample {sample.id} has {len(sample.clues)} clues and {len(sample.chain)} chain steps; "
                         "stage 1 needs both (annotate it with training.annotate first)")


def _checked(row: Row) -> Row:
    if len(row) > MAX_SEQ_TOKENS:
        raise InputError(f"encoded row is {len(row)} tokens, limit {MAX_SEQ_TOKENS}; use fewer frames or smaller frames")
    return row


# ----------------------------------------------------------------------------- dataset
RowBuilder = Callable[[Any, Callable[[str], Prefix], Sample], list[Row]]


class RowDataset(Dataset):
    """Map-style dataset: item i = the rows ``build(tokenizer, prefix_of, samples[i])`` makes.

    ``prefix_of(mode)`` runs the processor on the sample's clip (cached per sample id
    and mode), with the options lettered in ``option_style``.  A bad clip or record raises
    a ``ClueNetError``, which the Trainer counts and skips.
    """

    def __init__(self, samples: Sequence[Sample], processor: Any, family: Family, frames: FrameSource,
                 build: RowBuilder, cache_bytes: int = PROCESSOR_CACHE_BYTES,
                 option_style: str = prompts.DEFAULT_OPTION_STYLE) -> None:
        self.samples = list(samples)
        self.option_style = prompts.check_option_style(option_style)
        self.processor = processor
        self.family = family
        self.frames = frames
        self.build = build
        self.cache = ClipCache(cache_bytes)

    def __len__(self) -> int:
        return len(self.samples)

    store: "VisionStore | None" = None  # precomputed pixel values (``VisionStore``), used when set

    def prefix(self, sample: Sample, mode: str) -> Prefix:
        if self.store is not None and sample.id in self.store:
            return self.store.prefix(sample, mode, self.option_style)
        key = (sample.id, mode)
        hit = self.cache.get(key)
        if hit is None:
            frames, times = self.frames(sample)
            hit = make_prefix(self.processor, self.family, sample, frames, times, mode, self.option_style)
            self.cache.put(key, hit, size=sum(v.numel() * v.element_size() for v in hit.vision.values()))
        return hit

    def __getitem__(self, index: int) -> list[Row]:
        sample = self.samples[index]
        return self.build(self.processor.tokenizer, lambda mode: self.prefix(sample, mode), sample)


# ----------------------------------------------------------------------------- collate
class Collator:
    """Pads a list of items (each a list of Rows) into one batch dict (right padding)."""

    def __init__(self, pad_id: int, video_token_id: int | None) -> None:
        self.pad_id = pad_id
        self.video_token_id = video_token_id

    def __call__(self, items: list[list[Row]]) -> dict[str, Any]:
        rows = [r for item in items for r in item]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        weights = torch.zeros((len(rows), width), dtype=torch.float32)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r)
            ids[i, :n] = torch.tensor(r.input_ids)
            labels[i, :n] = torch.tensor(r.labels)
            weights[i, :n] = torch.tensor(r.weights)
            mask[i, :n] = 1
        batch: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "labels": labels, "weights": weights}
        batch.update(_stack_vision([r.vision for r in rows]))
        if self.video_token_id is not None and "video_grid_thw" in batch:
            batch["mm_token_type_ids"] = (ids == self.video_token_id).long() * VIDEO_TOKEN_TYPE
        batch["groups"] = [r.group for r in rows]
        for key in ("ground", "ground_letters"):
            if any(getattr(r, key) for r in rows):
                batch[key] = [getattr(r, key) for r in rows]
        batch["filter"] = [(i, r.clue_spans, r.clue_labels, r.question_span) for i, r in enumerate(rows)
                           if r.kind == "filter"]
        return batch


def _stack_vision(visions: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Qwen-VL: patches and grids concatenate along dim 0; LLaVA-OneVision: videos stack as a batch."""
    out: dict[str, torch.Tensor] = {}
    for key in visions[0]:
        parts = [v[key] for v in visions]
        out[key] = torch.cat(parts, dim=0)
    return out


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The keys of a batch the transformers model takes."""
    skip = {"labels", "weights", "groups", "filter", "ground", "ground_letters"}
    return {k: v for k, v in batch.items() if k not in skip}


def token_lengths(dataset: RowDataset) -> list[int]:
    """Tokens per item (all its rows) for length-grouped batches.

    With a ``VisionStore`` only the text is tokenized (no pixels are read); without
    one the processor runs on every clip once (and its outputs enter the cache).
    """
    from tqdm.auto import tqdm

    out = []
    for i, s in enumerate(tqdm(dataset.samples, desc="lengths", disable=None, leave=False)):
        if dataset.store is not None and s.id in dataset.store:
            ids_of = lambda mode, s=s: dataset.store.prefix_ids(s, mode, dataset.option_style)  # noqa: E731
            rows = dataset.build(dataset.processor.tokenizer, ids_of, s)
        else:
            rows = dataset[i]
        out.append(sum(len(r) for r in rows))
    return out


def read_any_samples(path: str | Path) -> list[Sample]:
    """Samples of a project JSONL file (``cluenet.data.jsonl.read_samples``)."""
    from cluenet.data.jsonl import read_samples

    return read_samples(path)


# ----------------------------------------------------------------------------- precomputed vision
class VisionStore:
    """Processor pixel values of every clip, computed once (in parallel) into a memory-mapped file.

    Several runs on one machine (stage 1, stage 2, both baselines) then read the same
    clips without re-rendering or re-processing them; only the prompt text is tokenized
    per item (the video placeholder expanded to the clip's token count, as the
    processor does).  Pixel values are stored as float16 (relative error < 1e-3; the
    processor's fp32 values are rounded) to halve the file.

    Layout: ``<folder>/pixels.f16`` [N, P, D] and ``<folder>/index.json`` (ids, shape,
    the non-pixel vision tensors, which are equal for every clip of a ClueWorld set).
    """

    PIXELS = "pixels.f16"
    INDEX = "index.json"

    def __init__(self, folder: str | Path, processor: Any) -> None:
        import json

        self.folder = Path(folder)
        meta = json.loads((self.folder / self.INDEX).read_text())
        self.row = {sid: i for i, sid in enumerate(meta["ids"])}
        self.shape = tuple(meta["shape"])
        self.extras = {k: torch.tensor(v) for k, v in meta["extras"].items()}
        self.num_tokens = int(meta["num_tokens"])
        self.times = {sid: tuple(t) for sid, t in zip(meta["ids"], meta["times"])}
        self.pixels = np.memmap(self.folder / self.PIXELS, dtype=np.float16, mode="r", shape=self.shape)
        self.processor = processor
        # a store written with one temporal patch size serves a processor with another (same frames)
        self.stored_temporal_patch = int(meta.get("temporal_patch_size", 2))
        self.temporal_patch = int(getattr(getattr(processor, "video_processor", None), "temporal_patch_size",
                                          self.stored_temporal_patch))
        if self.temporal_patch != self.stored_temporal_patch:
            (t, h, w), = self.extras["video_grid_thw"].tolist()
            frames = t * self.stored_temporal_patch
            if frames % self.temporal_patch:
                raise ConfigError(f"vision store {self.folder}: {frames} frames do not split into temporal patches of "
                                  f"{self.temporal_patch}")
            self.extras["video_grid_thw"] = torch.tensor([[frames // self.temporal_patch, h, w]])
            self.num_tokens = self.num_tokens * self.stored_temporal_patch // self.temporal_patch

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self.row

    def _text(self, text: str) -> list[int]:
        tok = self.processor.tokenizer
        vtok = tok.convert_ids_to_tokens(self.processor.video_token_id)
        return prompts.encode_text(tok, text.replace(vtok, vtok * self.num_tokens))

    def prefix_ids(self, sample: Sample, mode: str, option_style: str = prompts.DEFAULT_OPTION_STYLE) -> Prefix:
        """The prefix without its pixels (for lengths)."""
        text = prompts.prefix_text(self.processor, sample.question, sample.options, self.times[sample.id], mode,
                                   option_style)
        return Prefix(self._text(text), {})

    def prefix(self, sample: Sample, mode: str, option_style: str = prompts.DEFAULT_OPTION_STYLE) -> Prefix:
        text = prompts.prefix_text(self.processor, sample.question, sample.options, self.times[sample.id], mode,
                                   option_style)
        return self.encode(sample.id, text)

    def encode(self, sample_id: str, text: str) -> Prefix:
        """Any prompt ``text`` with one video placeholder (chat-templated), over clip ``sample_id``."""
        return Prefix(self._text(text), {"pixel_values_videos": self.pixel_values(sample_id),
                                         **{k: v.clone() for k, v in self.extras.items()}}, self.times[sample_id])

    def pixel_values(self, sample_id: str) -> torch.Tensor:
        """One clip's patches as the processor would give them (regrouped to its temporal patch size)."""
        pix = torch.from_numpy(np.asarray(self.pixels[self.row[sample_id]], dtype=np.float32))
        if self.temporal_patch != self.stored_temporal_patch:
            pix = regroup_temporal(pix, int(self.extras["video_grid_thw"][0, 1] * self.extras["video_grid_thw"][0, 2]),
                                   self.stored_temporal_patch, self.temporal_patch)
        return pix

    @classmethod
    def build(cls, folder: str | Path, samples: Sequence[Sample], processor_fn: Callable[[], Any], family: Family,
              frames: FrameSource, workers: int = 1) -> "VisionStore":
        """Process every sample's clip into ``folder``; ``processor_fn`` builds a processor (picklable)."""
        import json
        import multiprocessing as mp

        from tqdm.auto import tqdm

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        processor = processor_fn()
        first = _process_one(processor, family, frames, samples[0])
        shape = (len(samples), *first[0].shape)
        np.memmap(folder / cls.PIXELS, dtype=np.float16, mode="w+", shape=shape).flush()
        jobs = [(str(folder), shape, processor_fn, family, frames, samples[i::workers], list(range(i, len(samples), workers)))
                for i in range(workers)]
        if workers == 1:
            times = [_store_worker(jobs[0])]
        else:
            global _STORE_JOBS
            _STORE_JOBS = jobs  # fork: workers inherit the jobs (the family's lambdas do not pickle)
            with mp.get_context("fork").Pool(workers) as pool:
                times = list(tqdm(pool.imap(_store_job, range(workers)), total=workers, desc="vision store"))
        by_index = {i: t for part in times for i, t in part}
        index = {"ids": [s.id for s in samples], "shape": list(shape), "num_tokens": first[2],
                 "temporal_patch_size": int(getattr(processor.video_processor, "temporal_patch_size", 2)),
                 "extras": {k: v.tolist() for k, v in first[1].items()},
                 "times": [list(by_index[i]) for i in range(len(samples))]}
        (folder / cls.INDEX).write_text(json.dumps(index))
        return cls(folder, processor)


def regroup_temporal(patches: torch.Tensor, per_group: int, t_from: int, t_to: int, channels: int = 3) -> torch.Tensor:
    """Qwen-VL video patches ``[groups * per_group, channels * t_from * p * p]`` (the processor's
    layout: temporal group, then the patches of one group in merged-grid order; each row channel,
    frame, pixel) regrouped as the same processor with ``temporal_patch_size = t_to`` gives them."""
    groups, dim = patches.shape[0] // per_group, patches.shape[1]
    frames, pp = groups * t_from, dim // (channels * t_from)
    if patches.shape[0] != groups * per_group or dim != channels * t_from * pp or frames % t_to:
        raise ValueError(f"cannot regroup {tuple(patches.shape)} ({per_group} patches, {t_from} frames a group) into "
                         f"groups of {t_to} frames")
    x = patches.reshape(groups, per_group, channels, t_from, pp).permute(1, 2, 0, 3, 4)  # [patch, c, group, t, pp]
    x = x.reshape(per_group, channels, frames // t_to, t_to, pp).permute(2, 0, 1, 3, 4)
    return x.reshape(frames // t_to * per_group, channels * t_to * pp)


def _process_one(processor: Any, family: Family, frames: FrameSource, sample: Sample):
    f, t = frames(sample)
    p = make_prefix(processor, family, sample, f, t, "cluenet")
    extras = {k: v for k, v in p.vision.items() if k != "pixel_values_videos"}
    return p.vision["pixel_values_videos"].numpy(), extras, p.ids.count(processor.video_token_id), t


_STORE_JOBS: list = []


def _store_job(i: int):
    return _store_worker(_STORE_JOBS[i])


def _store_worker(job) -> list[tuple[int, tuple[float, ...]]]:
    folder, shape, processor_fn, family, frames, samples, rows = job
    torch.set_num_threads(1)
    processor = processor_fn()
    mm = np.memmap(Path(folder) / VisionStore.PIXELS, dtype=np.float16, mode="r+", shape=shape)
    out = []
    for s, r in zip(samples, rows):
        pix, _, _, t = _process_one(processor, family, frames, s)
        mm[r] = pix.astype(np.float16)
        out.append((r, t))
    mm.flush()
    return out
