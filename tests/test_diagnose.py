"""training.diagnose: token classes, and both probes run end to end on tiny settings."""
import json

from training.diagnose import classify, main, token_classes

VOCAB = ["<pad>", "Ġthe", "Ġred", "Ġcircle", "Ġis", "ĠB", "</clues>", "Ġhits", "A"]


def test_classify_splits_clue_and_chain_words_and_finds_the_closing_letter():
    ids_of = token_classes(VOCAB, ["red"], ["circle"])
    ids = [1, 2, 3, 7, 6, 1, 2, 3, 4, 5, 8]  # the red circle hits </clues> the red circle is B A
    labels = [-100] + ids[1:]
    got = classify(ids, labels, ids_of, clues_close=6)
    assert 0 not in got and (got[1], got[2], got[3]) == ("cl_colour", "cl_shape", "other")
    assert (got[6], got[7], got[9], got[10]) == ("ch_colour", "ch_shape", "chain_letter", "letter")


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
    assert main(["tokens", "--train", str(tmp_path / clueworld.JSONL_NAME), "--steps", "1", "--batch", "2",
                 "--sizes", '{"text_layers": 1, "vision_layers": 1}']) == 0
    out = capsys.readouterr().out.splitlines()
    row = json.loads(out[-1])
    assert row["step"] == 1 and {"cl_colour", "cl_shape", "ch_colour", "chain_letter", "other"} <= set(row["accuracy"])
