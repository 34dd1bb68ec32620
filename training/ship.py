"""Ship a finished default-model run into ``assets/model`` with its model card.

    python -m training.ship --run runs/default [--dest assets/model] [--max-mb 30]

Copies the ClueNet output of ``<run>/stage2/final`` (weights as safetensors, configs,
tokenizer, filter head; nothing else) to ``--dest``, refuses a folder above ``--max-mb``,
and writes ``MODEL_CARD.md`` there: the exact command that made the run (from
``<run>/command.txt``), seeds, sizes, steps, and the results of ClueNet, ``direct`` and
``cot`` on the run's test split (``<run>/eval-<mode>.json`` from ``training.evaluate``).
The same results table is printed as Markdown for the README.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Sequence

from cluenet.errors import ConfigError

SHIPPED_SUFFIXES = (".safetensors", ".json", ".jinja")
MODES = ("cluenet", "direct", "cot")
QTYPE_ORDER = ("CW", "CH", "TN", "TC", "TP", "DC", "DL", "DO")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _num(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def results_table(evals: dict[str, dict]) -> str:
    """Markdown: one column per mode; accuracy overall and per question type, clue and filter
    scores, flag rates and generated tokens per answer."""
    modes = [m for m in MODES if m in evals]
    qtypes = [q for q in QTYPE_ORDER if any(q in evals[m].get("by_qtype", {}) for m in modes)]
    head = "| | " + " | ".join(("ClueNet" if m == "cluenet" else m) for m in modes) + " |"
    lines = [head, "|---" * (len(modes) + 1) + "|"]

    def row(label: str, cells: list[str]) -> None:
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    first = evals[modes[0]]
    row(f"accuracy, % ({first.get('n_samples', '?')} questions, chance 20)", [_pct(evals[m]["accuracy"]) for m in modes])
    for q in qtypes:
        cells = []
        for m in modes:
            v = evals[m].get("by_qtype", {}).get(q)
            cells.append(f"{_pct(v['accuracy'])} ({v['n']})" if v else "n/a")
        row(f"accuracy {q}, % (n)", cells)
    row("clue precision / recall / F1", [" / ".join(_num(evals[m]["clues"].get(k), 3) for k in ("precision", "recall", "f1"))
                                         if m == "cluenet" else "-" for m in modes])
    row("filter precision / recall", [" / ".join(_num(evals[m]["filter"].get(k), 3) for k in ("precision", "recall"))
                                      if m == "cluenet" else "-" for m in modes])
    for kind in ("unsupported_citation", "chain_answer_inconsistency", "ungrounded_clue"):
        cells = []
        for m in modes:
            rate = evals[m].get("flag_rates", {}).get(kind)
            # direct writes no chain; cot writes no clues (and is trained on chains without citations)
            applies = m == "cluenet" or (m == "cot" and kind != "ungrounded_clue")
            cells.append(_pct(rate) if applies else "-")
        row(f"questions flagged {kind.replace('_', ' ')}, %", cells)
    row("generated tokens per answer", [_num(evals[m].get("tokens_per_answer"), 1) for m in modes])
    return "\n".join(lines)


def _stage(folder: Path) -> dict:
    path = folder / "stage.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def run_sizes(run: Path) -> dict[str, int]:
    """The small model's sizes in a run: ``SMALL_SIZES`` with the stage-1 config's ``model.sizes``."""
    from training.config import Stage1RunConfig, load_config
    from training.model_build import SMALL_SIZES, parse_sizes

    cfg = run / "stage1" / "config.yaml"
    return {**SMALL_SIZES, **parse_sizes(load_config(Stage1RunConfig, cfg).model.sizes if cfg.is_file() else "")}


def _baselines_line(base: dict[str, dict]) -> str:
    if not any(base.values()):
        return "baselines: not trained in this run yet (`training.make_default_model` trains them at the same budget)"
    return (f"baselines `direct` {base['direct'].get('steps', '?')} and `cot` {base['cot'].get('steps', '?')} steps "
            "(equal step budget, same batch size, data and frames)")


def _val_line(run: Path, seed: int) -> str:
    val = run / "data" / "val" / "clueworld.jsonl"
    if not val.is_file():
        return ""
    n = sum(1 for line in val.open(encoding="utf-8") if line.strip())
    return f"validation split seed {seed} ({n} questions, {val.as_posix()}) for choices made while training; "


def model_card(run: Path, evals: dict[str, dict], command: str, size_mb: float) -> str:
    from training.make_default_model import TEST_SEED, TRAIN_SEED, VAL_SEED

    s1, s2 = _stage(run / "stage1" / "final"), _stage(run / "stage2" / "final")
    base = {m: _stage(run / m / "final") for m in ("direct", "cot")}
    sizes = ", ".join(f"{k} {v}" for k, v in run_sizes(run).items())
    return f"""# ClueNet small (ClueWorld) -- the app's embedded default model

A ClueNet model built from the real transformers Qwen2-VL classes at a small size
({sizes}), trained from random initialisation on ClueWorld only (and, for the language
model's stage 0, rows of random tokens): the procedurally generated 4x4-grid videos of
`cluenet/data/clueworld.py`. It knows nothing about
real-world video; in the app an uploaded real clip gets a notice saying so.

* weights: `model.safetensors`, filter head `filter_head.safetensors` ({size_mb:.1f} MB in all)
* tokenizer: this project's 614-token BPE (`assets/tokenizer`), trained on ClueWorld text
* frames: 16 at 112x112 (4 fps, 4 s clips)
* prompt: options {_style_line(s2.get('option_style', 'letter_first'))}

## How it was made

```bash
{command}
python -m training.ship --run {run}
```

{_stage0(run)}* data: ClueWorld train split seed {TRAIN_SEED} ({s1.get('train_path', '?')}); stage 2 on its first samples
  ({s2.get('train_path', '?')}); {_val_line(run, VAL_SEED)}test split seed {TEST_SEED}, never used in training
* stage 1 (E + R): {s1.get('steps', '?')} steps; stage 2 (self clues, filter head, R on filtered clues, E replay):
  {s2.get('steps', '?')} steps; {_baselines_line(base)}
* training seed {s1.get('seed', '?')}; configs `training/configs/*_clueworld.yaml`

## Results on the test split

{results_table(evals)}

Measured by `python -m training.evaluate` through the same pipeline the app runs (greedy
decoding). Clue scores match predicted clues to gold events one-to-one (statement token
F1 >= 0.85 and temporal IoU >= 0.3 with 0.25 s tolerance, `cluenet/metrics.py`).

## Limits

{_verdict(evals["cluenet"])} It is a teaching and testing model for the explorer, not a
video QA model; the README's "Default model" section and docs/default-model-history.md say what was tried.
"""


def _style_line(style: str) -> str:
    if style == "letter_last":
        return ("lettered after their text (\"because it hit the red ring D\", `data.option_style=letter_last`): "
                "the chain restates the chosen option and copies the letter that follows it")
    return "lettered first (\"D. because it hit the red ring\")"


def _stage0(run: Path) -> str:
    """Card lines for the stage-0 reports of ``run`` (none when it has none)."""
    lines = []
    vision = run / "vision" / "vision_pretrain.json"
    if vision.is_file():
        v = json.loads(vision.read_text())
        held = ", ".join(f"{k[:-9]} {_pct(x)} %" for k, x in v["held_out"].items() if k.endswith("_occupied"))
        lines.append(f"* stage 0, vision (`training.vision_pretrain`): {v['args']['steps']} steps, seed {v['args']['seed']}, "
                     f"{v['seconds']} s; held-out occupied cells: {held}; the tower stays frozen afterwards")
    ground = run / "ground" / "ground_pretrain.json"
    if ground.is_file():
        g = json.loads(ground.read_text())
        last = g["checks"][-1]
        held = ", ".join(f"{k} {_pct(x)} %" for k, x in last["held_out"].items() if k != "all")
        lines.append(f"* stage 0c, looking things up in the clip (`training.ground_pretrain`, each object's shape, first "
                     f"colour and first motion, tower frozen): {last['step']} steps, seed {g['args']['seed']}, "
                     f"{g['seconds']} s; held-out words: {held}")
    text = run / "text" / "text_pretrain.json"
    if text.is_file():
        t = json.loads(text.read_text())
        last = t["checks"][-1]
        start = " from stage 0c's language model" if t["args"].get("init") else ""
        lines.append(f"* stage 0b, language model (`training.text_pretrain`, random-token rows with a repeated segment{start}): "
                     f"{last['step']} steps, seed {t['args']['seed']}, {t['seconds']} s; held-out repeat accuracy "
                     f"{last['repeat_accuracy']}, zero-shot recall {last['recall_accuracy_zero_shot']}")
    return "".join(line + "\n" for line in lines)


def _verdict(ev: dict) -> str:
    acc, f1 = ev.get("accuracy") or 0.0, ev.get("clues", {}).get("f1") or 0.0
    head = f"On the test split it scores {_pct(acc)} % against a chance level of 20 % (clue F1 {f1:.3f}):"
    if acc < 0.3 and f1 < 0.01:
        return (f"{head} at this training budget it has learned the output format (clue lines, cited chains, "
                "an answer), not the task. Its clues do not describe the clip.")
    if acc < 0.3:
        prec = ev.get("clues", {}).get("precision") or 0.0
        return (f"{head} its answers are at chance level and {_pct(1 - prec)} % of its clues match no event of "
                "the clip.")
    return f"{head} read the per-type numbers before trusting a clue it writes."


def trained_on_line(run: Path, ev: dict, dest: Path) -> str:
    """One honest line for the app: data, budget, test accuracy and clue F1."""
    s1, s2 = _stage(run / "stage1" / "final"), _stage(run / "stage2" / "final")
    f1 = ev.get("clues", {}).get("f1")
    return (f"ClueWorld synthetic clips only (stage 1 {s1.get('steps', '?')} + stage 2 {s2.get('steps', '?')} steps "
            f"on CPU); test accuracy {_pct(ev.get('accuracy'))} % (chance 20 %), clue F1 {_num(f1)} -- "
            f"see {dest.as_posix()}/MODEL_CARD.md")


def ship(run: Path, dest: Path, max_mb: float, command: str | None = None) -> str:
    src = run / "stage2" / "final"
    if not (src / "config.json").is_file():
        raise ConfigError(f"{src} has no config.json: run python -m training.make_default_model first")
    evals = {m: json.loads((run / f"eval-{m}.json").read_text()) for m in MODES if (run / f"eval-{m}.json").is_file()}
    if "cluenet" not in evals:
        raise ConfigError(f"{run}/eval-cluenet.json is missing: the run was not evaluated")
    files = sorted(p for p in src.iterdir() if p.is_file() and p.suffix in SHIPPED_SUFFIXES)
    size_mb = sum(p.stat().st_size for p in files) / 2**20
    if size_mb > max_mb:
        raise ConfigError(f"{src} holds {size_mb:.1f} MB of model files, above the {max_mb} MB limit")
    if command is None:
        cmd_file = run / "command.txt"
        command = cmd_file.read_text().strip() if cmd_file.is_file() else "python -m training.make_default_model --out " + str(run)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for p in files:
        shutil.copy2(p, tmp / p.name)
    (tmp / "MODEL_CARD.md").write_text(model_card(run, evals, command, size_mb))
    meta_file = tmp / "cluenet.json"
    if meta_file.is_file():  # what the app's banner says the model was trained on
        meta = json.loads(meta_file.read_text())
        meta["trained_on"] = trained_on_line(run, evals["cluenet"], dest)
        meta_file.write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return results_table(evals)


def main(argv: Sequence[str] | None = None) -> int:
    from cluenet.cli import run as run_cli

    p = argparse.ArgumentParser(prog="python -m training.ship", description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/default", help="the output folder of training.make_default_model")
    p.add_argument("--dest", default="assets/model")
    p.add_argument("--max-mb", type=float, default=30.0)
    p.add_argument("--command", default=None, help="the command that made the run (default: <run>/command.txt)")
    p.set_defaults(func=lambda a: print(ship(Path(a.run), Path(a.dest), a.max_mb, a.command)) or 0)
    return run_cli(p, argv)


if __name__ == "__main__":
    raise SystemExit(main())
