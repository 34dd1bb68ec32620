"""Stage 0b (training.text_pretrain): the repeated-segment rows, the run's failure when no
induction circuit forms, and model.text_init loading model_build.save_text's output."""
import json

import pytest
import torch

from training.text_pretrain import REPORT_NAME, WEIGHTS_NAME, main, repeat_batch


def test_repeat_rows_label_exactly_the_recurrence_of_an_earlier_segment():
    pool = list(range(100, 400))
    ids, labels = repeat_batch(pool, 32, 96, torch.Generator().manual_seed(0), span=(6, 40))
    assert ids.shape == labels.shape == (32, 96)
    assert set(ids.flatten().tolist()) <= set(pool)
    for row, lab in zip(ids.tolist(), labels.tolist()):
        on = [p for p, t in enumerate(lab) if t != -100]
        assert 5 <= len(on) <= 38 and on == list(range(on[0], on[-1] + 1))  # one contiguous run
        assert all(lab[p] == row[p] for p in on)
        n = len(on) + 1  # the segment's first token is not labelled
        start = on[0] - 1
        firsts = [f for f in range(0, start - n + 1) if row[f:f + n] == row[start:start + n] and 0 <= start - (f + n) <= 3]
        assert firsts, "every labelled run repeats the segment that ended 0-3 tokens before it"


def test_repeat_rows_refuse_a_length_that_cannot_hold_two_segments():
    with pytest.raises(ValueError, match="cannot hold"):
        repeat_batch(list(range(10)), 2, 60, torch.Generator(), span=(6, 40))


def test_a_run_that_does_not_reach_until_fails_and_saves_nothing(tmp_path, capsys):
    out = tmp_path / "text"
    assert main(["--out", str(out), "--steps", "2", "--every", "1", "--batch", "2", "--until", "1.0",
                 "--sizes", '{"text_layers": 1}']) == 1
    assert "no induction circuit" in capsys.readouterr().out
    assert sorted(f.name for f in out.iterdir()) == [REPORT_NAME]
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["reached"] is False and [c["step"] for c in report["checks"]] == [1, 2]
    with pytest.raises(SystemExit):
        main(["--out", str(out), "--until", "0"])


def test_init_starts_the_run_from_a_saved_language_model(tmp_path, monkeypatch):
    from training import model_build

    loaded = []
    real = model_build.load_text
    monkeypatch.setattr(model_build, "load_text", lambda model, path: (loaded.append(path), real(model, path)))
    sizes = '{"text_layers": 1}'
    args = ["--steps", "1", "--every", "1", "--batch", "2", "--until", "0.0001", "--sizes", sizes]
    assert main(["--out", str(tmp_path / "a"), *args]) == 0
    assert main(["--out", str(tmp_path / "b"), "--init", str(tmp_path / "a" / WEIGHTS_NAME), *args]) == 0
    assert loaded == [str(tmp_path / "a" / WEIGHTS_NAME)]
    with pytest.raises(SystemExit, match="--init: .*no file"):
        main(["--out", str(tmp_path / "c"), "--init", str(tmp_path / "missing.safetensors"), *args])


def test_text_init_loads_save_text_output_and_leaves_the_vision_tower(tmp_path):
    from training.config import ModelConfig
    from training.model_build import build, save_text

    donor = build(ModelConfig(name_or_path="small:qwen2_vl", finetune="full"), seed=5)
    save_text(donor.model, str(tmp_path / WEIGHTS_NAME))
    assert [f.name for f in tmp_path.iterdir()] == [WEIGHTS_NAME]  # no .tmp left
    plain = build(ModelConfig(name_or_path="small:qwen2_vl", finetune="full"), seed=0)
    loaded = build(ModelConfig(name_or_path="small:qwen2_vl", finetune="full",
                               text_init=str(tmp_path / WEIGHTS_NAME)), seed=0)
    lm = {k: v for k, v in loaded.model.state_dict().items() if "visual" not in k}
    assert all(torch.equal(v, donor.model.state_dict()[k]) for k, v in lm.items())  # lm_head too (tied)
    vis = [k for k in plain.model.state_dict() if "visual" in k]
    assert vis and all(torch.equal(plain.model.state_dict()[k], loaded.model.state_dict()[k]) for k in vis)


def test_text_init_refuses_a_missing_or_foreign_file(tmp_path):
    from safetensors.torch import save_file

    from cluenet.errors import ConfigError
    from training.config import ModelConfig
    from training.model_build import build

    with pytest.raises(ConfigError, match="no file"):
        build(ModelConfig(name_or_path="small:qwen2_vl", finetune="full", text_init=str(tmp_path / "x.safetensors")))
    save_file({"model.language_model.norm.weight": torch.ones(3)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ConfigError, match="does not fit"):
        build(ModelConfig(name_or_path="small:qwen2_vl", finetune="full", text_init=str(tmp_path / "foreign.safetensors")))
    with pytest.raises(ConfigError, match="text_init"):
        ModelConfig(text_init="weights.bin")


def test_make_default_model_runs_each_stage_0_recipe_only_when_its_output_is_missing(tmp_path, monkeypatch):
    import argparse

    from training import make_default_model as mdm

    calls = []
    monkeypatch.setattr(mdm, "_run", lambda cmd, log, **kw: calls.append(cmd[2:]))
    sizes = '{"temporal_patch": 16}'
    args = argparse.Namespace(vision_steps=7, text_steps=9, text_seed=4, ground_steps=5, sizes=sizes)
    vision, text = mdm.pretrain(tmp_path, tmp_path / "data" / "train", args)
    assert [c[0] for c in calls] == ["training.vision_pretrain", "training.ground_pretrain", "training.text_pretrain"]
    assert all(c[-2:] == ["--sizes", sizes] for c in calls)  # every stage builds the same model
    ground = tmp_path / "ground" / WEIGHTS_NAME
    assert calls[2][-4:-2] == ["--init", str(ground)]  # stage 0b starts from stage 0c's language model
    args.sizes = ""
    assert (vision, text) == (tmp_path / "vision" / "vision.safetensors", tmp_path / "text" / WEIGHTS_NAME)
    for f in (vision, ground, text):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"")
    calls.clear()
    mdm.pretrain(tmp_path, tmp_path / "data" / "train", args)
    assert calls == []
    text.unlink()
    args.ground_steps = 0  # no stage 0c: stage 0b starts from the seeded init
    mdm.pretrain(tmp_path, tmp_path / "data" / "train", args)
    assert [c[0] for c in calls] == ["training.text_pretrain"] and "--init" not in calls[0]
    calls.clear()
    args.text_steps, args.ground_steps = 0, 5  # no stage 0b: the runs start from stage 0c's language model
    assert mdm.pretrain(tmp_path, tmp_path / "data" / "train", args)[1] == ground and calls == []
    args.ground_steps = 0  # neither: the seeded init
    assert mdm.pretrain(tmp_path, tmp_path / "data" / "train", args)[1] is None and calls == []


def test_copy_rows_add_weight_times_their_own_loss_and_repeat_for_the_same_batch(tiny_qwen2_vl):
    from training.text_pretrain import text_pool, with_copy_rows

    model, processor = tiny_qwen2_vl
    tok = processor.tokenizer
    base = lambda model, batch: (torch.tensor(0.5), {"x": 1.0})  # noqa: E731
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8]])}
    seen = []
    real_forward = model.forward

    def spy(*a, **kw):
        seen.append(kw["input_ids"].clone())
        return real_forward(*a, **kw)

    model.forward = spy
    try:
        with torch.no_grad():
            loss, m = with_copy_rows(base, tok, 2.0, rows=3)(model, batch)
            again, _ = with_copy_rows(base, tok, 2.0, rows=3)(model, batch)
            other, _ = with_copy_rows(base, tok, 2.0, rows=3)(model, {"input_ids": torch.tensor([[5, 6, 7, 9]])})
    finally:
        del model.forward
    assert m["x"] == 1.0 and loss.item() == pytest.approx(0.5 + 2.0 * m["copy_loss"])
    assert seen[0].shape == (3, 128) and set(seen[0].flatten().tolist()) <= set(text_pool(tok))
    assert not set(seen[0].flatten().tolist()) & set(tok.all_special_ids)
    assert torch.equal(seen[0], seen[1]) and again.item() == loss.item()  # same batch, same rows
    assert not torch.equal(seen[0], seen[2])


def test_stage1_and_baselines_train_on_copy_rows_only_when_asked(tmp_path):
    from training import baselines, stage1
    from training.loop import read_metrics

    from recipe_helpers import baseline_config, stage1_config, tiny_split

    split = tiny_split(tmp_path / "train", n=4, seed=41)
    stage1.run(stage1_config(split, tmp_path / "s1", steps=2, **{"loss.copy_weight": 0.5, "loss.copy_rows": 2,
                                                                  "loss.copy_heads": "0:1,1:1", "loss.lookup_rows": 1,
                                                                  "loss.copy_prev_on_task": True, "loss.copy_ov": True}))
    for r in read_metrics(tmp_path / "s1"):
        assert "copy_loss" in r and "lookup_loss" in r
        assert all(0 <= r[k] <= 1 for k in ("induction_mass", "lookup_mass", "task_prev_mass", "induction_copy",
                                            "lookup_copy"))
    baselines.run(baseline_config("direct", split, tmp_path / "d", steps=2, **{"loss.copy_weight": 1.0}))
    assert all("copy_loss" in r for r in read_metrics(tmp_path / "d"))
    stage1.run(stage1_config(split, tmp_path / "off", steps=1))
    assert not any("copy_loss" in r for r in read_metrics(tmp_path / "off"))


def test_copy_attention_targets_point_at_the_previous_token_and_at_the_token_to_copy():
    from training.text_pretrain import copy_attention_targets

    ids, labels, spans = repeat_batch(list(range(100, 400)), 16, 96, torch.Generator().manual_seed(3),
                                      span=(6, 40), with_spans=True)
    again_ids, again_labels = repeat_batch(list(range(100, 400)), 16, 96, torch.Generator().manual_seed(3), span=(6, 40))
    assert torch.equal(ids, again_ids) and torch.equal(labels, again_labels)  # spans do not change the draw
    prev, induction = copy_attention_targets(spans, 96)
    for row, lab, p, ind in zip(ids.tolist(), labels.tolist(), prev, induction):
        assert p == [(t, (t - 1,)) for t in range(1, 96)]
        labelled = [t for t, v in enumerate(lab) if v != -100]
        assert [q + 1 for q, _ in ind] == labelled  # one query before every labelled token
        for q, (target,) in ind:
            assert target < q and row[target] == lab[q + 1]  # looks at the token it must predict
            assert row[target - 1] == row[q]  # ... the one after an earlier occurrence of its own token


@pytest.mark.parametrize("text", ["1:0", "2:0,1:0", "1:0,1:1", "0:0,1:0,2:0", "1-0,2:0"])
def test_copy_heads_want_a_previous_token_head_before_an_induction_head(text):
    from cluenet.errors import ConfigError
    from training.config import LossConfig
    from training.text_pretrain import copy_heads

    with pytest.raises(ConfigError, match="copy_heads|grounding_heads"):
        copy_heads(text)
    with pytest.raises(ConfigError):
        LossConfig(copy_weight=1.0, copy_heads=text)
    LossConfig(copy_weight=0.0, copy_heads=text)  # off: not read
    assert copy_heads("1:2, 2:2") == ((1, 2), (2, 2))


def test_supervised_copy_heads_add_their_loss_and_learn_where_to_look(tiny_qwen2_vl):
    import copy

    from training.diagnose import adamw_step
    from training.text_pretrain import with_copy_rows

    model, processor = tiny_qwen2_vl
    model = copy.deepcopy(model)  # trained below: leave the session's fixture alone
    tok = processor.tokenizer
    base = lambda model, batch: (torch.tensor(0.5), {})  # noqa: E731
    plain = with_copy_rows(base, tok, 1.0, rows=4)
    heads = with_copy_rows(base, tok, 1.0, rows=4, heads="0:1,1:1", model=model)
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8]])}
    with torch.no_grad():
        loss_plain, m_plain = plain(model, batch)
        loss_heads, m = heads(model, batch)
    assert m["copy_loss"] == pytest.approx(m_plain["copy_loss"]) and 0 <= m["induction_mass"] <= 1
    # each head adds its mean -log(mass), which is at least -log(mean mass) (Jensen)
    floor = 0.5 + m["copy_loss"] - torch.log(torch.tensor([m["prev_mass"], m["induction_mass"]])).sum()
    assert loss_heads.item() >= float(floor) - 1e-4 and loss_heads.item() > loss_plain.item()
    before = m["prev_mass"]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(30):
        loss, m = heads(model, {"input_ids": torch.tensor([[step, 6, 7, 8]])})
        adamw_step(model, opt, loss)
    assert m["prev_mass"] > max(0.5, 2 * before)  # position-only attention: learnt in a few steps


def test_lookup_rows_restate_one_lettered_line_and_send_the_induction_head_to_its_letter():
    from training.text_pretrain import copy_attention_targets, lookup_batch

    pool, letters, newline = list(range(100, 400)), [11, 12, 13, 14, 15], 10
    ids, labels, spans = lookup_batch(pool, letters, newline, 32, 128, torch.Generator().manual_seed(4))
    assert ids.shape == labels.shape == (32, 128)
    chosen = set()
    for row, lab, (first, again, n) in zip(ids.tolist(), labels.tolist(), spans):
        lines = [i for i, t in enumerate(row[:-1]) if t in letters and row[i + 1] == newline]
        assert [row[i] for i in lines] == letters  # five lines, lettered in order
        assert row[again:again + n] == row[first:first + n] and row[again + n - 1] in letters
        assert first + n - 1 in lines and 3 <= n <= 5  # a whole line: 2-4 words and its letter
        last_words = [row[i - 1] for i in lines]
        assert len(set(last_words)) == 5  # the last word tells the lines apart
        assert row.count(row[again + n - 2]) >= 3  # the restated last word is also mentioned in between
        assert [t for t, v in enumerate(lab) if v != -100] == list(range(again + 1, again + n))
        _, (induction,) = copy_attention_targets([(first, again, n)], 128)
        assert induction[-1] == (again + n - 2, (first + n - 1,))  # last word -> its line's letter
        chosen.add(row[again + n - 1])
    assert len(chosen) >= 4  # the restated line varies
    with pytest.raises(ValueError, match="cannot hold"):
        lookup_batch(pool, letters, newline, 1, 40, torch.Generator())
