"""What a search leaves in its output folder: trials.csv, Optuna's plots, and the best trial's model.

    <output.dir>/study.db                         the study (default storage; running tune again continues it)
    <output.dir>/trials.csv                       one row per trial: values, objective, state, duration
    <output.dir>/optimization_history.png         Optuna's plots (optuna.visualization.matplotlib)
    <output.dir>/param_importances.png
    <output.dir>/parallel_coordinate.png
    <output.dir>/trials/trial-NNNN/               each trial's ordinary output folder (only the best's
                                                  is kept unless search.keep_trials)
    <output.dir>/best/                            the best trial's model, an ordinary output folder

The best model is the best trial's own model, copied as it was trained (not retrained): retraining
would cost one more run and, on small data, give another model than the one that was selected.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from hf_finetune.errors import UserError
from hf_finetune.files import write_atomically, write_json, write_text, write_yaml

logger = logging.getLogger(__name__)

TRIALS_CSV = "trials.csv"
BEST_DIR = "best"
SEARCH_FILE = "search.json"
PLOTS = {
    "optimization_history.png": "plot_optimization_history",
    "param_importances.png": "plot_param_importances",
    "parallel_coordinate.png": "plot_parallel_coordinate",
}
LOCK_FILE = ".search.lock"  # held while a worker writes trials.csv, the plots or best/, or removes trial folders
SEARCH_ENTRIES = {"study.db", "study.db-journal", TRIALS_CSV, BEST_DIR, "trials", "tensorboard", *PLOTS}


def guard_search_dir(out_dir: Path) -> None:
    """Refuses an output folder that holds a training run or files that a search did not write.

    Raises:
        UserError: naming the folder and what to do.
    """
    from hf_finetune.outputs import RUN_FILE

    if not out_dir.is_dir():
        return
    if (out_dir / RUN_FILE).exists():
        raise UserError(f"output.dir: {out_dir} holds a training run; a search writes study.db, trials/ and best/ "
                        f"into its folder. Choose another, e.g. output.dir={out_dir}-search")
    foreign = sorted(p.name for p in out_dir.iterdir()
                     if p.name not in SEARCH_ENTRIES and not p.name.endswith(".tmp") and not p.name.startswith("."))
    if foreign:
        raise UserError(f"output.dir: {out_dir} holds files that a search did not write ({', '.join(foreign[:5])}); "
                        "choose a new or empty folder")


@contextmanager
def search_lock(out_dir: Path) -> Iterator[None]:
    """Serialises what the workers sharing one search folder write there (several `tune` commands on one
    study and one machine): trials.csv, the plots, best/, and removing trial folders.

    Without it, a worker removing a trial folder could race another copying it into best/, and two
    workers publishing best/ at once would collide on its output lock. Each writer reads the study
    inside the lock, so the last one to write has the newest view.
    """
    from filelock import FileLock  # comes with huggingface_hub

    with FileLock(str(Path(out_dir) / LOCK_FILE)):
        yield


def best_of(complete: list[Any], direction: Any) -> Any:
    """The best of complete trials, the earliest of equal values; one rule for the folder kept and best/
    (the database's own ordering of ties is not defined)."""
    pick = max if direction.name == "MAXIMIZE" else min
    return pick(sorted(complete, key=lambda t: t.number), key=lambda t: t.value)


STALE_ERROR = ("its worker stopped without recording an error (killed, or its machine lost): no heartbeat, "
               "so the next tune command on the study marked it failed")


def _duration(trial: Any) -> float | None:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return None
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def trial_rows(study: Any, metric: str) -> list[dict[str, Any]]:
    """One row per trial: number, state, the objective, test score, duration, each searched value, where."""
    rows = []
    names = sorted({name for t in study.trials for name in t.params})
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"number": t.number, "state": t.state.name, f"validation_{metric}": t.value,
                               f"test_{metric}": t.user_attrs.get(f"test_{metric}"),
                               "duration_s": _duration(t), "evaluations": t.user_attrs.get("evaluations"),
                               "baseline": "yes" if t.user_attrs.get("baseline") else ""}
        row.update({name: t.params.get(name) for name in names})
        row.update({"host": t.user_attrs.get("host"), "folder": t.user_attrs.get("folder"),
                    "host_rss_mb": t.user_attrs.get("host_rss_mb"),
                    "error": t.user_attrs.get("error") or (STALE_ERROR if t.state.name == "FAIL" else None)})
        rows.append(row)
    return rows


def write_trials_csv(study: Any, out_dir: Path, metric: str) -> Path:
    rows = trial_rows(study, metric)
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    path = out_dir / TRIALS_CSV
    write_text(path, buffer.getvalue())
    return path


def write_plots(study: Any, out_dir: Path) -> list[str]:
    """Optuna's optimization history, parameter importances and parallel coordinates, as PNG.

    A plot that cannot be drawn (too few complete trials for importances, say) is logged and skipped.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display: draw into files only
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as views

    written = []
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    for name, function in PLOTS.items():
        if len(complete) < (2 if name != "optimization_history.png" else 1):
            logger.info("Not drawing %s: it needs %s complete trials", name, "2" if name != "optimization_history.png" else "1")
            continue
        try:
            axes = getattr(views, function)(study)
            figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
            figure.set_size_inches(10, 6)
            figure.tight_layout()
            write_atomically(out_dir / name, lambda tmp, f=figure: f.savefig(tmp, format="png", dpi=100))
            plt.close(figure)
            written.append(name)
        except Exception:  # matplotlib and importance evaluators fail in many ways; the study is safe either way
            logger.warning("Could not draw %s", name, exc_info=True)
    return written


# --- the best trial's model ----------------------------------------------------------------------------

def _dimension_text(dim: Any) -> str:
    if dim.choices is not None:
        return "one of " + ", ".join(f"`{json.dumps(c)}`" for c in dim.choices)
    scale = "log " if dim.log else ""
    step = f" step {dim.step:g}" if dim.step is not None else ""
    kind = "integers" if dim.is_int else "numbers"
    return f"{kind}, {scale}[{dim.low:g}, {dim.high:g}]{step}"


def _value_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return f"`{json.dumps(value)}`"


def search_summary(study: Any, space: dict[str, Any], best: Any, metric: str, settings: dict[str, Any]) -> dict:
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    from hf_finetune.search.space import decode_params

    return {"study": study.study_name, "trials": len(study.trials), "states": states,
            "objective": {"metric": f"validation {metric}", "direction": study.direction.name.lower(),
                          "best_value": best.value},
            "best_trial": best.number, "best_params": decode_params(best.params, space),
            "best_is_baseline": bool(best.user_attrs.get("baseline")),
            "baseline_value": next((t.value for t in study.get_trials(deepcopy=False)
                                    if t.user_attrs.get("baseline") and t.value is not None), None),
            "space": {k: v.model_dump(exclude_defaults=True) for k, v in space.items()}, **settings}


def card_section(summary: dict[str, Any], space: dict[str, Any]) -> str:
    states = summary["states"]
    counts = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    rows = ["| key | searched | best trial |", "| --- | --- | --- |"]
    for key, dim in space.items():
        best = summary["best_params"].get(key)
        rows.append(f"| `{key}` | {_dimension_text(dim)} | {_value_text(best)} |")
    objective = summary["objective"]
    if summary.get("best_is_baseline"):
        baseline = ("No trial did better on validation than trial 0, the recipe at its own defaults: this model "
                    "is that default run.\n\n")
    elif summary.get("baseline_value") is not None:
        baseline = (f"Trial 0, the recipe at its own defaults, reached {summary['baseline_value']:.4f}; this trial "
                    f"reached {objective['best_value']:.4f}.\n\n")
    else:
        baseline = ""
    return (
        "## Hyperparameter search\n\n"
        f"This model is trial {summary['best_trial']} of a hyperparameter search of {summary['trials']} trials "
        f"({counts}) with Optuna ({summary['sampler']}, {summary['pruner']}), which set out to "
        f"{objective['direction']} the {objective['metric']} (best: {objective['best_value']:.4f}). It is "
        "that trial's own model, kept as it was trained, not retrained; the trial was chosen on validation "
        "alone, so the test figures above had no part in the choice.\n\n"
        + "\n".join(rows) + "\n\n" + baseline +
        f"The study, `{TRIALS_CSV}` (every trial) and Optuna's plots are in the search folder, one level up.\n"
    )


def publish_best(study: Any, space: dict[str, Any], out_dir: Path, metric: str, settings: dict[str, Any]) -> Path | None:
    """Publishes the best complete trial's output folder as `<output.dir>/best`, its card saying how it was found.

    Returns:
        The best folder, or None when no trial completed or the best one ran on another machine.
    """
    from hf_finetune.outputs import guard_output_dir, output_lock, publish, read_run, staging_dir
    from hf_finetune.report.card import CARD_FILE, render_card

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        logger.warning("No trial completed: there is no best model to publish")
        return None
    best = best_of(complete, study.direction)
    folder, host = Path(best.user_attrs.get("folder", "")), best.user_attrs.get("host")
    run = read_run(folder) if folder.is_dir() else None
    if run is None:
        where = f"on {host}" if host and host != socket.gethostname() else "here"
        logger.warning("The best trial (%d, validation %s %.4f) ran %s: its model is in %s there",
                       best.number, metric, best.value, where, folder)
        return None
    best_dir = out_dir / BEST_DIR
    summary = search_summary(study, space, best, metric, settings)
    if _already_published(best_dir, summary, settings):
        logger.info("best/ already holds trial %d of this study as it stands: not written again", best.number)
        return best_dir
    guard_output_dir(best_dir, overwrite=True, resume=False)
    best_dir.mkdir(parents=True, exist_ok=True)
    with output_lock(best_dir, "tune"):
        staging = staging_dir(best_dir)
        manifest = {k: v for k, v in run.items() if k not in ("files", "status")}
        for name in run.get("files", []):
            if (folder / name).is_file():
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(folder / name, staging / name)
        recipe = yaml.safe_load((folder / "recipe.yaml").read_text(encoding="utf-8"))
        recipe["output"]["dir"] = str(best_dir)  # the recipe that writes this folder
        write_yaml(staging / "recipe.yaml", recipe)
        results = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        plots = [n for n in run.get("files", []) if n.endswith(".png")]
        card = render_card(recipe, results, manifest, plots, model_id=str(best_dir))
        write_text(staging / CARD_FILE, card + "\n" + card_section(summary, space))
        write_json(staging / SEARCH_FILE, summary)
        publish(staging, best_dir, {**manifest, "search": {"study": summary["study"], "trial": best.number,
                                                           "trials": summary["trials"]}})
    logger.info("Published the best trial (%d) into %s", best.number, best_dir)
    return best_dir


def _already_published(best_dir: Path, summary: dict[str, Any], settings: dict[str, Any]) -> bool:
    """True when best/ holds a finished run whose search.json says the same of the study as `summary`
    (another worker wrote it). The worker's own settings (its sampler seed, say) do not count."""
    from hf_finetune.outputs import read_run

    if read_run(best_dir) is None or not (best_dir / SEARCH_FILE).is_file():
        return False
    try:
        stored = json.loads((best_dir / SEARCH_FILE).read_text(encoding="utf-8"))
    except ValueError:
        return False
    study = {k: v for k, v in json.loads(json.dumps(summary, default=str)).items() if k not in settings}
    return isinstance(stored, dict) and {k: v for k, v in stored.items() if k not in settings} == study


def remove_trial_folder(folder: str | None) -> None:
    if folder and Path(folder).is_dir():
        shutil.rmtree(folder, ignore_errors=True)


def check_writable(out_dir: Path) -> None:
    from hf_finetune.outputs import make_output_dir

    make_output_dir(out_dir, "output.dir")
