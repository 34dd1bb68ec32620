"""Clue grounding: where each gold clue happens, which row positions show it, the tapped heads'
attention against the model's own, and the loss inside stage 1."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from cluenet import backbones
from cluenet.data import clueworld as cw
from cluenet.data.jsonl import read_samples
from cluenet.errors import ConfigError
from training import common, grounding, stage1
from training import data as tdata
from training.config import LossConfig
from training.loop import read_metrics

from recipe_helpers import stage1_config, tiny_split

KIND_OF_VERB = {"enters": "enter", "hits": "hit", "stops": "stop", "turns": "turn", "leaves": "leave"}


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    return tiny_split(tmp_path_factory.mktemp("cw") / "train")


@pytest.mark.parametrize("index", range(12))
def test_clue_cells_put_each_clue_where_cell_events_has_its_event(index):
    rng = lambda: cw.clip_rng(5, index)  # noqa: E731
    _, _, sample = cw.make_episode(rng())
    cells = cw.clue_cells(rng())
    events = cw.cell_events(rng())
    col = {k: j for j, k in enumerate(cw.EVENT_TARGETS)}
    assert len(cells) == len(sample.clues)
    for clue, (subject, other) in zip(sample.clues, cells):
        kind = KIND_OF_VERB[clue.text.split()[3]]
        (cell,) = subject
        slot = events[cell, col[f"{kind}_slot"]]
        # cell_events keeps the earlier of two events of one kind in a cell; the clue's is at or after it
        assert 0 < slot <= 1 + int(round(clue.start * 2)), (clue, slot)
        name = clue.text.split()[1:3]
        assert [cw.COLOUR_NAMES[events[cell, col[f"{kind}_colour"]] - 1], cw.SHAPES[events[cell, col[f"{kind}_shape"]] - 1]] \
            == name or slot < 1 + int(round(clue.start * 2))
        assert bool(other) == (kind == "hit")


def test_video_layout_picks_the_span_s_patches_and_the_cells_tokens():
    ids = [7, 7, *[99] * 32, 7]  # two temporal patches of a 4 x 4 merged grid after two text tokens
    layout = grounding.VideoLayout.of(ids, 99, (2, 8, 8), 2, (0.0, 0.25, 0.5, 0.75))
    assert layout.grid == (2, 4, 4) and layout.positions[0] == 2
    assert layout.tokens(0.5, 1.0, [5], 4) == [2 + 16 + 5]  # second patch, row 1, column 1
    assert layout.tokens(0.0, 1.0, [0], 2) == [2 + 0, 2 + 1, 2 + 4, 2 + 5, 2 + 16, 2 + 17, 2 + 20, 2 + 21]
    assert layout.tokens(0.25, 0.5) == list(range(2, 18))  # no cells: the whole patch
    assert layout.tokens(2.0, 2.5) == list(range(18, 34))  # past the clip: the nearest patch
    with pytest.raises(ValueError, match="video tokens"):
        grounding.VideoLayout.of(ids[:-3], 99, (2, 8, 8), 2, (0.0, 0.25, 0.5, 0.75))


def test_clue_line_targets_cover_every_clue_token_and_look_at_the_hit_object_after_hits(tokenizer):
    from cluenet import prompts
    from cluenet.schema import Clue

    clues = (Clue("c1", 0.0, 0.5, "the red diamond enters from the left"),
             Clue("c2", 0.5, 1.0, "the red diamond hits the purple ring"))
    ids = [*[99] * 32]
    layout = grounding.VideoLayout.of(ids, 99, (2, 8, 8), 2, (0.0, 0.25, 0.5, 0.75))
    block = prompts.encode_text(tokenizer, prompts.clues_target(clues))
    pairs = grounding.clue_line_targets(tokenizer, clues, 40, layout, [((1,), ()), ((2,), (3,))], 4)
    queries = [q for q, _ in pairs]
    assert queries == sorted(queries) and len(set(queries)) == len(queries)
    words = [tokenizer.decode([block[q - 40 + 1]]).strip() for q in queries]
    assert "<clues>" not in words and "</clues>" not in words
    first = [t for q, t in pairs if q < queries[words.index("hits")]]
    assert first[0] == (1,)  # clue 1, patch 0, cell 1
    hit = words.index("hits")
    assert pairs[hit][1] == (16 + 2,)  # "hits" itself is read at the subject
    assert pairs[hit + 2][1] == (16 + 3,) and words[hit + 2] == "purple"  # the object hit


def test_tapped_heads_equal_the_model_s_attention_with_video_rows(split, tiny_qwen2_vl):
    model, proc = tiny_qwen2_vl
    sample = read_samples(split)[0]
    frames, times = common.frame_source(stage1_config(split, split.parent / "x").data, [sample], str(split))(sample)
    prefix = tdata.make_prefix(proc, backbones.get_family("qwen2_vl"), sample, frames, times, "cluenet")
    row = tdata.stage1_row(proc.tokenizer, prefix, sample, LossConfig())
    batch = common.collator(proc)([[row], [row]])
    before = model.config._attn_implementation  # a session fixture: put it back as it was
    model.set_attn_implementation("eager")
    try:
        tap = grounding.AttentionTap(model, [(0, 1), (1, 3)])
        out = model(**tdata.model_inputs(batch), output_attentions=True, use_cache=False)
        rows, queries = torch.tensor([0, 1, 1]), torch.tensor([len(row) - 1, 10, len(prefix.ids) + 3])
        for layer, head in tap.heads:
            torch.testing.assert_close(tap.attention(layer, head, rows, queries), out.attentions[layer][rows, head, queries])
        tap.remove()
    finally:
        model.set_attn_implementation(before)


def test_the_loss_keeps_a_gradient_when_a_head_puts_almost_nothing_on_its_target(tiny_qwen2_vl):
    """-log(mass) is taken in log space: a clamp at a small mass would have left such a head
    without any gradient (measured: a letter head at mass 1e-28 whose loss sat at the clamp)."""
    model, _ = tiny_qwen2_vl
    ids = torch.arange(5, 45)[None]
    tap = grounding.AttentionTap(model, [(1, 0)])
    try:
        q_proj = grounding.text_layers(model)[1].self_attn.q_proj
        with torch.no_grad():  # a head that looks only at its own token: position 0 gets ~nothing
            saved = q_proj.weight.clone()
            q_proj.weight.mul_(1e4)
            model(input_ids=ids, use_cache=False)
            _, mass = grounding.target_mass(tap, [[(39, (0,))]])
            model(input_ids=ids, use_cache=False)
        loss, _ = grounding.grounding_loss(tap, [[(39, (0,))]])
        assert float(mass) < 1e-6 and torch.isfinite(loss) and float(loss) > -math.log(1e-6)  # past any clamp
        loss.backward()
        assert q_proj.weight.grad is not None and q_proj.weight.grad.abs().sum() > 0
    finally:
        with torch.no_grad():
            q_proj.weight.copy_(saved)
        model.zero_grad(set_to_none=True)
        tap.remove()


def test_a_detached_term_trains_its_head_s_query_and_key_only(tiny_qwen2_vl):
    model, _ = tiny_qwen2_vl
    ids = torch.arange(5, 45)[None]
    layers = grounding.text_layers(model)
    tap = grounding.AttentionTap(model, [(1, 0)])
    try:
        for detach in (False, True):
            model.zero_grad(set_to_none=True)
            model(input_ids=ids, use_cache=False)
            loss, _ = grounding.grounding_loss(tap, [[(39, (3, 4))]], detach=detach)
            loss.backward()
            own = layers[1].self_attn.q_proj.weight.grad
            below = layers[0].self_attn.v_proj.weight.grad
            assert own is not None and own.abs().sum() > 0
            assert (below is None) == detach  # the layer below learns only without detach
    finally:
        model.zero_grad(set_to_none=True)
        tap.remove()


def test_bad_grounding_heads_are_refused(tiny_qwen2_vl):
    with pytest.raises(ConfigError, match="layer:head"):
        LossConfig(grounding_weight=1.0, grounding_heads="1-0")
    LossConfig(grounding_weight=0.0, grounding_heads="1-0")  # off: not read
    with pytest.raises(ConfigError, match="layers"):
        grounding.AttentionTap(tiny_qwen2_vl[0], [(9, 0)])
    with pytest.raises(ConfigError, match="heads"):
        grounding.AttentionTap(tiny_qwen2_vl[0], [(0, 64)])
    with pytest.raises(ConfigError, match="grounding_letter_target"):
        LossConfig(grounding_letter_target="words")


def test_stage1_with_grounding_learns_where_the_clues_are(split, tmp_path):
    """The grounding loss reaches the tapped heads: on a fixed set of rows their attention mass
    on the clues' video tokens grows well above where it starts."""
    cfg = stage1_config(split, tmp_path / "s1", steps=40, **{"loss.grounding_weight": 1.0,
                                                            "loss.grounding_heads": "0:0,1:1", "optim.lr": 3e-3,
                                                            "train.save_every": 100})
    trainer = stage1.setup(cfg)
    rows = [r for i in range(len(trainer.train_data)) for r in trainer.train_data[i]]
    assert all(r.ground for r in rows)
    video = {p for r in rows for p, t in enumerate(r.input_ids) if t == trainer.built.processor.video_token_id}
    assert all(set(t) <= video for r in rows for _, t in r.ground)
    trainer.train()
    mass = [m["ground_mass"] for m in read_metrics(tmp_path / "s1") if "ground_mass" in m]
    assert len(mass) == 40
    assert sum(mass[-5:]) / 5 > 2 * sum(mass[:5]) / 5, mass


def test_grounding_is_off_by_default(split, tmp_path):
    trainer = stage1.setup(stage1_config(split, tmp_path / "s1", steps=1))
    assert not trainer.train_data[0][0].ground


@pytest.mark.parametrize("style", ["letter_last", "letter_first"])
def test_letter_targets_point_at_the_right_option_s_own_words_then_at_the_letters_before(split, tokenizer, style):
    from cluenet import prompts

    samples = [s for s in read_samples(split) if s.options[s.answer].startswith("because")]
    assert samples, "the fixture split has a 'why' question"
    sample = samples[0]
    prompt = prompts.encode_text(tokenizer, prompts.question_text(sample.question, sample.options, style) + "\n")
    letter = prompts.LETTERS[sample.answer]
    shared = set(sample.options[0].split()).intersection(*(set(o.split()) for o in sample.options))
    own = [w for w in sample.options[sample.answer].split() if w not in shared]
    for target, n_letters in ((prompts.reasoning_target(sample.chain, sample.answer), 2),
                              (prompts.direct_target(sample.answer), 1)):
        e = prompts.encode_pair(tokenizer, prompt, target)
        found = grounding.letter_targets(tokenizer, e.input_ids, len(prompt), e.answer_positions, sample.answer)
        assert [q for q, _ in found] == [p - 1 for p in e.answer_positions] and len(found) == n_letters
        first = found[0][1]
        assert first[-1] < len(prompt)
        words = [tokenizer.decode([e.input_ids[p]]).strip().rstrip(".") for p in first]
        assert sorted(words) == sorted([*own, letter]), (words, own)  # "because it hit the" left out
        assert [t for _, t in found] == [(*first, *e.answer_positions[:k]) for k in range(n_letters)]
        alone = grounding.letter_targets(tokenizer, e.input_ids, len(prompt), e.answer_positions, sample.answer,
                                         letter_only=True)
        (letter_pos,) = [p for p in first if tokenizer.decode([e.input_ids[p]]).strip().rstrip(".") == letter]
        assert alone == [(q, (letter_pos, *e.answer_positions[:k])) for k, (q, _) in enumerate(found)]
    no_letter = [t for t in prompt if tokenizer.decode([t]).strip() != letter]
    e = prompts.encode_pair(tokenizer, no_letter, prompts.direct_target(sample.answer))
    assert grounding.letter_targets(tokenizer, e.input_ids, len(no_letter), e.answer_positions, sample.answer) == []


def test_grounding_letters_reach_stage1_and_the_baselines_and_stay_off_by_default(split, tmp_path):
    from training import baselines

    from recipe_helpers import baseline_config

    on = {"loss.grounding_weight": 1.0, "loss.grounding_letters": True, "loss.grounding_heads": "0:0,1:1"}
    s1 = stage1.setup(stage1_config(split, tmp_path / "s1", steps=1, **on))
    s1_plain = stage1.setup(stage1_config(split, tmp_path / "s1p", steps=1, **{**on, "loss.grounding_letters": False}))
    row, plain = s1.train_data[0][0], s1_plain.train_data[0][0]
    assert row.ground == plain.ground and len(row.ground_letters) == 2 and not plain.ground_letters
    for kind, n in (("direct", 1), ("cot", 2)):
        cfg = baseline_config(kind, split, tmp_path / kind, steps=1, **on)
        t = baselines.setup(cfg, rows=baselines.make_rows(cfg))
        assert len(t.train_data[0][0].ground_letters) == n and not t.train_data[0][0].ground
        assert hasattr(t.loss_fn, "tap")
        off = baseline_config(kind, split, tmp_path / f"{kind}-off", steps=1, **{**on, "loss.grounding_letters": False})
        t_off = baselines.setup(off, rows=baselines.make_rows(off))
        assert not t_off.train_data[0][0].ground_letters and not hasattr(t_off.loss_fn, "tap")
    cfg = baseline_config("cot", split, tmp_path / "cot-run", steps=2, **on)
    baselines.run(cfg)
    rows = read_metrics(tmp_path / "cot-run")
    assert rows and all(0.0 <= m["letter_mass"] <= 1.0 and "ground_mass" not in m for m in rows)
    stage1.run(stage1_config(split, tmp_path / "s1-run", steps=2, **on))
    assert all("letter_mass" in m and "ground_mass" in m for m in read_metrics(tmp_path / "s1-run"))


def test_letter_heads_are_supervised_apart_from_the_clue_heads(split, tmp_path, monkeypatch):
    seen = []
    real = grounding.grounding_loss
    monkeypatch.setattr(grounding, "grounding_loss",
                        lambda tap, ground, heads=None, detach=False: (seen.append((list(heads), detach)),
                                                                       real(tap, ground, heads, detach))[1])
    on = {"loss.grounding_weight": 1.0, "loss.grounding_letters": True, "loss.grounding_heads": "0:0",
          "loss.grounding_letter_heads": "1:1"}
    trainer = stage1.setup(stage1_config(split, tmp_path / "s1", steps=1, **on))
    assert trainer.loss_fn.tap.heads == [(0, 0), (1, 1)]
    trainer.setup()
    trainer.train()
    assert seen == [([(0, 0)], False), ([(1, 1)], False)]
    seen.clear()  # grounding_letter_detach reaches the letters' term only
    trainer = stage1.setup(stage1_config(split, tmp_path / "s1d", steps=1, **on, **{"loss.grounding_letter_detach": True}))
    trainer.setup()
    trainer.train()
    assert seen == [([(0, 0)], False), ([(1, 1)], True)]
    with pytest.raises(ConfigError, match="layer:head"):
        LossConfig(grounding_weight=1.0, grounding_letters=True, grounding_letter_heads="2")


def test_head_outputs_add_up_to_the_attention_layer_s_output(tiny_qwen2_vl):
    model, _ = tiny_qwen2_vl
    attn = grounding.text_layers(model)[1].self_attn
    n_heads = attn.config.num_attention_heads
    tap = grounding.AttentionTap(model, [(1, h) for h in range(n_heads)])
    got = {}
    hook = attn.register_forward_hook(lambda m, a, out: got.__setitem__("out", out[0].detach()))
    try:
        with torch.no_grad():
            model(input_ids=torch.arange(5, 37)[None], use_cache=False)
            rows, queries = torch.tensor([0, 0, 0]), torch.tensor([0, 7, 31])
            total = sum(grounding.head_output(tap, 1, h, rows, queries) for h in range(n_heads))
        bias = attn.o_proj.bias if attn.o_proj.bias is not None else 0
        torch.testing.assert_close(total + bias, got["out"][0, queries], rtol=1e-4, atol=1e-5)
    finally:
        hook.remove()
        tap.remove()
