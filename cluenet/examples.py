"""Build the app's example gallery: ClueWorld clips with traces by the default model.

    python -m cluenet.examples                       # 6 clips, seed 90001, into assets/examples/
    python -m cluenet.examples --n 4 --seed 90101 --out /tmp/ex --frames 16

For each clip the folder gets ``<id>.mp4`` (small H.264), ``<id>.jpg`` (poster
for the gallery) and ``<id>.trace.json`` (a ``Trace`` with every flag of
``cluenet.analysis.add_flags``: grounding against the gold events, clue
necessity and video dependence), plus ``index.json``::

    {"command": "python -m cluenet.examples --n 6 ...", "seed": 90001, "n": 6,
     "model": {...ModelInfo...}, "total_bytes": ...,
     "examples": [{"id", "video", "poster", "trace", "question", "qtype"}, ...]}

Seeds from ``EXAMPLE_SEED`` up are never used for training data, so the model
has not seen these clips.  The whole folder must stay under ``MAX_TOTAL_BYTES``
(the Space repository carries it); the build fails if it does not.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from .errors import ConfigError

EXAMPLE_SEED = 90001  # ClueWorld seeds >= 90000 are reserved for examples (never trained on)
DEFAULT_N = 6
MAX_N = 24
MAX_TOTAL_BYTES = 2_000_000
POSTER_SIDE_PX = 192
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "assets" / "examples"


def _poster(frames: np.ndarray, path: Path) -> None:
    """The middle frame, at most POSTER_SIDE_PX on its long side, as JPEG."""
    img = Image.fromarray(np.asarray(frames[len(frames) // 2], dtype=np.uint8))
    img.thumbnail((POSTER_SIDE_PX, POSTER_SIDE_PX))
    img.save(path, quality=85)


def _clear_previous(out: Path) -> None:
    """Remove the files a previous build listed in index.json (and nothing else)."""
    index = out / "index.json"
    if not index.is_file():
        return
    for entry in json.loads(index.read_text()).get("examples", []):
        for key in ("video", "poster", "trace"):
            if entry.get(key) and "/" not in entry[key]:  # only plain names inside `out`
                (out / entry[key]).unlink(missing_ok=True)


def build_one(model: Any, seed: int, out: Path, num_frames: int | None, world_cfg: Any) -> dict:
    """Render one episode, encode it, run the model on the encoded file, write the trace."""
    from .analysis import add_flags
    from .data.clueworld import ENCODER_OPTIONS, make_episode
    from .video import sample as sample_frames
    from .video import write_video

    stem = f"ex{seed}"
    frames, _, sample = make_episode(seed, world_cfg, sample_id=stem)
    # the generator's own encoder settings: the clip looks exactly like the training clips
    video_path = write_video(out / f"{stem}.mp4", frames, fps=world_cfg.fps, options=ENCODER_OPTIONS)
    _poster(np.asarray(frames), out / f"{stem}.jpg")
    # the model reads the encoded file, exactly as the app would: the trace matches the clip shown
    trace = model.analyze(str(video_path), sample.question, sample.options, num_frames=num_frames,
                          gold=sample.answer, sample_id=stem, qtype=sample.qtype)
    # every flag the analysis offers: grounding against the gold events, clue necessity
    # and video dependence (model probes on the same frames); the app shows them
    frames = sample_frames(video_path, num_frames=len(trace.clip.frame_times))
    trace = add_flags(trace, events=sample.events, model=model, clip=frames)
    (out / f"{stem}.trace.json").write_text(trace.to_json())
    return {"id": stem, "video": video_path.name, "poster": f"{stem}.jpg", "trace": f"{stem}.trace.json",
            "question": sample.question, "qtype": sample.qtype, "seed": seed}


def build(out: Path, n: int = DEFAULT_N, seed: int = EXAMPLE_SEED, model: Any = None,
          num_frames: int | None = None, command: str = "") -> Path:
    """Write ``n`` examples (seeds ``seed .. seed+n-1``) and ``index.json`` into ``out``.

    ``model`` defaults to ``ClueNet.from_pretrained()`` (the embedded default).
    Returns the index path; raises ConfigError for a bad ``n``/``seed`` or when the
    folder ends up over ``MAX_TOTAL_BYTES``.
    """
    if not 1 <= n <= MAX_N:
        raise ConfigError(f"--n is {n}, allowed 1-{MAX_N}")
    if seed < EXAMPLE_SEED - 1:
        raise ConfigError(f"--seed is {seed}: example seeds must be >= {EXAMPLE_SEED - 1} (reserved, never trained on)")
    from .data.clueworld import WorldConfig

    if model is None:
        from .model import ClueNet

        model = ClueNet.from_pretrained()
    out.mkdir(parents=True, exist_ok=True)
    _clear_previous(out)
    entries = [build_one(model, seed + i, out, num_frames, WorldConfig()) for i in tqdm(range(n), desc="examples")]
    total = sum((out / e[k]).stat().st_size for e in entries for k in ("video", "poster", "trace"))
    index = {"command": command, "seed": seed, "n": n, "model": model.info.to_dict(),
             "total_bytes": total, "examples": entries}
    path = out / "index.json"
    path.write_text(json.dumps(index, indent=2, ensure_ascii=False))
    if total > MAX_TOTAL_BYTES:
        raise ConfigError(f"examples take {total} bytes, limit {MAX_TOTAL_BYTES}: use a smaller --n")
    return path


def main(argv: list[str] | None = None) -> int:
    """Command line entry (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m cluenet.examples", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=DEFAULT_N, help=f"number of clips (1-{MAX_N})")
    parser.add_argument("--seed", type=int, default=EXAMPLE_SEED, help="first ClueWorld seed")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--frames", type=int, default=None, help="frames the model samples (default: its own)")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "cluenet.examples", *argv])
    from .errors import ClueNetError

    try:
        path = build(args.out, args.n, args.seed, num_frames=args.frames, command=command)
    except ClueNetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
