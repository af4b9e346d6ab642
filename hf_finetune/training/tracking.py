"""Experiment trackers through transformers' own integrations: `training.report_to: [tensorboard, mlflow]`.

The Trainer's callbacks (TensorBoardCallback, MLflowCallback, ...) log the parameters and every
logged step; this module adds what they leave out for a run of this pipeline:

- TensorBoard: the event files go to `<output.dir>/tensorboard` (or `$TENSORBOARD_LOGGING_DIR`), not
  into the checkpoints folder that a finished run removes; the final report's figures are added there.
- MLflow: the run is opened here, named after the output folder, before the Trainer exists, and closed
  after the output folder is published, so the final report (metrics.json's figures) and the model
  folder are logged into the same run as the steps (MLflowCallback would end its run when training
  ends, and the evaluations after it would open a stray one). Under `hf-finetune tune` each trial's
  run is nested in one parent run per study.
- Weights & Biases: the same for a W&B run (WandbCallback logs into a run that is already open):
  named after the output folder, finished after publishing with the run's exit code, the final report
  in its summary, and the output folder as a `model` artifact (the weights only when `WANDB_LOG_MODEL`
  asks for them, W&B's own switch: they are the large part of an upload). Under `hf-finetune tune`
  each trial is its own run, grouped by the study (`WANDB_RUN_GROUP`); without this, every trial
  would log into the first trial's run. `WANDB_MODE=offline` keeps it all on disk for `wandb sync`.

Where the tracker is (MLFLOW_TRACKING_URI, WANDB_PROJECT, ...) and its credentials (WANDB_API_KEY,
MLFLOW_TRACKING_TOKEN) stay in the environment: a recipe never holds them (recipe/secrets.py), and
messages redact their values (errors.redact).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from hf_finetune.errors import Problem, did_you_mean
from hf_finetune.outputs.lock import is_main_process

logger = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"  # in the output folder (or the search folder: one sub-folder per trial)
ARTIFACTS = "model"  # the MLflow artifact folder (W&B: artifact type) that receives the published output folder
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".ckpt")  # W&B: uploaded only when asked
# name -> (transformers' availability check, what to install)
TRACKERS = {
    "tensorboard": ("is_tensorboard_available", "pip install 'hf-finetune[track]' (tensorboard)"),
    "mlflow": ("is_mlflow_available", "pip install 'hf-finetune[track]' (mlflow)"),
    "wandb": ("is_wandb_available", "pip install wandb"),
    "trackio": ("is_trackio_available", "pip install trackio"),
    "comet_ml": ("is_comet_available", "pip install comet_ml"),
    "clearml": ("is_clearml_available", "pip install clearml"),
    "neptune": ("is_neptune_available", "pip install neptune"),
    "dvclive": ("is_dvclive_available", "pip install dvclive"),
    "swanlab": ("is_swanlab_available", "pip install swanlab"),
    "codecarbon": ("is_codecarbon_available", "pip install codecarbon"),
    "azure_ml": ("is_azureml_available", "pip install azureml-sdk"),
    "dagshub": ("is_dagshub_available", "pip install dagshub"),
    "flyte": ("is_flytekit_available", "pip install flytekit"),
}


def reported(report_to: Any) -> list[str]:
    """The tracker names of a `report_to` value ("none", a name, "all", or a list), "none" dropped."""
    if report_to is None:
        return []
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    return [str(n) for n in names if str(n) != "none"]


def tracker_problems(report_to: Any) -> list[Problem]:
    """A problem under `training.report_to` for each tracker that is unknown or not installed."""
    from transformers.integrations import integration_utils

    problems = []
    for name in reported(report_to):
        if name == "all":
            continue
        if name not in TRACKERS:
            known = [n for n in TRACKERS if hasattr(integration_utils, TRACKERS[n][0])]
            problems.append(Problem("training.report_to", f"'{name}' is not a tracker transformers reports to "
                                    f"(one of: {', '.join(known)})" + did_you_mean(name, known)))
            continue
        check, install = TRACKERS[name]
        available = getattr(integration_utils, check, None)
        if available is None or not available():
            problems.append(Problem("training.report_to", f"'{name}' is not installed: {install}"))
    return problems


@contextmanager
def environment(name: str, value: str) -> Iterator[None]:
    """`os.environ[name] = value` for the duration (what transformers' callbacks read their settings from)."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


class Tracking:
    """The trackers of one run; `log_final` adds the final report and the output folder."""

    def __init__(self, names: list[str], tensorboard_dir: Path | None, mlflow_run: Any, wandb_run: Any = None,
                 wandb_weights: bool = False):
        self.names = names
        self.tensorboard_dir = tensorboard_dir
        self.mlflow_run = mlflow_run
        self.wandb_run = wandb_run
        self.wandb_weights = wandb_weights

    def log_final(self, results: dict[str, Any], out_dir: Path) -> None:
        """The final report's figures (validation, test, train) and, for MLflow, the output folder's files."""
        if not is_main_process():
            return
        figures = final_figures(results)
        if self.tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            with SummaryWriter(log_dir=str(self.tensorboard_dir)) as writer:
                for name, value in figures.items():
                    writer.add_scalar(f"final/{name}", value, 0)
        if self.mlflow_run is not None:
            import mlflow

            from hf_finetune.outputs import RUN_FILE, read_run

            mlflow.log_metrics({f"final/{name}": value for name, value in figures.items()})
            run = read_run(out_dir) or {}
            for name in [*run.get("files", []), RUN_FILE]:
                path = Path(out_dir) / name
                if path.is_file():
                    folder = str(Path(ARTIFACTS, name).parent)
                    mlflow.log_artifact(str(path), artifact_path=folder)
            logger.info("MLflow: run %s (%s) holds the steps, the final report and the output folder under "
                        "'%s/'", self.mlflow_run.info.run_name, self.mlflow_run.info.run_id, ARTIFACTS)
        if self.wandb_run is not None:
            self._log_wandb(figures, Path(out_dir))

    def _log_wandb(self, figures: dict[str, float], out_dir: Path) -> None:
        import wandb

        from hf_finetune.outputs import RUN_FILE, read_run

        run = self.wandb_run
        run.summary.update({f"final/{name}": value for name, value in figures.items()})
        artifact = wandb.Artifact(name=f"{ARTIFACTS}-{run.id}", type=ARTIFACTS,
                                  metadata={"output_dir": str(out_dir.resolve()), **figures})
        left_out = []
        for name in [*(read_run(out_dir) or {}).get("files", []), RUN_FILE]:
            path = out_dir / name
            if not path.is_file():
                continue
            if name.endswith(WEIGHT_SUFFIXES) and not self.wandb_weights:
                left_out.append(name)
                continue
            artifact.add_file(str(path), name=name)
        run.log_artifact(artifact)
        logger.info("W&B: run %s (%s) holds the steps, the final report and the output folder (artifact '%s'%s)",
                    run.name, run.id, artifact.name,
                    f"; weights left out: {', '.join(left_out)}; set WANDB_LOG_MODEL=end to upload them"
                    if left_out else "")


def final_figures(results: dict[str, Any]) -> dict[str, float]:
    """metrics.json's numbers as flat names: validation_accuracy, test_f1, train_runtime_s, ..."""
    figures: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, (int, float)):
            figures[prefix] = float(value)
        elif isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}_{key}" if prefix else str(key), inner)

    for section in ("validation", "test", "train"):
        walk(section, results.get(section))
    return {k.replace(" ", "_"): v for k, v in figures.items()}


@contextmanager
def tracked_run(report_to: Any, out_dir: Path) -> Iterator[Tracking]:
    """Opens the run's trackers around setup, training and publishing (nothing when report_to is none).

    An MLflow run that is already active (tune's parent run) makes this one a nested run.
    """
    names = reported(report_to)
    if "all" in names:
        from transformers.integrations import get_available_reporting_integrations

        names = get_available_reporting_integrations()
    if not names:
        yield Tracking([], None, None)
        return
    out_dir = Path(out_dir)
    tensorboard_dir = None
    with ExitStack() as stack:
        if "tensorboard" in names:
            tensorboard_dir = Path(os.environ.get("TENSORBOARD_LOGGING_DIR") or out_dir / TENSORBOARD_DIR)
            stack.enter_context(environment("TENSORBOARD_LOGGING_DIR", str(tensorboard_dir)))
        run = None
        if "mlflow" in names and is_main_process():
            import mlflow

            nested = mlflow.active_run() is not None
            if not nested and os.environ.get("MLFLOW_EXPERIMENT_NAME"):
                mlflow.set_experiment(os.environ["MLFLOW_EXPERIMENT_NAME"])
            run = mlflow.start_run(run_name=out_dir.name, nested=nested,
                                   tags={"hf-finetune.output_dir": str(out_dir.resolve())})
        wandb_run, wandb_weights = None, False
        if "wandb" in names and is_main_process():
            import wandb

            # WANDB_LOG_MODEL: the published folder's weights go into our artifact; transformers' callback
            # would upload a second copy from a temporary save, so it is told not to.
            wandb_weights = os.environ.get("WANDB_LOG_MODEL", "false").lower() in ("end", "checkpoint", "true")
            stack.enter_context(environment("WANDB_LOG_MODEL", "false"))
            wandb_run = wandb.init(project=os.environ.get("WANDB_PROJECT", "huggingface"), name=out_dir.name,
                                   config={"hf-finetune.output_dir": str(out_dir.resolve())})
        status = "FAILED"
        try:
            yield Tracking(names, tensorboard_dir, run, wandb_run, wandb_weights)
            status = "FINISHED"
        except BaseException as exc:
            # stopped on purpose by the search (pruned) or by rank's halving (paused, resumed later): not a failure
            status = "KILLED" if type(exc).__name__ in ("TrialPruned", "RunPaused") else "FAILED"
            raise
        finally:
            if run is not None:
                import mlflow

                mlflow.end_run(status=status)
            if wandb_run is not None:
                wandb_run.summary["hf-finetune/status"] = status
                wandb_run.finish(exit_code=0 if status == "FINISHED" else 1)


# --- tune: one parent run per study, each trial's run nested in it -----------------------------------------

PARENT_ATTR = "mlflow_parent_run_id"  # the study's user attribute: workers and later commands share the parent


@contextmanager
def study_tracking(report_to: Any, study: Any, out_dir: Path, created: bool = True) -> Iterator[None]:
    """Around a search: the MLflow parent run of the study (reopened by later commands and other workers
    on the same study, through the study's user attributes).

    `created`: this command created the study. Of workers starting a new shared study together, the
    creator opens the parent run; the others wait (up to 30 s) for its id instead of opening their own.
    """
    names = reported(report_to)
    with ExitStack() as stack:
        if "wandb" in names and not os.environ.get("WANDB_RUN_GROUP"):
            stack.enter_context(environment("WANDB_RUN_GROUP", study.study_name))  # each trial a run of the group
        if "mlflow" not in names:
            yield
            return
        yield from _mlflow_parent(study, out_dir, created)


def _mlflow_parent(study: Any, out_dir: Path, created: bool) -> Iterator[None]:
    import mlflow

    mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or study.study_name)
    run_id = study.user_attrs.get(PARENT_ATTR)
    if not run_id and not created:
        import time

        deadline = time.monotonic() + 30
        while not run_id and time.monotonic() < deadline and len(study.trials) <= 2:  # a new study only
            time.sleep(0.5)
            run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id:
        parent = mlflow.start_run(run_id=run_id)
    else:
        parent = mlflow.start_run(run_name=study.study_name, tags={"optuna.study": study.study_name,
                                                                     "hf-finetune.output_dir": str(Path(out_dir).resolve())})
        study.set_user_attr(PARENT_ATTR, parent.info.run_id)
    logger.info("MLflow: the study's trials are nested runs of '%s' (%s)", study.study_name, parent.info.run_id)
    try:
        yield
    finally:
        mlflow.end_run()


def study_tensorboard_dir(report_to: Any, out_dir: Path) -> Path | None:
    """The search's TensorBoard folder, one sub-folder per trial (`tensorboard --logdir` it to compare
    trials side by side): `$TENSORBOARD_LOGGING_DIR` or `<output.dir>/tensorboard`; None when TensorBoard
    is not reported to."""
    names = reported(report_to)
    if "tensorboard" not in names and "all" not in names:
        return None
    return Path(os.environ.get("TENSORBOARD_LOGGING_DIR") or Path(out_dir) / TENSORBOARD_DIR)
