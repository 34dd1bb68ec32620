"""Clue grounding: supervise where the language model looks while it writes a clue.

A clue is a statement about a time span of the clip ("c2 [2.5-3.0s] the red diamond enters
from the left"), and the annotation says which video tokens show it: the tokens of the temporal
patches inside the span and, where the source knows it (ClueWorld's renderer,
``clueworld.clue_cells``), the cells of the grid its objects are in.  Stage 1 can then supervise
task E twice: the clue's words (the usual next-token loss) and, for a few chosen attention
heads, *where* each of those words is read from: every token of the clue line should put its
attention mass on the clue's video tokens.  The loss is ``-log`` of that mass, averaged over
the clue tokens and the chosen heads (``loss.grounding_weight`` x that is added to stage 1's loss;
0 turns it off, the default).  Inference is unchanged: the heads just learned where to look.

Why (docs/default-model-history.md): the small from-scratch model's clues came from the question and
the options, not from the clip.  Its vision tokens hold the clip's facts (a linear probe reads
them), but the language model's lookup into them forms late and by chance, after a plateau in
which nothing tells a head which of a few hundred tokens holds the answer.  This loss removes that
plateau: with the whole-clip tower (``model.sizes``) and heads 1:0 and 2:0, ``python -m
training.diagnose tokens ... --grounding-weight 1`` measured a mass of 0.40 on the training batch
after 100 steps, 0.72 after 300 and 0.81 after 500 (0.001 at the start).  Looking at the right
token is not yet reading it: in that run (from stage 0b's language model) the words read from the
clip stayed near where they were without the loss; from the seeded init they formed (clue colours
0.84, the object hit 0.94-1.0 after 600 steps; docs/default-model-history.md).

``loss.grounding_letters`` adds the decisive letters (``letter_targets``): the chain's closing
letter should look at the right option in the prompt, the answer's letter at that and at the
chain's.  Measured (docs/default-model-history.md): the answer's letter learns it at once; the chain's
letter did not find its option within 1,000 steps, its heads spread evenly over the five options.

``AttentionTap`` reads the chosen heads without asking the model for its attention maps
(``output_attentions`` needs eager attention for every layer and head, about twice the step time
of this model in a scratch comparison): a forward pre-hook keeps each tapped layer's input and
rotary embedding, and the loss recomputes the queries and keys of the chosen heads only, at the
clue tokens only.  The tap works for any text model whose attention layers follow the Llama layout
of transformers (``q_proj`` / ``k_proj``, ``head_dim``, ``num_key_value_groups``, ``scaling``,
``position_embeddings``); the targets (``ClueGrounder``) need a Qwen-VL video grid.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from cluenet.errors import ConfigError
from cluenet.schema import Clue


@dataclass(frozen=True)
class VideoLayout:
    """Where a row's video tokens are: their positions in the row (in the processor's order:
    temporal patch, then merged rows, then merged columns), the merged grid per temporal patch,
    and the frame times of each temporal patch."""

    positions: tuple[int, ...]
    grid: tuple[int, int, int]  # temporal patches, merged rows, merged columns
    patch_times: tuple[tuple[float, ...], ...]

    @classmethod
    def of(cls, ids: Sequence[int], video_token_id: int, grid_thw: Sequence[int], merge: int,
           times: Sequence[float]) -> "VideoLayout":
        t, h, w = (int(v) for v in grid_thw)
        positions = tuple(i for i, tok in enumerate(ids) if tok == video_token_id)
        grid = (t, h // merge, w // merge)
        if len(positions) != grid[0] * grid[1] * grid[2]:
            raise ValueError(f"{len(positions)} video tokens in the row, the grid {tuple(grid_thw)} / merge {merge} "
                             f"says {grid[0] * grid[1] * grid[2]}")
        if not times or len(times) % t:
            raise ValueError(f"{len(times)} frame times cannot split into {t} temporal patches")
        per = len(times) // t
        return cls(positions, grid, tuple(tuple(times[k * per:(k + 1) * per]) for k in range(t)))

    def tokens(self, start: float, end: float, cells: Sequence[int] = (), cells_per_side: int = 0) -> list[int]:
        """Row positions of the video tokens showing [start, end) s: every temporal patch with a
        frame inside the span (the patch nearest to it when none is), and within each patch the
        tokens covering ``cells`` of a ``cells_per_side`` square grid (all tokens when not given)."""
        t, gh, gw = self.grid
        inside = [k for k, ts in enumerate(self.patch_times) if any(start <= x < end for x in ts)]
        if not inside:
            mid = (start + end) / 2
            inside = [min(range(t), key=lambda k: min(abs(x - mid) for x in self.patch_times[k]))]
        if cells and cells_per_side and gh % cells_per_side == 0 and gw % cells_per_side == 0:
            sh, sw = gh // cells_per_side, gw // cells_per_side
            spots = sorted({(r * sh + dr) * gw + (c * sw + dc) for cell in cells
                            for r, c in [divmod(cell, cells_per_side)] for dr in range(sh) for dc in range(sw)})
        else:
            spots = list(range(gh * gw))
        return [self.positions[k * gh * gw + s] for k in inside for s in spots]


def clue_line_targets(tokenizer: Any, clues: Sequence[Clue], block_start: int, layout: VideoLayout,
                      cells: Sequence[tuple[Sequence[int], Sequence[int]]] | None = None, cells_per_side: int = 0,
                      ) -> list[tuple[int, tuple[int, ...]]]:
    """(query position, target positions) for every token of every clue line of a clues block.

    ``block_start`` is the row position of the block's first token (``prompts.clues_target``
    text, encoded on its own).  The query of a token is the position before it (the one that
    predicts it).  ``cells`` (``clueworld.clue_cells``: per clue its subject's and the other
    object's cells) narrows the targets within the span: the words after " hits " look at the
    object hit, the rest at the subject.
    """
    from cluenet.grammar import render_clue
    from training.data import clue_line_tokens

    _, offsets, lines = clue_line_tokens(tokenizer, clues)
    out: list[tuple[int, tuple[int, ...]]] = []
    for k, (clue, (a, idx)) in enumerate(zip(clues, lines)):
        subject, other = (cells[k] if cells is not None else ((), ()))
        near = tuple(layout.tokens(clue.start, clue.end, subject, cells_per_side))
        far = tuple(layout.tokens(clue.start, clue.end, other, cells_per_side)) if other else near
        hit = render_clue(clue).find(" hits ")
        after = a + hit + len(" hits ") if hit >= 0 else None
        out += [(block_start + i - 1, far if after is not None and offsets[i][0] >= after else near) for i in idx]
    return out


def letter_targets(tokenizer: Any, ids: Sequence[int], prompt_len: int, letter_positions: Sequence[int],
                   answer: int, letter_only: bool = False) -> list[tuple[int, tuple[int, ...]]]:
    """(query position, target positions) for the decisive letters of a row (``loss.grounding_letters``).

    ``letter_positions`` are the target's letters in order (``prompts.encode_pair``'s
    ``answer_positions``: the chain's closing letter, if any, then the answer's).  The first looks
    at the right option in the prompt (the line of the letter's last occurrence in
    ``ids[:prompt_len]``): its letter and the words that set it apart, those found on at most two
    lines of the prompt (the option and the question), since the chain has just restated them.
    Words every option shares ("because it hit the") are left out: attending to them finds every
    option equally.  Each later letter looks at those and at the letters before it, which it
    copies.  Empty when the prompt does not show the letter as one token.

    ``letter_only`` (``loss.grounding_letter_target="letter"``): the first letter looks at the
    option's letter alone.  For an induction head (``loss.copy_heads``) that is the token after the
    option's last word, the one it copies; the option's words are a shortcut it must not take
    (the same word as the query, but nothing to copy there)."""
    from collections import Counter

    from cluenet.prompts import LETTERS, encode_text

    pieces = [encode_text(tokenizer, t) for t in (LETTERS[answer], " " + LETTERS[answer])]
    want = {ids_[0] for ids_ in pieces if len(ids_) == 1}
    shown = [p for p in range(prompt_len) if ids[p] in want]
    if not shown:
        return []
    lines = _lines(tokenizer, ids, prompt_len)
    on_lines = Counter(t for line in lines for t in {ids[p] for p in line})
    line = next(line for line in lines if shown[-1] in line)
    out, sources = [], [p for p in line if p == shown[-1] or (on_lines[ids[p]] <= 2 and not letter_only)]
    for p in letter_positions:
        out.append((p - 1, tuple(sources)))
        sources = [*sources, p]
    return out


def _lines(tokenizer: Any, ids: Sequence[int], end: int) -> list[range]:
    """The positions of ``ids[:end]`` split at newline tokens (which belong to no line)."""
    out, start = [], 0
    for i in range(end):
        if "\n" in tokenizer.decode([ids[i]]):
            out.append(range(start, i))
            start = i + 1
    out.append(range(start, end))
    return [r for r in out if len(r)]


def parse_heads(text: str) -> list[tuple[int, int]]:
    """``"1:0,2:0"`` -> [(1, 0), (2, 0)]: (layer, head) pairs of ``loss.grounding_heads``."""
    heads = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            layer, head = (int(v) for v in part.split(":"))
        except ValueError:
            raise ConfigError(f"grounding_heads wants 'layer:head' pairs separated by commas, got {text!r}") from None
        if layer < 0 or head < 0:
            raise ConfigError(f"grounding_heads: layer and head are indices from 0, got {part!r}")
        heads.append((layer, head))
    if not heads:
        raise ConfigError("grounding_heads names no head; give e.g. '1:0,2:0' or set grounding_weight to 0")
    return heads


def text_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder layers of the language model inside a (possibly PEFT-wrapped) VLM."""
    for name, module in model.named_modules():
        if name.endswith("language_model.layers") or name.endswith("text_model.layers"):
            return module
    for name, module in model.named_modules():
        if name.endswith(".layers") and isinstance(module, torch.nn.ModuleList) and hasattr(module[0], "self_attn"):
            return module
    raise ConfigError(f"{type(model).__name__}: no decoder layers with self_attn found for the grounding loss")


class AttentionTap:
    """Keeps the inputs of chosen attention layers during a forward, to recompute chosen heads."""

    def __init__(self, model: torch.nn.Module, heads: Sequence[tuple[int, int]]) -> None:
        layers = text_layers(model)
        for layer, head in heads:
            if layer >= len(layers):
                raise ConfigError(f"grounding head {layer}:{head}: the language model has {len(layers)} layers")
            n = layers[layer].self_attn.config.num_attention_heads
            if head >= n:
                raise ConfigError(f"grounding head {layer}:{head}: layer {layer} has {n} heads")
        self.heads = list(heads)
        self.seen: dict[int, tuple[torch.nn.Module, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]] = {}
        self.handles = [layers[layer].self_attn.register_forward_pre_hook(self._keeper(layer), with_kwargs=True)
                        for layer in sorted({layer for layer, _ in heads})]

    def _keeper(self, layer: int):
        def keep(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            self.seen[layer] = (module, hidden, kwargs["position_embeddings"])
        return keep

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.seen.clear()

    def attention(self, layer: int, head: int, rows: torch.Tensor, queries: torch.Tensor,
                  log: bool = False, detach: bool = False) -> torch.Tensor:
        """Attention probabilities [N, L] of ``head`` in ``layer`` at (row, query position) pairs
        of the last forward (causal: keys after the query get 0); their logs with ``log``.  With
        ``detach`` the layer's input is detached: a loss on them trains this head's query and key
        projections only, not the layers below."""
        module, hidden, (cos, sin) = self.seen[layer]
        if detach:
            hidden = hidden.detach()
        kv = head // module.num_key_value_groups
        q = _one_head(module.q_proj, hidden, head, module.head_dim)
        k = _one_head(module.k_proj, hidden, kv, module.head_dim)
        rotary = sys.modules[type(module).__module__].apply_rotary_pos_emb
        q, k = rotary(q[:, None], k[:, None], cos, sin)
        scores = torch.einsum("nd,nld->nl", q[rows, 0, queries], k[rows, 0]) * module.scaling
        later = torch.arange(k.shape[2], device=scores.device)[None, :] > queries[:, None]
        scores = scores.masked_fill(later, float("-inf"))
        return scores.log_softmax(-1) if log else scores.softmax(-1)


def head_output(tap: AttentionTap, layer: int, head: int, rows: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """What ``head`` of ``layer`` adds to the residual stream at (row, query) pairs of the last
    forward: its attention-weighted values through its slice of ``o_proj`` ([N, hidden])."""
    module, hidden, _ = tap.seen[layer]
    d = module.head_dim
    v = _one_head(module.v_proj, hidden[rows], head // module.num_key_value_groups, d)
    mixed = torch.einsum("nl,nld->nd", tap.attention(layer, head, rows, queries).to(v.dtype), v)
    return mixed @ module.o_proj.weight[:, head * d:(head + 1) * d].T


def _one_head(proj: torch.nn.Linear, hidden: torch.Tensor, index: int, d: int) -> torch.Tensor:
    """``proj(hidden)`` for output rows ``index * d`` to ``(index + 1) * d`` only: one head's query,
    key or value."""
    rows = slice(index * d, (index + 1) * d)
    return torch.nn.functional.linear(hidden, proj.weight[rows], None if proj.bias is None else proj.bias[rows])


def target_mass(tap: AttentionTap, ground: Sequence[Sequence[tuple[int, Sequence[int]]]],
                heads: Sequence[tuple[int, int]] | None = None, log: bool = False,
                detach: bool = False) -> tuple[list[tuple[int, int]], torch.Tensor] | None:
    """The attention mass each tapped head puts on the targets: the (row, query) pairs of ``ground``
    (one list per batch row, from ``clue_line_targets`` or ``letter_targets``) and a [heads, pairs] tensor
    (with ``log``, the log of each mass, computed in log space so that it keeps a gradient however
    small the mass); None when the batch has no grounded token.  ``heads``: a subset of the tap's
    (default: all of them); ``detach``: see ``AttentionTap.attention``."""
    pairs = [(b, q, t) for b, row in enumerate(ground) for q, t in row]
    if not pairs:
        return None
    some = next(iter(tap.seen.values()))[1]
    rows = torch.tensor([b for b, _, _ in pairs], device=some.device)
    queries = torch.tensor([q for _, q, _ in pairs], device=some.device)
    mask = torch.zeros((len(pairs), some.shape[1]), dtype=torch.bool, device=some.device)
    for n, (_, _, targets) in enumerate(pairs):
        mask[n, list(targets)] = True
    log_mass = torch.stack([tap.attention(layer, head, rows, queries, log=True, detach=detach).float()
                            .masked_fill(~mask, float("-inf")).logsumexp(-1) for layer, head in (heads or tap.heads)])
    return [(b, q) for b, q, _ in pairs], log_mass if log else log_mass.exp()


def grounding_loss(tap: AttentionTap, ground: Sequence[Sequence[tuple[int, Sequence[int]]]],
                   heads: Sequence[tuple[int, int]] | None = None, detach: bool = False) -> tuple[torch.Tensor, float] | None:
    """Mean ``-log`` attention mass on the targets over every grounded (row, query) and every
    head of ``heads`` (default: every tapped head), and the mean mass; None when the batch has no
    grounded token.  The log is taken in log space (``target_mass(log=True)``): a head that puts
    almost nothing on its targets still gets a gradient.  ``detach``: see ``AttentionTap.attention``."""
    found = target_mass(tap, ground, heads, log=True, detach=detach)
    if found is None:
        return None
    log_mass = found[1]
    return -log_mass.mean(), float(log_mass.detach().exp().mean())


class ClueGrounder:
    """The grounding targets of a stage-1 row (``data.stage1_row``'s ``grounder``).

    Qwen-VL backbones (the prefix carries ``video_grid_thw``).  ClueWorld samples (ids
    ``cw<seed>-<index>``) are grounded to their objects' cells (``clueworld.clue_cells``, re-derived
    from the id with the data's ``WorldConfig``); other samples to the whole temporal patches of
    each clue's span.
    """

    def __init__(self, processor: Any, world: Any = None) -> None:
        self.tokenizer = processor.tokenizer
        self.video_token_id = processor.video_token_id
        self.merge = int(getattr(processor.video_processor, "merge_size", 2))
        self.world = world

    def cells(self, sample: Any) -> list | None:
        from cluenet.data import clueworld as cw
        from cluenet.errors import InputError
        from training.data import clueworld_seed_index

        try:
            seed, index = clueworld_seed_index(sample.id)
        except InputError:
            return None
        cells = cw.clue_cells(cw.clip_rng(seed, index), self.world)
        return cells if len(cells) == len(sample.clues) else None

    def __call__(self, sample: Any, prefix: Any, block_start: int) -> list[tuple[int, tuple[int, ...]]]:
        from cluenet.data import clueworld as cw

        if "video_grid_thw" not in prefix.vision:
            raise ConfigError("loss.grounding_weight > 0 needs a Qwen-VL backbone (video tokens on a t x h x w grid)")
        layout = VideoLayout.of(prefix.ids, self.video_token_id, prefix.vision["video_grid_thw"][0].tolist(),
                                self.merge, prefix.times)
        cells = self.cells(sample)
        return clue_line_targets(self.tokenizer, sample.clues, block_start, layout, cells, cw.GRID if cells else 0)


def grounded_loss(base_loss: Any, model: torch.nn.Module, weight: float, heads: str, letter_heads: str = "",
                  letter_detach: bool = False):
    """Wrap a recipe's ``loss_fn(model, batch) -> (loss, metrics)``: add ``weight`` x the grounding
    loss of ``heads`` on batches that carry grounding targets; metrics gain ``ground_loss`` and
    ``ground_mass`` (mean attention mass on the targets).  The letters' targets
    (``batch["ground_letters"]``, two a row against ~80 clue tokens) are a term of their own with the
    same weight, so that they are not drowned; their metrics are ``letter_loss`` and ``letter_mass``.
    ``letter_heads`` supervises other heads for the letters ("": the same ``heads``); with
    ``letter_detach`` the letters' term trains those heads' query and key projections only."""
    clue_heads = parse_heads(heads)
    letter_set = parse_heads(letter_heads) if letter_heads else clue_heads
    tap = AttentionTap(model, list(dict.fromkeys([*clue_heads, *letter_set])))

    def loss_fn(model: torch.nn.Module, batch: dict[str, Any]):
        loss, metrics = base_loss(model, batch)
        for key, name, chosen, detach in (("ground", "ground", clue_heads, False),
                                          ("ground_letters", "letter", letter_set, letter_detach)):
            extra = grounding_loss(tap, batch[key], chosen, detach) if batch.get(key) else None
            if extra is not None:
                g, mass = extra
                loss = loss + weight * g
                metrics = {**metrics, f"{name}_loss": float(g.detach()), f"{name}_mass": mass}
        tap.seen.clear()
        return loss, metrics

    loss_fn.tap = tap
    return loss_fn
