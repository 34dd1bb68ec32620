"""MVBench (20 temporal tasks): the per-task json files -> Samples.

Layout of the release (OpenGVLab/MVBench, read by ``video_chat2/mvbench.ipynb``)::

    MVBench/json/action_sequence.json     [{"video": "ZS9XR.mp4", "question": "...",
                                            "candidates": ["..", ".."], "answer": "<candidate text>",
                                            "start": 12.0, "end": 31.2}, ...]
    MVBench/video/star/Charades_v1_480/ZS9XR.mp4

``TASKS`` mirrors the notebook's ``data_list``: task name -> (json file, video
folder under ``video/``, whether start/end bound the clip).  A task's name
comes from its file name through that table; an unknown file is an error.
Each question becomes a ``Sample`` with ``id`` = ``"<file stem>_<index in
file>"``, ``qtype`` = the task name, ``answer`` = the index of the candidate
equal to the answer text (exactly one must be), and ``start``/``end`` only for
bounded tasks.  Episodic Reasoning's "video" is a folder of frames (3 fps);
the path is kept as given.

Scoring (``score`` in ``cluenet.eval``) reports per-task accuracy, ``all``
(correct over questions, the notebook's "Avg") and ``mean`` (mean of the tasks).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from cluenet.data.jsonl import read_json
from cluenet.errors import InputError
from cluenet.schema import MAX_OPTIONS, Sample

MIN_CANDIDATES = 2
# task name -> (json file, video folder under <root>/video, has start/end bound)
TASKS: dict[str, tuple[str, str, bool]] = {
    "Action Sequence": ("action_sequence.json", "star/Charades_v1_480", True),
    "Action Prediction": ("action_prediction.json", "star/Charades_v1_480", True),
    "Action Antonym": ("action_antonym.json", "ssv2_video", False),
    "Fine-grained Action": ("fine_grained_action.json", "Moments_in_Time_Raw/videos", False),
    "Unexpected Action": ("unexpected_action.json", "FunQA_test/test", False),
    "Object Existence": ("object_existence.json", "clevrer/video_validation", False),
    "Object Interaction": ("object_interaction.json", "star/Charades_v1_480", True),
    "Object Shuffle": ("object_shuffle.json", "perception/videos", False),
    "Moving Direction": ("moving_direction.json", "clevrer/video_validation", False),
    "Action Localization": ("action_localization.json", "sta/sta_video", True),
    "Scene Transition": ("scene_transition.json", "scene_qa/video", False),
    "Action Count": ("action_count.json", "perception/videos", False),
    "Moving Count": ("moving_count.json", "clevrer/video_validation", False),
    "Moving Attribute": ("moving_attribute.json", "clevrer/video_validation", False),
    "State Change": ("state_change.json", "perception/videos", False),
    "Fine-grained Pose": ("fine_grained_pose.json", "nturgbd", False),
    "Character Order": ("character_order.json", "perception/videos", False),
    "Egocentric Navigation": ("egocentric_navigation.json", "vlnqa", False),
    "Episodic Reasoning": ("episodic_reasoning.json", "tvqa/frames_fps3_hq", True),
    "Counterfactual Inference": ("counterfactual_inference.json", "clevrer/video_validation", False),
}
TASK_OF_FILE = {spec[0]: name for name, spec in TASKS.items()}


def task_of(json_path: str | os.PathLike) -> str:
    """The task name of an MVBench json file (``action_sequence.json`` -> Action Sequence)."""
    name = Path(json_path).name
    if name not in TASK_OF_FILE:
        raise InputError(f"{name} is not an MVBench task file; expected one of {', '.join(sorted(TASK_OF_FILE))}")
    return TASK_OF_FILE[name]


def _answer_index(item: Mapping[str, Any], where: str) -> int:
    candidates = item["candidates"]
    if not isinstance(candidates, list) or not MIN_CANDIDATES <= len(candidates) <= MAX_OPTIONS:
        raise InputError(f"{where}: field 'candidates' is {candidates!r:.80}, expected {MIN_CANDIDATES}-{MAX_OPTIONS} strings")
    hits = [i for i, c in enumerate(candidates) if c == item["answer"]]
    if len(hits) != 1:
        raise InputError(f"{where}: answer {item['answer']!r} matches {len(hits)} of the candidates {candidates}, expected exactly 1")
    return hits[0]


def _bound(item: Mapping[str, Any], where: str) -> tuple[float | None, float | None]:
    if "start" not in item or "end" not in item:
        raise InputError(f"{where}: this task is bounded but 'start'/'end' are missing")
    start, end = float(item["start"]), float(item["end"])
    if start < 0 or end <= start:
        raise InputError(f"{where}: bound is [{start}, {end}] s, expected 0 <= start < end")
    return start, end


def _to_sample(item: Any, index: int, task: str, json_path: Path, video_dir: Path) -> Sample:
    where = f"{json_path.name} question {index}"
    if not isinstance(item, dict):
        raise InputError(f"{where}: is a {type(item).__name__}, expected an object")
    missing = [k for k in ("video", "question", "candidates", "answer") if k not in item]
    if missing:
        raise InputError(f"{where}: missing field(s) {', '.join(missing)}")
    answer = _answer_index(item, where)
    start, end = _bound(item, where) if TASKS[task][2] else (None, None)
    return Sample(
        id=f"{json_path.stem}_{index}",
        video=str(video_dir / str(item["video"])),
        question=str(item["question"]).strip(),
        options=tuple(str(c) for c in item["candidates"]),
        answer=answer,
        qtype=task,
        start=start,
        end=end,
        source="mvbench",
    )


def load_task(json_path: str | os.PathLike, video_root: str | os.PathLike | None = None) -> list[Sample]:
    """Samples of one MVBench task file.

    ``video_root`` is the release's ``video`` folder (default: ``../video``
    next to the json folder); the task's own sub-folder is appended.
    """
    json_path = Path(json_path)
    task = task_of(json_path)
    data = read_json(json_path, "MVBench json", list, "a list of questions")
    root = Path(video_root) if video_root is not None else json_path.parent.parent / "video"
    video_dir = root / TASKS[task][1]
    return [_to_sample(item, i, task, json_path, video_dir) for i, item in enumerate(data)]


def load_mvbench(path: str | os.PathLike, video_root: str | os.PathLike | None = None) -> list[Sample]:
    """Samples of an MVBench json folder (every task file present, in ``TASKS`` order)
    or of a single task file."""
    path = Path(path)
    if path.is_file():
        return load_task(path, video_root)
    if not path.is_dir():
        raise InputError(f"{path}: no such MVBench json file or folder")
    files = [path / spec[0] for spec in TASKS.values() if (path / spec[0]).is_file()]
    if not files:
        raise InputError(f"{path}: contains none of the {len(TASKS)} MVBench task files (e.g. action_sequence.json)")
    return [s for f in files for s in load_task(f, video_root)]


def read_predictions(path: str | os.PathLike) -> dict[str, Any]:
    """Predictions keyed by sample id (``"<file stem>_<index>"``).

    The value is an option index, a letter, free text, or an object with a
    ``"prediction"`` (or ``"pred"``) field holding one of those.
    """
    data = read_json(path, "prediction file", dict, "an object keyed by sample id")
    return {str(k): (v.get("prediction", v.get("pred")) if isinstance(v, dict) else v) for k, v in data.items()}
