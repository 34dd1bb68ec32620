"""Video I/O: probe, sample frames with real timestamps, write clips.

    info = probe("clip.mp4")                      # ProbeInfo: container, codec, size, ...
    clip = sample("clip.mp4", num_frames=16)      # Clip: frames [T, H, W, 3] uint8 RGB + times (s)
    clip = sample("clip.mp4", fps=2.0, start=1.0, end=9.0, max_side=448)

Choices written down here:

* **Timestamps are real presentation times** (pts x time_base, counted from the
  stream's start time), so variable-frame-rate clips get true times.  A sampled
  time t selects the frame *shown* at t: the one with the largest pts <= t.
* ``num_frames=N`` samples the centres of N equal segments of [start, end]
  (the usual video-QA choice: no frame sits on the very first or last instant).
  ``fps=r`` samples start, start + 1/r, ... while < end.  When N exceeds the
  frames in the span, frames repeat (with their repeated times).
* **Backends**: decord first (fast, declared default), PyAV when decord is
  missing, raises, or reports invalid timestamps; ``backend=`` forces one.
  The PyAV path builds a packet index (demuxing only, no decoding), seeks to
  the keyframe before each needed frame and decodes forward only as far as
  that frame, continuing instead of seeking when the keyframe is behind the
  decoder's position.  ``Clip.decoded_frames`` counts what it decoded
  (decord does not report it: -1).
* **Untrusted files are decoded in a child process** (``sandbox=True``) forked
  from a persistent decoder server (``cluenet.sandbox``: a fresh interpreter started
  once, so it is safe with torch threads in the caller), with a timeout and an
  address-space limit; frames come back as one raw buffer.  A hang or a crash kills
  only the child and becomes a ``VideoError``.  ``sandbox=False`` decodes in-process
  (trusted data, e.g. generated training clips).
* **Named limits** (``Limits``) are checked before any decoder sees the file
  (``check_path``: URLs, playlists, non-regular files, suffix, size) and from the
  header (container, duration, resolution) before any frame is decoded.
* **Display rotation** (a phone's portrait clip stored landscape): the probe reads the display
  matrix off the first decoded frame; frames are turned upright by ``ProbeInfo.rotation``
  (``np.rot90``); other angles and mirrors are ignored, noted in ``ProbeInfo.warnings``.  decord
  turns by its own FFmpeg 4's rules (MP4/MOV only), so such clips go to PyAV ("decord" refuses).

What the guards do not cover: decord opens the file with its own FFmpeg build and format
probing (no whitelist); we only let it see files that PyAV's whitelisted probe accepted.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from . import sandbox
from .errors import ClueNetError, ConfigError, InputError, VideoError

# ---- limits (defaults of ``Limits``) -------------------------------------------------

MAX_FILE_BYTES = 2 * 1024**3          # 2 GiB: far above any benchmark clip
MAX_DURATION_S = 600.0                # 10 min: NExT-QA / STAR / MVBench clips are shorter
MAX_WIDTH = 4096
MAX_HEIGHT = 4096
MAX_PIXELS = 4096 * 2304              # a bit over 4K UHD per frame
MAX_SAMPLED_FRAMES = 512              # frames one call may return
MAX_OUTPUT_BYTES = 2 * 1024**3        # T * H * W * 3 of the returned array
ALLOWED_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ogv", ".gif")
# FFmpeg demuxer names; also passed to FFmpeg as ``format_whitelist`` so that a
# playlist or concat script disguised as .mp4 is never parsed (it could open other files).
ALLOWED_CONTAINERS = ("mov", "mp4", "matroska", "webm", "avi", "mpeg", "ogg", "gif")
PLAYLIST_SUFFIXES = (".m3u", ".m3u8", ".pls", ".txt", ".sdp", ".ffconcat", ".concat", ".xspf", ".asx", ".mpd")

PROBE_TIMEOUT_S = 20.0
DEFAULT_TIMEOUT_S = 60.0
CHILD_MAX_ADDRESS_BYTES = 16 * 1024**3  # RLIMIT_AS of the decoder child (virtual memory)
MIN_SIDE = 8                          # smallest accepted max_side
BACKENDS = ("auto", "decord", "pyav")

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_INTERPOLATION = "AREA"              # FFmpeg scaler for max_side: area averaging suits shrinking
_TIME_EPS = 1e-6                      # float slack when matching a target time to a pts


@dataclass(frozen=True)
class Limits:
    """Named limits on untrusted video input; every field must be positive."""

    max_file_bytes: int = MAX_FILE_BYTES
    max_duration_s: float = MAX_DURATION_S
    max_width: int = MAX_WIDTH
    max_height: int = MAX_HEIGHT
    max_pixels: int = MAX_PIXELS
    max_frames: int = MAX_SAMPLED_FRAMES
    max_output_bytes: int = MAX_OUTPUT_BYTES
    allowed_suffixes: tuple[str, ...] = ALLOWED_SUFFIXES
    allowed_containers: tuple[str, ...] = ALLOWED_CONTAINERS

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("allowed_"):
                if not value or not all(isinstance(v, str) for v in value):
                    raise ConfigError(f"Limits.{f.name} must be a non-empty tuple of strings, got {value!r}")
            elif not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"Limits.{f.name} must be a positive number, got {value!r}")


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class ProbeInfo:
    """What the container header says about the first video stream.

    ``num_frames`` is the container's frame count, or duration x fps where it has none (WebM;
    ``Clip.info`` has the exact count).  ``width`` x ``height``: upright, after turning the stored
    frames ``rotation`` degrees counter-clockwise; ``warnings``: what the probe ignored.
    """

    container: str
    codec: str
    duration: float
    fps: float
    num_frames: int
    width: int
    height: int
    size_bytes: int
    rotation: int = 0
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the fields."""
        return dataclasses.asdict(self)


@dataclass(frozen=True, eq=False)
class Clip:
    """Sampled frames with their real timestamps.

    frames: uint8 [T, H, W, 3] RGB.  times: pts in seconds of each frame.
    backend: "decord" or "pyav".  decoded_frames: frames the decoder decoded
    (-1 when the backend does not report it, i.e. decord).
    """

    frames: np.ndarray
    times: tuple[float, ...]
    info: ProbeInfo
    backend: str
    decoded_frames: int


# ---- pre-decoder checks ---------------------------------------------------------------

def _human_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} bytes"  # unreachable; keeps type checkers quiet


def _file_kind(mode: int) -> str:
    kinds = [(stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a fifo"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")]
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def check_path(path: str | os.PathLike, limits: Limits = DEFAULT_LIMITS) -> Path:
    """Refuse what no decoder should see; return the resolved path.

    Refused: URLs and protocol strings (``http:``, ``file:``, ``concat:`` ...),
    playlist suffixes, missing files, anything that is not a regular file
    (directories, fifos, sockets, devices), suffixes outside
    ``limits.allowed_suffixes``, empty files and files over ``limits.max_file_bytes``.
    Nothing is opened: ``os.stat`` only, so a fifo cannot block.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise VideoError(f"expected a file path (str or Path), got {type(path).__name__}")
    raw = os.fspath(path)
    if isinstance(raw, bytes):
        raw = os.fsdecode(raw)
    if _URL_RE.match(raw):
        raise VideoError(f"URLs and protocols are not accepted, got {raw!r}; give a local file path")
    p = Path(raw).expanduser()
    suffix = p.suffix.lower()
    if suffix in PLAYLIST_SUFFIXES:
        raise VideoError(f"playlists and lists of files are not accepted, got a {suffix} file ({p.name})")
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise VideoError(f"no such file: {raw}") from None
    except OSError as exc:
        raise VideoError(f"cannot stat {raw}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise VideoError(f"{raw} is {_file_kind(st.st_mode)}, expected a regular video file")
    if suffix not in limits.allowed_suffixes:
        raise VideoError(f"file type {suffix or '(none)'!r} is not accepted; allowed: {', '.join(limits.allowed_suffixes)}")
    if st.st_size == 0:
        raise VideoError(f"{p.name} is empty (0 bytes)")
    if st.st_size > limits.max_file_bytes:
        raise VideoError(f"file is {_human_bytes(st.st_size)}, limit {_human_bytes(limits.max_file_bytes)}")
    return p.resolve()


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a regular file's bytes (cache keys); refuses non-regular files."""
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError as exc:
        raise VideoError(f"cannot read {p}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise VideoError(f"{p} is {_file_kind(st.st_mode)}, expected a regular file")
    digest = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- probing (PyAV, whitelisted formats) -------------------------------------------------

def _open_container(path: str, limits: Limits):
    """Open with PyAV, only the file protocol and whitelisted demuxers."""
    import av

    options = {"protocol_whitelist": "file", "format_whitelist": ",".join(limits.allowed_containers)}
    try:
        return av.open(path, container_options=options)
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or _first_line(exc)
        raise VideoError(f"cannot open {Path(path).name} as a video (FFmpeg: {reason}); "
                         f"accepted containers: {', '.join(limits.allowed_containers)}") from None


def _video_stream(container, name: str):
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoError(f"{name} has no video stream (streams found: {', '.join(kinds)})")
    return container.streams.video[0]


def _stream_duration(container, stream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000  # AV_TIME_BASE is microseconds
    return None


def _check_header(info: ProbeInfo, limits: Limits) -> None:
    w, h = info.width, info.height
    if w <= 0 or h <= 0:
        raise VideoError(f"video stream has no valid resolution (got {w}x{h})")
    if w > limits.max_width or h > limits.max_height or w * h > limits.max_pixels:
        raise VideoError(f"resolution is {w}x{h}, limit {limits.max_width}x{limits.max_height} "
                         f"and {limits.max_pixels} pixels")
    if info.duration > limits.max_duration_s:
        raise VideoError(f"clip is {info.duration:.0f} s, limit {limits.max_duration_s:.0f} s")


def _probe_container(container, path: str, limits: Limits) -> ProbeInfo:
    name = Path(path).name
    demuxers = container.format.name.split(",")
    if not set(demuxers) & set(limits.allowed_containers):
        raise VideoError(f"container {container.format.name!r} is not accepted; allowed: {', '.join(limits.allowed_containers)}")
    stream = _video_stream(container, name)
    duration = _stream_duration(container, stream)
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else 0.0
    if duration is None or duration <= 0:
        raise VideoError(f"{name}: cannot tell the clip's duration from its header")
    num_frames = stream.frames or (round(duration * fps) if fps else 0)
    info = ProbeInfo(container=container.format.name, codec=stream.codec_context.name, duration=duration,
                     fps=fps, num_frames=int(num_frames), width=int(stream.codec_context.width),
                     height=int(stream.codec_context.height), size_bytes=os.path.getsize(path))
    _check_header(info, limits)  # before any frame is decoded
    rotation, warning = _display_rotation(container, stream)
    w, h = (info.height, info.width) if rotation % 180 else (info.width, info.height)
    info = dataclasses.replace(info, width=w, height=h, rotation=rotation, warnings=(warning,) if warning else ())
    _check_header(info, limits)
    return info


def _display_rotation(container, stream) -> tuple[int, str | None]:
    """Degrees counter-clockwise that turn the stored frames upright, and a warning or None.

    FFmpeg attaches the display matrix (int32 a b u / c d v / x y w, ISO 14496-12) to decoded
    frames; the angle is its ``av_display_rotation_get``, a determinant <= 0 a mirror."""
    import av

    try:
        side = next(container.decode(stream)).side_data.get("DISPLAYMATRIX")
    except (av.FFmpegError, ValueError, StopIteration):
        return 0, None  # no first frame: sampling reports a broken stream
    if side is None:
        return 0, None
    m = np.frombuffer(bytes(side), dtype=np.int32)[:9].astype(np.float64)
    if m[0] * m[4] - m[1] * m[3] <= 0:
        return 0, "display matrix mirrors the picture; ignored, frames are as stored"
    angle = -float(np.degrees(np.arctan2(m[1] / np.hypot(m[1], m[4]), m[0] / np.hypot(m[0], m[3]))))
    if abs(angle - 90 * round(angle / 90)) > 1.0:
        return 0, f"display rotation of {angle:.1f} degrees is not a multiple of 90; ignored, frames are as stored"
    return 90 * round(angle / 90) % 360, None


def probe(path: str | os.PathLike, limits: Limits = DEFAULT_LIMITS, timeout: float = PROBE_TIMEOUT_S,
          sandbox: bool = True) -> ProbeInfo:
    """Read the header of ``path``, check it against ``limits`` and read the display rotation.

    Raises ``VideoError`` for a refused path (see ``check_path``), a file FFmpeg cannot open,
    no video stream, an unknown duration, or a resolution / duration over the limits.  With
    ``sandbox`` the header is parsed in a child process killed after ``timeout`` seconds.
    """
    resolved = str(check_path(path, limits))
    task = _Task("probe", resolved, limits)
    meta, _ = _run_in_child(task, timeout) if sandbox else _execute(task)
    return meta["info"]


# ---- sampling plan ---------------------------------------------------------------------

@dataclass(frozen=True)
class _Request:
    num_frames: int | None
    fps: float | None
    start: float | None
    end: float | None
    backend: str
    max_side: int | None


def _check_request(req: _Request, limits: Limits) -> None:
    if (req.num_frames is None) == (req.fps is None):
        raise InputError(f"give exactly one of num_frames or fps, got num_frames={req.num_frames}, fps={req.fps}")
    if req.num_frames is not None:
        if isinstance(req.num_frames, bool) or not isinstance(req.num_frames, (int, np.integer)) or req.num_frames < 1:
            raise InputError(f"num_frames must be a positive integer, got {req.num_frames!r}")
        if req.num_frames > limits.max_frames:
            raise InputError(f"num_frames is {req.num_frames}, limit {limits.max_frames}")
    if req.fps is not None and not (isinstance(req.fps, (int, float)) and 0 < req.fps < float("inf")):
        raise InputError(f"fps must be a positive number, got {req.fps!r}")
    if req.backend not in BACKENDS:
        raise InputError(f"backend must be one of {', '.join(BACKENDS)}, got {req.backend!r}")
    if req.max_side is not None and (not isinstance(req.max_side, (int, np.integer)) or req.max_side < MIN_SIDE):
        raise InputError(f"max_side must be an integer >= {MIN_SIDE}, got {req.max_side!r}")
    for name in ("start", "end"):
        value = getattr(req, name)
        if value is not None and not (isinstance(value, (int, float)) and 0 <= value < float("inf")):
            raise InputError(f"{name} must be a time in seconds >= 0, got {value!r}")
    if req.start is not None and req.end is not None and req.start >= req.end:
        raise InputError(f"start must be before end, got start={req.start}, end={req.end}")


def _target_times(req: _Request, duration: float, limits: Limits) -> np.ndarray:
    """The times (s) to sample, from the request and the clip's duration."""
    start = req.start or 0.0
    end = duration if req.end is None else min(req.end, duration)
    if start >= end:
        raise InputError(f"start is {start:.3f} s, the clip ends at {end:.3f} s")
    if req.num_frames is not None:
        step = (end - start) / req.num_frames
        return start + (np.arange(req.num_frames) + 0.5) * step
    count = max(1, int(np.ceil((end - start) * req.fps - 1e-9)))
    if count > limits.max_frames:
        raise InputError(f"fps={req.fps} over {end - start:.1f} s gives {count} frames, limit {limits.max_frames}")
    return start + np.arange(count) / req.fps


def _select(frame_times: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index of the frame shown at each target time (largest time <= target)."""
    idx = np.searchsorted(frame_times, targets + _TIME_EPS, side="right") - 1
    return np.clip(idx, 0, len(frame_times) - 1)


def _output_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    longest = max(width, height)
    if max_side is None or longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def _check_output(count: int, size: tuple[int, int], limits: Limits) -> None:
    nbytes = count * size[0] * size[1] * 3
    if nbytes > limits.max_output_bytes:
        raise InputError(f"{count} frames of {size[0]}x{size[1]} are {_human_bytes(nbytes)}, "
                         f"limit {_human_bytes(limits.max_output_bytes)}; sample fewer frames or set max_side")


def _times_valid(times: np.ndarray, duration: float) -> bool:
    """decord's timestamps are garbage on some AVI files: accept only sane ones."""
    if len(times) == 0 or not np.all(np.isfinite(times)):
        return False
    slack = max(1.0, 0.05 * duration)  # container durations are often a frame or so short
    return bool(np.all(np.diff(times) > 0) and times[0] >= -_TIME_EPS and times[-1] <= duration + slack)


# ---- PyAV backend ----------------------------------------------------------------------

@dataclass(frozen=True)
class _FrameIndex:
    """Every frame of the stream in presentation order (from packets; nothing decoded)."""

    pts: np.ndarray        # int64 ticks, sorted
    keyframe: np.ndarray   # bool
    time_base: Fraction
    start_pts: int

    @property
    def times(self) -> np.ndarray:
        return (self.pts - self.start_pts).astype(np.float64) * float(self.time_base)


def _build_index(container, stream) -> _FrameIndex:
    pts, keys = [], []
    for packet in container.demux(stream):
        stamp = packet.pts if packet.pts is not None else packet.dts
        if stamp is None or packet.size == 0:
            continue  # the flush packet at the end, or a packet we cannot place
        pts.append(stamp)
        keys.append(packet.is_keyframe)
    if not pts:
        raise VideoError("the video stream has no frames")
    order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
    pts_arr = np.asarray(pts, dtype=np.int64)[order]
    start = stream.start_time if stream.start_time is not None else int(pts_arr[0])
    return _FrameIndex(pts_arr, np.asarray(keys, dtype=bool)[order], stream.time_base, int(start))


def forced_decode_count(keyframe: np.ndarray, wanted: Iterable[int]) -> int:
    """Frames a keyframe-seeking decoder must decode to output the ``wanted`` frames.

    ``keyframe`` flags every frame in presentation order; ``wanted`` are frame
    indices.  A frame is reached by decoding forward from its last keyframe, or by
    continuing from the previous wanted frame when that keyframe lies behind it,
    and every frame on the way counts (a decoder that skips non-reference frames,
    as the PyAV path does, can do with fewer).  Used by the decode benchmark.
    """
    flags = np.asarray(keyframe, dtype=bool)
    key_before = np.maximum.accumulate(np.where(flags, np.arange(len(flags)), 0))
    pos, total = -1, 0
    for i in sorted({int(w) for w in wanted}):
        if not 0 <= i < len(flags):
            raise InputError(f"wanted frame {i} is outside the {len(flags)} frames")
        k = int(key_before[i])
        total += i - pos if k <= pos + 1 else i - k + 1
        pos = i
    return total


def _frame_stamp(frame) -> int:
    stamp = frame.pts if frame.pts is not None else frame.dts
    if stamp is None:
        raise VideoError("decoded frame has no timestamp")
    return stamp


class _PyAVReader:
    """Decode chosen frames forward from keyframes, counting every decoded frame.

    Per wanted frame: seek to its keyframe unless the decoder already stands at or
    after it; skip non-reference frames that are not wanted (nothing needs them);
    and when the next wanted frame will need a seek anyway, drain the decoder right
    after the wanted packet instead of feeding further packets to push it out of
    the reordering delay.
    """

    def __init__(self, container, stream, index: _FrameIndex, wanted: np.ndarray, limits: Limits):
        self.container, self.stream, self.index, self.limits = container, stream, index, limits
        self.wanted_pts = {int(index.pts[i]) for i in wanted}
        self.key_before = np.maximum.accumulate(np.where(index.keyframe, np.arange(len(index.pts)), 0))
        # Slice threads decode each packet before the next is sent, so skip_frame can
        # change per packet; frame threads would apply it to packets already queued.
        stream.thread_type = "SLICE"
        self.decoded, self.pos, self._frames, self._pending, self._drain_pts = 0, -1, None, None, None
        self._cap = 2 * len(index.pts) + 64  # a decoder looping on a broken file stops here

    def _seek(self, k: int) -> None:
        self.container.seek(int(self.index.pts[k]), stream=self.stream, backward=True)
        self._frames, self._pending = self._decode_iter(), None

    def _decode_iter(self) -> Iterator:
        codec = self.stream.codec_context
        for packet in self.container.demux(self.stream):
            stamp = packet.pts if packet.pts is not None else packet.dts
            # A frame nothing refers to is only worth decoding if it is one we return.
            codec.skip_frame = "NONREF" if stamp is not None and stamp not in self.wanted_pts else "DEFAULT"
            yield from packet.decode()
            if stamp is not None and stamp == self._drain_pts:
                yield from codec.decode(None)  # drained: the next read must seek
                return

    def _next_frame(self):
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        frame = next(self._frames, None)
        if frame is not None:
            self.decoded += 1
            if self.decoded > self._cap:
                raise VideoError(f"decoder produced over {self._cap} frames for a {len(self.index.pts)}-frame stream")
            if frame.width * frame.height > self.limits.max_pixels:
                raise VideoError(f"decoded frame is {frame.width}x{frame.height}, limit {self.limits.max_pixels} pixels")
        return frame

    def read(self, i: int, next_i: int | None):
        """Frame ``i`` (or the last one before it the decoder yields); ``next_i`` is the
        frame the following call will ask for (None: this is the last)."""
        k = int(self.key_before[i])
        if self._frames is None or self._drain_pts is not None or k > self.pos + 1:
            self._seek(k)
        seek_next = next_i is None or int(self.key_before[next_i]) > i + 1
        self._drain_pts = int(self.index.pts[i]) if seek_next else None
        best = self._forward_to(i, k)
        if best is None and k > 0:
            # The seek landed after the frame (a bad index): decode from the start instead.
            self._seek(0)
            best = self._forward_to(i, 0)
        if best is None:
            seconds = float((self.index.pts[i] - self.index.start_pts) * self.index.time_base)
            raise VideoError(f"could not decode the frame at {seconds:.3f} s")
        self.pos = i
        return best

    def _forward_to(self, i: int, k: int):
        """Decode until frame ``i``; frames before keyframe ``k`` are skipped."""
        target, lower, best = int(self.index.pts[i]), int(self.index.pts[k]), None
        while (frame := self._next_frame()) is not None:
            stamp = _frame_stamp(frame)
            if stamp < lower:
                continue  # leading frames of an open GOP, before the keyframe we sought
            if stamp > target:
                self._pending = frame  # belongs to a later request
                break
            best = frame
            if stamp == target:
                break
        return best


def _sample_pyav(path: str, info: ProbeInfo, targets: np.ndarray, size: tuple[int, int],
                 limits: Limits) -> tuple[np.ndarray, np.ndarray, int, ProbeInfo]:
    with _open_container(path, limits) as container:
        stream = _video_stream(container, Path(path).name)
        index = _build_index(container, stream)
        times = index.times
        chosen = _select(times, targets)
        unique = [int(i) for i in np.unique(chosen)]
        reader = _PyAVReader(container, stream, index, np.array(unique), limits)
        out = np.empty((len(chosen), size[1], size[0], 3), dtype=np.uint8)
        for i, next_i in zip(unique, unique[1:] + [None]):
            frame = reader.read(i, next_i)
            out[chosen == i] = frame.to_ndarray(format="rgb24", width=size[0], height=size[1],
                                                interpolation=_INTERPOLATION)
    info = dataclasses.replace(info, num_frames=len(index.pts))
    return out, times[chosen], reader.decoded, info


# ---- decord backend --------------------------------------------------------------------

def _sample_decord(path: str, info: ProbeInfo, targets: np.ndarray, size: tuple[int, int],
                   limits: Limits) -> tuple[np.ndarray, np.ndarray, int, ProbeInfo] | None:
    """Sample with decord; None when its timestamps are invalid (caller falls back to PyAV)."""
    import decord

    # decord's own resize breaks on widths that are not a multiple of 32 ("size must
    # exactly match"), so frames are decoded at full size and shrunk afterwards.
    reader = decord.VideoReader(path, ctx=decord.cpu(0))
    count = len(reader)
    if count == 0:
        raise VideoError("decord found no frames")
    times = np.asarray(reader.get_frame_timestamp(list(range(count))), dtype=np.float64)[:, 0]
    if not _times_valid(times, info.duration):
        return None
    chosen = _select(times, targets)
    unique, inverse = np.unique(chosen, return_inverse=True)
    frames = reader.get_batch(unique.tolist()).asnumpy()
    if frames.shape[1:] != (info.height, info.width, 3):
        raise VideoError(f"decord returned frames of shape {frames.shape[1:]}, expected {(info.height, info.width, 3)}")
    if size != (info.width, info.height):
        frames = np.stack([_resize_rgb(f, size) for f in frames])
    info = dataclasses.replace(info, num_frames=count)
    return np.ascontiguousarray(frames[inverse]), times[chosen], -1, info


def _resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Shrink one RGB frame with FFmpeg's scaler (the same one the PyAV path uses)."""
    import av

    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
    return frame.to_ndarray(format="rgb24", width=size[0], height=size[1], interpolation=_INTERPOLATION)


def _try_decord(path: str, info: ProbeInfo, targets: np.ndarray, size: tuple[int, int],
                limits: Limits, required: bool):
    """decord's result, or None to fall back to PyAV; with ``required`` failures raise.

    decord raises RuntimeError or its own DECORDError (not a RuntimeError), so every
    exception counts as "decord failed" here.
    """
    name = Path(path).name
    try:
        result = _sample_decord(path, info, targets, size, limits)
    except ImportError:
        if required:
            raise VideoError("backend 'decord' requested but decord is not installed") from None
        return None
    except Exception as exc:
        if not required:
            return None
        if isinstance(exc, ClueNetError):
            raise
        raise VideoError(f"decord cannot decode {name}: {_first_line(exc)}") from None
    if result is None and required:
        raise VideoError(f"decord reports invalid frame timestamps for {name}")
    return result


def _sample_checked(path: str, info: ProbeInfo, req: _Request, limits: Limits) -> tuple[dict, np.ndarray]:
    targets = _target_times(req, info.duration, limits)
    size = _output_size(info.width, info.height, req.max_side)
    _check_output(len(targets), size, limits)
    result, backend = None, "decord"
    matrix = bool(info.rotation or info.warnings)  # a turn or an ignored matrix: decord applies its own
    if matrix and req.backend == "decord":
        raise VideoError(f"{Path(path).name} has a display matrix, which decord applies its own way; use 'pyav'")
    if not matrix and req.backend in ("auto", "decord"):
        result = _try_decord(path, info, targets, size, limits, required=req.backend == "decord")
    if result is None:
        stored = size[::-1] if info.rotation % 180 else size  # PyAV decodes frames as stored
        result, backend = _sample_pyav(path, info, targets, stored, limits), "pyav"
    frames, times, decoded, info = result
    frames = np.ascontiguousarray(np.rot90(frames, info.rotation // 90, axes=(1, 2)))  # counter-clockwise; 0: no copy
    meta = {"times": tuple(float(t) for t in times), "info": info, "backend": backend, "decoded": decoded}
    return meta, frames


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def sample(path: str | os.PathLike, num_frames: int | None = None, fps: float | None = None,
           start: float | None = None, end: float | None = None, backend: str = "auto",
           max_side: int | None = None, limits: Limits = DEFAULT_LIMITS, sandbox: bool = True,
           timeout: float = DEFAULT_TIMEOUT_S) -> Clip:
    """Sample frames of ``path`` with their real timestamps.

    Exactly one of ``num_frames`` (N frames at the centres of N equal segments of [start, end])
    or ``fps`` (frames at start + k / fps).  ``start``/``end`` in seconds default to the whole
    clip.  ``backend``: "auto" (decord, else PyAV; PyAV for a clip with a display matrix),
    "decord" or "pyav".  ``max_side`` shrinks frames so the longer side is at most that (aspect
    kept).  Frames come out upright (``ProbeInfo.rotation``).  With ``sandbox`` (default)
    decoding runs in a child process killed after ``timeout`` seconds; ``sandbox=False``
    decodes in-process without a timeout (trusted files only).

    Raises ``InputError`` for bad arguments and ``VideoError`` for any file that
    is refused, cannot be decoded, breaks a limit, hangs or crashes the decoder.
    """
    req = _Request(num_frames, fps, start, end, backend, max_side)
    _check_request(req, limits)
    resolved = str(check_path(path, limits))
    task = _Task("sample", resolved, limits, req)
    meta, frames = _run_in_child(task, timeout) if sandbox else _execute(task)
    return Clip(frames=frames, times=meta["times"], info=meta["info"], backend=meta["backend"],
                decoded_frames=meta["decoded"])


# ---- the sandboxed task ------------------------------------------------------------------
#
# ``cluenet.sandbox`` runs ``_Task.child_main`` in a forked, killable child.  The child
# decodes, writes the frames as raw bytes to a private temp file named by the caller
# (page cache: one copy each way, no pipe chunking) and a JSON header to the pipe.

@dataclass(frozen=True)
class _Task:
    """One unit of work for the decoder child (picklable)."""

    kind: str                    # "probe" or "sample"
    path: str
    limits: Limits
    request: _Request | None = None
    fault: str | None = None     # test hook, child only: "segv" kills it, "hang" sleeps
    frames_path: str | None = None  # private temp file the child writes frame bytes to

    def child_main(self, fd: int) -> int:
        """In the child: decode, write the frames to ``frames_path`` and [len][JSON header] to ``fd``."""
        sandbox.child_setup(CHILD_MAX_ADDRESS_BYTES, self.fault)
        try:
            meta, frames = _execute(self)
            header = {"status": "ok", **meta, "info": meta["info"].to_dict(),
                      "shape": None if frames is None else list(frames.shape)}
            if frames is not None:
                with open(self.frames_path, "wb") as fh:
                    fh.write(memoryview(np.ascontiguousarray(frames).reshape(-1)))
        except ClueNetError as exc:
            header = {"status": "error", "kind": type(exc).__name__, "message": str(exc)}
        except MemoryError:
            header = {"status": "error", "kind": "VideoError",
                      "message": f"decoder ran out of memory (limit {_human_bytes(CHILD_MAX_ADDRESS_BYTES)})"}
        except OSError as exc:
            header = {"status": "error", "kind": "VideoError", "message": f"cannot hand over the frames: {exc}"}
        blob = json.dumps(header).encode()
        sandbox.write_all(fd, sandbox.HEADER.pack(len(blob)) + blob)
        os.close(fd)
        return 0


def _execute(task: _Task) -> tuple[dict[str, Any], np.ndarray | None]:
    """Run a task where we are: ({"info": ProbeInfo, ...}, frames or None)."""
    try:
        with _open_container(task.path, task.limits) as container:
            info = _probe_container(container, task.path, task.limits)
    except ClueNetError:
        raise
    except Exception as exc:  # FFmpeg can fail in many ways on a hostile header
        raise VideoError(f"cannot read the header of {Path(task.path).name}: {_first_line(exc)}") from None
    if task.kind == "probe":
        return {"info": info}, None
    try:
        return _sample_checked(task.path, info, task.request, task.limits)
    except ClueNetError:
        raise
    except Exception as exc:
        raise VideoError(f"cannot decode {Path(task.path).name}: {type(exc).__name__}: {_first_line(exc)}") from None


_ERRORS = {cls.__name__: cls for cls in (VideoError, InputError, ConfigError)}


def _run_in_child(task: _Task, timeout: float) -> tuple[dict[str, Any], np.ndarray | None]:
    """Run ``task`` in a forked child of the decoder server, killed after ``timeout`` s."""
    if not (isinstance(timeout, (int, float)) and 0 < timeout < float("inf")):
        raise InputError(f"timeout must be a positive number of seconds, got {timeout!r}")
    handle, frames_path = tempfile.mkstemp(prefix="cluenet-frames-", suffix=".bin")
    os.close(handle)
    task = dataclasses.replace(task, frames_path=frames_path)
    try:
        status, data = sandbox.run(task, timeout, Path(task.path).name)
        return _decode_reply(status, data, timeout, frames_path)
    finally:
        os.unlink(frames_path)


def _decode_reply(status: dict[str, Any], data: bytearray, timeout: float,
                  frames_path: str) -> tuple[dict[str, Any], np.ndarray | None]:
    if status.get("timeout"):
        raise VideoError(f"decoder timed out after {timeout:g} s")
    code = status.get("exit")
    if code is not None and code < 0:
        raise VideoError(f"decoder crashed ({sandbox.signal_name(-code)})")
    head = sandbox.HEADER
    size = head.unpack(data[:head.size])[0] if len(data) >= head.size else -1
    if code != 0 or size < 0 or len(data) < head.size + size:
        raise VideoError(f"decoder exited (status {code}) before sending its result")
    header = json.loads(data[head.size:head.size + size])
    if header["status"] == "error":
        raise _ERRORS.get(header["kind"], VideoError)(header["message"])
    header["info"] = ProbeInfo(**{**header["info"], "warnings": tuple(header["info"]["warnings"])})
    shape = header.pop("shape")
    if shape is None:
        return header, None
    header["times"] = tuple(header["times"])
    frames = np.fromfile(frames_path, dtype=np.uint8)
    if frames.size != int(np.prod(shape)):
        raise VideoError(f"decoder wrote {frames.size} frame bytes, expected {int(np.prod(shape))}")
    return header, frames.reshape(shape)


# ---- writing -------------------------------------------------------------------------

def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float, codec: str = "libx264",
                pix_fmt: str = "yuv420p", options: dict[str, str] | None = None) -> Path:
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
