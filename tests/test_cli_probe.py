"""``python -m cluenet probe``: JSON on a good clip, one stderr line and exit 2 on a bad one.

Runs the real command in a subprocess (what a user types), on clips written here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cluenet.video import write_video

REPO = Path(__file__).resolve().parents[1]
CLI_TIMEOUT_S = 120


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "cluenet", "probe", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=CLI_TIMEOUT_S)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    frames = [np.full((48, 64, 3), 8 * i, np.uint8) for i in range(20)]
    return write_video(tmp_path_factory.mktemp("cli") / "clip.mp4", frames, 10)


def test_probe_prints_json(clip):
    res = run_cli(str(clip))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["codec"] == "h264" and (out["width"], out["height"]) == (64, 48)
    assert out["num_frames"] == 20 and out["duration"] == pytest.approx(2.0, abs=1e-3)
    assert out["size_bytes"] == clip.stat().st_size
    assert "frame_times" not in out


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_probe_frames_prints_timestamps(clip, backend):
    res = run_cli(str(clip), "--frames", "4", "--backend", backend)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    # centres of 4 segments of [0, 2 s] are 0.25, 0.75, 1.25, 1.75 s -> frames at 0.2, 0.7, 1.2, 1.7 s (10 fps)
    assert out["frame_times"] == pytest.approx([0.2, 0.7, 1.2, 1.7], abs=1e-4)
    assert out["backend"] == backend


@pytest.mark.parametrize("make_bad,message", [
    (lambda d: d / "missing.mp4", "no such file"),
    (lambda d: (d / "junk.mp4").write_bytes(os.urandom(2048)) and d / "junk.mp4", "cannot open junk.mp4"),
    (lambda d: d, "is a directory"),
    (lambda d: "http://example.com/clip.mp4", "URLs and protocols are not accepted"),
])
def test_probe_bad_input_one_line_exit_2(tmp_path, make_bad, message):
    res = run_cli(str(make_bad(tmp_path)))
    assert res.returncode == 2
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
