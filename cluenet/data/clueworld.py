"""ClueWorld: a procedurally generated video QA set with gold clues and chains.

    python -m cluenet.data.clueworld --out DIR --n 1000 --seed 0 [--frames 16 --fps 4
        --size 112 --objects 2-4 --distractors 0-2 --workers 2 --no-video]

writes ``DIR/clips/<id>.mp4`` (H.264), ``DIR/clueworld.jsonl`` (one ``Sample`` a line)
and ``DIR/clueworld_meta.json`` (config, seed, version).  In Python, ``make_episode``
renders one clip in memory, ``generate`` writes a set, ``text_corpus`` yields the text
a tokenizer for the small default model is trained on.

Design choices (DESIGN.md "ClueWorld" leaves them to us):

* **A 4x4 grid world.**  The square canvas is split into 4x4 cells (28 px at 112 px,
  the size of one Qwen-VL merged patch); each object is one shape filling ~86 % of a
  cell, with a unique shape and a unique colour per clip, so "the red circle" names
  it (after a colour change too: names use the first colour).  Movers travel half a cell per frame along a row or column.
* **Slots of two frames.**  Qwen-VL merges two consecutive frames into one temporal
  token, so every event span covers whole slots (frames 2k, 2k+1): an object entering
  is half visible in the first frame and just inside in the second; a hit happens on
  a slot's last frame and its effects (stop, colour change) start the next slot, so
  causes always come strictly before effects.  Spans are stored with one decimal,
  the grammar's precision (16 frames at 4 fps: slots of 0.5 s, a 4.0 s clip).
* **Real causality.**  ``_simulate`` steps the world frame by frame; a mover that
  reaches an object in its lane stops there, and the object it hit turns to its
  hidden "hit colour" (a colour no object in the clip has).  Nothing else ever stops
  or changes colour, so "why" questions have one true answer.  Layouts are sampled
  and re-sampled until the simulation yields exactly the planned hit and no overlaps.
* **One story, a few distractor events.**  Every clip has the main story (A enters,
  A hits B, A stops, B turns Z: 4 events); ``distractors`` adds 0-2 events of other
  movers (entering, leaving); other objects stand still and make no events.  All
  events are visible, so ``Sample.events`` and the gold ``Sample.clues`` hold the same
  events (ids c1..cK in time order, K <= 6).  The gold chain (2 steps) cites only the
  clues the question needs, so a filter has something to drop.
* **Question first.**  The template is drawn first (family by ``mix``, then uniformly
  among the family's templates that the config allows) and the clip is built to fit.
* **Options do not give the answer away.**  Every template has one answer space and
  the correct answer is uniform over it given the question text (shapes and colours
  are assigned uniformly at random); distractors come from the same space, exclude
  what the question text rules out (e.g. the asked-about object's own shape or colour,
  which no other object can have), are distinct, and use the clip's own objects where
  they can (so naming a visible object is not enough).  The correct index is uniform.
  A count question needs the count to be uniform over 5 values, i.e. an ``objects``
  range of 5 values (2-6); with a narrower range the DC template is left out, since
  any padding option would be a string that is never correct.
* **The chain names the answer twice.**  The last step ends "..., so the answer is
  because it hit the purple ring D": the chosen option's text, then its letter.  Every
  option ends on the word that tells it apart (a shape, a colour, a number; "because
  of a hit by the white diamond", not "because the white diamond hit it"), so with the
  options lettered last (``cluenet.prompts``, ``letter_last``) the letter is the token
  that follows that word in the prompt: a copy, which a small model learns from
  scratch, instead of a look-up back to a letter before it, which it does not.
* **Determinism.**  Clip i of a set uses ``SeedSequence([seed, i])``, so the worker
  count never changes the output; rendering uses no randomness.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
from dataclasses import asdict, dataclass, field
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from cluenet import grammar
from cluenet.errors import ClueNetError, ConfigError, InputError
from cluenet.schema import Clue, Sample, Step, letter

GENERATOR_VERSION = "1.1"  # 1.1: clips at constant QP (same questions as 1.0)
SOURCE = "clueworld"
JSONL_NAME = "clueworld.jsonl"
META_NAME = "clueworld_meta.json"

GRID = 4  # cells per side of the square canvas
SPEED = 0.5  # cells per frame: one cell per two-frame slot
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 50),
    "purple": (160, 60, 220),
    "orange": (250, 140, 20),
    "white": (235, 235, 235),
    "cyan": (30, 200, 210),
}
COLOUR_NAMES = tuple(COLOURS)
BACKGROUND = (24, 24, 28)
SIDES = ("left", "right", "top", "bottom")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six")
NUM_OPTIONS = 5

MIN_FRAMES, MAX_FRAMES = 10, 64  # 10: a mover can enter and leave (5 slots)
MAX_FPS = 30.0
MAX_DURATION_S = 60.0
MIN_SIZE, MAX_SIZE, SIZE_MULTIPLE = 64, 512, 8  # cells of an even pixel count
MIN_OBJECTS, MAX_OBJECTS = 2, len(SHAPES)
MAX_DISTRACTORS = 2  # keeps K <= 6 clues
MIN_FILL, MAX_FILL = 0.5, 1.0
MAX_CLIPS = 1_000_000
MAX_WORKERS = 64
MAX_LAYOUT_TRIES = 500
HIT_DISTANCES = (2, 3)  # cells from the entry side where the hit object may stand
FAMILIES = ("causal", "temporal", "descriptive")
# Constant QP, one thread: the same frames give the same bytes in any process.  CRF (x264's
# macroblock-tree rate control) did not: after a one-step training run in the same process a clip
# came out with other bytes (3 of 3 tries), so "identical for any worker count" failed whenever a
# training test ran earlier in the session.  QP 10 is as close to lossless as CRF 12 was (what is
# lost is yuv420p's chroma at shape edges: PSNR 33.6 dB for both) at 10 % more bytes.
ENCODER_OPTIONS = {"qp": "10", "threads": "1"}


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True)
class WorldConfig:
    """Generator knobs; checked on construction (``ConfigError`` names the knob).

    ``objects``/``distractors`` are inclusive (min, max) ranges: objects per clip and
    distractor events per clip.  ``mix`` weighs the causal / temporal / descriptive
    question families.  ``fill`` is the fraction of a cell an object's box covers.
    """

    frames: int = 16
    fps: float = 4.0
    size: int = 112
    objects: tuple[int, int] = (2, 4)
    distractors: tuple[int, int] = (0, 2)
    mix: tuple[float, float, float] = (1.0, 1.0, 1.0)
    fill: float = 0.86

    def __post_init__(self) -> None:
        _check_int("frames", self.frames, MIN_FRAMES, MAX_FRAMES)
        if self.frames % 2:
            raise ConfigError(f"frames must be even (two frames a slot), got {self.frames}")
        if not 0 < float(self.fps) <= MAX_FPS:
            raise ConfigError(f"fps must be in (0, {MAX_FPS:g}], got {self.fps}")
        if self.frames / self.fps > MAX_DURATION_S:
            raise ConfigError(f"clip is {self.frames / self.fps:g} s (frames/fps), limit {MAX_DURATION_S:g} s")
        _check_int("size", self.size, MIN_SIZE, MAX_SIZE)
        if self.size % SIZE_MULTIPLE:
            raise ConfigError(f"size must be a multiple of {SIZE_MULTIPLE}, got {self.size}")
        _check_range("objects", self.objects, MIN_OBJECTS, MAX_OBJECTS)
        _check_range("distractors", self.distractors, 0, MAX_DISTRACTORS)
        if self.distractors[0] > 0 and self.objects[1] < 3:
            raise ConfigError(f"distractors {self.distractors} need a third object, but objects is {self.objects}")
        if len(self.mix) != len(FAMILIES) or any(not w >= 0 for w in self.mix) or sum(self.mix) <= 0:
            raise ConfigError(f"mix must be 3 weights >= 0 (causal, temporal, descriptive) with a positive sum, got {self.mix}")
        if not MIN_FILL <= float(self.fill) <= MAX_FILL:
            raise ConfigError(f"fill must be in [{MIN_FILL}, {MAX_FILL}], got {self.fill}")

    @property
    def duration(self) -> float:
        return self.frames / self.fps

    @property
    def slots(self) -> int:
        return self.frames // 2


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")


def _check_range(name: str, value: object, lo: int, hi: int) -> None:
    ok = isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, (int, np.integer)) for v in value)
    if not ok or not lo <= value[0] <= value[1] <= hi:
        raise ConfigError(f"{name} must be a range (min, max) with {lo} <= min <= max <= {hi}, got {value!r}")


# ----------------------------------------------------------------------------- world
@dataclass
class _Obj:
    """One object's identity and plan. Movers have a side and an enter frame."""

    shape: str
    colour: str
    pos: tuple[float, float] | None = None  # (x, y) of the top-left corner, in cells, for statics
    side: str | None = None
    lane: int = 0
    enter_frame: int = 0
    hit_colour: str | None = None

    @property
    def name(self) -> str:
        return f"the {self.colour} {self.shape}"


@dataclass
class _Event:
    kind: str  # enter | hit | stop | turn | leave
    first: int  # first and last frame the event shows in
    last: int
    subject: int
    other: int = -1
    word: str = ""  # side for enter/leave, colour for turn


@dataclass
class _World:
    objs: list[_Obj]
    pos: np.ndarray  # [T, n, 2] top-left corner in cells; nan when absent
    colour: list[list[str]]  # [T][n] colour names
    events: list[_Event] = field(default_factory=list)
    valid: bool = True


_DIRECTIONS = {"left": (1, 0), "right": (-1, 0), "top": (0, 1), "bottom": (0, -1)}  # entry side -> motion


def _entry_pos(side: str, lane: int) -> tuple[float, float]:
    """Half visible on the entry border: one more frame and it is just inside."""
    far = GRID - SPEED
    return {"left": (-SPEED, lane), "right": (far, lane), "top": (lane, -SPEED), "bottom": (lane, far)}[side]


def _simulate(objs: list[_Obj], frames: int) -> _World:
    """Step the world; a mover that reaches an object in its path stops, and the
    object it hit takes its hit colour from the next frame (the only causal rule).

    Plain floats, not numpy: the arrays are tiny and this runs for every sample."""
    n = len(objs)
    pos = np.full((frames, n, 2), np.nan)
    cur: list[tuple[float, float] | None] = [None] * n
    vel = [(0.0, 0.0)] * n
    colour = [o.colour for o in objs]
    colours, events, pending = [], [], []
    for f in range(frames):
        for j, c in pending:
            colour[j] = c
        pending = []
        for i in range(n):
            if cur[i] is not None and vel[i] != (0.0, 0.0):
                cur[i], hit = _advance(i, cur, vel[i])
                if hit >= 0:
                    vel[i] = (0.0, 0.0)
                    new = objs[hit].hit_colour or colour[hit]
                    events += [_Event("hit", f, f, i, hit), _Event("stop", f + 1, f + 1, i),
                               _Event("turn", f + 1, f + 1, hit, i, new)]
                    pending.append((hit, new))
        for i, o in enumerate(objs):
            if o.side is None and f == 0:
                cur[i] = o.pos
            elif o.side is not None and f == o.enter_frame:
                cur[i] = _entry_pos(o.side, o.lane)
                dx, dy = _DIRECTIONS[o.side]
                vel[i] = (dx * SPEED, dy * SPEED)
        for i in range(n):
            if cur[i] is not None and not _visible(cur[i]):
                cur[i] = None  # fully out: gone for good (entries start half visible)
            if cur[i] is not None:
                pos[f, i] = cur[i]
        colours.append(list(colour))
    return _World(objs, pos, colours, events)


def _advance(i: int, cur: list, v: tuple[float, float]) -> tuple[tuple[float, float], int]:
    """New position of mover i and the index of the object it ran into (-1: none)."""
    axis = 0 if v[0] else 1
    step = v[axis]
    sign = 1.0 if step > 0 else -1.0
    me = cur[i]
    for j, p in enumerate(cur):
        if j == i or p is None or abs(p[1 - axis] - me[1 - axis]) >= 1:
            continue
        gap = sign * (p[axis] - me[axis]) - 1  # free space ahead before the move
        if 0 <= gap < abs(step) + 1e-9:
            stop = p[axis] - sign  # touching, not overlapping
            return ((stop, me[1]) if axis == 0 else (me[0], stop)), j
    return (me[0] + v[0], me[1] + v[1]), -1


def _visible(p) -> bool:
    return -1 < p[0] < GRID and -1 < p[1] < GRID


def _inside(p) -> bool:
    return 0 <= p[0] <= GRID - 1 and 0 <= p[1] <= GRID - 1


# ----------------------------------------------------------------------------- layout
def _plan(rng: np.random.Generator, cfg: WorldConfig, n: int, d: int) -> list[_Obj]:
    """Objects 0 (A, enters and hits) and 1 (B, stands and is hit), movers, statics."""
    shapes = [str(s) for s in rng.permutation(SHAPES)[:n]]
    colours = [str(c) for c in rng.permutation(COLOUR_NAMES)]
    objs = [_Obj(s, c) for s, c in zip(shapes, colours)]
    objs[1].hit_colour = str(rng.choice(colours[n:]))
    a, b = objs[0], objs[1]
    a.side, a.lane = str(rng.choice(SIDES)), int(rng.integers(GRID))
    dist = int(rng.choice(HIT_DISTANCES))
    a.enter_frame = 2 * int(rng.integers(0, cfg.slots - dist))  # its stop shows in the last slot at the latest
    along = dist if a.side in ("left", "top") else GRID - 1 - dist
    b.pos = (along, a.lane) if a.side in ("left", "right") else (a.lane, along)
    taken = {_cell(b.pos)} | _path_cells(a.side, a.lane, dist)
    movers = _mover_kinds(rng, n, d)
    used_slots = {a.enter_frame // 2}
    for o, kind in zip(objs[2:], movers):
        o.side, o.lane = str(rng.choice(SIDES)), int(rng.integers(GRID))
        lo, hi = (0, cfg.slots - 5) if kind == "leave" else (max(0, cfg.slots - 4), cfg.slots - 1)
        free = [s for s in range(lo, hi + 1) if s not in used_slots]
        slot = int(rng.choice(free)) if free else lo  # a clash is rejected by _check
        used_slots.add(slot)
        o.enter_frame = 2 * slot
        taken |= _path_cells(o.side, o.lane, GRID)
    free_cells = [c for c in np.ndindex(GRID, GRID) if c not in taken]
    for o, k in zip(objs[2 + len(movers):], rng.permutation(len(free_cells))):
        o.pos = tuple(float(v) for v in free_cells[k])
    return objs


def _mover_kinds(rng: np.random.Generator, n: int, d: int) -> list[str]:
    """Movers realising d distractor events: one entering mover per event, or one
    mover that enters and leaves (two events)."""
    if d == 0:
        return []
    if d == 1:
        return ["stay"]
    return ["leave"] if n < 4 or rng.random() < 0.5 else ["stay", "stay"]


def _cell(p: tuple[float, float]) -> tuple[int, int]:
    return int(p[0]), int(p[1])


def _path_cells(side: str, lane: int, length: int) -> set[tuple[int, int]]:
    """Cells a mover from ``side`` crosses in its first ``length`` cells."""
    steps = range(length) if side in ("left", "top") else range(GRID - 1, GRID - 1 - length, -1)
    return {(s, lane) if side in ("left", "right") else (lane, s) for s in steps}


def _check(world: _World, frames: int) -> bool:
    """The plan came true: one hit (A on B), no overlaps, every mover either gone
    or fully inside at the end, events detected from the trajectories."""
    hits = [e for e in world.events if e.kind == "hit"]
    if [(e.subject, e.other) for e in hits] != [(0, 1)] or hits[0].last + 1 >= frames:
        return False
    if np.isnan(world.pos).all(axis=(0, 2)).any():
        return False  # an object never shows (no free cell was left for it)
    entries = [o.enter_frame for o in world.objs if o.side is not None]
    if len(set(entries)) < len(entries):
        return False  # two objects entering in one slot: "which entered first" is moot
    if _overlaps(world.pos):
        return False
    for i, o in enumerate(world.objs):
        if o.side is not None:
            found = _mover_events(world.pos[:, i], i, o.side)
            if found is None:
                return False
            world.events += found
    return True


def _overlaps(pos: np.ndarray, substeps: int = 4) -> bool:
    """Any two boxes overlapping at a frame or between frames (linear motion)?"""
    nxt = np.concatenate([pos[1:], pos[-1:]])
    nxt = np.where(np.isnan(nxt), pos, nxt)  # no interpolation into absence
    w = (np.arange(substeps) / substeps)[None, :, None, None]
    p = pos[:, None] + (nxt - pos)[:, None] * w  # [T, S, n, 2]
    d = np.abs(p[:, :, :, None, :] - p[:, :, None, :, :])
    close = (d < 1 - 1e-6).all(axis=-1)  # nan compares False: absent objects never overlap
    close[..., np.arange(pos.shape[1]), np.arange(pos.shape[1])] = False
    return bool(close.any())


def _mover_events(track: np.ndarray, i: int, side: str) -> list[_Event] | None:
    track = track.tolist()  # python floats: fast scalar tests
    present = [f for f in range(len(track)) if track[f][0] == track[f][0]]  # not nan
    visible = [f for f in present if _visible(track[f])]
    inside = [f for f in visible if _inside(track[f])]
    if not inside:
        return None
    events = [_Event("enter", visible[0], inside[0], i, word=side)]
    out = [f for f in visible if f > inside[0] and not _inside(track[f])]
    if out:
        gone = out[-1] + 1
        if gone >= len(track):
            return None  # half out at the end: an unfinished exit
        exit_side = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}[side]
        events.append(_Event("leave", out[0], gone, i, word=exit_side))
    return events


def _layout(rng: np.random.Generator, cfg: WorldConfig, n: int, d: int) -> _World:
    for _ in range(MAX_LAYOUT_TRIES):
        world = _simulate(_plan(rng, cfg, n, d), cfg.frames)
        if _check(world, cfg.frames):
            return world
    raise ConfigError(f"no valid layout for {n} objects and {d} distractor events in {MAX_LAYOUT_TRIES} tries ({cfg})")


# ----------------------------------------------------------------------------- clues
_KIND_ORDER = {"enter": 0, "hit": 1, "stop": 2, "turn": 3, "leave": 4}


def _event_text(e: _Event, objs: list[_Obj]) -> str:
    name = objs[e.subject].name
    return {
        "enter": f"{name} enters from the {e.word}",
        "leave": f"{name} leaves to the {e.word}",
        "hit": f"{name} hits {objs[e.other].name}",
        "stop": f"{name} stops",
        "turn": f"{name} turns {e.word}",
    }[e.kind]


def _span(e: _Event, fps: float) -> tuple[float, float]:
    """Whole two-frame slots covering the event's frames, in seconds (one decimal)."""
    first, last = 2 * (e.first // 2), 2 * (e.last // 2) + 2
    return round(first / fps, 1), round(last / fps, 1)


def _clue_order(world: _World) -> list[_Event]:
    """The events in the gold clues' order: by two-frame slot, then kind, then subject."""
    return sorted(world.events, key=lambda e: (e.first // 2, e.last // 2, _KIND_ORDER[e.kind], e.subject))


def _clues(world: _World, fps: float) -> tuple[tuple[Clue, ...], dict[tuple[str, int], str]]:
    """Gold clues c1..cK in time order and a map (kind, subject) -> clue id."""
    clues, ids = [], {}
    for k, e in enumerate(_clue_order(world), start=1):
        start, end = _span(e, fps)
        clues.append(Clue(id=f"c{k}", start=start, end=end, text=_event_text(e, world.objs)))
        ids[(e.kind, e.subject)] = f"c{k}"
    return tuple(clues), ids


# ----------------------------------------------------------------------------- questions
@dataclass
class _QA:
    qtype: str
    question: str
    options: list[str]  # the correct one first
    steps: list[tuple[str, list[str]]]  # (text, cited clue ids)


@dataclass
class _Ctx:
    world: _World
    ids: dict[tuple[str, int], str]
    fps: float
    counts: tuple[int, ...]  # the object counts this config can produce (DC answer space)

    @property
    def a(self) -> _Obj:
        return self.world.objs[0]

    @property
    def b(self) -> _Obj:
        return self.world.objs[1]

    def enters(self) -> list[tuple[int, int]]:
        """(enter frame, object index) of every object that enters, in order."""
        return sorted((e.first, e.subject) for e in self.world.events if e.kind == "enter")


def _object_options(rng: np.random.Generator, ctx: _Ctx, correct: int, exclude: Sequence[int] = (),
                    exclude_colours: Sequence[str] = ()) -> list[str]:
    """The correct object's name and 4 distractors with distinct shapes and colours.

    Shapes and colours of ``exclude`` (objects the question names) are left out: no
    other object can have them.  A distractor shape that is in the clip is named with
    its true colour; others get a colour the clip does not show."""
    objs = ctx.world.objs
    banned_shapes = {objs[i].shape for i in (*exclude, correct)}
    banned_colours = {objs[i].colour for i in exclude} | set(exclude_colours)
    shapes = rng.permutation([s for s in SHAPES if s not in banned_shapes])[: NUM_OPTIONS - 1]
    in_clip = {o.shape: o for o in objs}
    shown = {o.colour for o in objs} | {o.hit_colour for o in objs if o.hit_colour}
    spare = [str(c) for c in rng.permutation(COLOUR_NAMES) if c not in shown | banned_colours]
    names = [objs[correct].name]
    for s in shapes:
        names.append(in_clip[s].name if s in in_clip else f"the {spare.pop()} {s}")
    return names


def _colour_options(rng: np.random.Generator, ctx: _Ctx, correct: str, banned: Sequence[str]) -> list[str]:
    """The correct colour and 4 distractors, colours the clip shows first."""
    shown = [o.colour for o in ctx.world.objs]
    pool = [c for c in COLOUR_NAMES if c != correct and c not in banned]
    first = [str(c) for c in rng.permutation([c for c in pool if c in shown])]
    rest = [str(c) for c in rng.permutation([c for c in pool if c not in shown])]
    return [correct, *(first + rest)[: NUM_OPTIONS - 1]]


def _q_why_stop(rng: np.random.Generator, ctx: _Ctx) -> _QA:
    a, b, ids = ctx.a, ctx.b, ctx.ids
    opts = _object_options(rng, ctx, correct=1, exclude=[0])
    steps = [(f"{a.name} hits {b.name}", [ids["hit", 0]]), (f"{a.name} stops right after the hit", [ids["stop", 0]])]
    return _QA("CW", f"why did {a.name} stop?", [f"because it hit {o}" for o in opts], steps)


def _q_why_turn(rng: np.random.Generator, ctx: _Ctx) -> _QA:
    a, b, ids, z = ctx.a, ctx.b, ctx.ids, ctx.b.hit_colour
    opts = _object_options(rng, ctx, correct=0, exclude=[1], exclude_colours=[z])
    steps = [(f"{b.name} turns {z}", [ids["turn", 1]]), (f"just before, {a.name} hits {b.name}", [ids["hit", 0]])]
    return _QA("CW", f"why did {b.name} turn {z}?", [f"because of a hit by {o}" for o in opts], steps)


def _q_before_turn(rng: np.random.Generator, ctx: _Ctx) -> _QA:
    a, b, ids, z = ctx.a, ctx.b, ctx.ids, ctx.b.hit_colour
    opts = _object_options(rng, ctx, correct=0, exclude=[1], exclude_colours=[z])
    steps = [(f"{b.name} turns {z}", [ids["turn", 1]]), (f"before that, {a.name} hits it", [ids["hit", 0]])]
    return _QA("TP", f"what happened before {b.name} turned {z}?", [f"a hit by {o}" for o in opts], steps)


def _q_after_hit(rng: np.random.Generator, ctx: _Ctx) -> _QA:
    a, b, ids, z = ctx.a, ctx.b, ctx.ids, ctx.b.hit_colour
    opts = _colour_options(rng, ctx, z, banned=[a.colour, b.colour])
    steps = [(f"{a.name} hits {b.name}", [ids["hit", 0]]), (f"right after, {b.name} turns {z}", [ids["turn", 1]])]
    return _QA("TN", f"what did {b.name} do after {a.name} hit it?", [f"it turned {c}" for c in opts], steps)


def _q_first_enter(rng: np.random.Generator, ctx: _Ctx) -> _QA:
    enters = ctx.enters()
    first, fps = enters[0][1], ctx.fps
    obj = ctx.world.objs[first]
    steps = [
        (f"{obj.name} enters at {grammar.format_time(enters[0][0] / fps)}s", [ctx.ids["enter", first]]),
        ("every other object enters later", [ctx.ids["enter", i] for _, i in enters[1:]]),
    ]
    return _QA("TP", "which object entered first?", _object_options(rng, ctx, correct=first), steps)


def _q_next_enter(rng: np.random.Generator, ctx: _Ctx) -> _QA:
    enters = ctx.enters()
    k = int(rng.integers(len(enters) - 1))
    (f0, x), (f1, y) = enters[k], enters[k + 1]
    objs, fps = ctx.world.objs, ctx.fps
    steps = [
        (f"{objs[x].name} enters at {grammar.format_time(f0 / fps)}s", [ctx.ids["enter", x]]),
        (f"{objs[y].name} is the next to enter, at {grammar.format_time(f1 / fps)}s", [ctx.ids["enter", y]]),
    ]
    opts = _object_options(rng, ctx, correct=y, exclude=[x])
    return _QA("TN", f"which object entered right after {objs[x].name}?", opts, steps)


def _q_count(rng: np.random.Generator, ctx: _Ctx) -> _QA:
    n, enters = len(ctx.world.objs), ctx.enters()
    still = n - len(enters)
    others = [c for c in ctx.counts if c != n]
    opts = [NUMBER_WORDS[c] for c in (n, *rng.permutation(others)[: NUM_OPTIONS - 1])]
    objects = lambda k: f"{NUMBER_WORDS[k]} object{'s' if k > 1 else ''}"  # noqa: E731
    steps = [
        (f"{objects(len(enters))} enter{'s' if len(enters) == 1 else ''}", [ctx.ids["enter", i] for _, i in enters]),
        (f"{objects(still)} stand{'s' if still == 1 else ''} still from the start", []),
    ]
    return _QA("DC", "how many objects appear in the video?", opts, steps)


def _q_turn_colour(rng: np.random.Generator, ctx: _Ctx) -> _QA:
    a, b, ids, z = ctx.a, ctx.b, ctx.ids, ctx.b.hit_colour
    steps = [(f"{a.name} hits {b.name}", [ids["hit", 0]]), (f"then {b.name} turns {z}", [ids["turn", 1]])]
    return _QA("DO", f"what colour did {b.name} turn?", _colour_options(rng, ctx, z, banned=[b.colour]), steps)


def _q_turn_shape(rng: np.random.Generator, ctx: _Ctx) -> _QA:
    b, z = ctx.b, ctx.b.hit_colour
    others = [s for s in SHAPES if s != b.shape]
    opts = [b.shape, *(str(s) for s in rng.permutation(others)[: NUM_OPTIONS - 1])]
    steps = [(f"{b.name} turns {z}", [ctx.ids["turn", 1]]), (f"{b.name} is a {b.shape}", [ctx.ids["turn", 1]])]
    return _QA("DO", f"which shape turned {z}?", [f"the {s}" for s in opts], steps)


@dataclass(frozen=True)
class _Template:
    family: str
    build: Callable[[np.random.Generator, _Ctx], _QA]
    needs_mover: bool = False  # two objects must enter
    needs_counts: bool = False  # the object count must range over NUM_OPTIONS values


TEMPLATES: dict[str, _Template] = {
    "why_stop": _Template("causal", _q_why_stop),
    "why_turn": _Template("causal", _q_why_turn),
    "next_enter": _Template("temporal", _q_next_enter, needs_mover=True),
    "after_hit": _Template("temporal", _q_after_hit),
    "first_enter": _Template("temporal", _q_first_enter, needs_mover=True),
    "before_turn": _Template("temporal", _q_before_turn),
    "count": _Template("descriptive", _q_count, needs_counts=True),
    "turn_colour": _Template("descriptive", _q_turn_colour),
    "turn_shape": _Template("descriptive", _q_turn_shape),
}


def _feasible(n: int, d: int, needs_mover: bool) -> bool:
    """n objects can realise d distractor events (they need a third object)."""
    return d >= int(needs_mover) and n >= 2 + int(d > 0)


def _counts(cfg: WorldConfig, needs_mover: bool = False) -> list[int]:
    ds = range(cfg.distractors[0], cfg.distractors[1] + 1)
    return [n for n in range(cfg.objects[0], cfg.objects[1] + 1) if any(_feasible(n, d, needs_mover) for d in ds)]


def allowed_templates(cfg: WorldConfig) -> list[str]:
    """Names of the question templates this config can produce (see the module docstring)."""
    names = []
    for name, t in TEMPLATES.items():
        if t.needs_mover and not _counts(cfg, needs_mover=True):
            continue
        if t.needs_counts and len(_counts(cfg)) < NUM_OPTIONS:
            continue
        names.append(name)
    return names


def _pick_template(rng: np.random.Generator, cfg: WorldConfig) -> str:
    allowed = allowed_templates(cfg)
    fams = [f for f, w in zip(FAMILIES, cfg.mix) if w > 0 and any(TEMPLATES[t].family == f for t in allowed)]
    if not fams:
        raise ConfigError(f"mix {cfg.mix} gives weight only to families with no template for this config")
    weights = np.array([cfg.mix[FAMILIES.index(f)] for f in fams], dtype=float)
    fam = fams[int(rng.choice(len(fams), p=weights / weights.sum()))]
    return str(rng.choice([t for t in allowed if TEMPLATES[t].family == fam]))


# ----------------------------------------------------------------------------- episodes
def _to_rng(seed_or_rng: int | np.random.Generator | np.random.SeedSequence) -> np.random.Generator:
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    if isinstance(seed_or_rng, (int, np.integer)) and seed_or_rng < 0:
        raise InputError(f"seed must be >= 0, got {seed_or_rng}")
    return np.random.default_rng(seed_or_rng)


def _build(rng: np.random.Generator, cfg: WorldConfig, sample_id: str, template: str | None) -> tuple[_World, Sample]:
    name = template or _pick_template(rng, cfg)
    if name not in allowed_templates(cfg):
        raise InputError(f"template {name!r} is not available with this config; available: {allowed_templates(cfg)}")
    spec = TEMPLATES[name]
    n = int(rng.choice(_counts(cfg, spec.needs_mover)))
    d = int(rng.choice([d for d in range(cfg.distractors[0], cfg.distractors[1] + 1) if _feasible(n, d, spec.needs_mover)]))
    world = _layout(rng, cfg, n, d)
    clues, ids = _clues(world, cfg.fps)
    qa = spec.build(rng, _Ctx(world, ids, cfg.fps, tuple(_counts(cfg))))
    return world, _to_sample(rng, qa, clues, sample_id)


def _to_sample(rng: np.random.Generator, qa: _QA, clues: tuple[Clue, ...], sample_id: str) -> Sample:
    """Shuffle the options (correct index uniform) and close the chain on the chosen option's
    text and its letter (see the module docstring)."""
    perm = [int(i) for i in rng.permutation(NUM_OPTIONS)]
    answer = perm.index(0)
    steps = [Step(text, tuple(cites)) for text, cites in qa.steps]
    last = steps[-1]
    steps[-1] = Step(f"{last.text}, so the answer is {qa.options[0]} {letter(answer)}", last.cites)
    return Sample(
        id=sample_id,
        video=f"clips/{sample_id}.mp4",
        question=qa.question,
        options=tuple(qa.options[i] for i in perm),
        answer=answer,
        qtype=qa.qtype,
        clues=clues,
        chain=tuple(steps),
        events=clues,  # every event is visible: the gold clues are all events
        source=SOURCE,
    )


def make_sample(seed_or_rng: int | np.random.Generator, cfg: WorldConfig | None = None,
                sample_id: str = "clueworld", template: str | None = None) -> Sample:
    """One annotated question without rendering (fast; for text-only uses).

    Gives the same Sample as ``make_episode`` with the same arguments."""
    return _build(_to_rng(seed_or_rng), cfg or WorldConfig(), sample_id, template)[1]


def make_episode(seed_or_rng: int | np.random.Generator, cfg: WorldConfig | None = None,
                 sample_id: str = "clueworld", template: str | None = None
                 ) -> tuple[np.ndarray, tuple[float, ...], Sample]:
    """Render one clip in memory.

    Returns ``frames`` (uint8 [T, H, W, 3]), ``times`` (seconds of each frame, f/fps)
    and the ``Sample`` (video path ``clips/<sample_id>.mp4``).  ``template`` forces a
    question template (a key of ``TEMPLATES``); by default it is drawn by ``cfg.mix``.
    """
    cfg = cfg or WorldConfig()
    world, sample = _build(_to_rng(seed_or_rng), cfg, sample_id, template)
    times = tuple(f / cfg.fps for f in range(cfg.frames))
    return _render(world, cfg), times, sample


_MOTIONS = ((1, 0), (-1, 0), (0, 1), (0, -1))  # cell_states' motion classes 2-5: right, left, down, up


def cell_states(seed_or_rng: int | np.random.Generator, cfg: WorldConfig | None = None,
                template: str | None = None) -> dict[str, np.ndarray]:
    """Dense ground truth of one clip, per frame and grid cell (same arguments as ``make_episode``).

    Returns int arrays of shape [T, GRID, GRID] (row, column): ``colour`` (0 empty, else
    1 + index in ``COLOUR_NAMES``), ``shape`` (0 empty, else 1 + index in ``SHAPES``) and
    ``motion`` (0 empty, 1 still, 2-5 moving right / left / down / up, from the object's
    step into this frame; an object's first frame counts as moving when it enters moving).
    A cell shows the object covering most of it, if that object covers at least a quarter
    (a mover between two cells covers half of each).  For training a vision encoder.
    """
    cfg = cfg or WorldConfig()
    world, _ = _build(_to_rng(seed_or_rng), cfg, "clueworld", template)
    frames = world.pos.shape[0]
    out = {k: np.zeros((frames, GRID, GRID), dtype=np.int64) for k in ("colour", "shape", "motion")}
    cover = np.zeros((frames, GRID, GRID))
    lo = np.arange(GRID)
    for f in range(frames):
        for i, o in enumerate(world.objs):
            x, y = world.pos[f, i]
            if np.isnan(x):
                continue
            ox = np.clip(np.minimum(x + 1, lo + 1) - np.maximum(x, lo), 0, 1)
            oy = np.clip(np.minimum(y + 1, lo + 1) - np.maximum(y, lo), 0, 1)
            area = oy[:, None] * ox[None, :]
            take = (area >= 0.25) & (area > cover[f])
            prev = world.pos[f - 1, i] if f > 0 else np.array([np.nan, np.nan])
            # no previous position: a static object's first frame, or a mover's entry frame (moving in)
            step = world.pos[f, i] - prev if not np.isnan(prev).any() else np.array(_DIRECTIONS.get(o.side, (0, 0)))
            motion = 1 if not step.any() else 2 + _MOTIONS.index(tuple(np.sign(step).astype(int)))
            cover[f][take] = area[take]
            out["colour"][f][take] = 1 + COLOUR_NAMES.index(world.colour[f][i])
            out["shape"][f][take] = 1 + SHAPES.index(o.shape)
            out["motion"][f][take] = motion
    return out


EVENT_KINDS = ("enter", "hit", "stop", "turn", "leave")
# cell_events' columns -> classes (0 = none / empty in every column)
EVENT_TARGETS: dict[str, int] = {
    "still_colour": 1 + len(COLOURS), "still_shape": 1 + len(SHAPES),
    **{f"{k}_{a}": n for k in EVENT_KINDS for a, n in (("slot", 1 + MAX_FRAMES // 2), ("colour", 1 + len(COLOURS)),
                                                      ("shape", 1 + len(SHAPES)))},
    "enter_side": 1 + len(SIDES), "leave_side": 1 + len(SIDES), "turn_colour_to": 1 + len(COLOURS),
    "hit_other_colour": 1 + len(COLOURS), "hit_other_shape": 1 + len(SHAPES),
}


def _nearest_cell(p: np.ndarray) -> tuple[int, int]:
    """(row, column) of the cell nearest to an object's top-left corner ``p`` (x, y), on the grid."""
    x, y = (min(GRID - 1, max(0, int(np.floor(v + 0.5)))) for v in p)
    return y, x


def _event_cell(world: _World, e: _Event) -> tuple[int, int]:
    """(row, column) of an event's cell: its subject's where a mover is once fully inside (enter),
    where it hits and stops, where the hit object stands (turn), where a leaver starts to go out."""
    return _nearest_cell(world.pos[e.last if e.kind == "enter" else e.first, e.subject])


def clue_cells(seed_or_rng: int | np.random.Generator, cfg: WorldConfig | None = None,
               template: str | None = None) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Where each gold clue happens on the grid (same arguments as ``make_episode``).

    One entry per gold clue, in the clues' order: (the cells of its subject, the cells of the
    other object), as row-major cell indices; the subject's cell is the event's cell of
    ``cell_events``, the other object is the one hit ("... hits the purple ring"; empty for the
    other kinds).  With the clue's time span this says which video tokens show it: the
    grounding targets of ``training.grounding``.
    """
    cfg = cfg or WorldConfig()
    world, _ = _build(_to_rng(seed_or_rng), cfg, "clueworld", template)
    out = []
    for e in _clue_order(world):
        r, c = _event_cell(world, e)
        other: tuple[int, ...] = ()
        if e.kind == "hit":
            ro, co = _nearest_cell(world.pos[e.first, e.other])
            other = (ro * GRID + co,)
        out.append(((r * GRID + c,), other))
    return out


def cell_events(seed_or_rng: int | np.random.Generator, cfg: WorldConfig | None = None,
                template: str | None = None) -> np.ndarray:
    """Per grid cell, what happens there over the whole clip (same arguments as ``make_episode``).

    Returns int [GRID * GRID, len(EVENT_TARGETS)] (cells row-major; columns in
    ``EVENT_TARGETS`` order, 0 = none): the colour and shape of an object standing still
    there from the start, and for each event kind the slot (1 + slot index) in which it
    happens there, its subject's first colour and shape, and its word (side, new colour)
    or the object hit.  An event's cell is its subject's: where a mover is once fully
    inside (enter), where it hits and stops, where the hit object stands (turn), where a
    leaver starts to go out.  Two events of one kind in one cell keep the earlier.  For
    training a vision encoder that sees a cell's whole clip in one token (temporal patch =
    all frames), as a pretrained video encoder knows its actions.
    """
    cfg = cfg or WorldConfig()
    world, _ = _build(_to_rng(seed_or_rng), cfg, "clueworld", template)
    col = {k: j for j, k in enumerate(EVENT_TARGETS)}
    out = np.zeros((GRID * GRID, len(EVENT_TARGETS)), dtype=np.int64)

    def put(cell: tuple[int, int], **values: int) -> None:
        for key, v in values.items():
            out[cell[0] * GRID + cell[1], col[key]] = v

    for i, o in enumerate(world.objs):
        if o.side is None:
            put(_nearest_cell(world.pos[0, i]), still_colour=1 + COLOUR_NAMES.index(o.colour),
                still_shape=1 + SHAPES.index(o.shape))
    for e in sorted(world.events, key=lambda e: e.first):
        cell = _event_cell(world, e)
        if out[cell[0] * GRID + cell[1], col[f"{e.kind}_slot"]]:
            continue
        s = world.objs[e.subject]
        put(cell, **{f"{e.kind}_slot": 1 + e.first // 2, f"{e.kind}_colour": 1 + COLOUR_NAMES.index(s.colour),
                     f"{e.kind}_shape": 1 + SHAPES.index(s.shape)})
        if e.kind in ("enter", "leave"):
            put(cell, **{f"{e.kind}_side": 1 + SIDES.index(e.word)})
        elif e.kind == "turn":
            put(cell, turn_colour_to=1 + COLOUR_NAMES.index(e.word))
        elif e.kind == "hit":
            other = world.objs[e.other]
            put(cell, hit_other_colour=1 + COLOUR_NAMES.index(other.colour),
                hit_other_shape=1 + SHAPES.index(other.shape))
    return out


# ----------------------------------------------------------------------------- rendering
@lru_cache(maxsize=None)
def _mask(shape: str, px: int) -> np.ndarray:
    """Boolean px x px mask of a shape; coordinates in [-1, 1], y pointing down."""
    c = (np.arange(px) + 0.5) / px * 2 - 1
    x, y = np.meshgrid(c, c)
    r = np.hypot(x, y)
    masks = {
        "circle": r <= 1.0,
        "square": (np.abs(x) <= 0.9) & (np.abs(y) <= 0.9),
        "triangle": (y <= 0.9) & (np.abs(x) <= (y + 1.0) / 1.9 * 0.95),
        "diamond": np.abs(x) + np.abs(y) <= 1.0,
        "cross": ((np.abs(x) <= 0.33) | (np.abs(y) <= 0.33)) & (np.abs(x) <= 0.95) & (np.abs(y) <= 0.95),
        "ring": (r <= 1.0) & (r >= 0.5),
    }
    return masks[shape]


def _render(world: _World, cfg: WorldConfig) -> np.ndarray:
    """Draw every frame: plain background, each present object in its current colour."""
    cell = cfg.size // GRID
    px = max(2, int(round(cell * cfg.fill)))
    margin = (cell - px) // 2
    frames = np.empty((cfg.frames, cfg.size, cfg.size, 3), dtype=np.uint8)
    frames[:] = BACKGROUND
    for f in range(cfg.frames):
        for i, o in enumerate(world.objs):
            p = world.pos[f, i]
            if np.isnan(p).any():
                continue
            left, top = (int(round(v * cell)) + margin for v in p)
            _paste(frames[f], _mask(o.shape, px), COLOURS[world.colour[f][i]], top, left)
    return frames


def _paste(img: np.ndarray, mask: np.ndarray, rgb: tuple[int, int, int], top: int, left: int) -> None:
    """Paint ``mask`` at (top, left), clipped to the image."""
    h, w = img.shape[:2]
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + mask.shape[0], h), min(left + mask.shape[1], w)
    if y0 < y1 and x0 < x1:
        img[y0:y1, x0:x1][mask[y0 - top:y1 - top, x0 - left:x1 - left]] = rgb


# ----------------------------------------------------------------------------- datasets
def clip_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of clip ``index`` in a set made with ``seed`` (worker-independent)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def sample_id(seed: int, index: int) -> str:
    return f"cw{seed}-{index:06d}"


def _make_clip(job: tuple[int, int, WorldConfig, str, bool]) -> str:
    """Worker: build (and write) clip ``index``; returns its JSONL line."""
    seed, index, cfg, out_dir, write = job
    sid = sample_id(seed, index)
    if write:
        from cluenet.video import write_video

        frames, _, sample = make_episode(clip_rng(seed, index), cfg, sid)
        write_video(Path(out_dir) / sample.video, frames, cfg.fps, options=ENCODER_OPTIONS)
    else:
        sample = make_sample(clip_rng(seed, index), cfg, sid)
    return json.dumps(sample.to_dict(), sort_keys=True)


def generate(out_dir: str | Path, n: int, seed: int, cfg: WorldConfig | None = None,
             workers: int = 1, write_video: bool = True) -> Path:
    """Write ``n`` clips and their questions to ``out_dir``; returns the JSONL path.

    Layout::

        out_dir/clueworld.jsonl       one Sample a line, video paths relative to out_dir
        out_dir/clueworld_meta.json   generator version, seed, n, config, templates
        out_dir/clips/<id>.mp4        H.264 clips (unless write_video=False)

    Output is identical for any ``workers`` (per-clip seeds from (seed, index)).
    """
    from tqdm import tqdm

    cfg = cfg or WorldConfig()
    _check_int("n", n, 1, MAX_CLIPS)
    _check_int("workers", workers, 1, MAX_WORKERS)
    _to_rng(seed)  # validates the seed
    out = Path(out_dir)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    jobs = ((int(seed), i, cfg, str(out), write_video) for i in range(n))
    path = out / JSONL_NAME
    with path.open("w") as f, _pool(workers) as pool:
        lines = pool.imap(_make_clip, jobs, chunksize=16) if pool else map(_make_clip, jobs)
        for line in tqdm(lines, total=n, desc="clueworld", unit="clip", disable=None):
            f.write(line + "\n")  # streamed, in index order whatever the worker count
    (out / META_NAME).write_text(json.dumps(_meta(cfg, seed, n, write_video), indent=2, sort_keys=True) + "\n")
    return path


@contextmanager
def _pool(workers: int) -> Iterator[Any]:
    """A process pool for workers > 1, else None (work in this process)."""
    if workers == 1:
        yield None
        return
    # spawn: safe even when the caller has threads (torch) running
    with mp.get_context("spawn").Pool(workers) as pool:
        yield pool


def _meta(cfg: WorldConfig, seed: int, n: int, write_video: bool) -> dict:
    return {
        "generator": "cluenet.data.clueworld",
        "version": GENERATOR_VERSION,
        "seed": int(seed),
        "n": int(n),
        "config": asdict(cfg),
        "templates": allowed_templates(cfg),
        "videos": bool(write_video),
        "encoder": {"codec": "libx264", **ENCODER_OPTIONS},
    }


CORPUS_CONFIG = WorldConfig(objects=(MIN_OBJECTS, MAX_OBJECTS))  # every template, counts included


def text_corpus(n: int, seed: int, cfg: WorldConfig | None = None) -> Iterator[str]:
    """Strings for training a tokenizer: for each of ``n`` samples the question, each
    option and the canonical ``grammar.render`` of its clues, chain and answer.

    Templates are taken in turn so that every allowed one appears once ``n`` reaches
    their number (9 with the default ``CORPUS_CONFIG``)."""
    cfg = cfg or CORPUS_CONFIG
    names = allowed_templates(cfg)
    for i in range(n):
        s = make_sample(clip_rng(seed, i), cfg, sample_id(seed, i), template=names[i % len(names)])
        yield s.question
        yield from s.options
        yield grammar.render(s.clues, s.chain, s.answer)


# ----------------------------------------------------------------------------- CLI
def _parse_range(text: str) -> tuple[int, int]:
    """"2-4" -> (2, 4); "3" -> (3, 3)."""
    parts = text.split("-")
    try:
        lo, hi = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (None, None)
    except ValueError:
        lo = hi = None
    if lo is None:
        raise argparse.ArgumentTypeError(f"expected a range like 2-4 or a number, got {text!r}")
    return lo, hi


def build_parser() -> argparse.ArgumentParser:
    d = WorldConfig()
    p = argparse.ArgumentParser(prog="python -m cluenet.data.clueworld", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n", type=int, required=True, help="number of clips")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=d.frames)
    p.add_argument("--fps", type=float, default=d.fps)
    p.add_argument("--size", type=int, default=d.size, help="frame width = height in pixels")
    p.add_argument("--objects", type=_parse_range, default=d.objects, help="objects per clip, e.g. 2-4")
    p.add_argument("--distractors", type=_parse_range, default=d.distractors, help="distractor events, e.g. 0-2")
    p.add_argument("--mix", type=float, nargs=3, default=d.mix, metavar=("C", "T", "D"),
                   help="weights of causal, temporal, descriptive questions")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--no-video", action="store_true", help="write only the JSONL and meta files")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = WorldConfig(frames=args.frames, fps=args.fps, size=args.size, objects=args.objects,
                          distractors=args.distractors, mix=tuple(args.mix))
        path = generate(args.out, args.n, args.seed, cfg, workers=args.workers, write_video=not args.no_video)
    except ClueNetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
