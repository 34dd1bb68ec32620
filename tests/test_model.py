"""The ClueNet pipeline on tiny random models of both families: valid traces from garbage
output, reuse proven by counting (vision calls, tokens fed), save/load round trips."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cluenet import backbones
from cluenet.errors import InputError, ModelError
from cluenet.filter import FilterHead
from cluenet.model import ClueNet, Event
from cluenet.schema import FilterSettings, Trace

CAP = 12  # generated-token caps in tests: a random model never closes its blocks
OPTS = ["the red square", "the blue circle", "nothing"]


def _net(pair, head=True):
    model, proc = pair
    fam = backbones.family_of(model)
    torch.manual_seed(1)
    fh = FilterHead(model.config.get_text_config().hidden_size).eval() if head else None
    net = ClueNet.from_components(model, proc, fh, name=f"tiny-{fam.name}")
    net.max_clue_tokens = net.max_chain_tokens = CAP
    return net


@pytest.fixture(scope="module", params=["tiny_qwen", "tiny_llava"])
def net(request):
    return _net(request.getfixturevalue(request.param))


def _count_calls(module):
    calls = []
    handle = module.register_forward_hook(lambda m, a, o: calls.append(1))
    return calls, handle


def test_analyze_returns_valid_trace_from_garbage(net, tiny_clip):
    trace = net.analyze(tiny_clip, "What moves first?", OPTS, gold=1, sample_id="s1", qtype="TN")
    assert sum(trace.option_probs) == pytest.approx(1.0, abs=1e-5) and len(trace.option_probs) == 3
    assert trace.answer == int(np.argmax(trace.option_probs))
    assert trace.warnings  # an untrained model does not produce the grammar
    assert trace.clip.frame_times == tiny_clip.times and trace.clip.name == "tiny.mp4"
    assert {"decode", "vision", "prefill", "clues", "filter", "chain", "answer"} <= set(trace.timings)
    assert trace.tokens["clues"] <= CAP and trace.tokens["chain"] <= CAP
    assert Trace.from_json(trace.to_json()) == trace


def test_stream_ends_with_full_trace(net, tiny_clip):
    events = list(net.analyze_stream(tiny_clip, "What moves last?", OPTS))
    assert all(isinstance(e, Event) for e in events)
    assert events[0].kind == "status" and events[-1].kind == "answer"
    assert "scores" in [e.kind for e in events]
    assert events[-1].trace.option_probs and not events[0].trace.option_probs


def test_model_that_emits_clues_forever_gives_partial_trace(tiny_qwen, tiny_clip):
    net = _net(tiny_qwen)
    clues_id = net._ids["clues_open"]

    def force(module, args, out):
        out = out.clone()
        out[..., clues_id] = 1e4
        return out

    handle = backbones.unwrap(net.model).lm_head.register_forward_hook(force)
    try:
        trace = net.analyze(tiny_clip, "What happens?", OPTS)
    finally:
        handle.remove()
    assert trace.tokens["clues"] == CAP and trace.clues == ()
    assert any("token cap" in w for w in trace.warnings)
    assert any("forced <answer>" in w for w in trace.warnings)
    assert sum(trace.option_probs) == pytest.approx(1.0, abs=1e-5)


def test_trained_like_output_is_parsed_into_clues_and_scored(tiny_qwen, tiny_clip):
    """Force a grammatical pass 1 through the logits: the clue is parsed, scored and kept."""
    net = _net(tiny_qwen)
    script = net.tokenizer("\nc1 [0.0-1.5s] the red square moves\n</clues>", add_special_tokens=False)["input_ids"]
    net.max_clue_tokens = len(script) + 2
    calls = {"n": -1}  # lm_head call 0 is the prefill; call k >= 1 follows the k-th fed pass-1 token

    def scripted(module, args, out):
        calls["n"] += 1
        if 1 <= calls["n"] <= len(script):
            out = out.clone()
            out[..., script[calls["n"] - 1]] = 1e4
        return out

    handle = backbones.unwrap(net.model).lm_head.register_forward_hook(scripted)
    try:
        trace = net.analyze(tiny_clip, "Which shape moves?", OPTS)
    finally:
        handle.remove()
    assert [c.id for c in trace.clues] == ["c1"] and trace.clues[0].kept, (trace.raw, script)
    assert 0.0 <= trace.clues[0].score <= 1.0 and trace.threshold is not None


def test_second_question_reuses_vision_and_reason_runs_pass2_only(net, tiny_clip):
    net.cache.clear()
    vision_calls, h1 = _count_calls(net.family.vision_module(net.model))
    fed = []
    h2 = net.family.language_model(net.model).register_forward_pre_hook(
        lambda m, a, kw: fed.append(kw["inputs_embeds"].shape[1]), with_kwargs=True)
    try:
        t1 = net.analyze(tiny_clip, "What moves first?", OPTS)
        t2 = net.analyze(tiny_clip, "What moves last?", OPTS)
        assert len(vision_calls) == 1  # one encoder call for two questions on one clip
        prefix_len = t1.tokens["prefix"]
        fed.clear()
        r = net.reason(t1, [])
        assert len(vision_calls) == 1  # reason runs no vision encoder
        # pass 2 feeds only what follows the prefix: context, generated tokens, maybe a forced answer
        assert fed[0] == r.tokens["context"] < prefix_len
        assert sum(fed) <= r.tokens["context"] + r.tokens["chain"] + 2
        assert set(r.timings) <= {"chain", "answer"}
    finally:
        h1.remove()
        h2.remove()
    assert t2.question != t1.question and t2.tokens["prefix"] != 0


def test_cached_prefix_inputs_match_processor(net, tiny_clip):
    """The placeholder expansion used for cached clips gives the processor's exact ids."""
    from cluenet import prompts

    clip = net._clip(tiny_clip, len(tiny_clip.times))
    text = prompts.prefix_text(net.processor, "Q?", OPTS, clip.times)
    inputs = net.family.processor_inputs(net.processor, text, clip.frames, clip.times)
    vision = net._encode_video(inputs)
    mine = net._text_inputs(text, vision)
    assert torch.equal(mine["input_ids"], inputs["input_ids"])
    if "mm_token_type_ids" in inputs:
        assert torch.equal(mine["mm_token_type_ids"].long(), torch.as_tensor(inputs["mm_token_type_ids"]).long())


def test_reused_prefix_gives_same_answer_as_fresh(tiny_qwen, tiny_clip):
    net = _net(tiny_qwen)
    a = net.analyze(tiny_clip, "What moves?", OPTS)
    b = net.reason(a, [c.id for c in a.clues if c.kept])
    net.cache.clear()
    c = net.analyze(tiny_clip, "What moves?", OPTS)
    assert b.option_probs == pytest.approx(a.option_probs, abs=1e-5)
    assert c.option_probs == pytest.approx(a.option_probs, abs=1e-5) and c.raw == a.raw


def test_refilter_and_baselines(net, tiny_clip):
    t = net.analyze(tiny_clip, "What moves?", OPTS)
    r = net.refilter(t, FilterSettings(tau_min=1.0, rho=1.0, m_max=1))
    assert r.filter.tau_min == 1.0
    d = net.answer_direct(tiny_clip, "What moves?", OPTS)
    c = net.answer_cot(tiny_clip, "What moves?", OPTS)
    for tr, mode in ((d, "direct"), (c, "cot")):
        assert tr.model.mode == mode and sum(tr.option_probs) == pytest.approx(1.0, abs=1e-5)
    assert d.tokens["answer"] == 1 and c.tokens["chain"] <= CAP


@pytest.mark.parametrize("question, options, message", [
    ("", OPTS, "question is empty"),
    ("x" * 1001, OPTS, "1001 characters, limit 1000"),
    ("q", ["a"], "got 1 options, need 2 to 5"),
    ("q", list("abcdef"), "got 6 options"),
    ("q", ["a", " A "], "duplicates"),
    ("q", ["a", ""], "option B is empty"),
])
def test_bad_questions_raise_input_error(net, tiny_clip, question, options, message):
    with pytest.raises(InputError, match=message):
        net.analyze(tiny_clip, question, options)


def test_bad_reason_ids_and_frames(net, tiny_clip):
    t = net.analyze(tiny_clip, "What moves?", OPTS)
    with pytest.raises(InputError, match="not clues of this trace"):
        net.reason(t, ["c99"])
    with pytest.raises(InputError, match="num_frames is 1000"):
        net.analyze(tiny_clip, "q", OPTS, num_frames=1000)


def test_save_and_from_pretrained_round_trip(tiny_qwen, tiny_clip, tmp_path):
    net = _net(tiny_qwen)
    folder = net.save(tmp_path / "m", trained_on="unit test")
    assert {"config.json", "model.safetensors", "filter_head.safetensors", "cluenet.json", "tokenizer.json"} <= {
        p.name for p in folder.iterdir()}
    again = ClueNet.from_pretrained(str(folder), device="cpu")
    again.max_clue_tokens = again.max_chain_tokens = CAP
    a = net.analyze(tiny_clip, "What moves?", OPTS)
    b = again.analyze(tiny_clip, "What moves?", OPTS)
    assert (a.clues, a.chain, a.option_probs, a.raw, a.warnings) == (b.clues, b.chain, b.option_probs, b.raw, b.warnings)
    assert again.info.trained_on == "unit test" and again.info.mode == "cluenet"
    assert json.loads((folder / "cluenet.json").read_text())["backbone"] == "qwen2_5_vl"


def test_option_style_is_saved_loaded_and_used_in_the_prompt(tiny_qwen, tiny_clip, tmp_path, monkeypatch):
    from cluenet import prompts

    net = ClueNet.from_components(*tiny_qwen, option_style="letter_last")
    folder = net.save(tmp_path / "m")
    assert json.loads((folder / "cluenet.json").read_text())["option_style"] == "letter_last"
    again = ClueNet.from_pretrained(str(folder), device="cpu")
    assert again.option_style == "letter_last"
    assert ClueNet.from_pretrained(str(folder), device="cpu", option_style="letter_first").option_style == "letter_first"
    seen = []
    real = prompts.prefix_text
    monkeypatch.setattr(prompts, "prefix_text", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    again.max_clue_tokens = again.max_chain_tokens = CAP
    again.analyze(tiny_clip, "What moves?", OPTS)
    assert f"\n{OPTS[0]} A\n{OPTS[1]} B" in seen[0] and "A. " not in seen[0]
    meta = json.loads((folder / "cluenet.json").read_text())
    (folder / "cluenet.json").write_text(json.dumps({**meta, "option_style": "sideways"}))
    with pytest.raises(ModelError, match="option_style must be one of"):
        ClueNet.from_pretrained(str(folder), device="cpu")


def test_head_size_mismatch_is_model_error(tiny_qwen):
    with pytest.raises(ModelError, match="hidden size 64"):
        ClueNet.from_components(*tiny_qwen, filter_head=FilterHead(64))


def test_default_model_is_random_and_says_so(monkeypatch, tmp_path):
    from cluenet import pretrained

    monkeypatch.setattr(pretrained, "DEFAULT_MODEL_DIR", tmp_path / "absent")
    net = ClueNet.from_pretrained()
    assert net.info.trained_on == pretrained.RANDOM_TRAINED_ON and net.info.backbone == "qwen2_5_vl"


def test_infer_cli_json(tiny_video_file, capsys, monkeypatch, tmp_path):
    import cluenet.model as m
    from cluenet import pretrained
    from cluenet.cli import main

    monkeypatch.setattr(pretrained, "DEFAULT_MODEL_DIR", tmp_path / "absent")
    monkeypatch.setattr(m, "MAX_CLUE_TOKENS", 4)
    monkeypatch.setattr(m, "MAX_CHAIN_TOKENS", 4)
    rc = main(["infer", "--video", str(tiny_video_file), "--question", "What moves?", "--option", "red",
               "--option", "blue", "--frames", "4", "--json"])
    assert rc == 0
    trace = Trace.from_json(capsys.readouterr().out)
    assert trace.clip.name == "tiny.mp4" and len(trace.clip.sha256) == 64 and len(trace.clip.frame_times) == 4
    assert main(["infer", "--video", str(tiny_video_file), "--question", "", "--option", "a", "--option", "b"]) == 2


def test_a_training_lora_output_loads_as_base_plus_adapter(tiny_qwen, tmp_path):
    """``from_pretrained(<stage output>)`` on a LoRA output: the base by its name, the adapter, the
    head, the frames and option style the run saved (what ``training.evaluate`` and the app load)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from cluenet import backbones, pretrained
    from training.common import save_output

    base = _net(tiny_qwen).save(tmp_path / "base", trained_on="base weights")
    model, proc, fam = backbones.load_pretrained(str(base), device="cpu", dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=2, target_modules=fam.lora_targets))
    with torch.no_grad():  # LoRA's B starts at zero: make the adapter change the outputs
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    head = FilterHead(int(model.config.get_text_config().hidden_size))
    info = {"finetune": "lora", "base": str(base), "num_frames": 6, "option_style": "letter_last",
            "recipe": "stage2", "stage": 2, "steps": 3}
    out = save_output(peft, proc, tmp_path / "stage2", info, filter_head=head)
    assert (out / pretrained.ADAPTER_DIR / "adapter_model.safetensors").is_file()

    loaded = ClueNet.from_pretrained(str(out), device="cpu")
    assert loaded.info.adapter == str(out / pretrained.ADAPTER_DIR) and loaded.filter_head is not None
    assert loaded.info.trained_on == f"stage2 LoRA on {base} (3 steps)" and loaded.info.name == str(out)
    assert (loaded.num_frames, loaded.option_style) == (6, "letter_last")
    ids = torch.tensor([[5, 9, 13, 21]])
    with torch.no_grad():
        want = peft.eval()(input_ids=ids).logits
        assert torch.allclose(loaded.model(input_ids=ids).logits, want, atol=1e-5)
        assert not torch.allclose(ClueNet.from_pretrained(str(base), device="cpu").model(input_ids=ids).logits, want,
                                  atol=1e-3)

    (out / pretrained.STAGE_FILE).write_text(json.dumps({**info, "base": ""}))
    with pytest.raises(ModelError, match="a LoRA output that does not name its base model"):
        ClueNet.from_pretrained(str(out), device="cpu")
