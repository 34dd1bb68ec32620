"""benchmarks: the inference measurement on a tiny model (structure and counters, not speed)
and the Markdown table the README shows."""
from __future__ import annotations

from benchmarks import markdown
from benchmarks.inference import measure
from cluenet.model import ClueNet


def test_inference_measure_counts_no_decode_or_vision_for_a_second_question(tiny_qwen, tiny_video_file):
    model, processor = tiny_qwen
    net = ClueNet.from_components(model, processor)
    net.max_clue_tokens = net.max_chain_tokens = 6
    rows = {r["metric"]: r for r in measure(net, tiny_video_file, ("a", "b", "c"), repeats=2)}
    assert rows["second question: frames decoded, vision encodings"]["value"] == 0.0
    assert rows["reason: vision encodings"]["value"] == 0.0
    for metric in ("analyze / unavoidable work", "second question / its prefill + decoding",
                   "reason / its prefill + decoding"):
        assert rows[metric]["value"] > 0 and rows[metric]["target"] == 1.15
    assert "median of 2" in rows["analyze / unavoidable work"]["note"]


def test_markdown_table_marks_missed_targets():
    text = markdown([{"benchmark": "b", "metric": "m | x", "value": 1.5, "target": 1.15, "note": "n"},
                     {"benchmark": "b", "metric": "k", "value": 0.5, "target": 1.0}], "2 CPU cores")
    lines = text.splitlines()
    assert lines[0] == "Machine: 2 CPU cores."
    assert "| b | m / x | 1.5 | MISSED (target <= 1.15) | n |" in lines and "| b | k | 0.5 | ok |  |" in lines
