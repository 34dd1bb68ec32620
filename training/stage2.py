"""Stage 2 of ClueNet: inference supervision with the adaptive clue filter.

    python -m training.stage2 --config training/configs/stage2_clueworld.yaml [section.key=value ...]

Steps (DESIGN.md "Stage 2"):

1. **Self clues.**  The stage-1 model (``model.init_adapter``: a stage-1 output folder)
   generates its own ``<clues>`` block for every training sample (batched greedy
   decoding from ``prefix + <clues>``, as inference pass 1).  Results are appended to
   ``data.self_clues_path`` (default ``<output_dir>/self_clues.jsonl``) one sample a
   line, flushed per batch: a rerun skips every sample already in the file and redoes
   only the rest (a torn last line is dropped).
2. **Utility labels**, both signals kept in the cache row:
   ``relevant[i]`` -- the clue matches (``cluenet.metrics``) a gold clue cited by the gold
   chain; ``loo_drop[i]`` -- log p(a*) with all clues minus log p(a*) without clue i,
   where p(a*) is read at ``<answer>`` placed right after the clue block (a chain-free
   probe: one batched forward per clue, no decoding); ``useful[i] = relevant[i] or
   loo_drop[i] > stage2.delta``.
3. **Training.**  Three rows per sample: the self-clue block (last-layer states of each
   clue line and of the question feed the filter head, BCE on ``useful``); task R on
   the *filtered* self clues -- the useful ones, teacher-forced like gold tokens, or the
   clue with the largest drop when none is useful -- with the gold chain (citations
   re-pointed to the matched self-clue ids, unmatched citations dropped) and answer as
   targets; and task E on the gold clues with weight ``gamma`` (replay).
   L2 = L_R(filtered) + beta * L_filter + gamma * L_E.

Outputs in ``<output_dir>/final``: the model (full weights for the small model, a PEFT
adapter for real backbones), ``filter_head.safetensors`` and ``stage.json``.
A missing stage-1 output, or one trained for another base model or frame count, is
refused with a ConfigError naming the difference.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cluenet import prompts
from cluenet.filter import FilterHead
from cluenet.grammar import ANSWER_OPEN, CLUES_CLOSE, CLUES_OPEN, parse
from cluenet.metrics import match_clues, relevant_predicted
from cluenet.model import MAX_CLUE_TOKENS
from cluenet.schema import LETTERS, Clue, Sample, Step
from training import common
from training import data as tdata
from training.config import Stage2RunConfig, load_config
from training.loop import Trainer
from training.model_build import Built, count_parameters
from training.stage1 import finish

RECIPE = "stage2"
SELF_CLUES_FILE = "self_clues.jsonl"
GEN_BATCH = 64  # samples per batched generation / leave-one-out forward


# ----------------------------------------------------------------------------- the trained module
class Stage2Model(torch.nn.Module):
    """The backbone and the filter head as one module (one optimizer, one checkpoint)."""

    def __init__(self, backbone: torch.nn.Module, head: FilterHead, family: Any) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self._hidden: torch.Tensor | None = None
        family.language_model(backbone).norm.register_forward_hook(self._keep)

    def _keep(self, module, args, output) -> None:  # last-layer states, as inference reads them
        self._hidden = output[0] if isinstance(output, tuple) else output

    def forward(self, batch: dict[str, Any]) -> tuple[Any, torch.Tensor]:
        out = common.lm_forward(self.backbone, batch)
        return out, self._hidden


def filter_logits(head: FilterHead, hidden: torch.Tensor, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Head logits and targets for every clue of the batch's filter rows."""
    logits, targets = [], []
    for row, spans, labels, (qa, qb) in batch["filter"]:
        if not spans:
            continue
        h_q = hidden[row, qa:qb].mean(0)
        h_c = torch.stack([hidden[row, a:b].mean(0) if b > a else h_q * 0 for a, b in spans])
        logits.append(head.logits(h_c, h_q))
        targets.append(torch.tensor(labels, device=hidden.device))
    if not logits:
        return hidden.new_zeros(0), hidden.new_zeros(0)
    return torch.cat(logits), torch.cat(targets).to(hidden.dtype)


def make_loss(beta: float):
    def loss_fn(model: Stage2Model, batch: dict[str, Any]):
        out, hidden = model(batch)
        lm, metrics = common.weighted_lm_loss(out.logits, batch)
        logits, targets = filter_logits(model.head if not hasattr(model, "module") else model.module.head, hidden, batch)
        if logits.numel():
            bce = F.binary_cross_entropy_with_logits(logits.float(), targets.float())
            metrics["filter_bce"] = bce.item()
            metrics["filter_acc"] = float(((logits > 0).float() == targets).float().mean())
        else:
            bce = lm * 0
        return lm + beta * bce, metrics

    return loss_fn


# ----------------------------------------------------------------------------- step 1: self clues
def read_cache(path: Path) -> dict[str, dict]:
    """Rows already computed, by sample id; a torn (partial) last line is ignored."""
    done: dict[str, dict] = {}
    if not path.exists():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # an interrupted write; that sample is redone
        done[row["id"]] = row
    return done


def _drop_torn_tail(path: Path) -> None:
    """Cut a partial last line so appended rows start on a fresh line."""
    if path.exists() and path.stat().st_size:
        data = path.read_bytes()
        if not data.endswith(b"\n"):
            path.write_bytes(data[: data.rfind(b"\n") + 1])


@torch.no_grad()
def generate_clues(model: Any, processor: Any, prefixes: list[tdata.Prefix], max_new: int = MAX_CLUE_TOKENS,
                   ) -> list[tuple[Clue, ...]]:
    """Batched greedy pass 1: ``prefix + <clues>`` -> clues, left-padded, stopping at ``</clues>``."""
    tok = processor.tokenizer
    open_id, close_id = tok.convert_tokens_to_ids(CLUES_OPEN), tok.convert_tokens_to_ids(CLUES_CLOSE)
    rows = [tdata.Row([*p.ids, open_id], [], [], p.vision) for p in prefixes]
    batch = _left_padded(rows, processor)
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    out = model.generate(**batch, max_new_tokens=max_new, do_sample=False, eos_token_id=[close_id, tok.eos_token_id],
                         pad_token_id=tok.pad_token_id)
    new = out[:, batch["input_ids"].shape[1]:].tolist()
    texts = [CLUES_OPEN + tok.decode([t for t in ids if t != tok.pad_token_id], skip_special_tokens=False)
             for ids in new]
    return [parse(t, 5, expect=("clues",)).clues for t in texts]


def _left_padded(rows: list[tdata.Row], processor: Any) -> dict[str, torch.Tensor]:
    tok = processor.tokenizer
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r.input_ids)
        mask[i, width - len(r):] = 1
    batch = {"input_ids": ids, "attention_mask": mask, **tdata._stack_vision([r.vision for r in rows])}
    vid = getattr(processor, "video_token_id", None)
    if vid is not None and "video_grid_thw" in batch:
        batch["mm_token_type_ids"] = (ids == vid).long() * tdata.VIDEO_TOKEN_TYPE
    return batch


@torch.no_grad()
def answer_logprobs(model: Any, processor: Any, prefix: tdata.Prefix, clue_sets: list[list[Clue]], answer: int,
                    num_options: int) -> list[float]:
    """log p(a*) over the option letters at ``<answer>`` right after each clue set's block."""
    tok = processor.tokenizer
    letters = [prompts.encode_text(tok, x)[0] for x in LETTERS[:num_options]]
    tail = prompts.encode_text(tok, ANSWER_OPEN)
    rows = [tdata.Row([*prefix.ids, *prompts.encode_text(tok, prompts.reasoning_context(cs)), *tail], [], [],
                      prefix.vision) for cs in clue_sets]
    batch = _left_padded(rows, processor)
    device = next(model.parameters()).device
    logits = model(**{k: v.to(device) for k, v in batch.items()}, use_cache=False, logits_to_keep=1).logits[:, -1]
    logp = torch.log_softmax(logits.float()[:, letters], dim=-1)
    return [float(x) for x in logp[:, answer].cpu()]


def label_sample(model: Any, processor: Any, prefix: tdata.Prefix, sample: Sample, clues: Sequence[Clue],
                 delta: float) -> dict:
    """The cache row of one sample: its self clues and both utility signals."""
    clues = list(clues)
    rel = relevant_predicted(clues, sample.clues, sample.chain) if sample.clues and sample.chain else set()
    sets = [clues] + [clues[:i] + clues[i + 1:] for i in range(len(clues))]
    lp = answer_logprobs(model, processor, prefix, sets, sample.answer, len(sample.options))
    drops = [lp[0] - x for x in lp[1:]]
    return {"id": sample.id, "clues": [c.to_dict() for c in clues], "relevant": [i in rel for i in range(len(clues))],
            "loo_drop": drops, "logp_all": lp[0], "useful": [i in rel or d > delta for i, d in enumerate(drops)]}


def build_cache(model: Any, processor: Any, dataset: tdata.RowDataset, path: Path, delta: float,
                batch: int = GEN_BATCH, is_main: bool = True) -> dict[str, dict]:
    """Step 1 + 2 over the dataset's samples, resuming from ``path``; returns every row by id."""
    done = read_cache(path)
    todo = [s for s in dataset.samples if s.id not in done]
    if not is_main or not todo:
        return done
    path.parent.mkdir(parents=True, exist_ok=True)
    _drop_torn_tail(path)
    model.eval()
    with open(path, "a", encoding="utf-8") as f:
        for i in tqdm(range(0, len(todo), batch), desc="self clues", unit="batch"):
            chunk = todo[i:i + batch]
            prefixes = [dataset.prefix(s, "cluenet") for s in chunk]
            for s, p, clues in zip(chunk, prefixes, generate_clues(model, processor, prefixes)):
                row = label_sample(model, processor, p, s, clues, delta)
                f.write(json.dumps(row) + "\n")
                done[s.id] = row
            f.flush()
            os.fsync(f.fileno())
    return done


# ----------------------------------------------------------------------------- step 3: rows
def filtered_context(row: dict) -> tuple[list[Clue], list[bool]]:
    """Self clues and the keep mask R is trained on: the useful ones, else the largest drop."""
    clues = [Clue.from_dict(c) for c in row["clues"]]
    keep = list(row["useful"])
    if clues and not any(keep):
        best = max(range(len(clues)), key=lambda i: row["loo_drop"][i])
        keep[best] = True
    return clues, keep


def repoint_chain(chain: Sequence[Step], gold: Sequence[Clue], kept: Sequence[Clue]) -> tuple[Step, ...]:
    """Gold chain with citations re-pointed from gold ids to the matched kept self-clue ids."""
    to_self = {gold[g].id: kept[p].id for p, g in match_clues(kept, gold)}
    return tuple(replace(s, cites=tuple(to_self[c] for c in s.cites if c in to_self)) for s in chain)


def make_rows(cache: dict[str, dict], cfg: Stage2RunConfig):
    def rows(tokenizer: Any, prefix_of: Any, sample: Sample) -> list[tdata.Row]:
        prefix = prefix_of("cluenet")
        clues, keep = filtered_context(cache[sample.id])
        kept = [c for c, k in zip(clues, keep) if k]
        out = []
        if clues:
            out.append(tdata.filter_row(tokenizer, prefix, clues, cache[sample.id]["useful"]))
        chain = repoint_chain(sample.chain, sample.clues, kept)
        out.append(tdata.reasoning_row(tokenizer, prefix, kept, chain, sample.answer, cfg.loss))
        if cfg.stage2.gamma > 0:
            out.append(tdata.extraction_row(tokenizer, prefix, sample, cfg.stage2.gamma * cfg.loss.extraction_weight))
        return out

    return rows


# ----------------------------------------------------------------------------- recipe
def load_stage1(cfg: Stage2RunConfig) -> Built:
    """The stage-1 output named by ``model.init_adapter`` (checked: ``common.read_stage``)."""
    from cluenet.errors import ConfigError

    if not cfg.model.init_adapter:
        raise ConfigError("model.init_adapter is empty; set it to the stage-1 output folder (<stage1 output_dir>/final)")
    info = common.read_stage(cfg.model.init_adapter, 1, cfg.model, cfg.data.num_frames, cfg.data.option_style)
    model, processor, fam = common.load_output(cfg.model.init_adapter, cfg.model, trainable=True)
    return Built(model, processor, fam, from_scratch=info.get("finetune") == "full")


def run(cfg: Stage2RunConfig, samples: Sequence[Sample] | None = None) -> Trainer:
    """Self clues (resumable), utility labels, then joint training; saves ``<output_dir>/final``."""
    from accelerate import PartialState

    built = load_stage1(cfg)
    samples = list(samples) if samples is not None else common.load_samples(cfg.data.train_path)
    frames = common.frame_source(cfg.data, samples, cfg.data.train_path)
    dataset = tdata.RowDataset(samples, built.processor, built.family, frames, build=None,
                               option_style=cfg.data.option_style)
    common.attach_store(dataset, cfg.data.train_path)
    cache_path = Path(cfg.data.self_clues_path or Path(cfg.train.output_dir) / SELF_CLUES_FILE)
    state = PartialState()
    device = state.device
    built.model.to(device)
    build_cache(built.model, built.processor, dataset, cache_path, cfg.stage2.delta, is_main=state.is_main_process)
    state.wait_for_everyone()
    cache = read_cache(cache_path)
    dataset.build = make_rows(cache, cfg)
    hidden = int(built.model.config.get_text_config().hidden_size)
    torch.manual_seed(cfg.train.seed)
    head = FilterHead(hidden, cfg.filter.hidden, cfg.filter.dropout)
    module = Stage2Model(built.model.train(), head, built.family)
    head_lr = {"head.": cfg.stage2.filter_lr} if cfg.stage2.filter_lr > 0 else None
    trainer = Trainer(module, make_loss(cfg.stage2.beta), dataset, train=cfg.train, optim=cfg.optim,
                      collate_fn=common.collator(built.processor), run_config=cfg, num_workers=cfg.data.num_workers,
                      lr_by_prefix=head_lr)
    trainer.built = built
    trainer.setup()
    if trainer.accelerator.is_main_process:
        n_useful = sum(sum(r["useful"]) for r in cache.values())
        n_clues = sum(len(r["useful"]) for r in cache.values())
        print(f"stage 2: {len(samples)} samples, {n_clues} self clues ({n_useful} useful), "
              f"{count_parameters(module)[0]:,} trainable parameters, resumed from {trainer.resumed_from}")
    trainer.train()
    inner = trainer.accelerator.unwrap_model(trainer.model)
    finish(trainer, cfg, RECIPE, stage=2, extra={"stage1": str(cfg.model.init_adapter), "self_clues": str(cache_path)},
           filter_head=inner.head.eval(), model=inner.backbone)
    trainer.cleanup()
    return trainer


def main(argv: Sequence[str] | None = None) -> int:
    args = common.parse(argv, "python -m training.stage2", __doc__)
    run(load_config(Stage2RunConfig, args.config, args.overrides))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
