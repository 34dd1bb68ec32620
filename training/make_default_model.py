"""Reproduce the shipped ClueWorld model, its baselines and their evaluation in one command.

    python -m training.make_default_model --out runs/default [--train 20000 --stage2-train 1000 --test 500
        --s1-steps 2500 --s2-steps 400 --workers 12 --eval-workers 12]

Steps (every run is one of the recipes with its shipped config and overrides):

1. ClueWorld splits, no video files (clips are re-rendered from their ids): train seed
   ``TRAIN_SEED``, test seed ``TEST_SEED`` (never used in training); a vision store
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
that sees the whole clip in one temporal patch; README, "Default model"); the vision store is
written once, at two frames a patch, and regrouped on read.

``--time-budget S`` first times 30 steps of the three concurrent runs and sizes the
step counts so that everything, evaluation included, ends within S seconds.

Measured (2026-11-29, 2 CPU cores, ``--out runs/v3 --train 6000 --stage2-train 160 --test 500 --workers 2
--eval-workers 2 --loader-workers 1 --text-steps 0 --time-budget 2700 --eval-reserve 300 --stage2-overhead 300``,
with ``runs/v3/vision`` copied from an earlier run with the same seeds and ``runs/v3/ground`` made just before by
the same ``ground_pretrain`` command, 699 s): 1.46 s per step with the three runs at once in the probe; 890
stage-1 + 121 stage-2 steps, baselines 1,011 steps each (batch 8); evaluation done at 1,971 s.  Test accuracy
ClueNet 21.0 %, direct 21.8 %, cot 20.8 % (chance 20 %), clue F1 0.032.  Not shipped: the shipped model was made
by this command at commit 58b0eda (before stage 0c and rope theta 1e6); README, "Default model".
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

TRAIN_SEED, TEST_SEED = 1, 3
CONFIGS = Path(__file__).resolve().parent / "configs"


def _threads(concurrent: int) -> str:
    """Torch threads per process when ``concurrent`` training processes share the machine's cores."""
    return str(max(1, (os.cpu_count() or 2) // concurrent))


def _run(cmd: list[str], log: Path, wait: bool = True, threads: str | None = None) -> subprocess.Popen:
    print("+", " ".join(cmd), flush=True)
    f = open(log, "w")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if threads and "OMP_NUM_THREADS" not in os.environ:  # oversubscribed cores slow every run down
        env["OMP_NUM_THREADS"] = threads
    p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if wait and p.wait():
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}; see {log}")
    return p


def make_data(out: Path, n_train: int, n_s2: int, n_test: int, workers: int) -> Path:
    """Train/test JSONL and the training vision store; returns the train folder."""
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
    test = out / "data" / "test"
    if not (test / clueworld.JSONL_NAME).is_file():
        clueworld.generate(test, n_test, TEST_SEED, workers=workers, write_video=False)
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
    p.add_argument("--s1-steps", type=int, default=2500)
    p.add_argument("--s2-steps", type=int, default=400)
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--eval-workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--loader-workers", type=int, default=4)
    p.add_argument("--vision-steps", type=int, default=300, help="stage 0: training.vision_pretrain steps")
    p.add_argument("--text-steps", type=int, default=0,
                   help="stage 0b: the most training.text_pretrain steps (default 0: skipped; from stage 0c's language "
                        "model it did not form its circuit in 3,000 steps with seed 1, README 'Default model')")
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
    p.add_argument("overrides", nargs="*", help="dotted overrides passed to every training run, e.g. train.batch_size=16")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "command.txt").write_text("python -m training.make_default_model " + " ".join(argv if argv is not None else sys.argv[1:]) + "\n")
    t0 = time.time()
    train = make_data(out, args.train, args.stage2_train, args.test, args.workers)
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
    s1 = _run([*py, "training.stage1", "--config", str(CONFIGS / "stage1_clueworld.yaml"), *base,
               f"train.output_dir={out / 'stage1'}", f"train.max_steps={args.s1_steps}"], out / "stage1.log", wait=False,
              threads=_threads(3))
    baselines = [_run([*py, "training.baselines", "--config", str(CONFIGS / f"{k}_clueworld.yaml"), *base,
                       f"train.output_dir={out / k}", f"train.max_steps={budget}"], out / f"{k}.log", wait=False,
                       threads=_threads(3))
                 for k in ("direct", "cot")]
    if s1.wait():
        raise SystemExit(f"stage 1 failed; see {out / 'stage1.log'}")
    print(f"stage 1 done at {time.time() - t0:.0f} s", flush=True)
    _run([*py, "training.stage2", "--config", str(CONFIGS / "stage2_clueworld.yaml"),
          f"data.train_path={train / 'clueworld_stage2.jsonl'}", *common, f"model.init_adapter={out / 'stage1' / 'final'}",
          f"train.output_dir={out / 'stage2'}", f"train.max_steps={args.s2_steps}"], out / "stage2.log",
         threads=_threads(1 + sum(b.poll() is None for b in baselines)))
    print(f"stage 2 done at {time.time() - t0:.0f} s", flush=True)
    if any(b.wait() for b in baselines):
        raise SystemExit(f"a baseline failed; see {out}/direct.log and cot.log")
    print(f"baselines done at {time.time() - t0:.0f} s", flush=True)
    if not args.skip_eval:
        evaluate_all(out, args.eval_workers, t0)
    return 0


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
