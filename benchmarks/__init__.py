"""Speed and scale benchmarks; run them all with ``python -m benchmarks`` (see __main__.py).

Each module has ``run(quick) -> list[dict]`` (rows with ``benchmark``, ``metric``,
``value`` and optionally ``unit``, ``target``, ``note``) and a ``main``; ``emit``
prints rows as one table and optionally writes them as JSON.
"""
from __future__ import annotations

import json
from pathlib import Path


def _format_value(row: dict) -> str:
    value = row.get("value")
    text = f"{value:.3g}" if isinstance(value, float) else str(value)
    return text + (f" {row['unit']}" if row.get("unit") else "")


def _verdict(row: dict) -> str:
    target, value = row.get("target"), row.get("value")
    if target is None or not isinstance(value, (int, float)):
        return ""
    return "ok" if value <= target else f"MISSED (target <= {target:g})"


def print_table(rows: list[dict]) -> None:
    """Rows as an aligned text table; a row with a ``target`` gets an ok / MISSED check."""
    header = ("benchmark", "metric", "value", "check", "note")
    table = [header] + [
        (r.get("benchmark", ""), r.get("metric", ""), _format_value(r), _verdict(r), r.get("note", ""))
        for r in rows
    ]
    widths = [max(len(str(line[i])) for line in table) for i in range(len(header))]
    for i, line in enumerate(table):
        print(" | ".join(str(cell).ljust(w) for cell, w in zip(line, widths)).rstrip())
        if i == 0:
            print("-+-".join("-" * w for w in widths))


def markdown(rows: list[dict], machine: str = "") -> str:
    """Rows as a Markdown table (what the README's performance section shows)."""
    lines = [f"Machine: {machine}.", ""] if machine else []
    lines += ["| benchmark | metric | value | check | note |", "|---|---|---|---|---|"]
    for r in rows:
        cells = (r.get("benchmark", ""), r.get("metric", ""), _format_value(r), _verdict(r), r.get("note", ""))
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def emit(rows: list[dict], json_path: str | None = None, **extra) -> None:
    """Print ``rows`` as a table; with ``json_path`` also write ``{**extra, "rows": rows}``."""
    print_table(rows)
    if json_path:
        Path(json_path).write_text(json.dumps({**extra, "rows": rows}, indent=2))
