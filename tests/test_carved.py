"""Runs whose validation split was carved from train: every command on a finished run finds the same rows.

The data most users bring is a train file and a test file (or an image folder without a validation
folder): training carves validation from train. Each command that reads a finished run's data again
(evaluate, ensemble, soups, distillation, self-training, rank and tune on the run's recipe.yaml)
must rebuild those rows exactly, refuse runs that carved differently, and name a change in the data.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml

from hf_finetune.cli import main
from hf_finetune.data.carved import CarveMismatchError, DifferentCarveError

from .conftest import review_rows, write_csv, write_recipe

SAME = ("accuracy", "f1", "num_samples", "confusion_matrix")
KINDS = ("text", "vision")


def read(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _edit(path: Path, change) -> None:
    """Rewrites a run's run.json or recipe.yaml through `change(mapping)`."""
    path = Path(path)
    load, dump = (json.loads, json.dumps) if path.suffix == ".json" else (yaml.safe_load, yaml.safe_dump)
    value = load(path.read_text())
    change(value)
    path.write_text(dump(value))


def _copy(run: Path, dest: Path) -> Path:
    return Path(shutil.copytree(run, dest))


def _base_recipe(kind: str, root: Path, tiny_bert: Path, tiny_resnet: Path) -> dict:
    """A train + test recipe (no validation split) of each kind."""
    if kind == "text":
        files = {split: str(write_csv(root / "data" / f"{split}.csv", review_rows(n, seed=seed)))
                 for split, n, seed in (("train", 48, 0), ("test", 16, 2))}
        return {"task": "text-classification", "model": {"name": str(tiny_bert)},
                "data": {"files": files, "validation_size": 0.25, "cache_dir": str(root / "cache")},
                "training": {"num_train_epochs": 4, "per_device_train_batch_size": 8, "learning_rate": 1.0e-3,
                             "save_strategy": "no", "load_best_model_at_end": False, "bf16": False}}
    from hf_finetune.testing import write_pattern_folder

    folder = write_pattern_folder(root / "patterns", {"train": 8, "test": 3}, size=32)  # no validation folder
    return {"task": "image-classification", "model": {"name": str(tiny_resnet)},
            "data": {"image_folder": str(folder), "validation_size": 6},
            "training": {"num_train_epochs": 1, "per_device_train_batch_size": 8, "learning_rate": 1.0e-3,
                         "save_strategy": "no", "load_best_model_at_end": False, "bf16": False}}


@pytest.fixture(scope="module", params=KINDS)
def carved(request, tmp_path_factory, tiny_bert, tiny_resnet) -> dict:
    """Two finished runs of one train + test recipe (training seeds 42 and 43), and that recipe."""
    kind = request.param
    root = tmp_path_factory.mktemp(f"carved-{kind}")
    recipe = _base_recipe(kind, root, tiny_bert, tiny_resnet)
    runs = []
    for seed in (42, 43):
        one = copy.deepcopy(recipe)
        one["training"]["seed"] = seed
        one["output"] = {"dir": str(root / f"run{seed}")}
        assert main(["train", str(write_recipe(root / f"recipe{seed}.yaml", one))]) == 0
        runs.append(root / f"run{seed}")
    return {"kind": kind, "runs": runs, "recipe": recipe, "root": root}


def test_the_run_records_its_carve_and_its_recipe_carves_again(carved, tmp_path):
    run = carved["runs"][0]
    entry = read(run / "run.json")["splits"]["validation"]
    record = entry["carved"]
    assert record["from"] == "train" and record["seed"] == 42 and record["rows"] == entry["rows"]
    assert record["from_rows"] == entry["rows"] + read(run / "run.json")["splits"]["train"]["rows"]
    assert len(record["fingerprint"]) == 32 and record["train_fingerprint"] != record["fingerprint"]
    # Both runs carved the same rows (the training seed does not move the carve).
    assert read(carved["runs"][1] / "run.json")["splits"]["validation"]["carved"] == record
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    assert recipe["data"]["splits"]["validation"] is None  # "carved", so reading it again carves again
    assert main(["check", str(run / "recipe.yaml"), f"output.dir={tmp_path / 'again'}"]) == 0


def test_evaluate_scores_the_carved_validation_as_the_run_did(carved, tmp_path, capsys):
    run = _copy(carved["runs"][0], tmp_path / "run")
    assert main(["evaluate", str(run), "--split", "validation"]) == 0
    report, metrics = read(run / "evaluation-validation.json"), read(run / "metrics.json")["validation"]
    assert {k: report[k] for k in SAME} == {k: metrics[k] for k in SAME}
    assert report["loss"] == pytest.approx(metrics["loss"], abs=1e-4)
    assert report["source"]["rows"] == read(run / "run.json")["splits"]["validation"]["rows"]
    # train is the rows the run trained on: without the carved ones
    assert main(["evaluate", str(run), "--split", "train"]) == 0
    assert read(run / "evaluation-train.json")["num_samples"] == read(run / "run.json")["splits"]["train"]["rows"]
    # the test split, as before
    assert main(["evaluate", str(run)]) == 0
    assert read(run / "evaluation-test.json")["accuracy"] == read(run / "metrics.json")["test"]["accuracy"]


def test_logit_ensemble_and_soups_of_carved_runs(carved, tmp_path, capsys):
    runs = [str(r) for r in carved["runs"]]
    assert main(["ensemble", str(tmp_path / "ens"), *runs, "--method", "logits", "--weights", "validation"]) == 0
    metrics = read(tmp_path / "ens" / "metrics.json")
    rows = read(carved["runs"][0] / "run.json")["splits"]["validation"]["rows"]
    assert metrics["validation"]["num_samples"] == rows and "test" in metrics
    for run, name in zip(carved["runs"], ("run42", "run43"), strict=True):  # each member as it scored itself
        assert metrics["members"][name]["validation"]["accuracy"] == read(run / "metrics.json")["validation"]["accuracy"]
    assert main(["evaluate", str(tmp_path / "ens"), "--split", "validation"]) == 0
    assert read(tmp_path / "ens" / "evaluation-validation.json")["accuracy"] == metrics["validation"]["accuracy"]

    assert main(["ensemble", str(tmp_path / "soup"), *runs, "--method", "greedy-soup"]) == 0
    soup = read(tmp_path / "soup" / "metrics.json")
    assert soup["validation"]["num_samples"] == rows and soup["soup"]["ingredients"] and "test" in soup
    assert main(["evaluate", str(tmp_path / "soup"), "--split", "validation"]) == 0
    assert read(tmp_path / "soup" / "evaluation-validation.json")["accuracy"] == soup["validation"]["accuracy"]


def test_members_that_carved_differently_are_refused_unless_data_is_named(carved, tmp_path, capsys):
    first = carved["runs"][0]
    other = _copy(carved["runs"][1], tmp_path / "seed7")
    _edit(other / "recipe.yaml", lambda r: r["data"].update(seed=7))
    _edit(other / "run.json", lambda r: r["splits"]["validation"]["carved"].update(seed=7, fingerprint="0" * 32))
    for method in ("logits", "greedy-soup"):
        assert main(["ensemble", str(tmp_path / method), str(first), str(other), "--method", method]) == 2
        err = capsys.readouterr().err
        assert f"{other} carved its validation differently from {first} (data.seed 7 vs 42)" in err
        assert "--data" in err
    sized = _copy(carved["runs"][1], tmp_path / "sized")
    _edit(sized / "run.json", lambda r: r["splits"]["validation"]["carved"].update(size=0.5, fingerprint="1" * 32))
    with pytest.raises(DifferentCarveError, match=r"data.validation_size 0.5 vs"):
        from hf_finetune.combine.ensemble import build_ensemble

        build_ensemble(tmp_path / "sized-ens", [first, sized])

    # With --data, every member is scored on the rows named there, whatever it carved.
    if carved["kind"] == "text":
        write_csv(tmp_path / "held" / "validation.csv", review_rows(10, seed=9))
        write_csv(tmp_path / "held" / "test.csv", review_rows(8, seed=10))
        one_file, folder = write_csv(tmp_path / "holdout.csv", review_rows(10, seed=9)), tmp_path / "held"
    else:
        from hf_finetune.testing import write_pattern_folder

        folder = write_pattern_folder(tmp_path / "held", {"validation": 2, "test": 2}, size=32, seed=5)
        one_file = None
    assert main(["ensemble", str(tmp_path / "on-data"), str(first), str(other), "--data", str(folder),
                 "--method", "greedy-soup"]) == 0
    metrics = read(tmp_path / "on-data" / "metrics.json")
    assert metrics["validation"]["num_samples"] == (10 if one_file else 6)
    assert metrics["test"]["num_samples"] == (8 if one_file else 6)
    assert read(tmp_path / "on-data" / "run.json")["scored_on"] == str(folder)
    if one_file is not None:  # a single file of another name than test is the validation split
        assert main(["ensemble", str(tmp_path / "on-file"), str(first), str(other), "--data", str(one_file)]) == 0
        metrics = read(tmp_path / "on-file" / "metrics.json")
        assert metrics["validation"]["num_samples"] == 10 and "test" not in metrics


@pytest.fixture
def text_carved(carved):
    if carved["kind"] != "text":
        pytest.skip("text only")
    return carved


def test_carved_and_split_validation_members_are_refused(text_carved, text_run, tmp_path, capsys):
    run = text_carved["runs"][0]
    assert main(["ensemble", str(tmp_path / "ens"), str(text_run), str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run} carved its validation from its training data" in err
    assert f"but {text_run} validated on a split of its data" in err


def test_changed_data_is_named_instead_of_scoring_other_rows(text_carved, tmp_path, capsys):
    source = Path(text_carved["recipe"]["data"]["files"]["train"])
    rows = review_rows(48, seed=0)

    def pointing_at(name: str, changed: list[dict]) -> Path:
        run = _copy(text_carved["runs"][0], tmp_path / name)
        train = write_csv(tmp_path / f"{name}.csv", changed)
        _edit(run / "recipe.yaml", lambda r: r["data"]["files"].update(train=[str(train)]))
        return run

    more = pointing_at("more", rows + review_rows(2, seed=11))
    assert main(["evaluate", str(more), "--split", "validation"]) == 2
    err = capsys.readouterr().err
    assert "the data changed since the run (split 'train' has 50 rows now, 48 when the run carved" in err
    assert "--data" in err
    edited = [dict(r) for r in rows]
    edited[5]["text"] = "an entirely new review"
    other = pointing_at("edited", edited)
    with pytest.raises(CarveMismatchError, match=r"split 'train' holds other rows now \(the same count, 48"):
        from hf_finetune.finished.evaluate import evaluate_output

        evaluate_output(other, split="validation")
    # An ensemble whose first member's data changed says so too.
    assert main(["ensemble", str(tmp_path / "ens"), str(other), str(text_carved["runs"][1])]) == 2
    assert "holds other rows now" in capsys.readouterr().err
    # The same rows (a copy of the file) rebuild the same carve.
    same = pointing_at("same", rows)
    assert Path(source).read_text() == (tmp_path / "same.csv").read_text()
    assert main(["evaluate", str(same), "--split", "validation"]) == 0


def test_runs_from_before_the_record_rebuild_from_their_recipe(text_carved, tmp_path):
    run = _copy(text_carved["runs"][0], tmp_path / "old")
    _edit(run / "run.json", lambda r: r["splits"]["validation"].pop("carved"))
    _edit(run / "recipe.yaml", lambda r: r["data"]["splits"].update(validation="validation"))
    assert main(["evaluate", str(run), "--split", "validation"]) == 0
    assert read(run / "evaluation-validation.json")["accuracy"] == read(run / "metrics.json")["validation"]["accuracy"]
    assert main(["ensemble", str(tmp_path / "ens"), str(run), str(text_carved["runs"][1])]) == 0


def test_distilling_from_a_carved_teacher(carved, tmp_path):
    import hf_finetune

    student = copy.deepcopy(carved["recipe"])
    student["distill"] = {"teacher": str(carved["runs"][0]), "alpha": 0.5}
    student["training"]["num_train_epochs"] = 1
    student["output"] = {"dir": str(tmp_path / "student")}
    result = hf_finetune.train(student)
    assert read(result.output_dir / "run.json")["splits"]["validation"]["carved"] == \
        read(carved["runs"][0] / "run.json")["splits"]["validation"]["carved"]
    student["data"]["seed"] = 7
    student["output"] = {"dir": str(tmp_path / "leaky")}
    with pytest.raises(DifferentCarveError, match=r"distill.teacher: .* \(data.seed 42 vs 7; teacher vs this recipe\)"
                                                  r".* set data.seed: 42"):
        hf_finetune.train(student)


def test_self_training_on_carved_data(carved, tmp_path):
    import hf_finetune

    recipe = copy.deepcopy(carved["recipe"])
    if carved["kind"] == "text":
        pool = write_csv(tmp_path / "pool.csv", [{"text": r["text"]} for r in review_rows(20, seed=6)])
        recipe["data"]["unlabeled"] = {"files": str(pool)}
    else:
        from hf_finetune.testing import write_pattern_folder

        recipe["data"]["unlabeled"] = {"image_folder": str(write_pattern_folder(tmp_path / "pool", {"x": 2},
                                                                                size=32, seed=8))}
    recipe["self_training"] = {"rounds": 1, "threshold": 0.01}
    recipe["training"]["num_train_epochs"] = 1
    recipe["output"] = {"dir": str(tmp_path / "st")}
    out = hf_finetune.train(recipe).output_dir
    record = read(out / "run.json")["splits"]["validation"]["carved"]
    assert record == read(carved["runs"][0] / "run.json")["splits"]["validation"]["carved"]
    assert main(["evaluate", str(out), "--split", "validation"]) == 0
    assert read(out / "evaluation-validation.json")["accuracy"] == read(out / "metrics.json")["validation"]["accuracy"]


def test_rank_and_tune_on_a_carved_runs_recipe(carved, tmp_path, tiny_bert, tiny_resnet):
    pytest.importorskip("optuna")
    run = carved["runs"][0]
    candidate = tiny_bert if carved["kind"] == "text" else tiny_resnet
    assert main(["rank", str(run / "recipe.yaml"), "--candidates", str(candidate),
                 "--output-dir", str(tmp_path / "rank")]) == 0
    rows = read(run / "run.json")["splits"]
    assert read(tmp_path / "rank" / "rank.json")["rows"]["validation"] == rows["validation"]["rows"]

    assert main(["tune", str(run / "recipe.yaml"), "--trials", "1", f"output.dir={tmp_path / 'search'}"]) == 0
    best = tmp_path / "search" / "best"
    assert read(best / "run.json")["splits"]["validation"]["carved"] == rows["validation"]["carved"]
    assert main(["evaluate", str(best), "--split", "validation"]) == 0
    assert read(best / "evaluation-validation.json")["accuracy"] == read(best / "metrics.json")["validation"]["accuracy"]
