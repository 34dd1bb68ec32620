"""ClueWorld generator: determinism, sample validity, decodable clips, answers that
follow from the pixels, real causality, knob validation and the CLI."""
from __future__ import annotations

import json
import re

import av
import numpy as np
import pytest

from cluenet import grammar
from cluenet.data import clueworld as cw
from cluenet.data.clueworld import TEMPLATES, WorldConfig, generate, make_episode, make_sample
from cluenet.errors import ConfigError, InputError
from cluenet.schema import LETTERS, Sample

WIDE = WorldConfig(objects=(2, 6))  # every template, the count question included
COLOUR_TOL = 60  # RGB distance: H.264 (yuv420p) smears colours at shape edges
MIN_PIXELS = 20  # an object counts as shown with at least this many pixels of its colour


def _decode(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _samples(cfg: WorldConfig, per_template: int, seed: int = 0) -> list[Sample]:
    out = []
    for t in cw.allowed_templates(cfg):
        out += [make_sample(cw.clip_rng(seed, i), cfg, f"{t}{i}", template=t) for i in range(per_template)]
    return out


# ----------------------------------------------------------------------------- determinism
@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The same 10-clip set written with 1 and 2 workers, and one from another seed."""
    root = tmp_path_factory.mktemp("cw")
    a = generate(root / "a", 10, seed=7, workers=1)
    b = generate(root / "b", 10, seed=7, workers=2)
    c = generate(root / "c", 10, seed=8, workers=1)
    return a, b, c


def test_same_seed_gives_identical_files_for_any_worker_count(written):
    a, b, c = written
    assert a.read_bytes() == b.read_bytes()
    assert (a.parent / cw.META_NAME).read_bytes() == (b.parent / cw.META_NAME).read_bytes()
    assert a.read_bytes() != c.read_bytes()
    for line in a.read_text().splitlines():
        clip = Sample.from_dict(json.loads(line)).video
        assert (a.parent / clip).read_bytes() == (b.parent / clip).read_bytes(), clip


def test_a_clip_encodes_to_the_same_bytes_whatever_ran_before_in_the_process(tmp_path):
    """With x264's CRF rate control a one-step training run in between gave this clip other bytes
    (3 of 3 tries, not always the same other bytes), which made the worker-count test fail
    whenever a training test ran earlier in the pytest session; constant QP must not."""
    import torch

    from cluenet.video import write_video
    from recipe_helpers import stage1_config, tiny_split
    from training import stage1

    cfg = WorldConfig()
    frames, _, _ = make_episode(cw.clip_rng(7, 0), cfg, "x")

    def encode(tag: str) -> bytes:
        return write_video(tmp_path / f"{tag}.mp4", frames, cfg.fps, options=cw.ENCODER_OPTIONS).read_bytes()

    reference = encode("fresh")
    stage1.run(stage1_config(tiny_split(tmp_path / "cw", n=2, seed=51), tmp_path / "s1", steps=1))
    assert encode("after-training") == reference
    x = torch.randn(256, 256)
    float((x @ x).sum())
    assert encode("after-matmul") == reference


def test_same_seed_gives_identical_frames_in_memory():
    f1, t1, s1 = make_episode(11)
    f2, t2, s2 = make_episode(11)
    f3, _, s3 = make_episode(12)
    assert np.array_equal(f1, f2) and t1 == t2 and s1 == s2
    assert not np.array_equal(f1, f3) and s1 != s3
    assert make_sample(11) == s1  # the text-only path draws the same sample


def test_written_files_and_clips(written):
    path = written[0]
    lines = path.read_text().splitlines()
    assert len(lines) == 10
    meta = json.loads((path.parent / cw.META_NAME).read_text())
    assert meta["seed"] == 7 and meta["version"] == cw.GENERATOR_VERSION and meta["config"]["frames"] == 16
    for line in lines:
        d = json.loads(line)
        assert line == json.dumps(d, sort_keys=True) and d["source"] == "clueworld"
        frames = _decode(path.parent / d["video"])
        assert frames.shape == (16, 112, 112, 3)


# ----------------------------------------------------------------------------- validity
@pytest.mark.parametrize("cfg", [WorldConfig(), WIDE, WorldConfig(frames=10, fps=2.0, size=64, distractors=(2, 2), objects=(4, 6))])
def test_every_sample_is_valid(cfg):
    duration = cfg.frames / cfg.fps
    for s in _samples(cfg, per_template=12):
        assert len(s.options) == cw.NUM_OPTIONS == len(set(s.options))
        assert 0 <= s.answer < len(s.options) and s.qtype in {"CW", "TN", "TP", "DC", "DO"}
        assert [c.id for c in s.clues] == [f"c{k}" for k in range(1, len(s.clues) + 1)]
        assert 4 <= len(s.clues) <= 6 and s.events == s.clues
        assert all(0 <= c.start < c.end <= duration + 1e-9 for c in s.clues)
        assert [c.start for c in s.clues] == sorted(c.start for c in s.clues)
        ids = {c.id for c in s.clues}
        assert 2 <= len(s.chain) <= 3 and all(set(st.cites) <= ids for st in s.chain)
        assert s.chain[-1].text.endswith(f"so the answer is {s.options[s.answer]} {LETTERS[s.answer]}")
        assert len({o.split()[-1] for o in s.options}) == len(s.options)  # the last word tells them apart
        parsed = grammar.parse(grammar.render(s.clues, s.chain, s.answer))
        assert parsed.warnings == () and parsed.clues == s.clues and parsed.chain == s.chain
        assert parsed.answer == s.answer
        assert Sample.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_spans_cover_whole_two_frame_slots():
    cfg = WorldConfig()
    slot = 2 / cfg.fps
    for s in _samples(cfg, per_template=5):
        for c in s.clues:
            assert c.end - c.start >= slot - 1e-9
            assert abs(c.start / slot - round(c.start / slot)) < 1e-6, c


def test_question_mix_follows_the_knob():
    only_causal = WorldConfig(mix=(1.0, 0.0, 0.0))
    assert {make_sample(i, only_causal).qtype for i in range(40)} == {"CW"}
    qtypes = [make_sample(cw.clip_rng(3, i)).qtype for i in range(300)]
    families = [sum(q in group for q in qtypes) for group in (("CW",), ("TN", "TP"), ("DC", "DO"))]
    assert all(70 <= f <= 130 for f in families), families


def test_count_question_only_with_five_possible_counts():
    assert "count" not in cw.allowed_templates(WorldConfig())
    assert "count" in cw.allowed_templates(WIDE)
    with pytest.raises(InputError, match="count"):
        make_sample(0, WorldConfig(), template="count")


def test_text_corpus_covers_every_template():
    texts = list(cw.text_corpus(len(TEMPLATES), seed=0))
    questions = " ".join(texts)
    for needle in ("why did", "turn", "entered right after", "entered first", "happened before",
                   "how many objects", "what colour", "which shape", "<clues>", "<chain>", "<answer>"):
        assert needle in questions, needle


# ----------------------------------------------------------------------------- pixels
def _pixels(frames: np.ndarray, colour: str) -> np.ndarray:
    """Per frame: how many pixels show this colour."""
    dist = np.abs(frames.astype(int) - np.array(cw.COLOURS[colour])).sum(-1)
    return (dist < COLOUR_TOL).sum((1, 2))


def _shown(frames: np.ndarray, colour: str) -> np.ndarray:
    return _pixels(frames, colour) >= MIN_PIXELS


def _colour_of(name: str) -> str:
    return next(c for c in cw.COLOUR_NAMES if re.search(rf"\b{c}\b", name))


def _check_first_enter(frames: np.ndarray, s: Sample) -> None:
    """The answer is the option whose object shows first *partly* (crossing the border;
    objects standing from the start show whole), earliest first appearance wins."""
    first = {}
    for i, opt in enumerate(s.options):
        count = _pixels(frames, _colour_of(opt))
        if count.max() >= MIN_PIXELS:
            k = int(np.argmax(count >= MIN_PIXELS))
            if count[k] < 0.75 * count.max():
                first[i] = k
    assert first and min(first, key=first.get) == s.answer, (s.options, first)


def test_first_to_enter_is_readable_from_pixels(tmp_path):
    cfg = WorldConfig()
    for i in range(8):
        frames, _, s = make_episode(cw.clip_rng(5, i), cfg, f"fe{i}", template="first_enter")
        _check_first_enter(frames, s)
        if i < 3:  # also through the H.264 round trip
            from cluenet.video import write_video

            path = write_video(tmp_path / f"{i}.mp4", frames, cfg.fps, options=cw.ENCODER_OPTIONS)
            _check_first_enter(_decode(path), s)


def test_event_spans_match_the_pixels():
    """An entering object's colour appears inside its 'enters' span; the new colour of
    a hit object appears exactly when its 'turns' span starts."""
    cfg = WIDE
    for i in range(20):
        frames, times, s = make_episode(cw.clip_rng(9, i), cfg, f"ev{i}")
        for c in s.clues:
            words = c.text.split()
            if words[3] == "enters":  # "the <colour> <shape> enters from the <side>"
                shown = _shown(frames, words[1])
                assert c.start <= times[int(np.argmax(shown))] < c.end, c
            elif words[3] == "turns":  # "the <colour> <shape> turns <colour>"
                shown = _shown(frames, words[4])
                assert times[int(np.argmax(shown))] == pytest.approx(c.start), c
                assert not shown[: int(np.argmax(shown))].any()


def test_a_hit_really_stops_the_mover():
    """From the pixels: the hitter's centroid moves until the hit and never after."""
    cfg = WorldConfig()
    for i in range(10):
        frames, times, s = make_episode(cw.clip_rng(2, i), cfg, f"st{i}", template="why_stop")
        mover = re.fullmatch(r"why did the (\w+) \w+ stop\?", s.question).group(1)
        stop = next(c for c in s.clues if c.text.endswith(" stops"))
        hit = next(c for c in s.clues if " hits " in c.text)
        assert hit.end == stop.start  # the effect follows the cause at once
        ys, xs = [], []
        for f in frames:
            yy, xx = np.nonzero(np.abs(f.astype(int) - cw.COLOURS[mover]).sum(-1) < 5)
            ys.append(yy.mean() if len(yy) else np.nan)
            xs.append(xx.mean() if len(xx) else np.nan)
        after = [k for k, t in enumerate(times) if t >= stop.start - 1e-9]
        assert np.ptp(np.array(xs)[after]) == 0 and np.ptp(np.array(ys)[after]) == 0
        k = after[0]
        assert (xs[k - 2], ys[k - 2]) != (xs[k], ys[k])  # it was moving before


# ----------------------------------------------------------------------------- knobs, CLI
@pytest.mark.parametrize(
    "kwargs, knob",
    [
        ({"frames": 15}, "frames"),
        ({"frames": 4}, "frames"),
        ({"fps": 0}, "fps"),
        ({"frames": 64, "fps": 1.0}, "limit"),
        ({"size": 100}, "size"),
        ({"size": 8}, "size"),
        ({"objects": (1, 3)}, "objects"),
        ({"objects": (3, 2)}, "objects"),
        ({"objects": (2, 9)}, "objects"),
        ({"distractors": (0, 3)}, "distractors"),
        ({"distractors": (1, 2), "objects": (2, 2)}, "distractors"),
        ({"mix": (0, 0, 0)}, "mix"),
        ({"mix": (1, -1, 1)}, "mix"),
        ({"fill": 0.2}, "fill"),
    ],
)
def test_bad_knobs_raise_config_errors_naming_the_knob(kwargs, knob):
    with pytest.raises(ConfigError, match=knob):
        WorldConfig(**kwargs)


def test_bad_seed_and_counts():
    with pytest.raises(InputError, match="seed"):
        make_sample(-1)
    with pytest.raises(ConfigError, match="n must be"):
        generate("/nonexistent-never-created", 0, seed=0)


def test_cli_writes_the_files(tmp_path, capsys):
    assert cw.main(["--out", str(tmp_path), "--n", "3", "--seed", "4", "--objects", "2-6"]) == 0
    lines = (tmp_path / cw.JSONL_NAME).read_text().splitlines()
    assert len(lines) == 3 and len(list((tmp_path / "clips").glob("*.mp4"))) == 3
    meta = json.loads((tmp_path / cw.META_NAME).read_text())
    assert meta["config"]["objects"] == [2, 6] and "count" in meta["templates"]
    assert cw.main(["--out", str(tmp_path / "t"), "--n", "2", "--no-video"]) == 0
    assert not list((tmp_path / "t" / "clips").glob("*"))
    assert cw.main(["--out", str(tmp_path / "x"), "--n", "2", "--size", "100"]) == 2
    assert "size must be a multiple of 8, got 100" in capsys.readouterr().err
