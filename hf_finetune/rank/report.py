"""What `hf-finetune rank` shows and writes: the ranked table, rank.json, rank.png, the winner's command."""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path
from typing import Any

from hf_finetune.files import write_atomically, write_json
from hf_finetune.recipe import ModelSpec, Recipe

RECORD = "rank.json"
PLOT = "rank.png"
# Column title and format of each score, in table order.
SCORES = {"logme": ("LogME", "{:.4f}"), "knn": ("k-NN acc", "{:.3f}"), "knn_f1": ("k-NN F1", "{:.3f}"),
          "probe": ("probe acc", "{:.3f}"), "probe_f1": ("probe F1", "{:.3f}"), "hscore": ("H-score", "{:.3f}")}
PLOTTED = ("logme", "knn", "probe", "hscore")


def train_command(recipe: Recipe, spec: ModelSpec) -> str:
    """The command line that fine-tunes `spec` with this recipe (its own overrides kept)."""
    overrides = [o for o in recipe.overrides if not o.startswith(("model.", "rank."))]
    overrides.append(f"model.name={spec.name}")
    for key in ("revision", "pretrained"):
        value = getattr(spec, key)
        if value != ModelSpec.model_fields[key].default or getattr(recipe.model, key) != value:
            overrides.append(f"model.{key}={'null' if value is None else str(value).lower() if isinstance(value, bool) else value}")
    source = recipe.source or "RECIPE.yaml"
    return " ".join(["hf-finetune", "train", shlex.quote(source), *map(shlex.quote, overrides)])


def build_record(recipe: Recipe, rows: list[dict[str, Any]], by: str, command: str, elapsed: float) -> dict[str, Any]:
    """rank.json: the settings, one entry per candidate (best first), the winner and its command."""
    first = rows[0]
    return {
        "recipe": recipe.source,
        "task": recipe.task,
        "by": by,
        "rows": first["rows"],
        "num_classes": first["num_classes"],
        "candidates": [{"rank": i + 1, **{k: v for k, v in row.items() if k != "spec"}} for i, row in enumerate(rows)],
        "winner": first["name"],
        "train_command": command,
        "total_s": elapsed,
        "extraction_s": sum(r["extraction_s"] for r in rows if not r["from_cache"]),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def format_table(record: dict[str, Any]) -> str:
    """The ranked table as text, best first, with each score, the feature size and the extraction time."""
    rows = record["candidates"]
    keys = [k for k in SCORES if k in rows[0]["scores"]]
    header = ["#", "candidate", *(SCORES[k][0] + (" *" if k == record["by"] else "") for k in keys),
              "dim", "pooling", "extract s"]
    body = []
    for row in rows:
        extraction = f"{row['extraction_s']:.1f}" + (" (cached)" if row["from_cache"] else "")
        body.append([str(row["rank"]), row["name"], *(SCORES[k][1].format(row["scores"][k]) for k in keys),
                     str(row["dim"]), row["pooling"], extraction])
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    left = {1, len(header) - 2}  # names and pooling read left-aligned, numbers right-aligned

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    counts = record["rows"]
    lines = [f"Ranked {len(rows)} candidates on {counts['train']} training rows, k-NN and probe scored on "
             f"{counts['validation']} validation rows ({record['num_classes']} classes); * orders the table",
             line(header), *(line(b) for b in body),
             f"Winner: {record['winner']}. Train it with:", f"  {record['train_command']}"]
    return "\n".join(lines) + "\n"


def plot_scores(record: dict[str, Any], path: str | os.PathLike) -> None:
    """One bar chart per score, candidates in rank order, the ordering score first."""
    from matplotlib.figure import Figure

    rows = record["candidates"]
    keys = [record["by"], *(k for k in PLOTTED if k != record["by"] and k in rows[0]["scores"])]
    fig = Figure(figsize=(3.2 * len(keys), 0.5 * len(rows) + 1.8), layout="constrained")
    names = [row["name"] if len(row["name"]) <= 40 else "..." + row["name"][-37:] for row in rows]
    for index, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), index + 1)
        values = [row["scores"][key] for row in rows]
        ax.barh(range(len(rows)), values, color=["tab:green" if i == 0 else "tab:blue" for i in range(len(rows))])
        ax.set_yticks(range(len(rows)), names if index == 0 else [""] * len(rows))
        ax.invert_yaxis()  # rank 1 on top
        ax.set_title(SCORES[key][0] + (" (orders)" if key == record["by"] else ""))
        ax.grid(axis="x", alpha=0.3)
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))


def write_report(out_dir: Path, record: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / RECORD, record)
    plot_scores(record, out_dir / PLOT)
