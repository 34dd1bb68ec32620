"""Analyst tags: validation, last-write-wins, restarts, and concurrent writers (threads and processes).

    pytest tests/test_tags.py -q
"""
from __future__ import annotations

import fcntl
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cluenet import tags
from cluenet.casestudy import Run
from cluenet.errors import InputError
from cluenet.schema import ClipInfo, Trace

ROOT = Path(__file__).resolve().parent.parent


def test_taxonomy_has_the_three_benchmarks_categories():
    assert "videohallucer/object_relation" in tags.CATEGORIES
    assert "videohallucer/extrinsic_non_factual" in tags.CATEGORIES
    assert {"eventhallusion/entire_event", "eventhallusion/mix_event", "eventhallusion/misleading_event"} <= set(tags.CATEGORIES)
    assert {"vidhalluc/action", "vidhalluc/temporal_sequence", "vidhalluc/scene_transition"} <= set(tags.CATEGORIES)
    assert len(tags.CATEGORIES) == 11 == len(set(tags.CATEGORIES))
    assert tags.describe("vidhalluc/action").startswith("VidHalluc -- Action")


def test_set_get_last_write_wins_and_clear(tmp_path):
    store = tags.TagStore(tmp_path / "tags.jsonl")
    store.set("q1", ["vidhalluc/action"], "first look")
    store.set("q2", ["videohallucer/temporal"])
    store.set("q1", ["eventhallusion/mix_event", "videohallucer/temporal"], "  second look ")
    t = store.get("q1")
    # canonical order (taxonomy order), note stripped, the second write replaced the first
    assert t.categories == ("videohallucer/temporal", "eventhallusion/mix_event") and t.note == "second look"
    assert len(store.history("q1")) == 2
    store.clear("q2")
    assert set(store.all()) == {"q1"} and store.get("q2") is None
    assert tags.category_counts(store.all())["eventhallusion/mix_event"] == 1


def test_bad_values_are_refused_with_the_allowed_ones(tmp_path):
    store = tags.TagStore(tmp_path / "tags.jsonl")
    with pytest.raises(InputError, match="unknown tag category 'object hallucination'.*allowed: videohallucer/object_relation"):
        store.set("q1", ["object hallucination"])
    with pytest.raises(InputError, match=f"note is {tags.MAX_NOTE_CHARS + 1} characters, limit {tags.MAX_NOTE_CHARS}"):
        store.set("q1", [], "x" * (tags.MAX_NOTE_CHARS + 1))
    with pytest.raises(InputError, match="case id"):
        store.set("  ", ["vidhalluc/action"])
    assert not (tmp_path / "tags.jsonl").exists()  # nothing written on refusal
    assert store.set("q1", "vidhalluc/action").categories == ("vidhalluc/action",)  # a bare string is one category


def test_tags_survive_a_restart_in_a_new_process(tmp_path):
    path = tmp_path / "tags.jsonl"
    tags.TagStore(path).set("case-7", ["videohallucer/semantic_detail"], "colour is wrong")
    code = ("import json, sys; from cluenet.tags import TagStore; "
            "print(json.dumps({k: t.to_dict() for k, t in TagStore(sys.argv[1]).all().items()}))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=ROOT, check=True)
    seen = json.loads(out.stdout)
    assert seen["case-7"]["categories"] == ["videohallucer/semantic_detail"] and seen["case-7"]["note"] == "colour is wrong"


def test_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "tags.jsonl"
    store = tags.TagStore(path)
    store.set("q1", ["vidhalluc/action"])
    with path.open("ab") as fh:
        fh.write(b'{"case_id": "q2", "categ')  # a writer died mid-line
    assert set(store.all()) == {"q1"}


def test_concurrent_threads_lose_nothing(tmp_path):
    store = tags.TagStore(tmp_path / "tags.jsonl")
    n_threads, per_thread = 8, 25

    def work(k):
        for i in range(per_thread):
            tags.TagStore(store.path).set(f"t{k}-{i}", [tags.CATEGORIES[(k + i) % len(tags.CATEGORIES)]], f"note {k} {i}")
            store.set("shared", ["vidhalluc/action"], f"thread {k} write {i}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    current = store.all()
    assert len(current) == n_threads * per_thread + 1
    assert all(current[f"t{k}-{i}"].note == f"note {k} {i}" for k in range(n_threads) for i in range(per_thread))
    lines = store.path.read_text().splitlines()
    assert len(lines) == 2 * n_threads * per_thread and all(json.loads(line) for line in lines)
    # last write wins: the shared case holds whatever was appended last
    assert current["shared"].note == json.loads(lines[[i for i, l in enumerate(lines) if '"shared"' in l][-1]])["note"]


def test_concurrent_processes_lose_nothing(tmp_path):
    path = tmp_path / "tags.jsonl"
    code = ("import sys; from cluenet.tags import TagStore; s = TagStore(sys.argv[1]); k = sys.argv[2]\n"
            "for i in range(40): s.set(f'p{k}-{i}', ['eventhallusion/entire_event'], f'process {k} write {i}')")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(k)], cwd=ROOT) for k in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    current = tags.TagStore(path).all()
    assert len(current) == 160 and current["p3-39"].note == "process 3 write 39"


def test_a_writer_waits_for_a_reader_holding_the_lock(tmp_path):
    """The flock is really taken: a shared (reader) lock holds a writer back until released."""
    store = tags.TagStore(tmp_path / "tags.jsonl")
    store.set("q0", ["vidhalluc/action"])
    done = threading.Event()
    with store.path.open("rb") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
        writer = threading.Thread(target=lambda: (store.set("q1", ["vidhalluc/action"]), done.set()))
        writer.start()
        time.sleep(0.3)
        assert not done.is_set()
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    writer.join(timeout=10)
    assert done.is_set() and "q1" in store.all()


def test_tag_case_needs_a_case_of_the_run(tmp_path):
    trace = Trace(clip=ClipInfo(name="a.mp4"), question="q?", options=("x", "y"), sample_id="s1")
    run = Run(samples={}, traces=(trace,), manifest={}, tags_path=tmp_path / "tags.jsonl")
    assert tags.tag_case(run, "s1", ["vidhalluc/action"], "ok").case_id == "s1"
    with pytest.raises(InputError, match="no case 's9'"):
        tags.tag_case(run, "s9", ["vidhalluc/action"])
