"""Video I/O: probe, sample frames with real timestamps, write clips.

(Probing and sampling are being written; ``write_video`` is in place.)
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
) -> Path:
    """Encode RGB uint8 frames (H, W, 3) to ``path`` with PyAV (no ffmpeg binary needed).

    ``options`` go to the encoder (e.g. ``{"crf": "18", "g": "30"}`` for x264).  The
    container follows the file suffix (.mp4, .webm, .avi, ...).  Width and height
    must be even for yuv420p.
    """
    import av

    path = Path(path)
    frames = iter(frames)
    first = next(frames)
    h, w = first.shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if options:
            stream.options = dict(options)
        for frame in (first, *frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame, dtype=np.uint8), format="rgb24")
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
