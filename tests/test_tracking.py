"""Experiment tracking through transformers' integrations (`training.report_to`), with real backends, offline.

TensorBoard's event files are read back with TensorBoard's own EventAccumulator; MLflow runs against a
real `mlflow server` process (SQLite backend store, local artifact root) that the test starts on a free
local port, and is read back with MlflowClient; W&B runs in its offline mode, and its transaction log
(what `wandb sync` would upload) is read back record by record (tests/helpers/wandb_log.py). Skipped,
with the reason, where the `track` extra (tensorboard, mlflow, wandb) is not installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from hf_finetune.errors import RecipeError
from hf_finetune.recipe import validate_recipe

from .conftest import review_rows, write_csv, write_recipe
from .helpers.postgres import free_port
from .helpers.wandb_log import offline_runs

pytest.importorskip("tensorboard", reason="the track extra is missing: pip install 'hf-finetune[track]'")
pytest.importorskip("mlflow", reason="the track extra is missing: pip install 'hf-finetune[track]'")
pytest.importorskip("wandb", reason="the track extra is missing: pip install 'hf-finetune[track]'")
pytestmark = pytest.mark.slow

SECRET = "s3cret-tracker-credential-0123456789"  # what a hosted tracker's token looks like to us: no shape


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server: SQLite backend store, artifacts in a local folder, 127.0.0.1:<free port>."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = (root / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            if server.poll() is not None:
                break
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("mlflow server did not answer: " + (root / "server.log").read_text()[-3000:])
    if server.poll() is not None:
        pytest.fail("mlflow server stopped: " + (root / "server.log").read_text()[-3000:])
    yield url
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


@pytest.fixture
def tracked(monkeypatch, mlflow_server, tmp_path):
    """The environment a user sets for the trackers (where, and a credential), nothing in the recipe."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", SECRET)
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_PROJECT", "sentiment")
    for name in ("WANDB_RUN_GROUP", "WANDB_LOG_MODEL", "WANDB_NAME", "WANDB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "wandb").mkdir()
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    mlflow.set_tracking_uri(mlflow_server)
    yield mlflow_server
    mlflow.set_tracking_uri(None)
    import wandb

    wandb.teardown()  # W&B reads WANDB_DIR once per process (its settings singleton): the next test has its own


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _no_secret_anywhere(folder: Path, *texts: str) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"the credential reached {path}"
    for text in texts:
        assert SECRET not in text


def test_a_run_reports_to_tensorboard_a_real_mlflow_server_and_wandb_offline(text_recipe, tmp_path, tracked,
                                                                             monkeypatch, capsys, caplog):
    from mlflow.tracking import MlflowClient

    from hf_finetune import train

    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "one-run")
    text_recipe["training"]["report_to"] = ["tensorboard", "mlflow", "wandb"]
    recipe = write_recipe(tmp_path / "tracked.yaml", text_recipe)
    train(recipe)
    out = Path(text_recipe["output"]["dir"])
    results = json.loads((out / "metrics.json").read_text())

    # TensorBoard: the steps and evaluations, and the final report, in <output.dir>/tensorboard.
    scalars = _scalars(out / "tensorboard")
    assert len(scalars["train/loss"]) >= 4 and [s for s, _ in scalars["train/loss"]] == sorted(s for s, _ in scalars["train/loss"])
    assert len(scalars["eval/loss"]) >= 2  # one per epoch, then the final validation and test passes
    assert scalars["final/test_accuracy"][0][1] == pytest.approx(results["test"]["accuracy"])

    # MLflow: one run named after the output folder, with the parameters, every logged step, the final
    # report and the output folder as artifacts.
    client = MlflowClient(tracked)
    experiment = client.get_experiment_by_name("one-run")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    run = runs[0]
    assert run.info.run_name == out.name and run.info.status == "FINISHED"
    assert float(run.data.params["learning_rate"]) == pytest.approx(1e-3)
    assert float(run.data.params["num_train_epochs"]) == 2 and run.data.params["hidden_size"] == "32"
    history = client.get_metric_history(run.info.run_id, "loss")
    assert len(history) >= 4 and len({m.step for m in history}) == len(history)
    assert run.data.metrics["final/test_accuracy"] == pytest.approx(results["test"]["accuracy"])
    assert run.data.metrics["final/validation_loss"] == pytest.approx(results["validation"]["loss"])
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/model.safetensors", "model/metrics.json", "model/README.md", "model/run.json"} <= logged
    copy = Path(client.download_artifacts(run.info.run_id, "model/metrics.json", str(tmp_path / "dl")))
    assert json.loads(copy.read_text()) == results

    # W&B (offline): one run named after the output folder, in the project of WANDB_PROJECT, with the
    # parameters, every logged step, the final report in its summary, and the output folder as an
    # artifact without the weights (WANDB_LOG_MODEL unset); finished with exit code 0.
    (wb,) = offline_runs(tmp_path / "wandb").values()
    assert (wb.name, wb.project, wb.exit_code) == (out.name, "sentiment", 0)
    assert wb.config["learning_rate"] == pytest.approx(1e-3) and wb.config["hidden_size"] == 32
    losses = [(row["train/global_step"], row["train/loss"]) for row in wb.history if "train/loss" in row]
    assert len(losses) >= 4 and [s for s, _ in losses] == sorted(s for s, _ in losses)
    assert len([row for row in wb.history if "eval/f1" in row]) >= 2
    assert wb.summary["final/test_accuracy"] == pytest.approx(results["test"]["accuracy"])
    assert wb.summary["final/validation_loss"] == pytest.approx(results["validation"]["loss"])
    assert wb.summary["hf-finetune/status"] == "FINISHED"
    (artifact,) = wb.artifacts
    assert artifact["type"] == "model"
    assert {"metrics.json", "README.md", "run.json", "recipe.yaml", "config.json"} <= set(artifact["files"])
    assert not [f for f in artifact["files"] if f.endswith(".safetensors")]

    captured = capsys.readouterr()
    _no_secret_anywhere(out, captured.out, captured.err, caplog.text)
    _no_secret_anywhere(tmp_path / "wandb")


def test_tune_nests_each_trial_under_the_study(text_recipe, tmp_path, tracked):
    from mlflow.tracking import MlflowClient

    from hf_finetune.cli import main

    files = {split: str(write_csv(tmp_path / "d" / f"{split}.csv", review_rows(n, seed=seed)))
             for split, n, seed in (("train", 32, 0), ("validation", 16, 1))}
    text_recipe["data"]["files"] = files
    text_recipe["training"].update(report_to=["tensorboard", "mlflow", "wandb"], num_train_epochs=1)
    text_recipe["search"] = {"space": {"training.learning_rate": {"choices": [1e-3, 5e-3]}},
                             "sampler": {"type": "random", "seed": 0}, "pruner": {"type": "none"},
                             "trials": 2, "study_name": "tracked-study"}
    text_recipe["output"]["dir"] = str(tmp_path / "search")
    assert main(["tune", str(write_recipe(tmp_path / "tune.yaml", text_recipe))]) == 0

    out = tmp_path / "search"
    for trial in ("trial-0000", "trial-0001"):
        assert len(_scalars(out / "tensorboard" / trial)["train/loss"]) >= 2  # side by side under one logdir
    client = MlflowClient(tracked)
    experiment = client.get_experiment_by_name("tracked-study")  # the study name, when MLFLOW_EXPERIMENT_NAME is unset
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.run_name for p in parents] == ["tracked-study"]
    children = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id),
                      key=lambda r: r.info.run_name)
    assert [c.info.run_name for c in children] == ["trial-0000", "trial-0001"]
    assert {float(c.data.params["learning_rate"]) for c in children} == {1e-3, 5e-3}
    assert all("final/validation_loss" in c.data.metrics for c in children)
    # W&B: each trial its own run (not the first trial's run reused), grouped by the study.
    runs = offline_runs(tmp_path / "wandb")
    assert sorted(runs) == ["trial-0000", "trial-0001"]
    assert {r.group for r in runs.values()} == {"tracked-study"} and {r.exit_code for r in runs.values()} == {0}
    assert {r.config["learning_rate"] for r in runs.values()} == {1e-3, 5e-3}
    assert all("final/validation_loss" in r.summary for r in runs.values())
    shutil.rmtree(out, ignore_errors=True)


def test_a_tracker_that_is_missing_or_misspelt_names_the_key_and_what_to_install(text_recipe):
    from transformers.integrations import integration_utils

    from hf_finetune.training.arguments import check_training_arguments

    text_recipe["training"]["report_to"] = ["tensorbord"]
    with pytest.raises(RecipeError, match=r"training.report_to: 'tensorbord' is not a tracker .*did you mean 'tensorboard'"):
        check_training_arguments(validate_recipe(text_recipe))
    if not integration_utils.is_wandb_available():
        text_recipe["training"]["report_to"] = ["wandb"]
        with pytest.raises(RecipeError, match=r"training.report_to: 'wandb' is not installed: pip install wandb"):
            check_training_arguments(validate_recipe(text_recipe))
    # A tracker's credential in a recipe is refused by its key, never shown.
    text_recipe["training"]["wandb_api_key"] = SECRET
    text_recipe["mlflow"] = {"tracking_token": SECRET}
    with pytest.raises(RecipeError) as caught:
        validate_recipe(text_recipe)
    assert "training.wandb_api_key: tokens never go in a recipe" in str(caught.value)
    assert "mlflow.tracking_token: tokens never go in a recipe" in str(caught.value)
    assert SECRET not in str(caught.value)
