"""What `hf-finetune rank` shows and writes: the ranked table, rank.json, rank.png, the winner's command."""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path
from typing import Any

from hf_finetune.files import write_atomically, write_json
from hf_finetune.rank.finetune import candidate_model_keys
from hf_finetune.recipe import ModelSpec, Recipe

RECORD = "rank.json"
PLOT = "rank.png"
# Column title and format of each score, in table order.
SCORES = {"logme": ("LogME", "{:.4f}"), "knn": ("k-NN acc", "{:.3f}"), "knn_f1": ("k-NN F1", "{:.3f}"),
          "probe": ("probe acc", "{:.3f}"), "probe_f1": ("probe F1", "{:.3f}"), "hscore": ("H-score", "{:.3f}"),
          "finetune": ("fine-tuned", "{:.3f}")}  # rank.by finetune: the validation metric after fine-tuning
PLOTTED = ("logme", "knn", "probe", "hscore", "finetune")


def train_command(recipe: Recipe, spec: ModelSpec, values: dict[str, Any] | None = None) -> str:
    """The command line that fine-tunes `spec` with this recipe (its own overrides kept), and `values` (what a
    rank.by finetune run started from: another candidate's mirror finding) as overrides."""
    overrides = [o for o in recipe.overrides if not o.startswith(("model.", "rank."))]
    given = [f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
             for key, value in (values or {}).items() if not any(o.startswith(f"{key}=") for o in overrides)]
    overrides.append(f"model.name={spec.name}")
    for key in ("revision", "pretrained", *candidate_model_keys(spec)):
        value = getattr(spec, key)
        if value != ModelSpec.model_fields[key].default or getattr(recipe.model, key) != value:
            overrides.append(f"model.{key}={'null' if value is None else str(value).lower() if isinstance(value, bool) else value}")
    overrides += given
    source = recipe.source or "RECIPE.yaml"
    return " ".join(["hf-finetune", "train", shlex.quote(source), *map(shlex.quote, overrides)])


def build_record(recipe: Recipe, rows: list[dict[str, Any]], by: str, command: str, elapsed: float,
                 tied: list[dict[str, Any]] | None = None, winner: int = 0) -> dict[str, Any]:
    """rank.json: the settings, one entry per candidate (best first, each score with its bootstrap spread),
    the winner (`rows[winner]`: the best pretrained one, rank/__init__.frozen_winner) and its command, and
    the candidates tied with it (rank/confidence.py)."""
    from hf_finetune.rank.confidence import RESAMPLES, TIE_SHARE

    first = rows[0]
    return {
        "recipe": recipe.source,
        "task": recipe.task,
        "by": by,
        "rows": first["rows"],
        "num_classes": first["num_classes"],
        "candidates": [{"rank": i + 1, **{k: v for k, v in row.items() if k != "spec"}} for i, row in enumerate(rows)],
        "winner": rows[winner]["name"],
        "train_command": command,
        "tied": tied or [],
        "bootstrap": {"resamples": RESAMPLES, "tie_share": TIE_SHARE},
        "total_s": elapsed,
        "extraction_s": sum(r.get("extraction_s", 0.0) for r in rows if not r.get("from_cache")),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def format_table(record: dict[str, Any]) -> str:
    """The ranked table as text, best first, with each score, the feature size and the extraction time."""
    rows = record["candidates"]
    keys = [k for k in SCORES if any(k in r["scores"] for r in rows)]
    finetuned = record.get("finetune")
    titles = {k: SCORES[k][0] + (f" {finetuned['metric']}" if k == "finetune" and finetuned else "") for k in keys}
    extracted = "dim" in rows[0]  # frozen features were extracted (not under rank.by finetune of every candidate)
    header = ["#", "candidate", *(titles[k] + (" *" if k == record["by"] else "") for k in keys),
              *(["dim", "pooling", "extract s"] if extracted else [])]
    body = []
    for row in rows:
        spread = row.get("spread", {})
        body.append([str(row["rank"]), row["name"],  # "(random init)" marks an untrained one
                     *(SCORES[k][1].format(row["scores"][k])
                       + ("±" + SCORES[k][1].format(spread[k]) if k in spread else "")
                       + (_finetune_note(row) if k == "finetune" else "")
                       if k in row["scores"] else "-" for k in keys)])
        if extracted:
            body[-1] += [str(row["dim"]), row["pooling"],
                         f"{row['extraction_s']:.1f}" + (" (cached)" if row["from_cache"] else "")]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    left = {1, len(header) - 2} if extracted else {1}  # names and pooling left-aligned, numbers right-aligned

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    counts = record["rows"]
    boot = record.get("bootstrap")
    spread_note = (f"; ± is the standard deviation over {boot['resamples']} bootstrap resamples" if boot else "")
    scored = (f"k-NN and probe scored on {counts['validation']} validation rows" if extracted
              else f"fine-tuned and validated on {counts['validation']} rows (no frozen-feature scores)")
    lines = [f"Ranked {len(rows)} candidates on {counts['train']} training rows, {scored} "
             f"({record['num_classes']} classes); * orders the table" + (spread_note if extracted else ""),
             line(header), *(line(b) for b in body)]
    lines += _untrained_note(record)
    tied = record.get("tied") or []
    title = titles.get(record["by"], SCORES[record["by"]][0])
    if finetuned:
        if finetuned.get("none_learned"):
            bar = finetuned.get("learned_above")
            above = (f"above {bar:.4f}: the trivial model's {finetuned['trivial']:.4f} by the margin, and guessing's luck"
                     if bar is not None else f"above the trivial model's {finetuned['trivial']:.4f}")  # an older rank.json
            lines.append(f"Warning: no fine-tuned candidate learned (validation {finetuned['metric']} {above}): this "
                         "order is not evidence; fine-tune longer (rank.budget, rank.finetune_epochs).")
        lines.append(_halving_line(finetuned))
    if tied:
        decide = ("Give the ranking more (rank.budget), or fine-tune each with the full recipe:" if finetuned
                  else "Fine-tune each to decide:")
        lines.append(f"Tie: {record['winner']} is not surely ahead of "
                     + ", ".join(f"{t['name']} (ahead on {t['leader_ahead_share']:.0%} of the resamples)" for t in tied)
                     + f" by {title}; at least {boot['tie_share']:.0%} makes a winner. {decide}")
        lines += [f"  {record['train_command']}", *(f"  {t['train_command']}" for t in tied)]
    elif finetuned:
        where = (f"its model is in {finetuned['winner_folder']}" if finetuned.get("winner_folder")
                 else f"it trained {finetuned['winner_share']:.0%} of its run within rank.budget")
        lines += [f"Winner after fine-tuning (validation {finetuned['metric']}): {record['winner']}; {where}. Train it "
                  "with the full recipe:", f"  {record['train_command']}"]
    else:
        lines += [f"Winner: {record['winner']}. Train it with:", f"  {record['train_command']}"]
    return "\n".join(lines) + "\n"


def _finetune_note(row: dict[str, Any]) -> str:
    """rank.by finetune: where the run stopped, when not at the whole run ("at 21% of its run", "pruned" where
    halving stopped it), and "did not learn" for a run that never beat the trivial model (by the guard's margin
    and by more than guessing reaches by luck)."""
    entry = row.get("finetune") or {}
    notes = []
    if entry.get("state") == "pruned":
        notes.append(f"pruned at {entry.get('rung_share', entry.get('share', 0.0)):.0%}")
    elif entry.get("state") == "paused":
        notes.append(f"at {entry['share']:.0%}")
    if entry.get("learned") is False:
        notes.append("did not learn")
    return f" ({', '.join(notes)})" if notes else ""


def _halving_line(finetuned: dict[str, Any]) -> str:
    """How the fine-tuning was spent: the rungs and the full runs it cost against rank.budget."""
    if "shares" not in finetuned:  # a rank.json from before rank.budget
        return "Fine-tuned one candidate after another with successive halving."
    line = (f"Successive halving, 1 in {finetuned['reduction_factor']} kept at "
            + ", ".join(f"{s:.0%}" for s in finetuned["shares"])
            + f" of a run: {finetuned['spent']:.2f} full runs trained (rank.budget {finetuned['budget']:g}).")
    ran_out = finetuned.get("budget_ran_out")
    if ran_out:  # waits for learning, ties or runs too short to pause spent what the plan's later rungs needed
        planned = ", ".join(f"{s:.0%}" for s in finetuned["planned_shares"])
        line += (f" The budget ran out at {ran_out['share']:.0%} of the runs, before the plan's rungs ({planned}), "
                 f"which needed about {ran_out['needed']:.2f} full runs: the rungs trained more than planned (waits "
                 "for learning, ties at a cut, runs too short to pause, which count whole). The order there is weaker "
                 "evidence; a larger rank.budget trains further.")
    return line


def _untrained_note(record: dict[str, Any]) -> list[str]:
    """Why the winner of a frozen ranking is not its first row: candidates with random weights above every
    pretrained one. Frozen-feature scores measure how separable the features are, which random convolutional
    features of simple images can be, though such a network fine-tunes far worse (digits: 0.11 against 0.99
    accuracy, benchmarks/README.md), so they do not win (rank/__init__.frozen_winner)."""
    rows = record["candidates"]
    if record["by"] == "finetune":  # a fine-tuned order judges every candidate alike
        return []
    first_pretrained = next((r["rank"] for r in rows if not r.get("untrained")), None)
    if first_pretrained is None:
        return ["Warning: every candidate has random weights; frozen-feature scores measure how separable features "
                "are, not how well a network fine-tunes, so this order says little (rank.by: finetune fine-tunes "
                "them to compare)."]
    above = [r["name"] for r in rows if r.get("untrained") and r["rank"] < first_pretrained]
    if not above:
        return []
    return [f"Not a winner: {', '.join(above)} ha{'s' if len(above) == 1 else 've'} random weights; frozen-feature "
            "scores measure how separable features are, not how well a network fine-tunes. The winner is the best "
            "pretrained candidate; rank.by: finetune fine-tunes the untrained ones beside it to compare."]


def plot_scores(record: dict[str, Any], path: str | os.PathLike) -> None:
    """One bar chart per score, candidates in rank order, the ordering score first."""
    from matplotlib.figure import Figure

    rows = record["candidates"]
    keys = [record["by"], *(k for k in PLOTTED if k != record["by"] and any(k in r["scores"] for r in rows))]
    fig = Figure(figsize=(max(6.4, 3.2 * len(keys)), 0.5 * len(rows) + 1.8), layout="constrained")  # names need room
    names = [row["name"] if len(row["name"]) <= 40 else "..." + row["name"][-37:] for row in rows]
    for index, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), index + 1)
        values = [row["scores"].get(key, float("nan")) for row in rows]  # finetune: the shortlist only
        errors = [row.get("spread", {}).get(key, 0.0) for row in rows]  # one bootstrap standard deviation
        ax.barh(range(len(rows)), values, xerr=errors, capsize=3, color=["tab:green" if r["name"] == record["winner"] else "tab:blue" for r in rows])
        ax.set_yticks(range(len(rows)), names if index == 0 else [""] * len(rows))
        ax.invert_yaxis()  # rank 1 on top
        ax.set_title(SCORES[key][0] + (" (orders)" if key == record["by"] else ""))
        ax.grid(axis="x", alpha=0.3)
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))


def write_report(out_dir: Path, record: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / RECORD, record)
    plot_scores(record, out_dir / PLOT)
