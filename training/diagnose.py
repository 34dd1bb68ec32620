"""Why does a small model not learn? Teacher-forced accuracy per token class while it trains.

    python -m training.diagnose tokens --train runs/default/data/train/clueworld.jsonl \\
        [--lr 3e-3 --batch 8 --steps 900 --every 50 --chain-weight 5 --sizes '{"text_hidden": 128}' --no-video
         --frame-stamps --copy-warmup 300 --freeze-vision --vision-init runs/default/vision/vision.safetensors]
    python -m training.diagnose colours --train runs/default/data/train/clueworld.jsonl [--freeze-vision
        --video-only --vision-lr 3e-2 --linear-probe]
    python -m training.diagnose shortcut --data runs/default/data/test/clueworld.jsonl
    python -m training.diagnose copy [--lr 3e-3 --steps 300]
    python -m training.diagnose recall [--pairs 4 --noise 6 --steps 1500 --sizes '{"text_layers": 2}']
    python -m training.diagnose tokens --train DATA --text-init runs/default/text/text.safetensors [--lr 1e-3
        --grounding-weight 1 --grounding-heads 1:0,2:0 --set loss.extraction_weight=2 --save lm.safetensors]
    python -m training.diagnose options [--text-init runs/default/text/text.safetensors --repeat-batch 8 --steps 3000
        --gap 16 --queries 3 --length 192 --save DIR/text.safetensors]
    python -m training.diagnose classes --model runs/default/stage1/final --data runs/default/data/val/clueworld.jsonl
        [--limit 96 --batch 8]

``tokens`` trains the stage-1 model (``training/configs/stage1_clueworld.yaml``, E + R
rows from the training split's vision store) with a plain AdamW loop and, every
``--every`` steps, prints the teacher-forced next-token accuracy on 48 held-out rows for
each class of target token:

* ``cl_colour`` / ``cl_shape`` -- colour and shape words inside the clues block (they
  need the clip: which object did what);
* ``ch_colour`` / ``ch_shape`` -- the same words inside the chain (copyable from the
  question and the clues in context);
* ``cl_verb`` / ``ch_verb`` -- the event verbs (enters, hits, stops, turns, leaves);
* ``cl_number`` / ``ch_number`` -- digit tokens: the clues' times and ids, the chain's step numbers;
* ``chain_letter`` -- the option letter that closes the chain (the last token before
  ``</chain>`` but blanks); ``letter`` -- other letters;
* ``other`` -- everything else (template words, punctuation).

Chance for a colour is 1/8, for a shape 1/6, for a letter 1/5.  ``--no-video`` drops the
video tokens (a text-only model of the same rows), ``--sizes`` overrides ``SMALL_SIZES``.
Clue words are also scored by what they read from the clip (``clue_roles``: ``role:subject_colour``,
``role:object_colour``, ``role:new_colour``, ``role:side``, ``role:start_time``, ...).
``--grounding-weight W`` turns on stage 1's clue grounding loss (``training.grounding``) and adds,
per role, the supervised heads' attention mass on the clue's video tokens (``mass:<role>``);
``--set SECTION.KEY=VALUE`` passes any other stage-1 override and ``--save`` writes the language
model at the end.

Two variants test ideas for making the grounded tokens learnable sooner:

* ``--frame-stamps`` splits the video into its temporal groups (one merged temporal
  patch each) and writes the group's start time before it (``0.5s<|vision_start|>...``),
  as Qwen3-VL does with its textual timestamps.  With one contiguous video, a clue's
  ``[1.0-1.5s]`` can reach the frames at 1.0 s only through rotary positions, which are
  relative; with stamps it can match the text ``1.0`` by content.
* ``--freeze-vision`` keeps the vision tower (and its merger) at its random init: its
  features already carry the clip's colours (a linear probe reads them), while a tower
  trained from scratch next to a language model that still ignores it loses them.
* ``--copy-warmup N`` first trains N steps of the ``copy`` task (48 tokens) so the model
  starts the real rows with a working copy circuit.

``classes --model FOLDER --data test.jsonl`` scores the same classes, teacher-forced on the
gold stage-1 rows (prefix, gold clues, gold chain), for a model already trained: it shows which
tokens a trained model gets wrong when everything before them is right.  The chain's letter
needs no clip once the gold clues are in context, so its accuracy is the reasoning's ceiling.

``colours`` asks the plainest question of the clip: the target is only the sorted list
of palette colours visible anywhere in it.  It prints the no-clip baseline (each colour
predicted from the previous one, a bigram of the training lists), ``--linear-probe``
also fits least squares on the untrained tower's mean-pooled features (one presence
bit per colour), then trains and prints the colour tokens' accuracy on 64 held-out clips.

``shortcut --data test.jsonl`` counts the questions whose answer is the only option
naming an object (colour + shape) that occurs in the clip's events.

``recall`` trains the same classes on associative recall, the lookup the chain and the
clues need ("the red ..." -> the shape bound to red in this row): colour-word keys, shape-word
values, filler tokens between the pairs, then the keys again in a random order.  Chance is
1/6; naming a random value of the row gives about 0.37 (1/4 + 3/4 x 1/6); only reading the binding does
better.  Unlike ``copy`` (a fixed offset, which a positional head solves), the key's
position varies, so it needs a content-based (induction) lookup.

``options`` trains the lookup that the chain's closing letter needs, alone: rows of random
tokens with an "Options:" list of five lines (``A.`` to ``E.``, a template shared by the lines
and each line's own words), then five queries, each an option's words, " is", and the label
on its letter (`` B``, as the chain writes it).  The queried options are drawn with
replacement, so a repeat can be copied from the earlier answer; ``fresh_accuracy`` counts
only first queries (chance 0.2).  ``repeat_accuracy`` is the held-out accuracy of
``text_pretrain``'s repeat rows, i.e. whether the induction circuit survives; ``--text-init``
starts from that recipe's output and ``--repeat-batch N`` trains N repeat rows a step as well;
``--gap N`` puts up to N filler and template ids between an option's words and " is", as a
chain step does in the real rows.

``copy`` trains the same classes on a synthetic copy task (24 random tokens, a
separator, the same 24 again) and prints the accuracy of the copied half.  It is learned in
about 100 steps, but every copied token sits at the same offset, so a positional head solves
it: it shows the classes train, not that they form content-based lookups (``recall`` does).
"""
from __future__ import annotations

import argparse
import json
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from cluenet.prompts import OPTION_STYLES

HELD_OUT = 48
HELD_OUT_CLIPS = 64  # colours: held-out clips (a quarter of smaller sets)
STAGE1_CONFIG = Path(__file__).resolve().parent / "configs" / "stage1_clueworld.yaml"
COPY_LEN, COPY_BATCH = 24, 16


EVENT_VERBS = ("enters", "hits", "stops", "turns", "leaves")


def token_classes(vocab: Sequence[str], colours: Sequence[str], shapes: Sequence[str]) -> dict[str, set[int]]:
    """Token ids of colour words, shape words, event verbs, number tokens (digits only), option
    letters, ``</chain>`` and blanks (spaces, newlines)."""
    word = plain_words(vocab)
    return {"colour": {i for i, w in enumerate(word) if w in colours},
            "shape": {i for i, w in enumerate(word) if w in shapes},
            "verb": {i for i, w in enumerate(word) if w in EVENT_VERBS},
            "number": {i for i, w in enumerate(word) if w.isdigit()},
            "letter": {i for i, w in enumerate(word) if len(w) == 1 and w in "ABCDE"},
            "chain_close": {i for i, t in enumerate(vocab) if t == "</chain>"},
            "blank": {i for i, t in enumerate(vocab) if not t.strip("ĠĊ▁ \n")}}


def classify(ids: Sequence[int], labels: Sequence[int], ids_of: dict[str, set[int]], clues_close: int,
             ignore: int = -100) -> dict[int, str]:
    """Class name of every target position (see the module docstring); the chain is
    everything after ``</clues>``."""
    out, in_chain = {}, False
    for p, (t, lab) in enumerate(zip(ids, labels)):
        if t == clues_close:
            in_chain = True
        if lab == ignore:
            continue
        if t in ids_of["letter"]:
            nxt = next((t2 for t2 in ids[p + 1:] if t2 not in ids_of["blank"]), None)
            name = "chain_letter" if nxt in ids_of["chain_close"] else "letter"
        else:
            kind = next((k for k in ("colour", "shape", "verb", "number") if t in ids_of[k]), None)
            name = "other" if kind is None else ("ch_" if in_chain else "cl_") + kind
        out[p] = name
    return out


def clue_roles(words: Sequence[str], colours: Sequence[str], shapes: Sequence[str]) -> dict[int, str]:
    """The role of each colour, shape, side and start-time word of ClueWorld clue lines, by the
    words before it (``words``: the row's tokens as plain words; pass the clues block only):
    ``subject_colour`` / ``subject_shape`` (who the clue is about), ``object_colour`` /
    ``object_shape`` (the object hit), ``new_colour`` (what a turning object turns into), ``side``
    (where an object enters from or leaves to) and ``start_time`` (the integer part of the span's
    start).  Which reads of the clip a model gets wrong, word by word."""
    from cluenet.data.clueworld import SIDES

    out = {}
    for p, w in enumerate(words):
        before = [x for x in words[max(0, p - 6):p] if x]
        if w in colours:
            out[p] = ("object_colour" if before[-2:] == ["hits", "the"] else
                      "new_colour" if before[-1:] == ["turns"] else "subject_colour")
        elif w in shapes:
            out[p] = "object_shape" if before[-3:-1] == ["hits", "the"] else "subject_shape"
        elif w in SIDES:
            out[p] = "side"
        elif w.isdigit() and before[-1:] == ["["]:
            out[p] = "start_time"
    return out


def row_roles(row: Any, words: Sequence[str], clues_close: int) -> dict[int, str]:
    """``clue_roles`` of one row's target words before ``</clues>`` (``words``: the tokenizer's
    tokens as plain words)."""
    from cluenet.data import clueworld as cw

    ids = row.input_ids
    end = ids.index(clues_close) if clues_close in ids else len(ids)
    target = [words[t] if lab != -100 else "" for t, lab in zip(ids[:end], row.labels)]
    return clue_roles(target, cw.COLOUR_NAMES, cw.SHAPES)


def plain_words(vocab: Sequence[str]) -> list[str]:
    """Tokenizer tokens without their space / word-start markers."""
    return [t.strip("Ġ▁ ") for t in vocab]


def role_mass(tap: Any, ground: Sequence[Sequence[Any]], items: Sequence[Sequence[Any]], words: Sequence[str],
              clues_close: int) -> dict[str, list[float]]:
    """The tapped heads' attention mass on the clue's video tokens (``training.grounding``) at the
    query of each clue word, by ``clue_roles`` role ("all": every grounded query); one value a query,
    averaged over the heads.  ``words``: ``plain_words`` of the vocabulary."""
    from training.grounding import target_mass

    found = target_mass(tap, ground)
    if found is None:
        return {}
    pairs, mass = found
    mean = mass.mean(0).tolist()
    out: dict[str, list[float]] = {"all": mean}
    roles = {}
    for j, rows in enumerate(items):
        roles.update({(j, p - 1): role for p, role in row_roles(rows[0], words, clues_close).items()})
    for (b, q), m in zip(pairs, mean):
        if (b, q) in roles:
            out.setdefault(roles[b, q], []).append(m)
    return out


class ClassTally:
    """Teacher-forced next-token hits per token class (``classify``) over batches of rows; with
    ``vocab`` (the tokenizer's tokens) also per clue word role (``clue_roles``, as ``role:<name>``)."""

    def __init__(self, ids_of: dict[str, set[int]], clues_close: int, vocab: Sequence[str] | None = None) -> None:
        self.ids_of, self.clues_close = ids_of, clues_close
        self.words = plain_words(vocab) if vocab is not None else None
        self.hits: dict[str, int] = {}
        self.seen: dict[str, int] = {}

    def _count(self, name: str, hit: bool) -> None:
        self.hits[name] = self.hits.get(name, 0) + int(hit)
        self.seen[name] = self.seen.get(name, 0) + 1

    def add(self, logits: torch.Tensor, items: Sequence[Sequence[Any]]) -> None:
        """``logits`` of a batch whose rows are the first row of each item, in order."""
        pred = logits[:, :-1].argmax(-1)
        for j, rows in enumerate(items):
            r = rows[0]
            hit = {p: bool(pred[j, p - 1] == r.input_ids[p]) for p in range(1, len(r.input_ids))}
            for p, name in classify(r.input_ids, r.labels, self.ids_of, self.clues_close).items():
                self._count(name, hit[p])
            if self.words is not None:
                for p, role in row_roles(r, self.words, self.clues_close).items():
                    self._count(f"role:{role}", hit[p])

    def accuracy(self) -> dict[str, float]:
        return {name: round(self.hits[name] / self.seen[name], 3) for name in sorted(self.seen)}


def _strip_video(rows: list, video_id: int) -> list:
    for r in rows:
        keep = [k for k, t in enumerate(r.input_ids) if t != video_id]
        r.input_ids = [r.input_ids[k] for k in keep]
        r.labels = [r.labels[k] for k in keep]
        r.weights = [r.weights[k] for k in keep]
        r.vision = {}
    return rows


def stamp_frames(row: Any, video_id: int, vision_start: int, vision_end: int, stamps: Sequence[Sequence[int]]) -> Any:
    """Rewrite one Qwen-VL row in place: its one video of ``G`` temporal groups becomes ``G``
    videos of one group each, every one preceded by the token ids of its time stamp.

    The pixel rows need no change (Qwen-VL flattens patches time-major, so the groups'
    patches are already in order); ``video_grid_thw`` [[G, h, w]] becomes G x [[1, h, w]].
    """
    (groups, h, w), = row.vision["video_grid_thw"].tolist()
    if groups != len(stamps):
        raise ValueError(f"{len(stamps)} stamps for a video of {groups} temporal groups")
    first = row.input_ids.index(video_id)
    per = row.input_ids.count(video_id) // groups
    end = first + per * groups  # the vision_end token
    if row.input_ids[first - 1] != vision_start or row.input_ids[end] != vision_end:
        raise ValueError("the video tokens are not one contiguous <|vision_start|>...<|vision_end|> run")
    new = [t for stamp in stamps for t in (*stamp, vision_start, *[video_id] * per, vision_end)]
    a, b = first - 1, end + 1
    row.input_ids = row.input_ids[:a] + new + row.input_ids[b:]
    row.labels = row.labels[:a] + [-100] * len(new) + row.labels[b:]
    row.weights = row.weights[:a] + [0.0] * len(new) + row.weights[b:]
    row.vision = {**row.vision, "video_grid_thw": torch.tensor([[1, h, w]] * groups)}
    return row


def warm_up(opt: torch.optim.Optimizer, step: int, warmup: int) -> None:
    """Linear warm-up of every group's lr to the lr it was built with (kept as ``base``)."""
    for g in opt.param_groups:
        g["lr"] = g.setdefault("base", g["lr"]) * min(1.0, step / warmup)


def adamw_step(model: Any, opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One AdamW step on ``loss`` with the gradient norm clipped to 1."""
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


def _copy_batch(vocab: int, length: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``x <sep> x`` rows of random ids (the first 10 ids, the special tokens, excluded); labels on the copy."""
    x = torch.randint(10, vocab, (batch, length))
    ids = torch.cat([x, torch.full((batch, 1), 5), x], 1)
    labels = ids.clone()
    labels[:, :length + 1] = -100
    return ids, labels


def _train_copy(model: Any, opt: torch.optim.Optimizer, vocab: int, steps: int, length: int,
                every: int, warmup: int = 30) -> None:
    """``steps`` AdamW steps of the copy task; prints the copied half's accuracy every ``every`` steps."""
    t0 = time.time()
    for step in range(1, steps + 1):
        warm_up(opt, step, warmup)
        ids, labels = _copy_batch(vocab, length, COPY_BATCH)
        out = model(input_ids=ids, labels=labels)
        adamw_step(model, opt, out.loss)
        if step % every == 0 or step == steps:
            acc = (out.logits[:, length:-1].argmax(-1) == ids[:, length + 1:]).float().mean().item()
            print(json.dumps({"task": "copy", "step": step, "seconds": round(time.time() - t0), "loss": round(out.loss.item(), 4),
                              "copy_accuracy": round(acc, 3)}), flush=True)


@contextmanager
def _sizes(table: dict[str, int], overrides: str) -> Iterator[None]:
    """``table`` (``SMALL_SIZES``) updated from a JSON string for the duration, then restored."""
    from training.model_build import parse_sizes

    saved = dict(table)
    table.update(parse_sizes(overrides))
    try:
        yield
    finally:
        table.clear()
        table.update(saved)


def run_tokens(args: argparse.Namespace) -> int:
    from training import model_build

    with _sizes(model_build.SMALL_SIZES, args.sizes):
        return _run_tokens(args)


def _run_tokens(args: argparse.Namespace) -> int:
    from cluenet.data import clueworld as cw
    from training import common, stage1
    from training.config import Stage1RunConfig, load_config

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    overrides = [f"data.train_path={args.train}", "data.num_workers=0"]
    if args.freeze_vision:
        overrides.append("model.freeze_vision=true")
    if args.vision_init:
        overrides.append(f"model.vision_init={args.vision_init}")
    if args.text_init:
        overrides.append(f"model.text_init={args.text_init}")
    if args.option_style:
        overrides.append(f"data.option_style={args.option_style}")
    if args.grounding_weight:
        overrides += [f"loss.grounding_weight={args.grounding_weight}", f"loss.grounding_heads={args.grounding_heads}"]
    overrides += args.set
    cfg = load_config(Stage1RunConfig, str(STAGE1_CONFIG), overrides)
    trainer = stage1.setup(cfg)
    model, data, collate = trainer.model, trainer.train_data, trainer.collate.collate_fn
    tok = trainer.built.processor.tokenizer
    vocab = tok.convert_ids_to_tokens(list(range(len(tok))))
    ids_of = token_classes(vocab, cw.COLOUR_NAMES, cw.SHAPES)
    clues_close = tok.convert_tokens_to_ids("</clues>")
    video_id = trainer.built.processor.video_token_id
    n = len(data)
    if n <= HELD_OUT:
        raise SystemExit(f"need more than {HELD_OUT} training samples, got {n}")
    held, pool = list(range(n - HELD_OUT, n)), list(range(n - HELD_OUT))
    vs, ve = tok.convert_tokens_to_ids("<|vision_start|>"), tok.convert_tokens_to_ids("<|vision_end|>")
    stamps: list[list[int]] = []
    if args.frame_stamps:
        if data.store is None:
            raise SystemExit("--frame-stamps needs the training split's vision_store/ (its frame times)")
        times = data.store.times[data.samples[0].id]
        per_group = len(times) // int(data[0][0].vision["video_grid_thw"][0, 0])  # frames per temporal patch
        stamps = [tok(f"{t:.1f}s", add_special_tokens=False)["input_ids"] for t in times[::per_group]]

    def batch(indices: Sequence[int], chain_weight: float) -> tuple[dict, list]:
        items = [data[i] for i in indices]
        if args.no_video:
            items = [_strip_video(rows, video_id) for rows in items]
        elif stamps:
            items = [[stamp_frames(r, video_id, vs, ve, stamps) for r in rows] for rows in items]
        for rows in items:
            for r in rows:
                for p, name in classify(r.input_ids, r.labels, ids_of, clues_close).items():
                    if name == "chain_letter":
                        r.weights[p] = chain_weight
        return collate(items), items

    tap = getattr(trainer.loss_fn, "tap", None)  # set when the grounding loss is on
    words = plain_words(vocab)

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        model.eval()
        tally = ClassTally(ids_of, clues_close, vocab)
        mass: dict[str, list[float]] = {}
        for k in range(0, HELD_OUT, 16):
            b, items = batch(held[k:k + 16], 1.0)
            tally.add(common.lm_forward(model, b).logits, items)
            if tap is not None:
                for role, m in role_mass(tap, b["ground"], items, words, clues_close).items():
                    mass.setdefault(role, []).extend(m)
                tap.seen.clear()
        model.train()
        return {**tally.accuracy(), **{f"mass:{r}": round(sum(v) / len(v), 3) for r, v in sorted(mass.items())}}

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.01,
                            betas=(0.9, 0.98))
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters, {n} samples ({HELD_OUT} held out)", flush=True)
    if args.copy_warmup:
        _train_copy(model, opt, len(tok), args.copy_warmup, 2 * COPY_LEN, args.every, args.warmup)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        warm_up(opt, step, args.warmup)
        b, _ = batch(rng.sample(pool, args.batch), args.chain_weight)
        loss, metrics = trainer.loss_fn(model, b)  # stage 1's loss, with the grounding loss and copy rows when on
        adamw_step(model, opt, loss)
        if step % args.every == 0 or step == args.steps:
            extra = {k: round(metrics[k], 4) for k in ("ground_loss", "ground_mass", "copy_loss") if k in metrics}
            print(json.dumps({"step": step, "rows": step * args.batch, "seconds": round(time.time() - t0),
                              "loss": round(loss.item(), 4), **extra, "accuracy": evaluate()}), flush=True)
    if args.save:
        from training import model_build

        model_build.save_text(model, args.save)
    return 0


def run_classes(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from cluenet.data import clueworld as cw
    from training import common, evaluate, stage1
    from training import data as tdata
    from training.config import DataConfig, LossConfig

    net = evaluate.load_model(args.model, device="cpu")
    samples = common.load_samples(args.data, "--data")
    samples = samples[:args.limit] if args.limit > 0 else samples
    frames = common.frame_source(DataConfig(num_frames=net.num_frames), samples, args.data)
    data = tdata.RowDataset(samples, net.processor, net.family, frames, stage1.make_rows(LossConfig()),
                            option_style=net.option_style)
    common.attach_store(data, args.data)
    collate, tok = common.collator(net.processor), net.tokenizer
    vocab = tok.convert_ids_to_tokens(list(range(len(tok))))
    tally = ClassTally(token_classes(vocab, cw.COLOUR_NAMES, cw.SHAPES), tok.convert_tokens_to_ids("</clues>"), vocab)
    with torch.no_grad():
        for k in tqdm(range(0, len(samples), args.batch), desc="rows", unit="batch"):
            items = [data[i] for i in range(k, min(k + args.batch, len(samples)))]
            tally.add(common.lm_forward(net.model, collate(items)).logits, items)
    print(json.dumps({"model": args.model, "rows": len(samples), "accuracy": tally.accuracy(),
                      "targets": dict(sorted(tally.seen.items()))}), flush=True)
    return 0


def run_copy(args: argparse.Namespace) -> int:
    import transformers

    from cluenet import tokenizer as tokmod
    from training.model_build import small_config

    torch.manual_seed(args.seed)
    tok = tokmod.load()
    model = transformers.Qwen2VLForConditionalGeneration(small_config("qwen2_vl", tok))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    _train_copy(model, opt, len(tok), args.steps, COPY_LEN, args.every)
    return 0


def recall_batch(keys: Sequence[int], values: Sequence[int], filler: Sequence[int], batch: int, pairs: int,
                 noise: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Associative recall rows: ``pairs`` times (``noise`` filler ids, key, value), a separator,
    then every key again in a random order (two filler ids before each), labels on its value.
    Keys are distinct within a row; values are drawn with repeats, so only the binding in
    this row tells which value follows a key."""
    def pick(pool: Sequence[int], n: int) -> list[int]:
        return [pool[i] for i in torch.randint(0, len(pool), (n,), generator=gen).tolist()]

    rows, labs = [], []
    for _ in range(batch):
        ks = [keys[i] for i in torch.randperm(len(keys), generator=gen)[:pairs].tolist()]
        vs = pick(values, pairs)
        ids = [t for k, v in zip(ks, vs) for t in (*pick(filler, noise), k, v)] + [filler[0]]
        lab = [-100] * len(ids)
        for j in torch.randperm(pairs, generator=gen).tolist():
            ids += [*pick(filler, 2), ks[j], vs[j]]
            lab += [-100] * 3 + [vs[j]]
        rows.append(ids)
        labs.append(lab)
    return torch.tensor(rows), torch.tensor(labs)


def held_accuracy(model: Any, held: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Next-token accuracy on the labelled positions of ``held`` (ids, labels)."""
    with torch.no_grad():
        model.eval()
        pred = model(input_ids=held[0]).logits[:, :-1].argmax(-1)
        model.train()
    lab = held[1][:, 1:]
    return round((pred[lab != -100] == lab[lab != -100]).float().mean().item(), 3)


def text_probe_setup(seed: int, sizes_json: str = "") -> tuple[Any, dict[str, list[int]]]:
    """The small Qwen2-VL model (``--sizes``) and the id pools of the text probes: colour keys,
    shape values, filler (neither, not special) and every non-special id; seeded with ``seed``."""
    import transformers

    from cluenet import tokenizer as tokmod
    from cluenet.data import clueworld as cw
    from training import model_build, text_pretrain

    torch.manual_seed(seed)
    tok = tokmod.load()
    ids_of = token_classes(tok.convert_ids_to_tokens(list(range(len(tok)))), cw.COLOUR_NAMES, cw.SHAPES)
    text = text_pretrain.text_pool(tok)
    pools = {"keys": sorted(ids_of["colour"]), "values": sorted(ids_of["shape"]),
             "filler": [i for i in text if i not in ids_of["colour"] | ids_of["shape"]], "text": text}
    config = model_build.small_config("qwen2_vl", tok, model_build.parse_sizes(sizes_json))
    return transformers.Qwen2VLForConditionalGeneration(config), pools


def recall_held(pools: dict[str, list[int]], seed: int, pairs: int = 4, noise: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """256 held-out ``recall`` rows (generator seeded with ``seed``)."""
    return recall_batch(pools["keys"], pools["values"], pools["filler"], 256, pairs, noise,
                        torch.Generator().manual_seed(seed))


def run_recall(args: argparse.Namespace) -> int:
    model, pools = text_probe_setup(args.seed, args.sizes)
    if args.pairs > len(pools["keys"]):
        raise SystemExit(f"--pairs is at most {len(pools['keys'])} (one per colour word), got {args.pairs}")
    gen = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    held = recall_held(pools, args.seed + 1, args.pairs, args.noise)
    print(json.dumps({"chance": round(1 / len(pools["values"]), 3), "pairs": args.pairs, "noise": args.noise}),
          flush=True)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        warm_up(opt, step, args.warmup)
        ids, labels = recall_batch(pools["keys"], pools["values"], pools["filler"], args.batch, args.pairs,
                                   args.noise, gen)
        adamw_step(model, opt, model(input_ids=ids, labels=labels).loss)
        if step % args.every == 0 or step == args.steps:
            print(json.dumps({"step": step, "seconds": round(time.time() - t0),
                              "recall_accuracy": held_accuracy(model, held)}), flush=True)
    return 0


def option_marks(tok: Any) -> dict[str, Any]:
    """Ids of the prompt's option-list tokens: ``A``..``E`` as the option lines write them, the
    chain's `` A``..`` E``, and "Options", ":", ".", the newline and " is"."""
    conv = tok.convert_tokens_to_ids
    return {"letters": [conv(c) for c in "ABCDE"], "said": [conv("Ġ" + c) for c in "ABCDE"],
            "head": [conv("Options"), conv(":"), conv("Ċ")], "dot": conv("."), "newline": conv("Ċ"), "is": conv("Ġis")}


def options_batch(marks: dict[str, Any], content: Sequence[int], batch: int, length: int, queries: int,
                  gen: torch.Generator, gap: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Option-lookup rows: filler, then "Options:" and five lines ``L. <template> <content>`` (the
    template shared by the five lines, each line's content its own), then ``queries`` times an
    option drawn with replacement -- filler, part of the template, that option's content, " is"
    -- with the label on its letter (`` B``); ``gap`` > 0 puts 0 to ``gap`` filler and template ids
    between the words and " is", as a chain step does.  Returns ids, labels and a mask of the labels whose
    option was not asked before in the row (a repeat can be copied from the earlier answer)."""
    def draw(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi, (1,), generator=gen))

    pool = set(content)

    def pick(n: int, used: set[int]) -> list[int]:
        left = len(pool - used)
        if left < n:
            raise ValueError(f"{n} distinct ids needed, {left} left in a pool of {len(content)}")
        out: list[int] = []
        while len(out) < n:
            t = content[draw(0, len(content))]
            if t not in used and t not in out:
                out.append(t)
        return out

    rows, labs, fresh = [], [], []
    for _ in range(batch):
        template = pick(draw(0, 5), set())
        used = set(template)
        lines = []
        for _ in range(5):
            lines.append(pick(draw(1, 4), used))
            used |= set(lines[-1])
        body = list(marks["head"])
        for letter, words in zip(marks["letters"], lines):
            body += [letter, marks["dot"], *template, *words, marks["newline"]]
        tail, asked, targets = [], set(), []
        for _ in range(queries):
            k = draw(0, 5)
            between = [(template + pick(1, used))[draw(0, len(template) + 1)] for _ in range(draw(0, gap + 1))]
            tail += (pick(draw(0, 4), used) + template[:draw(0, len(template) + 1)] + lines[k] + between
                     + [marks["is"], marks["said"][k]])
            targets.append((len(tail) - 1, k not in asked))
            asked.add(k)
        if len(body) + len(tail) > length:
            raise ValueError(f"rows of {length} tokens cannot hold {queries} queries; use a longer --length")
        head = pick(length - len(body) - len(tail), used)
        row = head + body + tail
        lab, new = [-100] * length, [False] * length
        for p, first in targets:
            q = len(head) + len(body) + p
            lab[q], new[q] = row[q], first
        rows.append(row)
        labs.append(lab)
        fresh.append(new)
    return torch.tensor(rows), torch.tensor(labs), torch.tensor(fresh)


def run_options(args: argparse.Namespace) -> int:
    from cluenet import tokenizer as tokmod
    from training import model_build, text_pretrain

    model, pools = text_probe_setup(args.seed, args.sizes)
    if args.text_init:
        model_build.load_text(model, args.text_init)
    marks = option_marks(tokmod.load())
    reserved = {*marks["letters"], *marks["said"], *marks["head"], marks["dot"], marks["is"]}
    content = [i for i in pools["text"] if i not in reserved]
    gen = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    ids, labels, fresh = options_batch(marks, content, 128, args.length, args.queries,
                                       torch.Generator().manual_seed(args.seed + 1), args.gap)
    repeat_held = text_pretrain.repeat_batch(pools["text"], 64, args.length, torch.Generator().manual_seed(args.seed + 2))

    def report(step: int, t0: float) -> dict[str, Any]:
        with torch.no_grad():
            model.eval()
            pred = model(input_ids=ids).logits[:, :-1].argmax(-1)
            model.train()
        lab, new = labels[:, 1:], fresh[:, 1:]
        hit = pred == lab
        return {"step": step, "seconds": round(time.time() - t0), "accuracy": round(hit[lab != -100].float().mean().item(), 3),
                "fresh_accuracy": round(hit[new].float().mean().item(), 3),
                "repeat_accuracy": held_accuracy(model, repeat_held)}

    t0 = time.time()
    print(json.dumps({"chance": 0.2, **report(0, t0)}), flush=True)
    for step in range(1, args.steps + 1):
        warm_up(opt, step, args.warmup)
        b_ids, b_labels, _ = options_batch(marks, content, args.batch, args.length, args.queries, gen, args.gap)
        loss = model(input_ids=b_ids, labels=b_labels).loss
        if args.repeat_batch:
            r_ids, r_labels = text_pretrain.repeat_batch(pools["text"], args.repeat_batch, args.length, gen)
            loss = loss + model(input_ids=r_ids, labels=r_labels).loss
        adamw_step(model, opt, loss)
        if step % args.every == 0 or step == args.steps:
            print(json.dumps(report(step, t0)), flush=True)
    if args.save:
        model_build.save_text(model, args.save)
    return 0


def clip_colours(frames: Any, palette: dict[str, Sequence[int]], tol: int = 30, min_pixels: int = 50) -> list[str]:
    """Sorted palette names with at least ``min_pixels`` pixels within ``tol`` (L1) in any frame."""
    import numpy as np

    px = np.asarray(frames).reshape(-1, 3).astype(int)
    return sorted(k for k, v in palette.items() if (np.abs(px - np.asarray(v)).sum(1) < tol).sum() >= min_pixels)


def bigram_accuracy(train: Sequence[Sequence[str]], held: Sequence[Sequence[str]]) -> float:
    """Teacher-forced accuracy of predicting each item from the previous one (no clip)."""
    from collections import Counter, defaultdict

    nxt: dict[str, Counter] = defaultdict(Counter)
    for seq in train:
        for prev, cur in zip(["<s>", *seq], [*seq, "</s>"]):
            nxt[prev][cur] += 1
    hits = total = 0
    for seq in held:
        for prev, cur in zip(["<s>", *seq], seq):
            total += 1
            hits += int(bool(nxt[prev]) and nxt[prev].most_common(1)[0][0] == cur)
    return hits / max(total, 1)


def run_colours(args: argparse.Namespace) -> int:
    import numpy as np

    from cluenet import prompts
    from cluenet.data import clueworld as cw
    from cluenet.data.jsonl import read_samples
    from training import common, model_build
    from training import data as tdata
    from training.config import ModelConfig
    from training.make_default_model import _processor_fn

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    built = model_build.build(ModelConfig(name_or_path="small:qwen2_vl", finetune="full",
                                          freeze_vision=args.freeze_vision), seed=args.seed)
    model, tok = built.model, built.processor.tokenizer
    samples = read_samples(args.train)
    n_held = min(HELD_OUT_CLIPS, len(samples) // 4)
    if len(samples) - n_held < max(args.batch, 4):
        raise SystemExit(f"need at least {max(args.batch, 4) + n_held} samples, got {len(samples)}")
    store = tdata.VisionStore(Path(args.train).parent / "vision_store", _processor_fn())
    render = tdata.ClueWorldFrames()
    colours: dict[str, list[str]] = {}

    def colours_of(s: Any) -> list[str]:
        if s.id not in colours:
            colours[s.id] = clip_colours(render(s)[0], cw.COLOURS)
        return colours[s.id]

    held, pool = samples[-n_held:], samples[:-n_held][:args.pool]
    print(json.dumps({"no_clip_bigram_accuracy": round(bigram_accuracy([colours_of(s) for s in pool[:1000]],
                                                                      [colours_of(s) for s in held]), 3)}), flush=True)
    vid = built.processor.video_token_id

    def row(s: Any) -> tdata.Row:
        p = store.prefix(s, "direct")
        ids = p.ids
        if args.video_only:  # <|vision_start|> video tokens <|vision_end|>
            a = ids.index(vid)
            ids = ids[a - 1:a + ids.count(vid) + 1]
        tgt = prompts.encode_text(tok, " " + " ".join(colours_of(s)) + prompts.END_OF_TURN)
        return tdata.Row(ids + tgt, [-100] * len(ids) + tgt, [0.0] * len(ids) + [1.0] * len(tgt), p.vision)

    if args.linear_probe:
        feats, bits = [], []
        with torch.no_grad():
            for s in pool[:400]:
                v = store.prefix(s, "direct").vision
                out = model.model.get_video_features(pixel_values_videos=v["pixel_values_videos"],
                                                     video_grid_thw=v["video_grid_thw"], return_dict=True).pooler_output
                feats.append(torch.cat(list(out)).mean(0).numpy() if isinstance(out, (list, tuple)) else out.mean(0).numpy())
                bits.append([int(c in colours_of(s)) for c in cw.COLOUR_NAMES])
        x, y = np.c_[np.array(feats), np.ones(len(feats))], np.array(bits)
        cut = len(x) * 3 // 4  # fit on the first 3/4, score the rest
        w, *_ = np.linalg.lstsq(x[:cut], 2 * y[:cut] - 1, rcond=None)
        acc = ((x[cut:] @ w > 0) == (y[cut:] > 0)).mean(0)
        print(json.dumps({"linear_probe_accuracy": dict(zip(cw.COLOUR_NAMES, acc.round(2).tolist())),
                          "base_rate": dict(zip(cw.COLOUR_NAMES, y[cut:].mean(0).round(2).tolist()))}), flush=True)

    colour_ids = {tok.convert_tokens_to_ids("Ġ" + c) for c in cw.COLOUR_NAMES}
    collate = tdata.Collator(tok.pad_token_id, vid)

    @torch.no_grad()
    def evaluate() -> float:
        model.eval()
        b = collate([[row(s)] for s in held])
        pred = common.lm_forward(model, b).logits[:, :-1].argmax(-1)
        lab = b["labels"][:, 1:]
        mask = torch.zeros_like(lab, dtype=torch.bool)
        for t in colour_ids:
            mask |= lab == t
        model.train()
        return round(float((pred[mask] == lab[mask]).float().mean()), 3)

    vision = {id(p) for p in built.family.vision_module(model).parameters()}
    groups = [{"params": [p for p in model.parameters() if p.requires_grad and id(p) not in vision], "lr": args.lr},
              {"params": [p for p in model.parameters() if p.requires_grad and id(p) in vision],
               "lr": args.vision_lr or args.lr}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    t0 = time.time()
    for step in range(1, args.steps + 1):
        warm_up(opt, step, args.warmup)
        b = collate([[row(s)] for s in rng.sample(pool, args.batch)])
        loss, _ = common.weighted_lm_loss(common.lm_forward(model, b).logits, b)
        adamw_step(model, opt, loss)
        if step % args.every == 0 or step == args.steps:
            print(json.dumps({"step": step, "seconds": round(time.time() - t0), "loss": round(loss.item(), 4),
                              "colour_accuracy": evaluate()}), flush=True)
    return 0


def run_shortcut(args: argparse.Namespace) -> int:
    import re
    from collections import Counter

    from cluenet.data import clueworld as cw
    from cluenet.data.jsonl import read_samples

    name = re.compile(r"\b(?:%s) (?:%s)\b" % ("|".join(cw.COLOUR_NAMES), "|".join(cw.SHAPES)))
    only, seen = Counter(), Counter()
    for s in read_samples(args.data):
        in_clip = {m.group(0) for e in s.events for m in name.finditer(e.text)}
        naming = [i for i, o in enumerate(s.options) if any(m.group(0) in in_clip for m in name.finditer(o))]
        seen[s.qtype] += 1
        only[s.qtype] += int(naming == [s.answer])
    total = sum(seen.values())
    print(json.dumps({"questions": total, "answer_only_option_naming_a_clip_object": round(sum(only.values()) / total, 3),
                      "by_type": {q: round(only[q] / seen[q], 2) for q in sorted(seen)}}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.diagnose", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("tokens", help="teacher-forced accuracy per token class while stage 1 trains")
    t.add_argument("--train", required=True, help="ClueWorld training JSONL with its vision_store/ beside it")
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--chain-weight", type=float, default=5.0, help="loss weight of the chain's closing letter")
    t.add_argument("--sizes", default="", help="JSON overrides of SMALL_SIZES")
    t.add_argument("--no-video", action="store_true", help="drop the video tokens (text-only rows)")
    t.add_argument("--frame-stamps", action="store_true",
                   help="a time stamp before each temporal group of the video (see the module docstring)")
    t.add_argument("--freeze-vision", action="store_true", help="keep the vision tower at its random init")
    t.add_argument("--vision-init", default="", metavar="SAFETENSORS",
                   help="start the vision tower from python -m training.vision_pretrain's output")
    t.add_argument("--copy-warmup", type=int, default=0, metavar="N", help="first train N steps of the copy task")
    t.add_argument("--text-init", default="", metavar="SAFETENSORS",
                   help="start the text model from python -m training.text_pretrain's output")
    t.add_argument("--option-style", default="", choices=["", *OPTION_STYLES],
                   help="how the prompt letters the options (default: the stage-1 ClueWorld config's)")
    t.add_argument("--warmup", type=int, default=30)
    t.add_argument("--save", default="", metavar="SAFETENSORS", help="write the language model there at the end")
    t.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="any other override of the stage-1 config (repeatable), e.g. loss.extraction_weight=5")
    t.add_argument("--grounding-weight", type=float, default=0.0,
                   help="loss.grounding_weight: supervise where the clue tokens look (training.grounding)")
    t.add_argument("--grounding-heads", default="1:0,2:0", help="loss.grounding_heads, layer:head pairs")
    t.set_defaults(func=run_tokens)
    k = sub.add_parser("colours", help="can the model read which colours are in the clip?")
    k.add_argument("--train", required=True, help="ClueWorld training JSONL with its vision_store/ beside it")
    k.add_argument("--batch", type=int, default=8)
    k.add_argument("--pool", type=int, default=1500, help="training clips drawn from (their colours are cached)")
    k.add_argument("--vision-lr", type=float, default=0.0, help="learning rate of the vision tower (default: --lr)")
    k.add_argument("--freeze-vision", action="store_true", help="keep the vision tower at its random init")
    k.add_argument("--video-only", action="store_true", help="the video tokens are the whole prompt")
    k.add_argument("--linear-probe", action="store_true", help="also fit the least-squares probe at init")
    k.add_argument("--warmup", type=int, default=30)
    k.set_defaults(func=run_colours)
    m = sub.add_parser("classes", help="the same classes, teacher-forced, for a trained model on a split")
    m.add_argument("--model", required=True, help="stage output folder (e.g. runs/default/stage1/final)")
    m.add_argument("--data", required=True, help="annotated JSONL (clues and chain), e.g. the test split")
    m.add_argument("--limit", type=int, default=96, help="first N samples (0: all)")
    m.add_argument("--batch", type=int, default=8)
    m.set_defaults(func=run_classes)
    sc = sub.add_parser("shortcut", help="how often the answer is the only option naming an object of the clip")
    sc.add_argument("--data", required=True, help="ClueWorld JSONL (with events)")
    sc.set_defaults(func=run_shortcut)
    c = sub.add_parser("copy", help="the same classes on a synthetic copy task")
    c.set_defaults(func=run_copy)
    r = sub.add_parser("recall", help="the same classes on associative recall (colour key -> shape value)")
    r.add_argument("--pairs", type=int, default=4, help="key-value pairs per row")
    r.add_argument("--noise", type=int, default=6, help="filler tokens before each pair")
    r.add_argument("--batch", type=int, default=16)
    r.add_argument("--sizes", default="", help="JSON overrides of SMALL_SIZES")
    r.add_argument("--warmup", type=int, default=30)
    r.set_defaults(func=run_recall)
    o = sub.add_parser("options", help="the lookup of the chain's closing letter: option content -> its letter")
    o.add_argument("--queries", type=int, default=5, help="option lookups a row (drawn with replacement)")
    o.add_argument("--length", type=int, default=128, help="tokens a row")
    o.add_argument("--gap", type=int, default=0, help="up to N filler/template ids between an option's words and \" is\"")
    o.add_argument("--batch", type=int, default=16)
    o.add_argument("--repeat-batch", type=int, default=0, metavar="N",
                   help="also train N text_pretrain repeat rows a step (keeps the induction circuit in use)")
    o.add_argument("--sizes", default="", help="JSON overrides of SMALL_SIZES")
    o.add_argument("--text-init", default="", metavar="SAFETENSORS",
                   help="start from python -m training.text_pretrain's output")
    o.add_argument("--save", default="", metavar="SAFETENSORS", help="write the text model there at the end")
    o.add_argument("--warmup", type=int, default=30)
    o.set_defaults(func=run_options)
    for q, steps in ((t, 600), (k, 400), (c, 300), (r, 1500), (o, 3000)):
        q.add_argument("--lr", type=float, default=3e-3)
        q.add_argument("--steps", type=int, default=steps)
        q.add_argument("--every", type=int, default=50, help="print every N steps")
        q.add_argument("--seed", type=int, default=0)
    o.set_defaults(lr=1e-3)  # 3e-3 kept the lookups of ``recall`` at chance (docs/default-model-history.md)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from cluenet.cli import run

    return run(build_parser(), list(argv) if argv is not None else None)


if __name__ == "__main__":
    raise SystemExit(main())
