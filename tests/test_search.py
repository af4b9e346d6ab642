"""`hf-finetune tune`: the search section's checks, the default space, and real searches (one and two processes).

The searches use a seeded random sampler over values chosen to make each kind of trial happen in a
known order: a learning rate that learns (5e-3) and one that diverges (1.0, pruned at its first
evaluation against the first trial), class weights that make the loss infinite (a non-finite-loss
failure) and three weights for two labels (a UserError from the run).
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from hf_finetune.errors import RecipeError
from hf_finetune.recipe import validate_recipe

from .conftest import REPO, review_rows, write_csv, write_recipe
from .helpers.launch import two_process_launch

optuna = pytest.importorskip("optuna")

# With RandomSampler(seed=197) these choices come out as: (5e-3, none) complete, (1.0, none) pruned,
# (1.0, infinite weight) non-finite loss, (5e-3, three weights) a DataError, then anything.
SEEDED_SPACE = {
    "training.learning_rate": {"choices": [5e-3, 1.0]},
    "finetune.class_weights": {"choices": [None, [float("inf"), 1.0], [1.0, 2.0, 3.0]]},
}
SEED = 197


def _base(tmp_path: Path, tiny_bert: Path) -> dict:
    files = {split: str(write_csv(tmp_path / "data" / f"{split}.csv", review_rows(n, seed=seed)))
             for split, n, seed in (("train", 32, 0), ("validation", 16, 1), ("test", 16, 2))}
    return {
        "task": "text-classification",
        "model": {"name": str(tiny_bert)},
        "data": {"files": files, "cache_dir": str(tmp_path / "cache")},
        "training": {"num_train_epochs": 2, "per_device_train_batch_size": 16, "per_device_eval_batch_size": 16,
                     "logging_steps": 1, "learning_rate": 1e-3},
        "batch": {"global_size": 16},
        "search": {"space": SEEDED_SPACE, "objective": {"metric": "loss"},
                   "sampler": {"type": "random", "seed": SEED}, "trials": 4},
        "output": {"dir": str(tmp_path / "search")},
    }


def _rows(folder: Path) -> list[dict]:
    with open(folder / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_search_mistakes_are_recipe_errors_with_key_paths_all_at_once():
    raw = {"task": "text-classification", "model": {"name": "m"}, "data": {"dataset": "d"},
           "search": {"space": {"training.learnin_rate": {"low": 1e-5, "high": 1e-3},
                                "training.warmup_steps": {"low": 0.0, "high": 0.2, "log": True},
                                "training.num_train_epochs": {"low": 8, "high": 2},
                                "model.nme": {"choices": ["a"]},
                                "output.dir": {"choices": ["x"]}},
                      "objective": {"metric": "f1s"}}}
    with pytest.raises(RecipeError) as caught:
        validate_recipe(raw)
    text = str(caught.value)
    assert "search.space.training.learnin_rate: not a recipe key" in text and "did you mean 'learning_rate'" in text
    assert "search.space.training.warmup_steps: log scale needs low > 0, got low 0" in text
    assert "search.space.training.num_train_epochs: low (8) is greater than high (2)" in text
    assert "search.space.model.nme: not a recipe key" in text and "did you mean 'name'" in text
    assert "search.space.output.dir: cannot be searched" in text
    assert "search.objective.metric: 'f1s' is not produced by this run" in text and "did you mean 'f1'" in text
    assert len(caught.value.problems) == 6

    # Each edge of the space must make a valid recipe; nested keys are the same as dotted ones.
    raw["search"] = {"space": {"training": {"per_device_train_batch_size": {"choices": [8, 0]}},
                               "finetune.strategy": {"choices": ["full", "lin_probe"]}}}
    with pytest.raises(RecipeError) as caught:
        validate_recipe(raw)
    paths = [p.path for p in caught.value.problems]
    assert paths == ["search.space.training.per_device_train_batch_size.choices[1]",
                     "search.space.finetune.strategy.choices[1]"]
    assert "did you mean 'linear_probe'" in str(caught.value)

    raw["search"] = {"pruner": {"type": "median"}}
    raw["training"] = {"eval_strategy": "no", "load_best_model_at_end": False}
    with pytest.raises(RecipeError, match="search.pruner.type: 'median' prunes at evaluations"):
        validate_recipe(raw)


def test_recipes_without_search_stay_as_they_were_and_the_default_space_fits_the_recipe():
    from hf_finetune.search.space import default_space, resolve_space

    plain = validate_recipe({"task": "text-classification", "model": {"name": "m"}, "data": {"dataset": "d"}})
    assert "search" not in plain.to_dict()
    space, is_default = resolve_space(plain)
    assert is_default and set(space) == {"training.learning_rate", "finetune.head_learning_rate",
                                         "training.num_train_epochs", "training.per_device_train_batch_size",
                                         "training.warmup_steps", "finetune.class_weights"}
    probe = validate_recipe({"task": "image-classification", "model": {"name": "m"}, "data": {"dataset": "d"},
                             "finetune": {"strategy": "linear_probe", "cache_features": True},
                             "batch": {"global_size": 32}})
    keys = set(default_space(probe))
    assert "batch.global_size" in keys and "finetune.head_learning_rate" not in keys
    assert "finetune.class_weights" in keys  # a probe's loss takes class weights too


def test_tune_records_complete_pruned_and_failed_trials_publishes_the_best_and_continues(tmp_path, tiny_bert):
    from transformers import pipeline

    from hf_finetune.cli import main

    recipe = write_recipe(tmp_path / "search.yaml", _base(tmp_path, tiny_bert))
    assert main(["tune", str(recipe)]) == 0
    out = tmp_path / "search"
    rows = _rows(out)
    assert [r["state"] for r in rows] == ["COMPLETE", "PRUNED", "FAIL", "FAIL"]
    assert rows[1]["evaluations"] == "1"  # pruned at its first evaluation, against trial 0
    assert "loss became NaN or infinite" in rows[2]["error"]
    assert "DataError" in rows[3]["error"] and "3 weights for 2 labels" in rows[3]["error"]
    assert float(rows[0]["validation_loss"]) > 0 and float(rows[0]["duration_s"]) > 0
    assert rows[0]["training.learning_rate"] == "0.005"
    # Only the best trial's folder stays; the best model is an ordinary output folder.
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["trial-0000"]
    best = out / "best"
    assert (best / "run.json").is_file() and (out / "optimization_history.png").stat().st_size > 1000
    answer = pipeline("text-classification", model=str(best))("the movie was great")
    assert answer[0]["label"] in {"neg", "pos"}
    card = (best / "README.md").read_text()
    assert "## Hyperparameter search" in card and "trial 0 of a hyperparameter search of 4 trials" in card
    assert "1 complete, 2 fail, 1 pruned" in card and "`training.learning_rate` | one of `0.005`, `1.0`" in card
    summary = json.loads((best / "search.json").read_text())
    assert summary["best_params"] == {"training.learning_rate": 0.005, "finetune.class_weights": None}
    assert yaml.safe_load((best / "recipe.yaml").read_text())["output"]["dir"] == str(best)

    # The same command again continues the study (in study.db) up to the new budget.
    assert main(["tune", str(recipe), "--trials", "5", "search.pruner.type=none"]) == 0
    rows = _rows(out)
    assert [r["number"] for r in rows] == ["0", "1", "2", "3", "4"] and rows[4]["state"] in ("COMPLETE", "FAIL")
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 5


def test_the_default_space_is_centred_on_the_run_values_and_trial_0_is_the_default_run():
    from hf_finetune.recipe.schema import SearchDimension
    from hf_finetune.search.defaults import baseline_params, centred_space
    from hf_finetune.search.space import default_space

    plain = validate_recipe({"task": "text-classification", "model": {"name": "m"}, "data": {"dataset": "d"},
                             "training": {"per_device_train_batch_size": 4}})
    values = {"training.learning_rate": 1e-4, "finetune.head_learning_rate": 1e-3, "training.num_train_epochs": 7.0,
              "training.per_device_train_batch_size": 4, "training.warmup_steps": 0.1,
              "finetune.class_weights": "balanced"}
    space = centred_space(default_space(plain), values)
    assert space["training.learning_rate"] == {"low": 3.33e-05, "high": 3e-4, "log": True}  # printed as written
    assert space["finetune.head_learning_rate"]["low"] == 3.33e-4
    assert space["training.num_train_epochs"] == {"low": 4, "high": 14}
    assert space["training.per_device_train_batch_size"]["choices"] == [4, 8, 16, 32]  # the run's own is a choice
    dims = {k: SearchDimension(**v) for k, v in space.items()}
    params, misses = baseline_params(dims, values)
    assert misses == [] and params["training.num_train_epochs"] == 7 and isinstance(params["training.num_train_epochs"], int)
    # A user's space that cannot take the run's value: no baseline trial for that key.
    narrow = {"training.learning_rate": SearchDimension(choices=[5e-3, 1.0]),
              "finetune.class_weights": SearchDimension(choices=[None, [1.0, 2.0]])}
    params, misses = baseline_params(narrow, {"training.learning_rate": 1e-3, "finetune.class_weights": None})
    assert misses == ["training.learning_rate"] and params == {"finetune.class_weights": "null"}


def test_trial_0_is_enqueued_once_when_two_workers_open_a_new_study_together(tmp_path, monkeypatch):
    from hf_finetune.recipe.schema import SearchDimension
    from hf_finetune.search.study import TRIAL_ZERO_CLAIM, build_storage, claim_trial_zero
    from hf_finetune.search.tune import enqueue_baseline

    url = f"sqlite:///{tmp_path / 'study.db'}"
    space = {"training.learning_rate": SearchDimension(choices=[5e-3, 1.0])}
    values = {"training.learning_rate": 5e-3}
    a, b = build_storage(url), build_storage(url)
    study_a = optuna.create_study(storage=a, study_name="s")
    study_b = optuna.load_study(storage=b, study_name="s")  # B opens it after A created it: B finds it empty
    # Both workers' looks for an existing trial 0 ran before either inserted one (the race CI hit): Optuna's
    # own check-then-insert cannot tell them apart.
    monkeypatch.setattr(optuna.Study, "_should_skip_enqueue", lambda self, params: False)
    enqueued = [enqueue_baseline(study_b, b, False, space, values), enqueue_baseline(study_a, a, True, space, values)]
    assert enqueued == [True, False]
    trials = optuna.load_study(storage=url, study_name="s").trials
    assert len(trials) == 1 and trials[0].user_attrs == {"baseline": "the recipe's defaults"}
    assert set(a.get_study_system_attrs(study_a._study_id)[TRIAL_ZERO_CLAIM]) == {"host", "pid"}
    # A study with trials already (continued, or begun by a version without the claim) gets no second trial 0.
    assert enqueue_baseline(optuna.load_study(storage=build_storage(url), study_name="s"), a, False, space, values) is False
    # A worker that could not enqueue after claiming gives the claim back, for the next command.
    c = build_storage(url)
    study_c = optuna.create_study(storage=c, study_name="t")
    monkeypatch.setattr(optuna.Study, "enqueue_trial", lambda *a, **k: (_ for _ in ()).throw(OSError("lost the server")))
    with pytest.raises(OSError):
        enqueue_baseline(study_c, c, True, space, values)
    assert TRIAL_ZERO_CLAIM not in c.get_study_system_attrs(study_c._study_id) and claim_trial_zero(c, "t")


def test_run_values_are_what_one_run_of_the_recipe_trains_with(vision_recipe):
    """The data-aware defaults where the recipe is silent (a CNN's rate), the recipe's own value where it speaks."""
    from hf_finetune.search.defaults import run_values
    from hf_finetune.training.data_aware import CNN_LR, HEAD_LR_FACTOR

    raw = {k: v for k, v in vision_recipe.items() if k != "training"}
    raw["training"] = {"num_train_epochs": 2, "per_device_train_batch_size": 8}
    keys = ["training.learning_rate", "finetune.head_learning_rate", "training.num_train_epochs",
            "training.warmup_steps", "finetune.class_weights", "training.weight_decay", "model.nme"]
    values = run_values(validate_recipe(raw), keys)
    assert values["training.learning_rate"] == CNN_LR and values["finetune.head_learning_rate"] == CNN_LR * HEAD_LR_FACTOR
    assert values["training.num_train_epochs"] == 2 and values["training.warmup_steps"] == 0.1
    assert values["finetune.class_weights"] is None and values["training.weight_decay"] == 0.0
    assert "model.nme" not in values  # not a key of the recipe: no value, so no baseline trial


def test_run_values_know_the_attention_dropout_a_text_run_trains_with(text_recipe):
    """Unset in the recipe, it is decided when the backbone is built (0): tune's trial 0 must see that value."""
    from hf_finetune.models.attention import FINE_TUNING_ATTENTION_DROPOUT
    from hf_finetune.search.defaults import run_values

    assert run_values(validate_recipe(dict(text_recipe)), ["model.attention_dropout"]) == {
        "model.attention_dropout": FINE_TUNING_ATTENTION_DROPOUT}
    raw = {**text_recipe, "model": {**text_recipe["model"], "attention_dropout": 0.1}}
    assert run_values(validate_recipe(raw), ["model.attention_dropout"]) == {"model.attention_dropout": 0.1}


def test_the_objective_is_the_selection_metric_one_run_would_use(tmp_path, tiny_bert):
    """Imbalanced classes: the run selects on macro-F1 (data-aware), so the search optimizes it too."""
    from hf_finetune.search.defaults import run_values
    from hf_finetune.search.tune import resolve_objective

    rows = [r for r in review_rows(40, seed=0) if r["label"] == "neg"][:16]
    rows += [r for r in review_rows(40, seed=1) if r["label"] == "pos"][:4]
    files = {"train": str(write_csv(tmp_path / "train.csv", rows)),
             "validation": str(write_csv(tmp_path / "validation.csv", review_rows(8, seed=2)))}
    raw = {"task": "text-classification", "model": {"name": str(tiny_bert)},
           "data": {"files": files, "cache_dir": str(tmp_path / "cache")}, "output": {"dir": str(tmp_path / "o")}}
    selected = run_values(validate_recipe(raw), ["training.metric_for_best_model"])["training.metric_for_best_model"]
    assert selected == "f1" and resolve_objective(validate_recipe(raw), selected) == ("f1", "maximize")
    raw["search"] = {"objective": {"metric": "loss"}}  # the search's own objective wins
    assert resolve_objective(validate_recipe(raw), selected) == ("loss", "minimize")


def test_a_default_space_search_starts_with_the_default_run(tmp_path, tiny_bert):
    """Trial 0 trains with exactly the values one ordinary run picks (data-aware learning rates here)."""
    from hf_finetune.cli import main

    raw = _base(tmp_path, tiny_bert)
    raw["training"] = {"num_train_epochs": 2, "per_device_eval_batch_size": 16}
    raw.pop("batch")
    raw["search"] = {"sampler": {"type": "random", "seed": SEED}, "pruner": {"type": "none"}, "trials": 2,
                     "keep_trials": True}
    assert main(["tune", str(write_recipe(tmp_path / "search.yaml", raw))]) == 0
    out = tmp_path / "search"
    rows = _rows(out)
    assert [r["baseline"] for r in rows] == ["yes", ""]
    # The tiny encoder is a small text model: the data-aware rate 1e-4, its head 10x, warmup 0.1.
    assert float(rows[0]["training.learning_rate"]) == pytest.approx(1e-4)
    assert float(rows[0]["finetune.head_learning_rate"]) == pytest.approx(1e-3)
    assert rows[0]["training.num_train_epochs"] == "2" and rows[0]["training.warmup_steps"] == "0.1"
    trained = yaml.safe_load((out / "trials" / "trial-0000" / "recipe.yaml").read_text())
    assert trained["training"]["learning_rate"] == pytest.approx(1e-4)
    assert trained["finetune"]["head_learning_rate"] == pytest.approx(1e-3)
    # The space around it: 3x either way, epochs from half to twice.
    space = json.loads((out / "best" / "search.json").read_text())["space"]
    assert space["training.learning_rate"]["high"] == pytest.approx(3e-4)
    assert space["training.num_train_epochs"] == {"low": 1, "high": 4}
    card = (out / "best" / "README.md").read_text()
    assert "the recipe at its own defaults" in card


def test_tune_refuses_a_folder_holding_a_training_run(tmp_path, tiny_bert):
    from hf_finetune.cli import main

    raw = _base(tmp_path, tiny_bert)
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "run.json").write_text('{"status": "complete"}')
    assert main(["tune", str(write_recipe(tmp_path / "r.yaml", raw))]) == 2
    assert sorted(p.name for p in (tmp_path / "search").iterdir()) == ["run.json"]


@pytest.mark.slow
def test_two_processes_run_every_trial_together_and_none_hangs(tmp_path, tiny_bert):
    """A real 2-process CPU search (accelerate, gloo): a complete, a pruned and a non-finite-loss trial go by
    on both ranks; a trial that fails otherwise stops every rank with a message instead of hanging."""
    raw = _base(tmp_path, tiny_bert)
    recipe = write_recipe(tmp_path / "ddp.yaml", raw)
    command = two_process_launch("-m", "hf_finetune.cli", "tune", str(recipe))
    launched = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)
    output = launched.stdout + launched.stderr
    assert launched.returncode != 0, output[-3000:]
    assert "trial 3 failed on process" in output and "stops here on every process" in output
    assert output.count("Batch: 16 samples per optimizer step = 2 processes x 8 per device") == 4
    out = tmp_path / "search"
    study = optuna.load_study(study_name="ddp", storage=f"sqlite:///{out / 'study.db'}")
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "PRUNED", "FAIL", "FAIL"]
    assert study.trials[1].user_attrs["evaluations"] == 1
    assert _rows(out)[2]["state"] == "FAIL"  # trials.csv is written after every finished trial


def test_trials_keep_the_probe_that_the_runs_defaults_chose():
    from hf_finetune.search.defaults import pin_strategy
    from hf_finetune.search.space import default_space

    recipe = validate_recipe({"task": "text-classification", "model": {"name": "m"}, "data": {"dataset": "d"}})
    raw = {"task": "text-classification", "model": {"name": "m"}, "data": {"dataset": "d"}}
    values = {"finetune.strategy": "linear_probe", "finetune.cache_features": True, "training.learning_rate": 0.01}
    pinned, pinned_raw = pin_strategy(recipe, raw, values)
    assert pinned_raw["finetune"] == {"strategy": "linear_probe", "cache_features": True} and "finetune" not in raw
    assert pinned.finetune.strategy == "linear_probe" and pinned.finetune.cache_features
    assert "finetune.head_learning_rate" not in default_space(pinned)  # the head is the whole model
    same, same_raw = pin_strategy(recipe, raw, {"finetune.strategy": "full", "finetune.cache_features": False})
    assert same is recipe and same_raw is raw
    user = validate_recipe({**raw, "finetune": {"strategy": "full"}})
    assert pin_strategy(user, raw, values)[0].finetune.strategy == "full"  # the recipe's own choice wins


def test_tune_where_every_trial_failed_says_so_with_a_non_zero_exit(tmp_path, tiny_bert, capsys):
    from hf_finetune.cli import main

    raw = _base(tmp_path, tiny_bert)
    # Three weights for two labels: every trial fails in its pre-flight, before training (no baseline
    # trial: the recipe's own value, no class weights, is not in the space).
    raw["search"].update(space={"finetune.class_weights": {"choices": [[1.0, 2.0, 3.0]]}}, trials=2)
    assert main(["tune", str(write_recipe(tmp_path / "r.yaml", raw))]) == 1
    captured = capsys.readouterr()
    assert "error: tune: none of the 2 trials completed (2 fail)" in captured.err
    assert "gives 3 weights for 2 labels" in captured.err and "trials.csv" in captured.err
    assert captured.out == "" and not (tmp_path / "search" / "best").exists()
    assert [r["state"] for r in _rows(tmp_path / "search")] == ["FAIL", "FAIL"]


def test_run_values_make_the_runs_few_label_choice_by_its_k_fold(tmp_path, tiny_bert):
    """Few labels that the frozen features cannot separate: the run's k-fold of the probe turns it to full
    fine-tuning (training/few_label.py), so tune's trial 0 and the strategy pinned for every trial must be
    that too, not the probe that the row count alone would call for."""
    import random
    import shutil

    from hf_finetune import train
    from hf_finetune.search.defaults import run_values
    from hf_finetune.testing import write_sentence_transformers_config

    encoder = write_sentence_transformers_config(shutil.copytree(tiny_bert, tmp_path / "st"), "mean")
    rng = random.Random(0)
    labels = ("a", "b", "c")
    train_rows = [{**r, "label": rng.choice(labels)} for r in review_rows(24, seed=0)]  # labels unrelated to text
    valid_rows = [{**r, "label": labels[i % 3]} for i, r in enumerate(review_rows(6, seed=1))]  # 2 rows a class
    files = {"train": str(write_csv(tmp_path / "train.csv", train_rows)),
             "validation": str(write_csv(tmp_path / "validation.csv", valid_rows))}
    raw = {"task": "text-classification", "model": {"name": str(encoder)},
           "data": {"files": files, "cache_dir": str(tmp_path / "cache")}, "output": {"dir": str(tmp_path / "run")}}
    keys = ["finetune.strategy", "finetune.cache_features", "training.learning_rate", "training.num_train_epochs",
            "training.load_best_model_at_end"]
    values = run_values(validate_recipe(raw), keys)
    assert values["finetune.strategy"] == "full" and values["training.load_best_model_at_end"] is False
    ran = yaml.safe_load((train(raw).output_dir / "recipe.yaml").read_text())
    assert ran["finetune"]["strategy"] == "full" and ran["finetune"].get("cache_features", False) is False
    assert values["training.learning_rate"] == ran["training"]["learning_rate"]
    assert values["training.num_train_epochs"] == ran["training"]["num_train_epochs"]


def test_a_delayed_evaluation_is_named_before_a_pruned_search():
    """A search started from an ordinary run's resolved recipe.yaml keeps its data-aware eval_delay 1.5: the
    warning says that no trial can be pruned before it, and how to judge from the first evaluation."""
    from hf_finetune.search.tune import delayed_reports

    raw = {"task": "text-classification", "model": {"name": "m"}, "data": {"dataset": "d"},
           "training": {"eval_delay": 1.5}}
    note = delayed_reports(validate_recipe(raw))
    assert note is not None and note.startswith("training.eval_delay 1.5: no trial is evaluated, so none can be "
                                                "pruned, before 1.5 epochs of its run")
    assert note.endswith("set training.eval_delay: 0 for the pruner to judge from the first evaluation")
    steps = {**raw, "training": {"eval_delay": 50, "eval_strategy": "steps", "eval_steps": 25,
                                                     "save_strategy": "steps", "save_steps": 25}}
    assert "before 50 steps" in delayed_reports(validate_recipe(steps))
    assert delayed_reports(validate_recipe({**raw, "search": {"pruner": {"type": "none"}}})) is None
    assert delayed_reports(validate_recipe({**raw, "training": {"eval_delay": 0}})) is None
    assert delayed_reports(validate_recipe({k: v for k, v in raw.items() if k != "training"})) is None
