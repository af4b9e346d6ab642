"""The model card (README.md) of an ensemble folder or a soup folder: members, weights, every score."""

from __future__ import annotations

from typing import Any

import yaml

from hf_finetune.report.card import _fmt, _table

SCALARS_SKIP = {"per_class", "confusion_matrix", "num_samples", "majority_baseline", "source"}


def _metric_names(results: dict[str, Any]) -> list[str]:
    for role in ("validation", "test"):
        report = results.get(role) or {}
        names = [k for k, v in report.items() if k not in SCALARS_SKIP and isinstance(v, (int, float))]
        if names:
            return [n for n in names if n != "loss"] + (["loss"] if "loss" in names else [])
    return []


def scores_table(combined: str, results: dict[str, Any]) -> str:
    """One row per model (the combination first, then each member), validation and test columns."""
    names = _metric_names(results)
    roles = [r for r in ("validation", "test") if r in results]
    header = ["model"] + [f"{role} {name}" for role in roles for name in names]
    rows = [[f"**{combined}**"] + [results[r].get(n) for r in roles for n in names]]
    for member, scores in (results.get("members") or {}).items():
        rows.append([member] + [(scores.get(r) or {}).get(n) for r in roles for n in names])
    return _table(header, rows)


def render_card(kind: str, task: str, labels: list[str], description: str, members: list[dict[str, Any]],
                results: dict[str, Any], usage: str) -> str:
    """The card of an ensemble (`kind` = ensemble) or a soup (soup, greedy-soup)."""
    front = yaml.safe_dump({"library_name": "transformers", "pipeline_tag": task,
                            "tags": ["hf-finetune", task, kind]}, sort_keys=False)
    member_rows = [[m["name"], m.get("source", ""), m.get("backbone", ""), _fmt(m.get("weight")),
                    "yes" if m.get("used", True) else "no"] for m in members]
    parts = [
        f"---\n{front}---\n",
        f"# {kind}: {len(members)} fine-tuned runs\n",
        description + "\n",
        f"Labels ({len(labels)}): {', '.join(labels)}\n",
        "## Scores\n",
        "Every model is scored on the same validation and test rows (the first member's data), each with its "
        "own preprocessing.\n",
        scores_table(kind, results) + "\n",
        "## Members\n",
        _table(["member", "from", "backbone", "weight", "in the result"], member_rows) + "\n",
        "## Use\n",
        usage + "\n",
    ]
    return "\n".join(parts)
