"""Reproduce the shipped ClueWorld model, its baselines and their evaluation in one command.

    python -m training.make_default_model --out runs/default [--train 20000 --stage2-train 1000 --test 500
        --s1-steps 2500 --s2-steps 400 --workers 12 --eval-workers 12]

Steps (every run is one of the recipes with its shipped config and overrides):

1. ClueWorld splits, no video files (clips are re-rendered from their ids): train seed
   ``TRAIN_SEED``, validation seed ``VAL_SEED`` (``--val``; for choosing steps and phases),
   test seed ``TEST_SEED`` (never used in training or for choices); a vision store
   of the training clips (``training.data.VisionStore``) shared by all runs.
2. Stage 0: ``training.vision_pretrain`` (the vision tower, on dense cell labels), then stage 0c
   ``training.ground_pretrain`` (the language model learns to look things up in the clip) and,
   with ``--text-steps N``, stage 0b ``training.text_pretrain`` from 0c's language model (an
   induction circuit).  Every run below starts from their outputs (``model.vision_init``,
   ``model.text_init``) with the tower frozen.
3. ``training.stage1`` and, at the same time, the ``direct`` and ``cot`` baselines with
   ``s1_steps + s2_steps`` steps each (equal budget), then ``training.stage2`` on the
   first ``stage2_train`` training samples.
4. ``training.evaluate`` of ClueNet, direct and cot on the test split; scores in
   ``<out>/eval-<mode>.json``.

``--sizes JSON`` overrides ``training.model_build.SMALL_SIZES`` in every stage (e.g. a vision tower
that sees the whole clip in one temporal patch; docs/default-model-history.md); the vision store is
written once, at two frames a patch, and regrouped on read.

``--phase "STEP:OVERRIDES"`` (repeatable) adds dotted overrides from step STEP on, to stage 1 and both
baselines alike: each run is then trained in segments, each resuming the last one's checkpoint with the
overrides of the phases begun so far (the same as stopping a run and restarting it with more switches on;
the schedule must be ``constant`` so that it does not depend on where a segment ends).  Stage 2 gets every
phase's overrides.  The order matters for this model: some circuits form only if others exist first
(docs/default-model-history.md).

``--time-budget S`` first times 30 steps of the three concurrent runs and sizes the
step counts so that everything, evaluation included, ends within S seconds.

The shipped model (``assets/model``) is this command's ``runs/v7`` with ``--ground-steps 0 --vision-steps 1500
--sizes '{"temporal_patch": 16, "vision_hidden": 128}' --s1-steps 4000 --s2-steps 50`` and three ``--phase``
switches; the full command is in the README ("Default model") and the model card.  Measured (2026-11-30, 2 CPU
cores): stage-1 steps take a median 1.03 s with the copy and lookup rows, 0.39 s without; 81.8 % and clue F1
0.869 on the 500 test questions.  Earlier runs: docs/default-model-history.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

TRAIN_SEED, VAL_SEED, TEST_SEED = 1, 2, 3  # validation: for choosing steps and phases without the test split
CONFIGS = Path(__file__).resolve().parent / "configs"


def _threads(concurrent: int) -> str:
    """Torch threads per process when ``concurrent`` training processes share the machine's cores."""
    return str(max(1, (os.cpu_count() or 2) // concurrent))


def _run(cmd: list[str], log: Path, wait: bool = True, threads: str | None = None,
         append: bool = False) -> subprocess.Popen:
    sys.stdout.write(f"+ {shlex.join(cmd)}\n")  # one write: two Phased threads print at once
    sys.stdout.flush()
    f = open(log, "a" if append else "w")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if threads and "OMP_NUM_THREADS" not in os.environ:  # oversubscribed cores slow every run down
        env["OMP_NUM_THREADS"] = threads
    p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if wait and p.wait():
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}; see {log}")
    return p


def parse_phase(text: str) -> tuple[int, list[str]]:
    """``"1500:loss.a=1 loss.b=true"`` -> (1500, ["loss.a=1", "loss.b=true"])."""
    step, sep, rest = text.partition(":")
    overrides = shlex.split(rest)
    if not sep or not step.strip().isdigit() or int(step) <= 0 or not overrides:
        raise SystemExit(f"--phase wants 'STEP:OVERRIDE [OVERRIDE ...]' with STEP > 0, got {text!r}")
    if any("=" not in o or o.startswith("train.max_steps=") for o in overrides):
        raise SystemExit(f"--phase {text!r}: each override is section.key=value, and train.max_steps is not one")
    return int(step), overrides


def segments(max_steps: int, phases: Sequence[tuple[int, list[str]]]) -> list[tuple[int, list[str]]]:
    """(last step, extra overrides) of each segment of a run of ``max_steps`` steps: a segment ends where
    a phase begins, and its overrides are those of every phase begun at or before its first step."""
    phases = sorted(phases, key=lambda p: p[0])
    ends = sorted({s for s, _ in phases if s < max_steps} | {max_steps})
    return [(end, [o for s, extra in phases if s <= start for o in extra]) for start, end in zip([0, *ends], ends)]


class Phased(threading.Thread):
    """One training run in segments (``segments``), in the background; ``wait()`` / ``poll()`` like a Popen."""

    def __init__(self, cmd: list[str], max_steps: int, phases: Sequence[tuple[int, list[str]]], log: Path,
                 threads: str | None = None):
        super().__init__(daemon=True)
        self.cmds = [[*cmd, *extra, f"train.max_steps={end}"] for end, extra in segments(max_steps, phases)]
        self.log, self.threads, self.returncode = log, threads, None
        log.write_text("")
        self.start()

    def run(self) -> None:
        rc = 0
        for cmd in self.cmds:
            rc = _run(cmd, self.log, wait=False, threads=self.threads, append=True).wait()
            if rc:
                break
        self.returncode = rc

    def wait(self) -> int:
        self.join()
        return self.returncode

    def poll(self) -> int | None:
        return None if self.is_alive() else self.returncode


def make_data(out: Path, n_train: int, n_s2: int, n_test: int, workers: int, n_val: int = 0) -> Path:
    """Train/validation/test JSONL and the training vision store; returns the train folder.  The
    validation split (``n_val`` questions, none when 0) is for choices made while training."""
    from cluenet import backbones
    from cluenet.data import clueworld
    from cluenet.data.jsonl import read_samples, write_jsonl

    from training import data as tdata
    from training.model_build import _family_name

    train = out / "data" / "train"
    if not (train / "vision_store" / "index.json").is_file():
        clueworld.generate(train, n_train, TRAIN_SEED, workers=workers, write_video=False)
        samples = read_samples(train / clueworld.JSONL_NAME)
        write_jsonl(samples[:n_s2], train / "clueworld_stage2.jsonl")
        fam = backbones.get_family(_family_name("small:qwen2_vl"))
        tdata.VisionStore.build(train / "vision_store", samples, _processor_fn, fam, tdata.ClueWorldFrames(), workers)
    for split, n, seed in (("val", n_val, VAL_SEED), ("test", n_test, TEST_SEED)):
        folder = out / "data" / split
        if n and not (folder / clueworld.JSONL_NAME).is_file():
            clueworld.generate(folder, n, seed, workers=workers, write_video=False)
    return train


def _processor_fn(sizes: str = ""):
    """The processor of the ``small:qwen2_vl`` model with ``sizes`` (``model.sizes``; picklable, for
    the vision store's workers)."""
    from cluenet import backbones
    from cluenet import tokenizer as tokmod
    from training import model_build

    tok = tokmod.load()
    config = model_build.small_config("qwen2_vl", tok, model_build.parse_sizes(sizes))
    return model_build.small_processor(backbones.get_family("qwen2_vl"), tok, config)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.make_default_model", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/default")
    p.add_argument("--train", type=int, default=20000)
    p.add_argument("--stage2-train", type=int, default=1000)
    p.add_argument("--test", type=int, default=500)
    p.add_argument("--val", type=int, default=200,
                   help=f"validation questions (ClueWorld seed {VAL_SEED}; data/val) for choosing steps; 0: none")
    p.add_argument("--s1-steps", type=int, default=2500)
    p.add_argument("--s2-steps", type=int, default=400)
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--eval-workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--loader-workers", type=int, default=4)
    p.add_argument("--vision-steps", type=int, default=300, help="stage 0: training.vision_pretrain steps")
    p.add_argument("--text-steps", type=int, default=0,
                   help="stage 0b: the most training.text_pretrain steps (default 0: skipped; from stage 0c's language "
                        "model it did not form its circuit in 3,000 steps with seed 1, docs/default-model-history.md)")
    p.add_argument("--text-seed", type=int, default=1, help="training.text_pretrain seed")
    p.add_argument("--ground-steps", type=int, default=2000,
                   help="stage 0c: the most training.ground_pretrain steps (0: skip stage 0c)")
    p.add_argument("--sizes", default="", help="JSON overrides of training.model_build.SMALL_SIZES for every stage, "
                                                "e.g. '{\"temporal_patch\": 16, \"vision_hidden\": 128}'")
    p.add_argument("--skip-eval", action="store_true")
    p.add_argument("--time-budget", type=float, default=0.0,
                   help="seconds for the whole command: measure the step time first and size the runs to fit (0: off)")
    p.add_argument("--eval-reserve", type=float, default=EVAL_RESERVE_S,
                   help="with --time-budget: seconds kept for the three evaluations")
    p.add_argument("--stage2-overhead", type=float, default=STAGE2_OVERHEAD_S,
                   help="with --time-budget: seconds of stage 2 that are not training steps (self clues, leave-one-out)")
    p.add_argument("--phase", action="append", default=[], metavar="STEP:OVERRIDES",
                   help="from step STEP on, add these dotted overrides to stage 1 and the baselines (repeatable), "
                        "e.g. '1500:loss.lookup_rows=8 loss.copy_prev_on_task=true'")
    p.add_argument("overrides", nargs="*", help="dotted overrides passed to every training run, e.g. train.batch_size=16")
    args = p.parse_args(argv)
    phases = [parse_phase(t) for t in args.phase]
    if phases and args.time_budget:
        raise SystemExit("--time-budget times the first phase only; give --s1-steps and --s2-steps with --phase")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "command.txt").write_text(
        shlex.join(["python", "-m", "training.make_default_model", *(argv if argv is not None else sys.argv[1:])]) + "\n")
    t0 = time.time()
    train = make_data(out, args.train, args.stage2_train, args.test, args.workers, args.val)
    print(f"data ready in {time.time() - t0:.0f} s", flush=True)
    py = [sys.executable, "-m"]
    vision, text = pretrain(out, train, args)
    print(f"stage 0 done at {time.time() - t0:.0f} s", flush=True)
    common = [f"data.num_workers={args.loader_workers}", f"model.vision_init={vision}", "model.freeze_vision=true",
              *([f"model.sizes='{args.sizes}'"] if args.sizes else []),
              *([f"model.text_init={text}"] if text else []), *args.overrides]
    if args.time_budget:
        args.s1_steps, args.s2_steps = size_runs(out, train, common, args.time_budget - (time.time() - t0),
                                                args.eval_reserve, args.stage2_overhead)
    budget = args.s1_steps + args.s2_steps
    base = [f"data.train_path={train / 'clueworld.jsonl'}", *common]
    if phases:
        _check_constant_schedule(base)
    s1 = Phased([*py, "training.stage1", "--config", str(CONFIGS / "stage1_clueworld.yaml"), *base,
                 f"train.output_dir={out / 'stage1'}"], args.s1_steps, phases, out / "stage1.log", threads=_threads(3))
    baselines = [Phased([*py, "training.baselines", "--config", str(CONFIGS / f"{k}_clueworld.yaml"), *base,
                         f"train.output_dir={out / k}"], budget, phases, out / f"{k}.log", threads=_threads(3))
                 for k in ("direct", "cot")]
    if s1.wait():
        raise SystemExit(f"stage 1 failed; see {out / 'stage1.log'}")
    print(f"stage 1 done at {time.time() - t0:.0f} s", flush=True)
    _run([*py, "training.stage2", "--config", str(CONFIGS / "stage2_clueworld.yaml"),
          f"data.train_path={train / 'clueworld_stage2.jsonl'}", *common, *(o for _, extra in phases for o in extra),
          f"model.init_adapter={out / 'stage1' / 'final'}",
          f"train.output_dir={out / 'stage2'}", f"train.max_steps={args.s2_steps}"], out / "stage2.log",
         threads=_threads(1 + sum(b.poll() is None for b in baselines)))
    print(f"stage 2 done at {time.time() - t0:.0f} s", flush=True)
    if any(b.wait() for b in baselines):
        raise SystemExit(f"a baseline failed; see {out}/direct.log and cot.log")
    print(f"baselines done at {time.time() - t0:.0f} s", flush=True)
    if not args.skip_eval:
        evaluate_all(out, args.eval_workers, t0)
    return 0


def _check_constant_schedule(overrides: list[str]) -> None:
    """Segments restart the lr schedule's clock at each ``train.max_steps``: only ``constant`` ignores it."""
    from training.config import BaselineRunConfig, Stage1RunConfig, load_config

    for cls, name in ((Stage1RunConfig, "stage1"), (BaselineRunConfig, "direct"), (BaselineRunConfig, "cot")):
        schedule = load_config(cls, CONFIGS / f"{name}_clueworld.yaml", overrides).optim.schedule
        if schedule != "constant":
            raise SystemExit(f"--phase needs optim.schedule=constant ({name} has {schedule!r}): a run in segments "
                             "would restart a decaying schedule at each segment")


def pretrain(out: Path, train: Path, args: argparse.Namespace) -> tuple[Path, Path | None]:
    """Stage 0 (``training.vision_pretrain``), then, unless ``--ground-steps 0``, stage 0c
    (``training.ground_pretrain``: the language model learns to look things up in the clip), then
    stage 0b (``training.text_pretrain``, from 0c's language model: it learns to copy within text).
    Each is skipped when its output is already there; ``--text-steps 0`` skips stage 0b.  Returns
    (vision.safetensors, the language model's text.safetensors or None for the seeded init)."""
    from training import ground_pretrain, text_pretrain, vision_pretrain

    py = [sys.executable, "-m"]
    sizes = ["--sizes", args.sizes] if args.sizes else []
    vision = out / "vision" / vision_pretrain.WEIGHTS_NAME
    if not vision.is_file():
        _run([*py, "training.vision_pretrain", "--train", str(train / "clueworld.jsonl"), "--out", str(vision.parent),
              "--steps", str(args.vision_steps), *sizes], out / "vision_pretrain.log")
    lm = None  # the language model the next stage starts from (None: the seeded init)
    if args.ground_steps:
        lm = out / "ground" / ground_pretrain.WEIGHTS_NAME
        if not lm.is_file():
            _run([*py, "training.ground_pretrain", "--train", str(train / "clueworld.jsonl"), "--vision", str(vision),
                  "--out", str(lm.parent), "--steps", str(args.ground_steps), *sizes], out / "ground_pretrain.log")
    if not args.text_steps:
        return vision, lm
    text = out / "text" / text_pretrain.WEIGHTS_NAME
    if not text.is_file():
        _run([*py, "training.text_pretrain", "--out", str(text.parent), "--steps", str(args.text_steps),
              "--seed", str(args.text_seed), *(["--init", str(lm)] if lm else []), *sizes], out / "text_pretrain.log")
    return vision, text


PROBE_STEPS = 30
EVAL_RESERVE_S = 150.0  # three evaluations on the test split, process start-up included
STAGE2_OVERHEAD_S = 70.0  # self clues + leave-one-out + start-up
STAGE2_SHARE = 0.12  # of the step budget; a stage-2 step has three rows per sample


def size_runs(out: Path, train: Path, common: list[str], seconds_left: float, eval_reserve: float = EVAL_RESERVE_S,
              stage2_overhead: float = STAGE2_OVERHEAD_S) -> tuple[int, int]:
    """Time PROBE_STEPS steps of the three concurrent runs; return (s1_steps, s2_steps) that fit."""
    t0 = time.time()
    probes = [_run([sys.executable, "-m", mod, "--config", str(CONFIGS / cfg), f"data.train_path={train / 'clueworld.jsonl'}",
                    *common, f"train.output_dir={out / 'probe' / name}", f"train.max_steps={PROBE_STEPS}",
                    "train.resume=false", "train.log_every=1", f"train.save_every={10 * PROBE_STEPS}"], out / f"probe-{name}.log", wait=False,
                    threads=_threads(3))
              for mod, cfg, name in (("training.stage1", "stage1_clueworld.yaml", "stage1"),
                                     ("training.baselines", "direct_clueworld.yaml", "direct"),
                                     ("training.baselines", "cot_clueworld.yaml", "cot"))]
    for p in probes:
        p.wait()
    rows = [json.loads(x) for x in (out / "probe" / "stage1" / "metrics.jsonl").read_text().splitlines()]
    per_step = sorted(r["seconds"] for r in rows[PROBE_STEPS // 3:])[len(rows[PROBE_STEPS // 3:]) // 2]
    avail = seconds_left - (time.time() - t0) - eval_reserve - stage2_overhead
    total = max(50, int(avail / (per_step * (1 - STAGE2_SHARE + 3 * STAGE2_SHARE)) * 0.9))
    s2 = max(10, int(total * STAGE2_SHARE))
    print(f"probe: {per_step:.3f} s/step with three runs at once; {avail:.0f} s left for training -> "
          f"stage 1 {total - s2} steps, stage 2 {s2} steps", flush=True)
    return total - s2, s2


def evaluate_all(out: Path, workers: int, t0: float) -> None:
    test = out / "data" / "test" / "clueworld.jsonl"
    for mode, folder in (("cluenet", "stage2"), ("direct", "direct"), ("cot", "cot")):
        res = subprocess.run([sys.executable, "-m", "training.evaluate", "--model", str(out / folder / "final"),
                              "--data", str(test), "--mode", mode, "--json", "--workers", str(workers), "--device", "cpu",
                              "--traces", str(out / f"traces-{mode}.jsonl")], capture_output=True, text=True)
        if res.returncode:
            print(res.stderr[-3000:])
            continue
        (out / f"eval-{mode}.json").write_text(res.stdout)
        r = json.loads(res.stdout)
        print(f"{mode}: accuracy {r['accuracy']:.4f} clue F1 {r['clues']['f1']} at {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
