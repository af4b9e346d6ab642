"""The Optuna study: its storage (an SQLite file in the output folder, or any SQLAlchemy URL), sampler, pruner.

The study lives in a real database, so running the same command again continues it, a killed search
loses at most the trials that were running (a heartbeat marks them failed for the next worker), and
workers on several machines share one study through one PostgreSQL or MySQL URL.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

from hf_finetune.errors import UserError

logger = logging.getLogger(__name__)

STUDY_FILE = "study.db"
HEARTBEAT_S = 60  # a running trial's worker updates the database this often...
GRACE_S = 180  # ...and a trial not heard of for this long was killed: the next worker marks it failed
FINISHED = ("COMPLETE", "PRUNED", "FAIL")
TRIAL_ZERO_CLAIM = "hf_finetune:trial_zero"  # study system attribute: the worker that enqueued trial 0


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise UserError("tune needs Optuna: pip install 'hf-finetune[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own log lines say what each trial did
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def storage_url(search: Any, out_dir: Path) -> str:
    """The study's database: search.storage, or an SQLite file in the output folder."""
    if search.storage:
        return search.storage
    return f"sqlite:///{(Path(out_dir) / STUDY_FILE).resolve()}"


def shown_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse: the storage will say so itself
        return url


def build_storage(url: str) -> Any:
    optuna = import_optuna()
    from sqlalchemy import exc as sql_errors

    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
        except ImportError as exc:  # a database driver that is not installed (psycopg2, pymysql)
            raise UserError(f"search.storage: {shown_url(url)} needs a database driver: {exc}; for PostgreSQL "
                            "pip install 'hf-finetune[postgres]' (psycopg2-binary)") from None
        except Exception as exc:  # sqlalchemy errors: bad URL, unreachable server, no permission
            if attempt < 2 and isinstance(exc, (sql_errors.IntegrityError, sql_errors.ProgrammingError)):
                # Workers opening a new database at once each create Optuna's tables; the loser of that
                # race finds them half made, and a moment later they exist.
                time.sleep(1 + attempt)
                continue
            raise UserError(f"search.storage: cannot open {shown_url(url)}: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0]}") from None
    raise AssertionError("unreachable")


def build_sampler(search: Any, offset: int) -> Any:
    """The seeded sampler; the seed is offset by the trials already in the study, so a continued study
    does not propose its first trials again."""
    optuna = import_optuna()
    seed = search.sampler.seed + offset
    if search.sampler.type == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: parallel workers treat running trials as bad, so they do not all try the same values.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=search.sampler.startup_trials, constant_liar=True)


def build_pruner(search: Any) -> Any:
    optuna = import_optuna()
    p = search.pruner
    if p.type == "successive_halving":  # asynchronous successive halving (ASHA)
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=p.min_resource, reduction_factor=p.reduction_factor)
    elif p.type == "hyperband":
        pruner = optuna.pruners.HyperbandPruner(min_resource=1 if p.min_resource == "auto" else p.min_resource,
                                                reduction_factor=p.reduction_factor)
    elif p.type == "median":
        pruner = optuna.pruners.MedianPruner(n_warmup_steps=p.warmup_evaluations)
    else:
        return optuna.pruners.NopPruner()
    from hf_finetune.search.onset import LearningOnsetPruner

    return LearningOnsetPruner(pruner) if p.after_learning_onset else pruner


def open_study(search: Any, url: str, name: str, direction: str) -> tuple[Any, Any, bool]:
    """Creates the study or loads the existing one of that name (then continuing it).

    Returns:
        (the study, its storage, True when this command created it). Creating is atomic in the database
        (a unique study name), so of several workers starting a new shared study at once exactly one
        creates it.

    Raises:
        UserError: the stored study optimizes in the other direction, or the storage cannot be used.
    """
    optuna = import_optuna()
    storage = build_storage(url)
    existing = {s.study_name: s for s in optuna.study.get_all_study_summaries(storage)}
    if name in existing:
        stored = existing[name].direction.name.lower()
        if stored != direction:
            raise UserError(f"search.objective.direction: the study '{name}' in {shown_url(url)} was created to "
                            f"{stored}, not {direction}; set search.study_name to start another study")
    offset = existing[name].n_trials if name in existing else 0
    sampler, pruner = build_sampler(search, offset), build_pruner(search)
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction=direction, sampler=sampler,
                                    pruner=pruner)
        created = True
    except optuna.exceptions.DuplicatedStudyError:  # it exists, or another worker created it a moment ago
        study = optuna.load_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner)
        created = False
    # Trials of workers that were killed (no heartbeat for GRACE_S) are marked failed now, not only when
    # this command starts its next trial (which it does not do when the budget is spent already).
    optuna.storages.fail_stale_trials(study)
    return study, storage, created


def claim_trial_zero(storage: Any, name: str) -> bool:
    """True for exactly one caller per study, ever: the one that enqueues trial 0.

    An INSERT of one row into Optuna's own study_system_attributes table, whose (study, key) pair is unique
    in every database Optuna supports: of several workers claiming at once, one insert commits and the
    others fail on the constraint. Optuna's own `enqueue_trial(skip_if_exists=True)` checks and then
    inserts, so two workers can both pass the check.
    """
    # Optuna's own table definitions: the storage is always an RDBStorage (build_storage).
    from optuna.storages._rdb import models
    from sqlalchemy import exc as sql_errors
    from sqlalchemy import orm

    claim = models.StudySystemAttributeModel(study_id=storage.get_study_id_from_name(name), key=TRIAL_ZERO_CLAIM,
                                             value_json=json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    with orm.Session(storage.engine) as session:
        session.add(claim)
        try:
            session.commit()
        except sql_errors.IntegrityError:
            session.rollback()
            return False
    return True


def release_trial_zero(storage: Any, name: str) -> None:
    """Deletes the claim of `claim_trial_zero`: its holder could not enqueue trial 0."""
    from optuna.storages._rdb import models
    from sqlalchemy import orm

    with orm.Session(storage.engine) as session:
        session.query(models.StudySystemAttributeModel).filter_by(
            study_id=storage.get_study_id_from_name(name), key=TRIAL_ZERO_CLAIM).delete()
        session.commit()


def finished_trials(study: Any) -> int:
    optuna = import_optuna()
    states = tuple(getattr(optuna.trial.TrialState, s) for s in FINISHED)
    return len(study.get_trials(deepcopy=False, states=states))
