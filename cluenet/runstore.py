"""Where the analyst's runs live on a server: checked paths, and run / load / import.

The Case study tab (``cluenet.ui_analyst``) takes paths and names typed or uploaded by
whoever uses the app, and the app reads and writes files for them on the server.  Every
file-system decision it makes is here, apart from gradio, so the rules can be read and
tested in one place:

* **Datasets.**  A dataset is a JSONL path typed by the analyst, read on the server: it
  must resolve (symlinks followed) to a ``.jsonl`` file under one of ``Roots.data``
  (default: the working directory and the app's assets).
* **Runs.**  Run folders are never typed: a run is written to ``Roots.runs/<sanitised
  run name>`` and loaded by a name from the listing of ``Roots.runs``.
* **Imports.**  Uploaded predictions are copied out of gradio's upload folder (which
  gradio empties) into ``Roots.runs/import-<name>-<hash>`` with an ``import.json``, so
  their tags survive restarts and the folder can be loaded again like a run.

What this module does not cover: it does not limit which files a dataset's own
``video`` fields point at (the model reads them, as the CLI does).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from . import casestudy, imports
from .errors import ConfigError, InputError

MAX_RUN_NAME_CHARS = 64
RUN_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # what run_name() produces
MAX_IMPORT_BYTES = 100 * 1000**2  # same as the app's upload limit
IMPORT_MANIFEST = "import.json"
IMPORT_PREFIX = "import-"


@dataclass(frozen=True)
class Roots:
    """Where the analyst tabs may read datasets (``data``) and keep runs (``runs``)."""

    data: tuple[Path, ...]
    runs: Path

    @classmethod
    def make(cls, data: Sequence[str | os.PathLike], runs: str | os.PathLike) -> "Roots":
        """Resolved roots; ConfigError when a data root is not a folder (the runs root is
        created on the first run)."""
        resolved = tuple(Path(d).resolve() for d in data)
        missing = [str(d) for d in resolved if not d.is_dir()]
        if missing or not resolved:
            raise ConfigError(f"data root {missing[0] if missing else '(none given)'} is not a folder")
        return cls(resolved, Path(runs).resolve())


# ----------------------------------------------------------------------------- path checks
def is_under(path: Path, roots: Sequence[Path]) -> bool:
    """Whether ``path`` (already resolved) is one of ``roots`` or lies below one."""
    return any(path == r or path.is_relative_to(r) for r in roots)


def resolve_data_path(text: str | None, roots: Roots) -> Path:
    """The dataset JSONL the analyst typed, resolved and checked to lie under a data root.

    A relative path is taken from the first data root.  Raises InputError naming the
    path and the allowed folders.
    """
    text = (text or "").strip()
    if not text:
        raise InputError("no dataset given: type the path of a JSONL file in the project schema")
    given = Path(text)
    path = (given if given.is_absolute() else roots.data[0] / given).resolve()
    if not is_under(path, roots.data):
        allowed = ", ".join(str(r) for r in roots.data)
        raise InputError(f"{text!r} is outside the allowed data folders ({allowed}); "
                         f"move it under one of them or start the app with --data-root")
    if path.suffix != ".jsonl":
        raise InputError(f"{text!r} is a {path.suffix or 'extension-less'} file, expected a .jsonl dataset")
    if not path.is_file():
        raise InputError(f"{text!r} does not exist (looked for {path})")
    return path


def run_name(name: str | None, fallback: str = "") -> str:
    """A folder name from the analyst's run name: letters, digits, ``. _ -``; no leading dot."""
    raw = (name or "").strip() or fallback
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", raw).lstrip("._-")
    if not clean:
        raise InputError(f"run name {raw!r} has no letters or digits: type a name such as 'clueworld-test'")
    if len(clean) > MAX_RUN_NAME_CHARS:
        raise InputError(f"run name is {len(clean)} characters, limit {MAX_RUN_NAME_CHARS}")
    return clean


def _is_run(folder: Path) -> bool:
    return any((folder / f).is_file() for f in (casestudy.TRACES_FILE, casestudy.MANIFEST_FILE, IMPORT_MANIFEST))


def list_runs(roots: Roots) -> list[str]:
    """Run and import folders under the runs root, newest first."""
    if not roots.runs.is_dir():
        return []
    folders = [d for d in roots.runs.iterdir() if d.is_dir() and not d.name.startswith(".") and _is_run(d)]
    return [d.name for d in sorted(folders, key=lambda d: d.stat().st_mtime, reverse=True)]


def run_folder(name: str | None, roots: Roots) -> Path:
    """The folder of a listed run; anything else (a path, a missing name) is refused."""
    if not name:
        raise InputError("no run chosen: pick one from the list (press ↻ to refresh it)")
    if not RUN_NAME_RE.fullmatch(name) or len(name) > MAX_RUN_NAME_CHARS + len(IMPORT_PREFIX) + 11:
        raise InputError(f"{name!r} is not a run name (letters, digits, '. _ -' only)")
    folder = (roots.runs / name).resolve()
    if folder.parent != roots.runs or not folder.is_dir() or not _is_run(folder):
        raise InputError(f"no run {name!r} under {roots.runs}")
    return folder

# ----------------------------------------------------------------------------- sources
def _check_limit(limit: float | None) -> int | None:
    if limit is None or limit == "":
        return None
    try:
        whole = float(limit) == int(limit) and int(limit) >= 1
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole:
        raise InputError(f"limit must be a whole number of questions ≥ 1 (or empty for all), got {limit!r}")
    return int(limit)


def start_run(get_model: Callable[[], Any], roots: Roots, data: str, name: str, limit: float | None, probes: bool,
              progress: Callable[[int, int], None] | None = None) -> tuple[casestudy.Run, str]:
    """Run (or resume) a case study into ``roots.runs/<name>``; returns the run and a summary line.

    ``get_model`` is called only after the path, name and limit passed their checks."""
    path = resolve_data_path(data, roots)
    folder = roots.runs / run_name(name, fallback=path.stem)
    if (folder / IMPORT_MANIFEST).is_file():
        raise InputError(f"{folder.name} holds imported predictions; choose another run name")
    count = _check_limit(limit)
    model = get_model()
    seen: list[tuple[int, int]] = []

    def report_progress(i: int, n: int) -> None:
        seen.append((i, n))
        if progress:
            progress(i, n)

    casestudy.run_case_study(model, path, folder, limit=count, probes=bool(probes),
                             progress=report_progress)
    run = casestudy.load_run(folder)
    counts = run.manifest.get("counts", {})
    resumed = f", {seen[0][0]} were already done" if seen and seen[0][0] else ""
    failed = f", {counts.get('failed')} failed (retried on the next run)" if counts.get("failed") else ""
    return run, f"✓ {folder.name}: {counts.get('done', len(run.traces))} of {counts.get('samples', '?')} cases{resumed}{failed}"


def open_run(name: str, roots: Roots) -> casestudy.Run:
    """Load a listed run folder: a case study, or predictions imported earlier."""
    folder = run_folder(name, roots)
    if (folder / IMPORT_MANIFEST).is_file():
        return _load_import(folder)
    return casestudy.load_run(folder)


def _digest(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:10]


def _checked_upload(path: str | None, suffix: str, what: str) -> Path:
    if not path:
        raise InputError(f"no {what} uploaded")
    p = Path(path)
    if not p.is_file():
        raise InputError(f"the {what} {p.name!r} is gone from the upload folder: upload it again")
    if p.suffix.lower() != suffix:
        raise InputError(f"the {what} is {p.name!r}, expected a {suffix} file")
    size = p.stat().st_size
    if size > MAX_IMPORT_BYTES:
        raise InputError(f"the {what} is {size / 1e6:.1f} MB, limit {MAX_IMPORT_BYTES / 1e6:.0f} MB")
    return p


def import_predictions(roots: Roots, lmms: str | None, nextqa_json: str | None,
                       nextqa_csv: str | None) -> casestudy.Run:
    """Copy uploaded predictions under the runs root and load them as a read-only run.

    An lmms-eval ``--log_samples`` JSONL, or a NExT-QA prediction JSON with its
    annotation csv.  Importing the same bytes again reuses the folder (and its tags).
    """
    if lmms:
        files = {"samples": _checked_upload(lmms, ".jsonl", "lmms-eval samples file")}
        kind = "lmms-eval"
    elif nextqa_json or nextqa_csv:
        files = {"predictions": _checked_upload(nextqa_json, ".json", "NExT-QA prediction JSON"),
                 "annotations": _checked_upload(nextqa_csv, ".csv", "NExT-QA annotation csv")}
        kind = "nextqa"
    else:
        raise InputError("nothing to import: upload an lmms-eval JSONL, or a NExT-QA prediction JSON and its csv")
    first = next(iter(files.values()))
    folder = roots.runs / f"{IMPORT_PREFIX}{run_name(first.stem)[:40]}-{_digest(list(files.values()))}"
    if not (folder / IMPORT_MANIFEST).is_file():
        _store_import(folder, kind, files)
    return _load_import(folder)


def _store_import(folder: Path, kind: str, files: dict[str, Path]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    names = {}
    for role, src in files.items():
        names[role] = f"{role}{src.suffix.lower()}"  # our own names: never one taken from the upload
        _atomic_copy(src, folder / names[role])
    manifest = {"kind": kind, "files": names, "original_names": {r: p.name for r, p in files.items()},
                "imported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as fh:
        fh.write(json.dumps(manifest, indent=2) + "\n")
    os.replace(fh.name, folder / IMPORT_MANIFEST)  # written last: a folder without it is not an import yet


def _atomic_copy(src: Path, dst: Path) -> None:
    """Copy through a unique temp name: two sessions importing the same file never see half of it."""
    fd, tmp = tempfile.mkstemp(dir=dst.parent, suffix=".tmp")
    os.close(fd)
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _load_import(folder: Path) -> casestudy.Run:
    try:
        meta = json.loads((folder / IMPORT_MANIFEST).read_text())
        kind, files, original = meta["kind"], meta["files"], meta.get("original_names", {})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{folder.name}/{IMPORT_MANIFEST} is not a readable import record ({exc})") from None
    tags = folder / casestudy.TAGS_FILE
    if kind == "lmms-eval":
        name = f"lmms-eval:{Path(original.get('samples', 'samples')).stem}"
        return imports.load_lmms_eval(folder / files["samples"], name=name, tags_path=tags)
    if kind == "nextqa":
        name = f"nextqa:{Path(original.get('predictions', 'predictions')).stem}"
        return imports.load_nextqa_predictions(folder / files["predictions"], folder / files["annotations"],
                                               name=name, tags_path=tags)
    raise InputError(f"{folder.name}: unknown import kind {kind!r}")

