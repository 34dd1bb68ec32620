"""NExT-QA (multiple choice): the official csv -> Samples, and its prediction format.

Annotation csv columns (doc-doc/NExT-QA): ``video,frame_count,width,height,
question,answer,qid,type,a0,a1,a2,a3,a4``.  Each row becomes one ``Sample`` with

* ``id`` = ``"<video>_<qid>"`` -- the key of NExT-QA's prediction files;
* ``qtype`` = the csv type code kept as is (CW, CH, TN, TC, TP, DC, DL, DO);
  ``group_of`` maps it to the reported groups, with TP counted as TN as the
  official ``eval_mc.py`` does: C = CW+CH, T = TN+TC(+TP), D = DC+DL+DO;
* ``video`` = ``<video_root>/<vidor folder/id>.mp4`` found through
  ``map_vid_vidorID.json`` (without a map: ``<video_root>/<video>.mp4``).
  Files are not checked for existence: annotations load without the videos.

Scoring follows ``eval_mc.py``: accuracy is counted per question, per group and
overall (``all`` = correct / questions, not a mean of the groups).  The
prediction format is ``{"<video>_<qid>": {"prediction": i, "answer": j}}``.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Iterable, Mapping

from tqdm import tqdm

from cluenet.data.jsonl import read_json
from cluenet.errors import InputError
from cluenet.schema import Sample, Trace

NUM_OPTIONS = 5
COLUMNS = ("video", "question", "answer", "qid", "type", "a0", "a1", "a2", "a3", "a4")
TYPE_NAMES = {
    "CW": "causal why", "CH": "causal how",
    "TN": "temporal before/after", "TC": "temporal when", "TP": "temporal previous (scored as TN)",
    "DC": "descriptive count", "DL": "descriptive location", "DO": "descriptive other",
}
REPORTED_TYPES = ("CW", "CH", "TN", "TC", "DC", "DL", "DO")  # eval_mc.py's columns (TP folded into TN)
GROUPS = ("C", "T", "D")
NO_PREDICTION = -1  # written for an unparseable answer: never equals a gold index


def scored_type(qtype: str) -> str:
    """The type a question is scored under: TP counts as TN (as in eval_mc.py)."""
    if qtype not in TYPE_NAMES:
        raise InputError(f"NExT-QA type is {qtype!r}, expected one of {', '.join(TYPE_NAMES)}")
    return "TN" if qtype == "TP" else qtype


def group_of(qtype: str) -> str:
    """C, T or D: the first letter of the (scored) type code."""
    return scored_type(qtype)[0]


def load_video_map(path: str | os.PathLike) -> dict[str, str]:
    """``map_vid_vidorID.json``: NExT-QA video id -> ``"<folder>/<vidor id>"``."""
    data = read_json(path, "NExT-QA video map")
    return {str(k): str(v) for k, v in data.items()}


def _video_path(video: str, video_map: Mapping[str, str] | None, video_root: str | None, where: str) -> str:
    if video_map is None:
        rel = f"{video}.mp4"
    elif video in video_map:
        rel = f"{video_map[video]}.mp4"
    else:
        raise InputError(f"{where}: video {video} is not in the video map")
    return str(Path(video_root) / rel) if video_root else rel


def _row_to_sample(row: Mapping[str, str], where: str, video_map, video_root) -> Sample:
    try:
        answer = int(row["answer"])
    except ValueError:
        raise InputError(f"{where}: field 'answer' is {row['answer']!r}, expected an integer 0-4") from None
    if not 0 <= answer < NUM_OPTIONS:
        raise InputError(f"{where}: field 'answer' is {answer}, but there are {NUM_OPTIONS} options")
    scored_type(row["type"])  # validates the code
    options = tuple(row[f"a{i}"].strip() for i in range(NUM_OPTIONS))
    if not all(options):
        raise InputError(f"{where}: an option among a0..a4 is empty")
    return Sample(
        id=f"{row['video']}_{row['qid']}",
        video=_video_path(row["video"], video_map, video_root, where),
        question=row["question"].strip(),
        options=options,
        answer=answer,
        qtype=row["type"],
        source="nextqa",
    )


def load_nextqa(
    csv_path: str | os.PathLike,
    video_root: str | None = None,
    map_path: str | os.PathLike | None = None,
) -> list[Sample]:
    """Samples of a NExT-QA multiple-choice csv (train/val/test).

    Raises ``InputError`` naming the line for a missing column, a bad answer or
    type, an empty option, a duplicate question or a video absent from the map.
    """
    csv_path = Path(csv_path)
    video_map = load_video_map(map_path) if map_path is not None else None
    try:
        with csv_path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise InputError(f"{csv_path.name}: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
            samples, seen = [], set()
            # line 1 is the header, so data row i sits on line i + 2
            for i, row in enumerate(tqdm(reader, desc=f"NExT-QA {csv_path.name}", disable=None, leave=False)):
                sample = _row_to_sample(row, f"{csv_path.name} line {i + 2}", video_map, video_root)
                if sample.id in seen:
                    raise InputError(f"{csv_path.name} line {i + 2}: question {sample.id} appears twice")
                seen.add(sample.id)
                samples.append(sample)
    except OSError as exc:
        raise InputError(f"{csv_path}: cannot read the NExT-QA csv ({exc})") from exc
    return samples


# ----------------------------------------------------------------------------- predictions
def read_predictions(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """NExT-QA's prediction file ``{"<video>_<qid>": {"prediction": i, "answer": j}}``."""
    data = read_json(path, "prediction file")
    out: dict[str, dict[str, int]] = {}
    for key, value in data.items():
        if not isinstance(value, Mapping) or not isinstance(value.get("prediction"), int):
            raise InputError(f"{path}: entry {key!r} is {value!r:.80}, expected {{'prediction': int, 'answer': int}}")
        out[str(key)] = {"prediction": int(value["prediction"]), "answer": int(value.get("answer", NO_PREDICTION))}
    return out


def write_predictions(path: str | os.PathLike, traces: Iterable[Trace], samples: Iterable[Sample]) -> int:
    """Write project traces in NExT-QA's prediction format; returns the count.

    The gold answer comes from the matching sample (``trace.sample_id``); an
    undecided answer is written as ``-1`` so that it scores as wrong.
    """
    gold = {s.id: s.answer for s in samples}
    out: dict[str, dict[str, int]] = {}
    for trace in traces:
        if trace.sample_id not in gold:
            raise InputError(f"trace for {trace.sample_id!r} has no matching NExT-QA sample")
        pred = NO_PREDICTION if trace.answer is None else int(trace.answer)
        out[trace.sample_id] = {"prediction": pred, "answer": gold[trace.sample_id]}
    Path(path).write_text(json.dumps(out, indent=1), encoding="utf-8")
    return len(out)


def _tally(samples: Iterable[Sample], predictions: Mapping[str, Mapping[str, int]]) -> tuple[dict, dict, list[str]]:
    correct: dict[str, int] = {t: 0 for t in REPORTED_TYPES}
    total: dict[str, int] = {t: 0 for t in REPORTED_TYPES}
    missing: list[str] = []
    for s in samples:
        t = scored_type(s.qtype)
        total[t] += 1
        pred = predictions.get(s.id)
        if pred is None:
            missing.append(s.id)
            continue
        if "answer" in pred and pred["answer"] != NO_PREDICTION and pred["answer"] != s.answer:
            raise InputError(f"prediction file gives answer {pred['answer']} for {s.id}, the annotations {s.answer}")
        correct[t] += int(pred["prediction"] == s.answer)
    return correct, total, missing


def _pct(correct: int, total: int) -> float:
    return round(100.0 * correct / total, 2) if total else 0.0


def score(samples: Iterable[Sample], predictions: Mapping[str, Mapping[str, int]]) -> dict:
    """Accuracy (percent, 2 decimals) per type, per group C/T/D and ``all``.

    Per question throughout, as eval_mc.py: a group's accuracy is its correct
    answers over its questions.  A question without a prediction counts as
    wrong; the result lists them under ``missing``.
    """
    correct, total, missing = _tally(samples, predictions)
    if sum(total.values()) == 0:
        raise InputError("no NExT-QA questions to score")
    result = {"types": {t: _pct(correct[t], total[t]) for t in REPORTED_TYPES if total[t]}}
    for g in GROUPS:
        members = [t for t in REPORTED_TYPES if t[0] == g]
        result[g] = _pct(sum(correct[t] for t in members), sum(total[t] for t in members))
    result["all"] = _pct(sum(correct.values()), sum(total.values()))
    result["count"] = {t: total[t] for t in REPORTED_TYPES if total[t]}
    result["missing"] = missing
    return result
