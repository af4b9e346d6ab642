"""Shared studies on a real database: two `hf-finetune tune` workers on one study in PostgreSQL.

The test starts its own PostgreSQL server (initdb in a temporary folder, a free local port; as the
`postgres` OS user when run as root) and is skipped, with the reason, where PostgreSQL or its Python
driver is missing (`.ci/run` installs both). Each worker is an ordinary `hf-finetune tune` process;
they share the study through the database and the search folder through its lock. The workers run
with a 1 s heartbeat and an 8 s grace period instead of 60 s and 180 s, so a killed worker's trial is
found stale within the test.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import REPO, review_rows, write_csv, write_recipe
from .helpers.postgres import PostgresServer, find_postgres

optuna = pytest.importorskip("optuna")
pytest.importorskip("psycopg2", reason="the PostgreSQL driver is missing: pip install 'hf-finetune[postgres]'")
POSTGRES, WHY_NOT = find_postgres()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(POSTGRES is None, reason=WHY_NOT)]

GRACE = 8  # seconds without a heartbeat before a trial counts as killed (a busy machine delays a live one's)
# A worker: the ordinary command, with a short heartbeat so a killed worker is found within the test.
WORKER = (f"import sys; import hf_finetune.search.study as s; s.HEARTBEAT_S, s.GRACE_S = 1, {GRACE}; "
          "from hf_finetune.cli import main; raise SystemExit(main(sys.argv[1:]))")
STARTED = re.compile(r"Trial (\d+): [\w.]+=")  # "Trial 3: training.learning_rate=0.005": a worker starts trial 3


@pytest.fixture(scope="module")
def postgres_url():
    with PostgresServer(POSTGRES) as url:
        yield url


def _recipe(tmp_path: Path, tiny_bert: Path, url: str, study: str) -> Path:
    files = {split: str(write_csv(tmp_path / "data" / f"{split}.csv", review_rows(n, seed=seed)))
             for split, n, seed in (("train", 32, 0), ("validation", 16, 1))}
    return write_recipe(tmp_path / "shared.yaml", {
        "task": "text-classification",
        "model": {"name": str(tiny_bert)},
        "data": {"files": files, "cache_dir": str(tmp_path / "cache")},
        "training": {"num_train_epochs": 2, "per_device_train_batch_size": 16, "per_device_eval_batch_size": 16,
                     "logging_steps": 1, "learning_rate": 5e-3},
        "batch": {"global_size": 16},
        # 5e-3 learns, 1.0 diverges (pruned when it meets a better trial at the same evaluation).
        "search": {"space": {"training.learning_rate": {"choices": [5e-3, 1.0]}}, "objective": {"metric": "loss"},
                   "sampler": {"type": "random", "seed": 3}, "storage": url, "study_name": study,
                   # ASHA from the first evaluation, so cross-worker pruning decisions happen to check
                   "pruner": {"type": "successive_halving", "after_learning_onset": False}},
        "output": {"dir": str(tmp_path / "search")},
    })


def _worker(recipe: Path, log: Path, trials: int, seed: int, *overrides: str) -> subprocess.Popen:
    # Each worker its own sampler seed, as tune.md advises for workers started together.
    command = [sys.executable, "-c", WORKER, "tune", str(recipe), "--trials", str(trials),
               f"search.sampler.seed={seed}", *overrides]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=REPO, env=env)


def _wait(*workers: subprocess.Popen) -> list[int]:
    return [w.wait(timeout=300) for w in workers]


def _started(*logs: Path) -> list[int]:
    return [int(n) for log in logs for n in STARTED.findall(log.read_text())]


def _check_pruning(study) -> None:
    """Every pruned trial was worse, at the evaluation it stopped at, than another trial there (ASHA
    compares a trial with the others that reached the same evaluation, read from the shared database)."""
    for t in study.trials:
        if t.state.name != "PRUNED":
            continue
        step = max(t.intermediate_values)
        others = [o.intermediate_values[step] for o in study.trials
                  if o.number != t.number and step in o.intermediate_values]
        assert others and min(others) < t.intermediate_values[step], (t.number, t.intermediate_values, others)


def test_two_workers_share_one_study_in_postgresql(tmp_path, tiny_bert, postgres_url):
    recipe = _recipe(tmp_path, tiny_bert, postgres_url, "two-workers")
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    workers = [_worker(recipe, logs[0], 4, 11), _worker(recipe, logs[1], 4, 12)]
    codes = _wait(*workers)
    text = [log.read_text() for log in logs]
    assert codes == [0, 0], text[0][-3000:] + text[1][-3000:]

    study = optuna.load_study(study_name="two-workers", storage=postgres_url)
    numbers = [t.number for t in study.trials]
    assert 4 <= len(numbers) <= 5  # the budget is the total; a worker mid-trial finishes it
    assert all(t.state.name in ("COMPLETE", "PRUNED", "FAIL") for t in study.trials)
    # No trial lost or run twice: each trial was started by exactly one worker, once.
    assert sorted(_started(*logs)) == numbers
    assert {t.user_attrs["pid"] for t in study.trials} == {w.pid for w in workers}
    # Trial 0 is the recipe at its own defaults, once, though both workers opened a new study.
    assert [t.number for t in study.trials if t.user_attrs.get("baseline")] == [0]
    assert study.trials[0].params == {"training.learning_rate": 5e-3}
    _check_pruning(study)

    out = tmp_path / "search"
    with open(out / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["number"]) for r in rows] == numbers and [r["state"] for r in rows] == [t.state.name for t in study.trials]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    best = min(complete, key=lambda t: (t.value, t.number))
    summary = json.loads((out / "best" / "search.json").read_text())
    assert summary["best_trial"] == best.number and summary["trials"] == len(numbers)
    assert json.loads((out / "best" / "run.json").read_text())["status"] == "complete"
    # best/ written once: by the last worker to finish; the other left it, or found it written already.
    assert sum(t.count("Published the best trial") for t in text) == 1, text
    assert sorted(p.name for p in (out / "trials").iterdir()) == [f"trial-{best.number:04d}"]


def test_a_worker_killed_mid_trial_leaves_the_study_usable(tmp_path, tiny_bert, postgres_url):
    recipe = _recipe(tmp_path, tiny_bert, postgres_url, "killed-worker")
    logs = [tmp_path / "a.log", tmp_path / "b.log", tmp_path / "c.log"]
    # No pruning in these two workers: which worker draws the learning rate that learns is a race, and
    # a survivor whose trials were all pruned would end "none completed"; a victim whose long trial was
    # pruned would not be killed mid-trial. The victim's trials run 200 epochs, so the kill lands in one.
    survivor = _worker(recipe, logs[0], 3, 21, "search.pruner.type=none")
    victim = _worker(recipe, logs[1], 3, 22, "search.pruner.type=none", "training.num_train_epochs=200")
    deadline = time.monotonic() + 120
    while not _started(logs[1]) and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.2)
    assert _started(logs[1]), logs[1].read_text()[-3000:]
    time.sleep(1.5)  # inside the trial: the model is loading or training
    victim.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    assert _wait(survivor, victim) == [0, -signal.SIGKILL], logs[0].read_text()[-3000:]
    killed = _started(logs[1])[-1]

    # The next command on the study marks the killed trial failed (no heartbeat) and goes on.
    time.sleep(max(0.0, killed_at + GRACE + 1 - time.monotonic()))
    so_far = len(optuna.load_study(study_name="killed-worker", storage=postgres_url).trials)  # the killed one too
    again = _worker(recipe, logs[2], so_far + 1, 23)  # one more trial than the study holds
    assert _wait(again) == [0], logs[2].read_text()[-3000:]
    study = optuna.load_study(study_name="killed-worker", storage=postgres_url)
    states = {t.number: t.state.name for t in study.trials}
    assert states[killed] == "FAIL" and "RUNNING" not in states.values(), states
    assert study.trials[killed].user_attrs["pid"] == victim.pid
    assert sorted(_started(*logs)) == sorted(states)  # the survivor and the next command ran all the others
    assert any(t.user_attrs["pid"] == again.pid for t in study.trials)
    with open(tmp_path / "search" / "trials.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if int(r["number"]) == killed)
    assert row["state"] == "FAIL" and "no heartbeat" in row["error"]
    assert (tmp_path / "search" / "best" / "run.json").is_file()


def test_an_unreachable_or_driverless_storage_is_an_error_naming_the_key_without_the_password():
    from hf_finetune.errors import UserError
    from hf_finetune.search.study import build_storage

    from .helpers.postgres import free_port

    url = f"postgresql+psycopg2://worker:pw-not-shown@127.0.0.1:{free_port()}/hpo"  # nothing listens there
    with pytest.raises(UserError) as caught:
        build_storage(url)
    text = str(caught.value)
    assert text.startswith("search.storage: cannot open postgresql+psycopg2://worker:***@127.0.0.1")
    assert "OperationalError" in text and "pw-not-shown" not in text
    try:
        import pymysql  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match=r"search.storage: mysql\+pymysql://u:\*\*\*@h/db needs a database driver"):
            build_storage("mysql+pymysql://u:pw@h/db")
