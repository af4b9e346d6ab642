"""Hyperparameter search on Optuna: `hf-finetune tune RECIPE`, from one process to many machines.

    space     the searched recipe keys: checks before any trial, the default space, sampling (no Optuna import)
    study     the Optuna study: storage (SQLite file or any SQLAlchemy URL), sampler, pruner
    trials    one trial = one ordinary pipeline run in its own folder; the pruning callback; other ranks' loop
    ranks     several processes: rank 0 decides, every rank follows (broadcasts)
    outputs   trials.csv, Optuna's plots, the best trial's model folder
    tune      the command: check, open the study, optimize, report

Optuna is an optional dependency (`pip install 'hf-finetune[tune]'`); only `study` and what runs
trials import it.
"""
