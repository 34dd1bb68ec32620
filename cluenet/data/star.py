"""STAR (situated reasoning, NeurIPS 2021): the official QA json -> Samples.

Format of ``STAR_{train,val,test}.json`` (csbobby/STAR_Benchmark): a list of
questions, each with ``question_id`` (e.g. ``Interaction_T1_4``), ``question``,
``video_id`` (a Charades id), ``start``/``end`` (seconds), ``answer`` (the
correct choice's *text*), ``choices`` (``[{"choice_id", "choice", ...}]``),
``question_program`` and ``situations``: ``{frame_id: {"rel_pairs":
[[o000, o010], ...], "rel_labels": [r009, ...], "actions": [a082, ...],
"bbox": [...], "bbox_labels": [...]}}``.

Mapping to ``Sample``:

* ``qtype`` is the first part of the question id: Interaction, Sequence,
  Prediction or Feasibility;
* ``answer`` is the index (in ``choice_id`` order) of the choice whose text is
  the answer; ``video`` is ``<video_root>/<video_id>.mp4``;
* the situation graph becomes gold **events**: templated statements
  ("person holding cup", "person drink from a cup/glass/bottle") with the time
  span of each maximal run of consecutive annotated keyframes where the
  relation (or action) holds.  Class names come from STAR's class files
  (``object_classes.txt`` etc., embedded below); for objects with alternatives
  ("cup/glass/bottle") the first name is used in relation statements.

**Time assumption.** STAR frame ids are frame numbers of the Charades video as
dumped by Action Genome's tool (1-based, at the video's native rate), so frame
``f`` is at ``(f - 1) / fps`` seconds -- the same rule as STAR's own
visualisation (``trim_keyframes``).  Charades videos run at about 24-30 fps and
STAR ships per-video rates separately; pass them as ``fps={video_id: rate}``
or one number (default ``DEFAULT_FPS`` = 30).  A run of keyframes ends at the
time of its last keyframe, so a relation seen on one keyframe is a point event
(start == end); ``cluenet.metrics`` matches such events through its tolerance.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from tqdm import tqdm

from cluenet.data.jsonl import read_json
from cluenet.errors import InputError
from cluenet.schema import Clue, Sample

QTYPES = ("Interaction", "Sequence", "Prediction", "Feasibility")
DEFAULT_FPS = 30.0
MIN_FPS, MAX_FPS = 1.0, 120.0

# STAR_classes/object_classes.txt and relationship_classes.txt (ids -> names)
_OBJECTS = (
    "person broom picture closet/cabinet blanket window table paper/notebook refrigerator pillow "
    "cup/glass/bottle shelf shoe medicine phone/camera box sandwich book bed clothes mirror "
    "sofa/couch floor bag dish laptop door towel food chair doorknob doorway groceries hands "
    "light vacuum television"
).split()
OBJECT_NAMES = {f"o{i:03d}": name for i, name in enumerate(_OBJECTS)}
_RELATIONS = (
    "on behind in_front_of on_the_side_of above beneath drinking_from have_it_on_the_back wearing "
    "holding lying_on covered_by carrying eating leaning_on sitting_on twisting writing_on "
    "standing_on touching wiping at under near"
).split()
RELATION_NAMES = {f"r{i:03d}": name.replace("_", " ") for i, name in enumerate(_RELATIONS)}
# STAR_classes/action_classes.txt (a000-a110), one per line in id order
_ACTIONS = """hold some clothes|put clothes somewhere|take some clothes from somewhere|throw clothes somewhere
tidy some clothes|wash some clothes|close a door|open a door|sit on a table|sit at a table|tidy up a table
wash a table|hold a phone/camera|put a phone/camera somewhere|take a phone/camera from somewhere|open a bag
put a bag somewhere|take a bag from somewhere|throw a bag somewhere|close a book|hold a book|open a book
put a book somewhere|take a book from somewhere|throw a book somewhere|watch/read/look at a book
put a towel/s somewhere|take a towel/s from somewhere|throw a towel/s somewhere|tidy up a towel/s|close a box
hold a box|open a box|put a box somewhere|take a box from somewhere|throw a box somewhere|close a laptop
hold a laptop|open a laptop|put a laptop somewhere|take a laptop from somewhere|hold a shoe/shoes
put shoes somewhere|take shoes from somewhere|throw shoes somewhere|sit in a chair|stand on a chair
hold some food|put some food somewhere|take food from somewhere|throw food somewhere|eat a sandwich
hold a sandwich|put a sandwich somewhere|take a sandwich from somewhere|hold a blanket|put a blanket somewhere
take a blanket from somewhere|throw a blanket somewhere|tidy up a blanket/s|hold a pillow|put a pillow somewhere
take a pillow from somewhere|throw a pillow somewhere|reach for and grab a picture|hold a picture
put a picture somewhere|watch/look at a picture|close a window|open a window|wash a window
watch/look outside of a window|hold a mirror|wash a mirror|walk through a doorway|hold a broom
put a broom somewhere|take a broom from somewhere|throw a broom somewhere|tidy up with a broom|turn on a light
turn off a light|drink from a cup/glass/bottle|put a cup/glass/bottle somewhere
take a cup/glass/bottle from somewhere|wash a cup/glass/bottle|close a closet/cabinet|open a closet/cabinet
tidy up a closet/cabinet|put their paper/notebook somewhere|take paper/notebook from somewhere|hold a dish
put a dish/es somewhere|take a dish/es from somewhere|wash a dish/dishes|lie on a sofa/couch|sit on sofa/couch
lie on the floor|sit on the floor|hold some medicine|take/consume some medicine|put groceries somewhere
watch television|lie on a bed|sit in a bed|hold a vacuum|take a vacuum from somewhere|wash their hands
grasp onto a doorknob|close a refrigerator|open a refrigerator"""
ACTION_NAMES = {f"a{i:03d}": a for i, a in enumerate(_ACTIONS.replace("\n", "|").split("|"))}


def star_qtype(question_id: str) -> str:
    """Interaction / Sequence / Prediction / Feasibility from ``Interaction_T1_4``."""
    qtype = str(question_id).split("_", 1)[0]
    if qtype not in QTYPES:
        raise InputError(f"STAR question id {question_id!r} does not start with one of {', '.join(QTYPES)}")
    return qtype


def _short(obj_id: str) -> str:
    name = OBJECT_NAMES.get(obj_id)
    if name is None:
        raise InputError(f"unknown STAR object class {obj_id!r}, expected o000-o{len(OBJECT_NAMES) - 1:03d}")
    return name.split("/")[0]


def _facts(frame: Mapping[str, Any]) -> list[str]:
    """Statements true on one keyframe: relations then actions."""
    pairs, labels = frame.get("rel_pairs", []), frame.get("rel_labels", [])
    if len(pairs) != len(labels):
        raise InputError(f"situation has {len(pairs)} rel_pairs but {len(labels)} rel_labels")
    facts = []
    for (subj, obj), rel in zip(pairs, labels):
        if rel not in RELATION_NAMES:
            raise InputError(f"unknown STAR relationship class {rel!r}")
        facts.append(f"{_short(subj)} {RELATION_NAMES[rel]} {_short(obj)}")
    for act in frame.get("actions", []):
        if act not in ACTION_NAMES:
            raise InputError(f"unknown STAR action class {act!r}")
        facts.append(f"person {ACTION_NAMES[act]}")
    return list(dict.fromkeys(facts))  # one relation may be annotated twice on a frame


def frame_time(frame_id: str | int, fps: float) -> float:
    """Seconds of a 1-based STAR/Charades frame number at ``fps``."""
    return (int(frame_id) - 1) / fps


def situation_events(situations: Mapping[str, Mapping[str, Any]], fps: float) -> tuple[Clue, ...]:
    """Gold events of one question's situation graph (ids ``e1``, ``e2``, ...).

    A fact that holds on consecutive annotated keyframes f_i..f_j becomes one
    event spanning [time(f_i), time(f_j)]; a gap (a keyframe without it) ends
    the run.  Events are ordered by start time, then statement.
    """
    frames = sorted(situations, key=int)
    open_runs: dict[str, float] = {}  # statement -> start of its current run
    last_seen: dict[str, float] = {}
    spans: list[tuple[float, float, str]] = []
    for fid in frames:
        t = frame_time(fid, fps)
        facts = set(_facts(situations[fid]))
        for text in [s for s in open_runs if s not in facts]:
            spans.append((open_runs.pop(text), last_seen[text], text))
        for text in facts:
            open_runs.setdefault(text, t)
            last_seen[text] = t
    spans += [(start, last_seen[text], text) for text, start in open_runs.items()]
    spans.sort()
    return tuple(Clue(id=f"e{i}", start=round(s, 3), end=round(e, 3), text=x) for i, (s, e, x) in enumerate(spans, 1))


def _fps_for(video_id: str, fps: float | Mapping[str, float]) -> float:
    if isinstance(fps, Mapping):
        rate = fps.get(video_id, fps.get(f"{video_id}.mp4"))
        if rate is None:
            raise InputError(f"no fps given for STAR video {video_id}")
    else:
        rate = fps
    if not MIN_FPS <= float(rate) <= MAX_FPS:
        raise InputError(f"fps for STAR video {video_id} is {rate}, expected {MIN_FPS}-{MAX_FPS}")
    return float(rate)


def _answer_index(item: Mapping[str, Any], where: str) -> tuple[tuple[str, ...], int]:
    choices = sorted(item["choices"], key=lambda c: int(c["choice_id"]))
    options = tuple(str(c["choice"]) for c in choices)
    hits = [i for i, o in enumerate(options) if o == item.get("answer")]
    if len(hits) != 1:
        found = "no" if not hits else f"{len(hits)}"
        raise InputError(f"{where}: answer {item.get('answer')!r} matches {found} choice(s) of {list(options)}")
    return options, hits[0]


def _to_sample(item: Mapping[str, Any], where: str, video_root: str | None, fps, as_clues: bool) -> Sample:
    missing = [k for k in ("question_id", "question", "video_id", "start", "end", "choices") if k not in item]
    if missing:
        raise InputError(f"{where}: missing field(s) {', '.join(missing)}")
    options, answer = _answer_index(item, where)
    video = f"{item['video_id']}.mp4"
    try:
        events = situation_events(item.get("situations") or {}, _fps_for(item["video_id"], fps))
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    clues = tuple(Clue(id=f"c{i}", start=e.start, end=e.end, text=e.text) for i, e in enumerate(events, 1))
    return Sample(
        id=str(item["question_id"]),
        video=str(Path(video_root) / video) if video_root else video,
        question=str(item["question"]).strip(),
        options=options,
        answer=answer,
        qtype=star_qtype(item["question_id"]),
        start=float(item["start"]),
        end=float(item["end"]),
        clues=clues if as_clues else (),
        events=events,
        source="star",
    )


def load_star(
    json_path: str | os.PathLike,
    video_root: str | None = None,
    *,
    fps: float | Mapping[str, float] = DEFAULT_FPS,
    as_clues: bool = False,
) -> list[Sample]:
    """Samples of a STAR QA json.

    ``fps`` converts keyframe numbers to seconds (module docstring).  With
    ``as_clues`` the situation events are also copied into ``clues`` (ids
    ``c1``...) as gold clues for extraction training; STAR has no gold chain.
    Raises ``InputError`` naming the question for a missing field, an answer
    that is not exactly one choice, or an unknown class id.
    """
    json_path = Path(json_path)
    data = read_json(json_path, "STAR json", list, "a list of questions")
    samples = []
    for i, item in enumerate(tqdm(data, desc=f"STAR {json_path.name}", disable=None, leave=False)):
        where = f"{json_path.name} question {i} ({item.get('question_id', '?') if isinstance(item, dict) else '?'})"
        if not isinstance(item, dict):
            raise InputError(f"{where}: is a {type(item).__name__}, expected an object")
        samples.append(_to_sample(item, where, video_root, fps, as_clues))
    return samples


# ----------------------------------------------------------------------------- predictions
def read_predictions(path: str | os.PathLike) -> dict[str, Any]:
    """Predictions keyed by question id.

    Accepts the STAR challenge layout ``{"Interaction": [{"question_id": ..,
    "answer": i}, ...], "Sequence": [...], ...}`` or a flat
    ``{question_id: prediction}``; a prediction is an option index, a letter or
    free text (resolved later with ``cluenet.answers.extract_answer``).
    """
    data = read_json(path, "prediction file")
    if data and all(k in QTYPES and isinstance(v, list) for k, v in data.items()):
        return _flatten_challenge(data, path)
    return {str(k): (v.get("prediction", v.get("answer")) if isinstance(v, dict) else v) for k, v in data.items()}


def _flatten_challenge(data: Mapping[str, Iterable[Any]], path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for qtype, entries in data.items():
        for entry in entries:
            if not isinstance(entry, dict) or "question_id" not in entry or "answer" not in entry:
                raise InputError(f"{path}: an entry under {qtype} is {entry!r:.80}, expected {{'question_id', 'answer'}}")
            out[str(entry["question_id"])] = entry["answer"]
    return out
