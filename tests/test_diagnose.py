"""training.diagnose: token classes, and both probes run end to end on tiny settings."""
import json

import pytest

from training.diagnose import classify, main, token_classes

VOCAB = ["<pad>", "Ġthe", "Ġred", "Ġcircle", "Ġis", "ĠB", "</clues>", "Ġhits", "A", "Ċ", "</chain>"]


def test_classify_splits_clue_and_chain_words_and_finds_the_closing_letter():
    ids_of = token_classes(VOCAB, ["red"], ["circle"])
    # the red circle hits </clues> the red circle is B \n </chain> A: the letter before </chain> closes the chain
    ids = [1, 2, 3, 7, 6, 1, 2, 3, 4, 5, 9, 10, 8]
    labels = [-100] + ids[1:]
    got = classify(ids, labels, ids_of, clues_close=6)
    assert 0 not in got and (got[1], got[2], got[3], got[4]) == ("cl_colour", "cl_shape", "cl_verb", "other")
    assert (got[6], got[7], got[9], got[12]) == ("ch_colour", "ch_shape", "chain_letter", "letter")
    ids[8] = 5  # "... circle B B \n </chain>": only the last letter closes the chain
    got = classify(ids, [-100] + ids[1:], ids_of, clues_close=6)
    assert (got[8], got[9]) == ("letter", "chain_letter")
    numbers = token_classes(["Ġ", "1", "5", "c", "0"], [], [])["number"]
    assert numbers == {1, 2, 4}


def test_classes_scores_a_trained_model_on_a_split(tmp_path, capsys):
    from training import stage1

    from recipe_helpers import stage1_config, tiny_split

    split = tiny_split(tmp_path / "data", n=3, seed=43)
    stage1.run(stage1_config(split, tmp_path / "s1", steps=1))
    capsys.readouterr()
    assert main(["classes", "--model", str(tmp_path / "s1" / "final"), "--data", str(split), "--limit", "2",
                 "--batch", "1"]) == 0
    got = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert got["rows"] == 2 and set(got["accuracy"]) == set(got["targets"])
    # one closing letter in the chain and one answer letter per row
    assert got["targets"]["chain_letter"] == 2 and got["targets"]["letter"] == 2
    assert {"cl_colour", "cl_shape", "cl_verb", "cl_number", "other"} <= set(got["targets"])
    assert all(0.0 <= v <= 1.0 for v in got["accuracy"].values())


def test_copy_probe_prints_accuracy(capsys):
    assert main(["copy", "--steps", "2", "--every", "1"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(0.0 <= r["copy_accuracy"] <= 1.0 for r in rows)


def test_tokens_probe_reports_every_class(tmp_path, capsys):
    from cluenet.data.jsonl import read_samples
    from training import data as tdata
    from training.make_default_model import _processor_fn
    from cluenet import backbones
    from cluenet.data import clueworld

    clueworld.generate(tmp_path, 52, seed=5, write_video=False)
    samples = read_samples(tmp_path / clueworld.JSONL_NAME)
    tdata.VisionStore.build(tmp_path / "vision_store", samples, _processor_fn, backbones.get_family("qwen2_vl"),
                            tdata.ClueWorldFrames())
    args = ["tokens", "--train", str(tmp_path / clueworld.JSONL_NAME), "--steps", "1", "--batch", "2",
            "--sizes", '{"text_layers": 1, "vision_layers": 1}']
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    row = json.loads(out[-1])
    assert row["step"] == 1 and {"cl_colour", "cl_shape", "ch_colour", "chain_letter", "other"} <= set(row["accuracy"])
    assert main(args + ["--frame-stamps", "--copy-warmup", "1", "--every", "1", "--option-style", "letter_first"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert rows[0]["task"] == "copy" and rows[-1]["step"] == 1 and "cl_colour" in rows[-1]["accuracy"]
    assert main(["colours", "--train", str(tmp_path / clueworld.JSONL_NAME), "--steps", "2", "--batch", "2",
                 "--freeze-vision", "--video-only", "--linear-probe", "--every", "1"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert 0.0 <= rows[0]["no_clip_bigram_accuracy"] <= 1.0 and set(rows[1]["linear_probe_accuracy"]) == set(clueworld.COLOUR_NAMES)
    assert [r["step"] for r in rows[2:]] == [1, 2] and all(0.0 <= r["colour_accuracy"] <= 1.0 for r in rows[2:])
    # the grounding loss on, its attention mass per clue-word role, an extra override, the model saved
    saved = tmp_path / "lm.safetensors"
    assert main(args + ["--grounding-weight", "1", "--grounding-heads", "0:0", "--set", "loss.extraction_weight=2",
                        "--save", str(saved)]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert 0.0 < row["ground_mass"] <= 1.0 and row["ground_loss"] > 0
    assert 0.0 < row["accuracy"]["mass:all"] <= 1.0 and "mass:subject_colour" in row["accuracy"]
    assert "role:subject_colour" in row["accuracy"] and saved.is_file()


def test_stamp_frames_splits_the_video_into_stamped_groups():
    import torch

    from training.data import Row
    from training.diagnose import stamp_frames

    V, S, E = 9, 7, 8  # video, vision_start, vision_end ids
    ids = [1, S, *[V] * 6, E, 2, 3]
    row = Row(ids, [-100] * 10 + [3], [0.0] * 10 + [1.0], {"video_grid_thw": torch.tensor([[3, 2, 2]]),
                                                            "pixel_values_videos": torch.zeros(12, 4)})
    stamp_frames(row, V, S, E, [[40], [41], [42, 43]])
    assert row.input_ids == [1, 40, S, V, V, E, 41, S, V, V, E, 42, 43, S, V, V, E, 2, 3]
    assert row.labels[-1] == 3 and row.labels[:-1] == [-100] * 18 and row.weights[-1] == 1.0
    assert len(row.weights) == len(row.input_ids)
    assert row.vision["video_grid_thw"].tolist() == [[1, 2, 2]] * 3 and row.vision["pixel_values_videos"].shape == (12, 4)


def test_stamped_rows_run_through_the_model():
    """A stamped row is valid Qwen2-VL input: M-RoPE positions and the video features line up."""
    import torch

    from cluenet import backbones
    from cluenet import tokenizer as tokmod
    from training.data import Row
    from training.diagnose import stamp_frames

    tok = tokmod.load()
    model, proc = backbones.tiny_model("qwen2_vl", tok)
    fam = backbones.get_family("qwen2_vl")
    import numpy as np

    frames = np.random.default_rng(0).integers(0, 255, (4, 56, 56, 3), dtype=np.uint8)
    text = proc.apply_chat_template([{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "hi"}]}],
                                    add_generation_prompt=True, tokenize=False)
    out = fam.processor_inputs(proc, text, frames, [0.0, 0.5, 1.0, 1.5])
    ids = out["input_ids"][0].tolist()
    vision = {k: out[k] for k in ("pixel_values_videos", "video_grid_thw")}
    groups = int(vision["video_grid_thw"][0, 0])
    row = Row(ids, [-100] * len(ids), [0.0] * len(ids), vision)
    stamps = [tok(f"{t:.1f}s", add_special_tokens=False)["input_ids"] for t in (0.0, 1.0)[:groups]]
    stamp_frames(row, proc.video_token_id, tok.convert_tokens_to_ids("<|vision_start|>"),
                 tok.convert_tokens_to_ids("<|vision_end|>"), stamps)
    x = torch.tensor([row.input_ids])
    with torch.no_grad():
        logits = model(input_ids=x, mm_token_type_ids=(x == proc.video_token_id).long() * 2, **row.vision).logits
    assert logits.shape[:2] == x.shape and torch.isfinite(logits).all()


def test_clip_colours_and_the_no_clip_baseline():
    import numpy as np

    from training.diagnose import bigram_accuracy, clip_colours

    frames = np.zeros((2, 20, 20, 3), dtype=np.uint8)
    frames[1, :10, :10] = (220, 40, 40)   # 100 red pixels
    frames[0, :2, :2] = (40, 190, 60)      # 4 green pixels: below min_pixels
    palette = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 90, 240)}
    assert clip_colours(frames, palette) == ["red"]
    assert clip_colours(frames, palette, min_pixels=4) == ["green", "red"]
    train = [["blue", "red"], ["blue", "red"], ["green", "red"]]
    assert bigram_accuracy(train, [["blue", "red"]]) == 1.0  # "<s>" -> blue, blue -> red
    assert bigram_accuracy(train, [["green", "white"]]) == 0.0


def test_shortcut_counts_questions_only_the_answer_names_a_clip_object(tmp_path, capsys):
    from cluenet.data import clueworld

    clueworld.generate(tmp_path, 2, seed=7, write_video=False)
    path = tmp_path / clueworld.JSONL_NAME
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for r, answer in zip(rows, (0, 1)):  # the clip has a red circle; only option A names it
        r["events"] = [{"id": "c1", "start": 0.0, "end": 0.5, "text": "the red circle enters from the left"}]
        r["options"] = ["the red circle hit it", "the blue square hit it", "it stopped", "the white ring hit it",
                        "the green cross hit it"]
        r["answer"], r["qtype"] = answer, "CW"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["shortcut", "--data", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"questions": 2, "answer_only_option_naming_a_clip_object": 0.5, "by_type": {"CW": 0.5}}


def test_recall_rows_bind_each_key_to_its_value_in_that_row():
    import torch

    from training.diagnose import recall_batch

    keys, values, filler = [10, 11, 12, 13], [20, 21, 22], [30, 31, 32]
    ids, labels = recall_batch(keys, values, filler, 8, pairs=3, noise=2, gen=torch.Generator().manual_seed(0))
    assert ids.shape == labels.shape == (8, 3 * 4 + 1 + 3 * 4)
    for row, lab in zip(ids.tolist(), labels.tolist()):
        context = row[:12]
        bound = {context[i]: context[i + 1] for i in range(2, 12, 4)}  # noise, noise, key, value
        assert len(bound) == 3 and set(bound) <= set(keys)  # distinct keys
        asked = [(row[p - 1], lab[p]) for p in range(len(lab)) if lab[p] != -100]
        assert sorted(k for k, _ in asked) == sorted(bound) and all(bound[k] == v for k, v in asked)


def test_recall_probe_prints_accuracy(capsys):
    assert main(["recall", "--steps", "2", "--every", "1", "--batch", "2", "--sizes", '{"text_layers": 1}']) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert rows[0]["chance"] == round(1 / 6, 3) and [r["step"] for r in rows[1:]] == [1, 2]
    assert all(0.0 <= r["recall_accuracy"] <= 1.0 for r in rows[1:])


@pytest.mark.parametrize("gap", [0, 6])
def test_option_rows_label_each_query_with_its_options_letter(gap):
    import torch

    from training.diagnose import options_batch

    marks = {"letters": [1, 2, 3, 4, 5], "said": [11, 12, 13, 14, 15], "head": [20, 21, 22], "dot": 23,
             "newline": 22, "is": 24}
    content = list(range(30, 400))
    ids, labels, fresh = options_batch(marks, content, 6, 160, 5, torch.Generator().manual_seed(0), gap=gap)
    assert ids.shape == labels.shape == fresh.shape == (6, 160)
    for row, lab, new in zip(ids.tolist(), labels.tolist(), fresh.tolist()):
        start = row.index(20)
        lines, cur = {}, None
        for end in range(start + 3, len(row)):
            t = row[end]
            if t in marks["letters"]:
                cur = marks["letters"].index(t)
                lines[cur] = []
            elif t == 22:
                if cur == 4:
                    break
                cur = None
            elif cur is not None and t != 23:
                lines[cur].append(t)
        own = {k: set(v) - set.intersection(*map(set, lines.values())) for k, v in lines.items()}
        asked, last = [], end
        for p, y in enumerate(lab):
            if y == -100:
                continue
            k = marks["said"].index(y)
            assert row[p - 1] == marks["is"] and row[p] == y
            if gap == 0:  # that option's own words, right before " is"
                assert set(row[p - 1 - len(own[k]):p - 1]) == own[k]
            query = row[last + 1:p - 1]
            assert own[k] <= set(query) and not any(set(query) & own[j] for j in own if j != k)
            assert new[p] == (k not in asked)
            asked.append(k)
            last = p
        assert len(asked) == 5
    with pytest.raises(ValueError, match="distinct ids needed"):
        options_batch(marks, content[:20], 1, 160, 5, torch.Generator().manual_seed(0))


def test_options_probe_prints_accuracy(capsys):
    assert main(["options", "--steps", "2", "--every", "1", "--batch", "2", "--repeat-batch", "1",
                 "--sizes", '{"text_layers": 1}']) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert rows[0]["chance"] == 0.2 and [r["step"] for r in rows] == [0, 1, 2]
    assert all(0.0 <= r[k] <= 1.0 for r in rows for k in ("accuracy", "fresh_accuracy", "repeat_accuracy"))


def test_clue_roles_name_each_read_of_the_clip():
    from cluenet.data import clueworld as cw
    from training.diagnose import clue_roles

    words = ("c1 [ 2 . 5 - 3 . 0 s ] the red diamond hits the purple ring \n"
             "c2 [ 3 . 0 - 3 . 5 s ] the purple ring turns cyan \n c3 [ 1 . 0 - 1 . 5 s ] the white cross enters from the top").split(" ")
    roles = {words[p] + str(p): r for p, r in clue_roles(words, cw.COLOUR_NAMES, cw.SHAPES).items()}
    assert sorted(roles.values()) == sorted(["start_time", "subject_colour", "subject_shape", "object_colour", "object_shape",
                                             "start_time", "subject_colour", "subject_shape", "new_colour",
                                             "start_time", "subject_colour", "subject_shape", "side"])
    named = {w.rstrip("0123456789"): r for w, r in roles.items()}
    assert named["red"] == "subject_colour" and named["purple"] in ("object_colour", "subject_colour")
    assert named["cyan"] == "new_colour" and named["top"] == "side" and named["cross"] == "subject_shape"
    assert roles[f"purple{words.index('purple')}"] == "object_colour"
    assert roles[f"ring{words.index('ring')}"] == "object_shape"
