"""Tests for cluenet.video: probing, sampling with real timestamps, both backends,
limits, hostile inputs and the sandboxed decoder.

Every clip is written into a temporary folder by the tests themselves (PyAV encoders);
each frame carries its index as grey levels so a test can tell which frame came back.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import struct
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from cluenet import sandbox, video
from cluenet.errors import ConfigError, InputError, VideoError

W, H, FPS, N = 96, 64, 30, 60  # the standard test clip: 2 s at 30 fps


STEP = 30  # grey-level step of the frame code: survives lossy codecs


def make_frames(n: int, w: int = W, h: int = H) -> list[np.ndarray]:
    """Frame i shows i % 8 and i // 8 as grey levels in the left / right of its lower half."""
    assert n <= 64
    frames = []
    for i in range(n):
        f = np.full((h, w, 3), 128, np.uint8)
        f[h // 2:, : w // 2] = 16 + STEP * (i % 8)
        f[h // 2:, w // 2:] = 16 + STEP * (i // 8)
        x = (i * 3) % (w - 16)
        f[4:16, x:x + 12] = (255, 0, 0)  # a moving square so P/B frames carry motion
        frames.append(f)
    return frames


def frame_ids(frames: np.ndarray) -> list[int]:
    """Read each frame's index back from its grey-level code (centre of each block)."""
    h, w = frames.shape[1:3]
    lo = frames[:, 3 * h // 4 - 2: 3 * h // 4 + 2, w // 8: 3 * w // 8].reshape(len(frames), -1).mean(axis=1)
    hi = frames[:, 3 * h // 4 - 2: 3 * h // 4 + 2, 5 * w // 8: 7 * w // 8].reshape(len(frames), -1).mean(axis=1)
    return [int(round((a - 16) / STEP)) + 8 * int(round((b - 16) / STEP)) for a, b in zip(lo, hi)]


def write_vfr(path: Path, pts_ms: list[int]) -> Path:
    """An H.264 mp4 whose frames sit at the given (irregular) times in milliseconds."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, (pts, img) in enumerate(zip(pts_ms, make_frames(len(pts_ms)))):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def patch_avi_size(src: Path, dst: Path, width: int, height: int) -> Path:
    """Rewrite the resolution an AVI header (avih + strf) claims; the frames stay small."""
    data = bytearray(src.read_bytes())
    avih, strf = data.index(b"avih"), data.index(b"strf")
    struct.pack_into("<II", data, avih + 8 + 32, width, height)  # dwWidth, dwHeight
    struct.pack_into("<ii", data, strf + 8 + 4, width, height)   # biWidth, biHeight
    dst.write_bytes(bytes(data))
    return dst


VFR_PTS_MS = [0, 40, 70, 160, 190, 300, 330, 345, 500, 640, 650, 800, 990, 1000, 1210, 1400]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    frames = make_frames(N)
    out = {
        "h264": video.write_video(d / "h264.mp4", frames, FPS, options={"g": "12", "crf": "12"}),
        "longgop": video.write_video(d / "longgop.mp4", frames, FPS,
                                     options={"g": "1000", "keyint_min": "1000", "sc_threshold": "0", "crf": "12"}),
        "vp9": video.write_video(d / "vp9.webm", frames[:30], FPS, codec="libvpx-vp9",
                                 options={"crf": "10", "b": "0", "deadline": "realtime", "cpu-used": "8"}),
        "mjpeg": video.write_video(d / "mjpeg.avi", frames[:30], FPS, codec="mjpeg", pix_fmt="yuvj420p",
                                   options={"q": "2"}),
        "raw": video.write_video(d / "raw.avi", frames[:5], 10, codec="rawvideo", pix_fmt="bgr24"),
        "one": video.write_video(d / "one.mp4", frames[:1], FPS),
        "vfr": write_vfr(d / "vfr.mp4", VFR_PTS_MS),
        "av1": video.write_video(d / "av1.mp4", make_frames(10, 64, 64), 10, codec="libsvtav1",
                                 options={"preset": "12"}),
        "audio": write_audio_only(d / "audio.mp4"),
    }
    return out


# ---- probe ----------------------------------------------------------------------------

def test_probe_h264(clips):
    info = video.probe(clips["h264"])
    assert "mp4" in info.container.split(",") and info.codec == "h264"
    assert (info.width, info.height, info.fps, info.num_frames) == (W, H, FPS, N)
    assert info.duration == pytest.approx(N / FPS, abs=1e-3)
    assert info.size_bytes == clips["h264"].stat().st_size
    assert (info.rotation, info.warnings) == (0, ())
    assert set(info.to_dict()) == {f.name for f in video.dataclasses.fields(video.ProbeInfo)}


@pytest.mark.parametrize("name,container,codec", [("vp9", "webm", "vp9"), ("mjpeg", "avi", "mjpeg"),
                                                   ("av1", "mp4", "av1")])
def test_probe_other_codecs(clips, name, container, codec):
    info = video.probe(clips[name])
    assert container in info.container.split(",") and codec in info.codec
    assert info.width > 0 and info.duration > 0


# ---- sampling: correct frames and real timestamps -----------------------------------------

@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_uniform_sampling_picks_segment_centres(clips, backend):
    clip = video.sample(clips["h264"], num_frames=8, backend=backend)
    # centres of 8 segments of [0, 2 s] -> the frame shown there is floor(t * 30)
    expected = [int(((k + 0.5) * 2.0 / 8) * FPS) for k in range(8)]
    assert clip.backend == backend
    assert clip.frames.shape == (8, H, W, 3) and clip.frames.dtype == np.uint8
    assert frame_ids(clip.frames) == expected
    assert np.allclose(clip.times, [i / FPS for i in expected], atol=1e-4)


def test_backends_agree_pixel_for_pixel_on_h264(clips):
    a = video.sample(clips["h264"], num_frames=12, backend="decord")
    b = video.sample(clips["h264"], num_frames=12, backend="pyav")
    assert np.array_equal(a.frames, b.frames)
    assert np.allclose(a.times, b.times, atol=1e-4)
    assert a.info.num_frames == b.info.num_frames == N


@pytest.mark.parametrize("name,n", [("vp9", 30), ("mjpeg", 30)])
@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_sampling_other_codecs(clips, name, n, backend):
    clip = video.sample(clips[name], num_frames=5, backend=backend)
    expected = [int(((k + 0.5) * 1.0 / 5) * FPS) for k in range(5)]
    assert frame_ids(clip.frames) == expected
    assert np.allclose(clip.times, [i / FPS for i in expected], atol=1e-3)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_variable_frame_rate_times_are_the_pts(clips, backend):
    gaps = np.diff(VFR_PTS_MS)
    assert gaps.min() * 5 < gaps.max()  # really irregular: index / fps would be wrong
    clip = video.sample(clips["vfr"], fps=20.0, backend=backend)
    pts = np.array(VFR_PTS_MS) / 1000
    targets = np.arange(len(clip.times)) / 20.0
    shown = [int(np.searchsorted(pts, t + 1e-9, side="right") - 1) for t in targets]
    assert np.allclose(clip.times, pts[shown], atol=1e-3)
    assert frame_ids(clip.frames) == shown


def test_fps_sampling_and_window(clips):
    clip = video.sample(clips["h264"], fps=10.0, backend="pyav")
    assert np.allclose(clip.times, np.arange(20) / 10, atol=1e-6)
    win = video.sample(clips["h264"], num_frames=4, start=1.0, end=1.8, backend="pyav")
    assert all(1.0 <= t <= 1.8 for t in win.times) and list(win.times) == sorted(win.times)


def test_one_frame_clip_repeats_its_frame(clips):
    for backend in ("decord", "pyav"):
        clip = video.sample(clips["one"], num_frames=4, backend=backend)
        assert clip.frames.shape[0] == 4 and clip.times == (0.0,) * 4
        assert all(np.array_equal(clip.frames[0], f) for f in clip.frames)


def test_max_side_keeps_aspect(clips):
    a = video.sample(clips["h264"], num_frames=3, max_side=48, backend="decord")
    b = video.sample(clips["h264"], num_frames=3, max_side=48, backend="pyav")
    assert a.frames.shape == b.frames.shape == (3, 32, 48, 3)
    assert frame_ids(a.frames) == frame_ids(b.frames) == [10, 30, 50]
    # RGB-then-shrink (decord) vs shrink-in-YUV (PyAV): same picture, a few levels apart
    assert np.abs(a.frames.astype(int) - b.frames.astype(int)).mean() < 4


def test_av1_falls_back_to_pyav(clips):
    clip = video.sample(clips["av1"], num_frames=3)
    assert clip.backend == "pyav" and clip.frames.shape == (3, 64, 64, 3)
    with pytest.raises(VideoError, match="decord"):
        video.sample(clips["av1"], num_frames=3, backend="decord")


def test_sandbox_and_in_process_agree(clips):
    a = video.sample(clips["h264"], num_frames=6, backend="pyav", sandbox=True)
    b = video.sample(clips["h264"], num_frames=6, backend="pyav", sandbox=False)
    assert np.array_equal(a.frames, b.frames) and a.times == b.times and a.info == b.info
    assert a.decoded_frames == b.decoded_frames > 0


# ---- PyAV seeks instead of decoding everything ---------------------------------------------

def test_pyav_decodes_little_with_frequent_keyframes(clips):
    clip = video.sample(clips["h264"], num_frames=4, backend="pyav", sandbox=False)
    assert 4 <= clip.decoded_frames <= N // 2  # g=12: at most a GOP per frame, never the whole clip


def test_pyav_long_gop_decodes_once_forward(clips):
    clip = video.sample(clips["longgop"], num_frames=6, backend="pyav", sandbox=False)
    last = round(clip.times[-1] * FPS)
    # one keyframe: the least is every frame up to the last one wanted, decoded once
    assert clip.decoded_frames <= 1.2 * (last + 1)


def test_forced_decode_count():
    key = np.array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0], bool)
    assert video.forced_decode_count(key, [2]) == 3            # frames 0..2
    assert video.forced_decode_count(key, [3, 2]) == 4         # continue 2 -> 3
    assert video.forced_decode_count(key, [2, 7]) == 3 + 3     # seek to 5, decode 5..7
    assert video.forced_decode_count(key, [4, 6]) == 5 + 2     # 5 is the next frame: just continue
    assert video.forced_decode_count(np.zeros(10, bool), [9]) == 10
    with pytest.raises(InputError, match="outside the 10 frames"):
        video.forced_decode_count(key, [10])


def test_invalid_decord_timestamps_fall_back_to_pyav(clips, monkeypatch):
    monkeypatch.setattr(video, "_times_valid", lambda times, duration: False)
    clip = video.sample(clips["h264"], num_frames=4, sandbox=False)
    assert clip.backend == "pyav" and frame_ids(clip.frames) == [7, 22, 37, 52]
    with pytest.raises(VideoError, match="decord reports invalid frame timestamps"):
        video.sample(clips["h264"], num_frames=4, backend="decord", sandbox=False)


def test_forked_caller_gets_its_own_server(clips):
    video.probe(clips["h264"])  # make sure the parent has a server
    pid = os.fork()
    if pid == 0:  # the child must not talk to the parent's server over shared pipes
        ok = not sandbox.has_server() and video.probe(clips["h264"]).num_frames == N
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert video.probe(clips["h264"]).num_frames == N


def test_timestamp_validation():
    ok = np.array([0.0, 0.04, 0.08])
    assert video._times_valid(ok, 0.12)
    for bad in ([0.0, 0.08, 0.04], [-5.0, 0.0, 0.1], [0.0, 0.1, 1e9], [0.0, np.nan, 0.1], []):
        assert not video._times_valid(np.array(bad, dtype=float), 0.12)


# ---- display rotation ------------------------------------------------------------------------
#
# Phones store a portrait clip landscape and add a display matrix.  PyAV's
# ``set_display_rotation(deg)`` writes one (deg counter-clockwise, as FFmpeg reads it back;
# -90 is the matrix a phone held upright writes, the old ``rotate=90`` tag).  The expected
# corners were checked against the ffmpeg command line's own autorotation (what players show);
# ``test_rotation_agrees_with_ffmpeg_cli`` repeats that check where ffmpeg is installed.

RW, RH = 64, 32  # stored landscape
# where the stored top-left (red) and top-right (blue) blocks must end up, per rotation
UPRIGHT_CORNERS = {90: ("bottom-left", "top-left"), -90: ("top-right", "bottom-right"),
                   180: ("bottom-right", "bottom-left"), 0: ("top-left", "top-right")}
RED, BLUE = (255, 0, 0), (0, 0, 255)


def write_rotated(path: Path, degrees: float, hflip: bool = False, n: int = 6) -> Path:
    """RW x RH frames, red block top-left, blue block top-right, with a display matrix."""
    img = np.full((RH, RW, 3), 128, np.uint8)
    img[:12, :12], img[:12, -12:] = RED, BLUE
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = RW, RH, "yuv420p"
        stream.set_display_rotation(degrees, hflip=hflip)
        for _ in range(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def corner(img: np.ndarray, color: tuple[int, int, int]) -> str:
    """Which corner the block of ``color`` sits in ("top-left", ...)."""
    ys, xs = np.nonzero((np.abs(img.astype(int) - color).max(axis=2) < 80))
    assert len(ys), f"no {color} block in the frame"
    h, w = img.shape[:2]
    return ("top" if ys.mean() < h / 2 else "bottom") + "-" + ("left" if xs.mean() < w / 2 else "right")


@pytest.fixture(scope="module")
def rotated(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("rotated")
    out = {(ext, deg): write_rotated(d / f"r{deg}.{ext}", deg) for ext in ("mp4", "mkv") for deg in (90, -90, 180)}
    out["odd"] = write_rotated(d / "r45.mp4", 45)
    out["mirror"] = write_rotated(d / "mirror.mp4", 0, hflip=True)
    return out


@pytest.mark.parametrize("ext", ["mp4", "mkv"])  # decord turns MP4 by itself but not Matroska
@pytest.mark.parametrize("deg", [90, -90, 180])
@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_display_rotation_turns_frames_upright(rotated, ext, deg, backend):
    clip = video.sample(rotated[ext, deg], num_frames=3, backend=backend)
    size = (RW, RH) if deg == 180 else (RH, RW)  # upright (width, height)
    assert clip.frames.shape == (3, size[1], size[0], 3)
    assert all((corner(f, RED), corner(f, BLUE)) == UPRIGHT_CORNERS[deg] for f in clip.frames)
    assert clip.backend == "pyav"  # decord would apply the matrix by its own rules
    info = video.probe(rotated[ext, deg])
    assert (info.width, info.height, info.rotation, info.warnings) == (*size, deg % 360, ())
    assert clip.info == dataclasses.replace(info, num_frames=clip.info.num_frames)


def test_display_rotation_in_process_and_shrunk(rotated):
    a = video.sample(rotated["mp4", -90], num_frames=2, max_side=32, sandbox=False)
    b = video.sample(rotated["mp4", -90], num_frames=2, max_side=32, sandbox=True)
    assert a.frames.shape == (2, 32, 16, 3) and np.array_equal(a.frames, b.frames) and a.info == b.info
    assert (corner(a.frames[0], RED), corner(a.frames[0], BLUE)) == UPRIGHT_CORNERS[-90]


def test_decord_refuses_a_display_matrix(rotated):
    with pytest.raises(VideoError, match="has a display matrix, which decord applies its own way"):
        video.sample(rotated["mp4", 90], num_frames=2, backend="decord")


@pytest.mark.parametrize("name,warning", [("odd", "45.0 degrees is not a multiple of 90"),
                                          ("mirror", "display matrix mirrors the picture")])
def test_other_display_matrices_are_ignored_with_a_warning(rotated, name, warning):
    info = video.probe(rotated[name])
    assert (info.width, info.height, info.rotation) == (RW, RH, 0)
    assert len(info.warnings) == 1 and warning in info.warnings[0]
    clip = video.sample(rotated[name], num_frames=2)
    assert clip.frames.shape == (2, RH, RW, 3) and clip.info.warnings == info.warnings
    assert (corner(clip.frames[0], RED), corner(clip.frames[0], BLUE)) == UPRIGHT_CORNERS[0]


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command line")
@pytest.mark.parametrize("deg", [90, -90, 180])
def test_rotation_agrees_with_ffmpeg_cli(rotated, deg):
    """ffmpeg turns frames by the display matrix itself (autorotate): the reference."""
    ppm = subprocess.run(["ffmpeg", "-v", "error", "-i", str(rotated["mp4", deg]), "-frames:v", "1",
                          "-f", "image2pipe", "-c:v", "ppm", "-"], capture_output=True, check=True).stdout
    _, dims, _, data = ppm.split(b"\n", 3)
    w, h = map(int, dims.split())
    ref = np.frombuffer(data, np.uint8).reshape(h, w, 3)
    ours = video.sample(rotated["mp4", deg], num_frames=1).frames[0]
    assert ours.shape == ref.shape
    assert (corner(ours, RED), corner(ours, BLUE)) == (corner(ref, RED), corner(ref, BLUE))


# ---- refused before any decoder sees the input ---------------------------------------------

@pytest.mark.parametrize("url", ["http://example.com/a.mp4", "rtsp://cam/stream", "file:///tmp/a.mp4",
                                 "concat:a.mp4|b.mp4", "pipe:0", "https://x/y.m3u8"])
def test_urls_refused(url):
    with pytest.raises(VideoError, match="URLs and protocols"):
        video.probe(url)
    with pytest.raises(VideoError, match="URLs and protocols"):
        video.sample(url, num_frames=2)


@pytest.mark.parametrize("suffix", [".m3u8", ".m3u", ".pls", ".txt", ".sdp"])
def test_playlists_refused(tmp_path, suffix):
    p = tmp_path / f"list{suffix}"
    p.write_text("#EXTM3U\nhttp://example.com/a.mp4\n")
    with pytest.raises(VideoError, match="playlists"):
        video.sample(p, num_frames=2)


def test_non_regular_files_refused(tmp_path):
    fifo = tmp_path / "fifo.mp4"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock.mp4"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    cases = {tmp_path: "directory", fifo: "fifo", sock_path: "socket", Path("/dev/null"): "device"}
    try:
        for path, kind in cases.items():
            with pytest.raises(VideoError, match=kind):
                video.probe(path)
        with pytest.raises(VideoError, match="fifo"):
            video.file_sha256(fifo)
    finally:
        sock.close()


def test_path_checks(tmp_path, clips):
    with pytest.raises(VideoError, match="no such file"):
        video.check_path(tmp_path / "missing.mp4")
    (tmp_path / "a.xyz").write_bytes(b"x")
    with pytest.raises(VideoError, match=r"'\.xyz' is not accepted"):
        video.check_path(tmp_path / "a.xyz")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match=r"empty \(0 bytes\)"):
        video.sample(tmp_path / "empty.mp4", num_frames=2)
    with pytest.raises(VideoError, match=r"file is .* KB, limit 1\.0 KB"):
        video.check_path(clips["h264"], video.Limits(max_file_bytes=1000))
    assert video.check_path(str(clips["h264"])) == clips["h264"].resolve()
    with pytest.raises(VideoError, match="expected a file path"):
        video.check_path(123)


def test_file_sha256(clips):
    import hashlib

    assert video.file_sha256(clips["h264"]) == hashlib.sha256(clips["h264"].read_bytes()).hexdigest()


# ---- hostile or broken files: a VideoError (or a correct result), never a dead process --------

def test_audio_only(clips):
    with pytest.raises(VideoError, match=r"no video stream \(streams found: audio\)"):
        video.sample(clips["audio"], num_frames=2)


@pytest.mark.parametrize("content", [os.urandom(4096), b"this is a text file, not a video\n" * 20,
                                     b"ffconcat version 1.0\nfile 'fifo.mp4'\n",
                                     b"#EXTM3U\n#EXTINF:10.0,\nfifo.mp4\n#EXT-X-ENDLIST\n"])
def test_garbage_named_mp4(tmp_path, content):
    os.mkfifo(tmp_path / "fifo.mp4")  # a disguised playlist that FFmpeg followed would hang on it
    p = tmp_path / "bad.mp4"
    p.write_bytes(content)
    t0 = time.monotonic()
    with pytest.raises(VideoError, match="cannot open bad.mp4") as err:
        video.sample(p, num_frames=2, timeout=5)
    assert "timed out" not in str(err.value) and time.monotonic() - t0 < 5


@pytest.mark.parametrize("keep", [0.3, 0.7])
def test_truncated_mp4(tmp_path, keep):
    src = video.write_video(tmp_path / "full.mp4", make_frames(30), FPS, options={"movflags": "+faststart"})
    data = src.read_bytes()
    p = tmp_path / "cut.mp4"
    p.write_bytes(data[: int(len(data) * keep)])
    try:
        clip = video.sample(p, num_frames=4, timeout=10)
    except VideoError as exc:
        assert str(exc)  # a specific message, not an empty one
    else:
        assert clip.frames.shape[1:] == (H, W, 3) and len(clip.times) == 4


def test_moov_at_end_truncated(tmp_path, clips):
    p = tmp_path / "cut.mp4"
    p.write_bytes(clips["h264"].read_bytes()[:2000])
    with pytest.raises(VideoError, match="cannot open cut.mp4"):
        video.probe(p)


@pytest.mark.parametrize("size", [(20000, 12000), (16000, 16000)])
def test_huge_resolution_refused_from_header(tmp_path, clips, size):
    p = patch_avi_size(clips["raw"], tmp_path / "huge.avi", *size)
    with pytest.raises(VideoError, match=rf"resolution is {size[0]}x{size[1]}, limit 4096x4096"):
        video.probe(p)
    with pytest.raises(VideoError, match=rf"resolution is {size[0]}x{size[1]}"):
        video.sample(p, num_frames=2)


def test_resolution_ffmpeg_rejects_itself(tmp_path, clips):
    p = patch_avi_size(clips["raw"], tmp_path / "huge.avi", 30000, 30000)
    with pytest.raises(VideoError, match="resolution"):
        video.sample(p, num_frames=2)


# ---- limits and arguments ------------------------------------------------------------------

def test_named_limits(clips):
    with pytest.raises(VideoError, match="clip is 2 s, limit 1 s"):
        video.probe(clips["h264"], limits=video.Limits(max_duration_s=1.0))
    with pytest.raises(VideoError, match="resolution is 96x64, limit 64x4096"):
        video.probe(clips["h264"], limits=video.Limits(max_width=64))
    with pytest.raises(InputError, match="num_frames is 600, limit 512"):
        video.sample(clips["h264"], num_frames=600)
    with pytest.raises(InputError, match="gives 60 frames, limit 50"):
        video.sample(clips["h264"], fps=30.0, limits=video.Limits(max_frames=50))
    with pytest.raises(InputError, match="limit 10.0 KB"):
        video.sample(clips["h264"], num_frames=2, limits=video.Limits(max_output_bytes=10_000))
    with pytest.raises(VideoError, match="accepted containers: avi"):
        video.probe(clips["h264"], limits=video.Limits(allowed_containers=("avi",)))


def test_bad_arguments(clips):
    p = clips["h264"]
    for kwargs, msg in [({}, "exactly one"), ({"num_frames": 2, "fps": 1.0}, "exactly one"),
                        ({"num_frames": 0}, "positive integer"), ({"fps": -1.0}, "positive number"),
                        ({"num_frames": 2, "backend": "ffmpeg"}, "backend must be"),
                        ({"num_frames": 2, "start": 1.5, "end": 1.0}, "start must be before end"),
                        ({"num_frames": 2, "max_side": 2}, "max_side")]:
        with pytest.raises(InputError, match=msg):
            video.sample(p, **kwargs)
    with pytest.raises(InputError, match="the clip ends at 2.000 s"):
        video.sample(p, num_frames=2, start=5.0)
    with pytest.raises(ConfigError, match="max_frames"):
        video.Limits(max_frames=0)


# ---- the sandbox: hangs and crashes kill only the child ---------------------------------------

def test_child_crash_and_hang_are_reported(clips):
    path = str(clips["h264"])
    with pytest.raises(VideoError, match=r"decoder crashed \(signal 11, SIGSEGV\)"):
        video._run_in_child(video._Task("probe", path, video.DEFAULT_LIMITS, fault="segv"), timeout=20)
    t0 = time.monotonic()
    with pytest.raises(VideoError, match="decoder timed out after 1 s"):
        video._run_in_child(video._Task("probe", path, video.DEFAULT_LIMITS, fault="hang"), timeout=1)
    assert time.monotonic() - t0 < 4
    assert video.probe(path).num_frames == N  # the service still works afterwards
