"""Frame strip: the sampled frames in a row, with the frames each clue spans marked.

``clue_frames`` says which sampled frames a clue's time span covers;
``frame_strip`` draws the thumbnails side by side (time under each) with

* a bar under a frame for every clue that spans it, the clue id written on it,
  coloured by filter score on the same scale as the plots (``plots.COLORSCALE``)
  for kept clues, light grey for dropped ones;
* a thick red border around frames spanned by a highlighted clue (the clues a
  selected chain step cites).

The result is a uint8 RGB array the app shows with ``gr.Image``.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from plotly.colors import sample_colorscale, unlabel_rgb

from .plots import COLORSCALE, UNSCORED_COLOR
from .schema import Clue

THUMB_HEIGHT_PX = 84
MAX_STRIP_FRAMES = 64  # more frames than this would make unreadably thin thumbnails
GAP_PX = 4
CAPTION_PX = 16
BAND_PX = 13
BORDER_PX = 4
SPAN_TOLERANCE_S = 0.05  # clue times are written with one decimal: allow half of that
DROPPED_BAND = "#c9ccd1"
HIGHLIGHT = "#e8453c"
BACKGROUND = "#ffffff"


def clue_frames(times: Sequence[float], clue: Clue) -> list[int]:
    """Indices of the frames whose timestamp lies in the clue's span.

    A span shorter than the gap between sampled frames may contain none; then the
    frame nearest to the span's middle stands for it, so every clue maps to at
    least one frame (when there are frames at all).
    """
    lo, hi = clue.start - SPAN_TOLERANCE_S, clue.end + SPAN_TOLERANCE_S
    inside = [i for i, t in enumerate(times) if lo <= t <= hi]
    if inside or not times:
        return inside
    mid = (clue.start + clue.end) / 2
    return [min(range(len(times)), key=lambda i: abs(times[i] - mid))]


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: bitmap font, fixed size
        return ImageFont.load_default()


def _thumb(frame: np.ndarray, height: int) -> Image.Image:
    img = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8))
    width = max(1, round(img.width * height / max(img.height, 1)))
    return img.resize((width, height), Image.BILINEAR)


def frame_strip(
    frames: np.ndarray,
    times: Sequence[float],
    clues: Sequence[Clue] = (),
    highlight: Iterable[str] = (),
    thumb_height: int = THUMB_HEIGHT_PX,
) -> np.ndarray:
    """Render frames [T, H, W, 3] (uint8) as one strip image with clue marks.

    ``times`` are the frames' timestamps in seconds (same length as ``frames``).
    Only the first ``MAX_STRIP_FRAMES`` frames are drawn.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3], got shape {frames.shape}")
    if len(times) != len(frames):
        raise ValueError(f"got {len(frames)} frames but {len(times)} timestamps")
    frames, times = frames[:MAX_STRIP_FRAMES], list(times)[:MAX_STRIP_FRAMES]
    highlight = set(highlight)
    thumbs = [_thumb(f, thumb_height) for f in frames]
    covering = _covering(times, clues)
    rows = max((len(v) for v in covering), default=0)
    cell_w = [t.width + 2 * BORDER_PX for t in thumbs]
    width = sum(cell_w) + GAP_PX * (len(thumbs) + 1)
    height = 2 * BORDER_PX + thumb_height + CAPTION_PX + rows * (BAND_PX + 1) + GAP_PX * 2
    canvas = Image.new("RGB", (max(width, 1), height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font(11)
    x = GAP_PX
    for i, thumb in enumerate(thumbs):
        lit = any(c.id in highlight for c in covering[i])
        if lit:
            draw.rectangle([x, GAP_PX, x + cell_w[i] - 1, GAP_PX + thumb_height + 2 * BORDER_PX - 1], fill=HIGHLIGHT)
        canvas.paste(thumb, (x + BORDER_PX, GAP_PX + BORDER_PX))
        y = GAP_PX + thumb_height + 2 * BORDER_PX
        draw.text((x + BORDER_PX, y + 1), f"{times[i]:.1f}s", fill="#333333", font=font)
        y += CAPTION_PX
        for c in covering[i]:
            fill = band_colour(c)
            draw.rectangle([x, y, x + cell_w[i] - 1, y + BAND_PX - 1], fill=fill)
            draw.text((x + 3, y), c.id, fill=_text_colour(fill), font=font)
            y += BAND_PX + 1
        x += cell_w[i] + GAP_PX
    return np.asarray(canvas)


def band_colour(clue: Clue) -> tuple[int, int, int]:
    """Kept: the score's colour on the plots' scale; dropped: light grey; unscored: grey."""
    if clue.kept is False:
        return _rgb(DROPPED_BAND)
    if clue.score is None:
        return _rgb(UNSCORED_COLOR)
    r, g, b = unlabel_rgb(sample_colorscale(COLORSCALE, [min(max(clue.score, 0.0), 1.0)])[0])
    return int(round(r)), int(round(g)), int(round(b))


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def _text_colour(fill: tuple[int, int, int]) -> str:
    """Dark text on light bands (yellow end of Viridis, grey), white on dark ones."""
    luminance = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
    return "#222222" if luminance > 140 else "#ffffff"


def _covering(times: Sequence[float], clues: Sequence[Clue]) -> list[list[Clue]]:
    """For each frame, the clues that span it (kept first, then dropped)."""
    covering: list[list[Clue]] = [[] for _ in times]
    ordered = sorted(clues, key=lambda c: c.kept is False)  # stable: kept/unscored before dropped
    for c in ordered:
        for i in clue_frames(times, c):
            covering[i].append(c)
    return covering
