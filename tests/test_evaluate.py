"""`hf-finetune evaluate`: the run's metrics on another split or new data, in the model's label space."""

from __future__ import annotations

import collections
import json
import shutil
from pathlib import Path

import pytest
from datasets import ClassLabel, Value
from PIL import Image

from hf_finetune.cli import main
from hf_finetune.data.labels import model_label_space
from hf_finetune.finished.predict import load_predictor, predict, read_inputs
from hf_finetune.testing import PATTERNS, write_pattern_folder

from .conftest import review_rows, write_csv

SAME = ("accuracy", "precision", "recall", "f1", "per_class", "confusion_matrix", "num_samples")


@pytest.fixture
def text_out(tmp_path, text_run) -> Path:
    return Path(shutil.copytree(text_run, tmp_path / "run"))


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_evaluating_the_test_split_again_gives_the_runs_test_metrics(text_out, capsys):
    assert main(["evaluate", str(text_out)]) == 0
    out = capsys.readouterr().out
    report, metrics = read(text_out / "evaluation-test.json"), read(text_out / "metrics.json")["test"]
    assert {k: report[k] for k in SAME} == {k: metrics[k] for k in SAME}
    assert report["loss"] == pytest.approx(metrics["loss"], abs=1e-5)
    assert report["source"]["split"] == "test" and report["source"]["rows"] == 16
    assert out.startswith("test: 16 rows (split 'test')\n") and f"accuracy {metrics['accuracy']:.4f}" in out
    plot = text_out / "evaluation-test-confusion_matrix.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    files = read(text_out / "run.json")["files"]
    assert {"evaluation-test.json", "evaluation-test-confusion_matrix.png"} <= set(files)  # pushed with the run
    assert main(["evaluate", str(text_out), "--split", "validation"]) == 0
    report = read(text_out / "evaluation-validation.json")
    # metrics.json's validation figures come from the kept epoch's own evaluation (training/kept_evaluation.py):
    # a second pass over the saved weights gives the same figures
    assert {k: report[k] for k in SAME} == {k: read(text_out / "metrics.json")["validation"][k] for k in SAME}
    assert report["loss"] == pytest.approx(read(text_out / "metrics.json")["validation"]["loss"], abs=1e-5)


def test_new_file_scores_like_predict_and_can_go_elsewhere(text_out, tmp_path, capsys):
    rows = review_rows(30, seed=7)
    for row in rows:
        row["review"], row["sentiment"] = row.pop("text"), row.pop("label")
    path = write_csv(tmp_path / "new_reviews.csv", rows)
    before = (text_out / "run.json").read_text()
    assert main(["evaluate", str(text_out), "--data", str(path), "--column", "review", "--label-column", "sentiment",
                 "--output-dir", str(tmp_path / "scores")]) == 0
    report = read(tmp_path / "scores" / "evaluation-new_reviews.json")
    assert (tmp_path / "scores" / "evaluation-new_reviews-confusion_matrix.png").is_file()
    assert (text_out / "run.json").read_text() == before  # written elsewhere: the run's record is untouched

    predictor = load_predictor(text_out)
    predicted = [top[0][0] for top in predict(predictor, read_inputs(predictor, [r["review"] for r in rows]))]
    labels = ["neg", "pos"]
    counts = collections.Counter(zip([r["sentiment"] for r in rows], predicted, strict=True))
    assert report["confusion_matrix"] == {"labels": labels,
                                          "matrix": [[counts[(t, p)] for p in labels] for t in labels]}
    assert report["accuracy"] == pytest.approx(sum(counts[(c, c)] for c in labels) / 30)
    assert report["num_samples"] == 30 and report["source"]["data"] == str(path)


def test_a_label_the_model_does_not_know_is_named(text_out, tmp_path, capsys):
    path = write_csv(tmp_path / "three.csv", review_rows(9, seed=3, labels=("neg", "pos", "neutral")))
    assert main(["evaluate", str(text_out), "--data", str(path)]) == 2
    err = capsys.readouterr().err
    assert ("split 'three' has label 'neutral' that does not appear in the model's labels; the model's labels: "
            "neg, pos") in err
    assert "Traceback" not in err and not (text_out / "evaluation-three.json").exists()


def test_integer_labels_are_class_ids_for_a_model_with_named_classes(text_out, tmp_path):
    rows = [{"text": r["text"], "label": {"neg": 0, "pos": 1}[r["label"]]} for r in review_rows(12, seed=4)]
    assert main(["evaluate", str(text_out), "--data", str(write_csv(tmp_path / "ids.csv", rows))]) == 0
    assert read(text_out / "evaluation-ids.json")["per_class"]["pos"]["support"] == 6


@pytest.mark.parametrize("args, message", [
    (["--data", "{tmp}/nope.csv"], "error: --data: no such file or folder: {tmp}/nope.csv"),
    (["--data", "{tmp}/data.csv", "--split", "test"], "error: --split: {tmp}/data.csv is a file, which is a single split"),
    (["--split", "tset"], "error: split 'tset' not found; the data has train, validation, test; did you mean 'test'?"),
    (["--data", "{tmp}/data.csv", "--column", "txt"], "error: data.columns.text: column 'txt' not found in split 'data'"),
    (["--data", "{tmp}/notes.txt"], "error: --data: {tmp}/notes.txt: unsupported file type"),
])
def test_evaluate_errors_name_what_to_change(text_out, tmp_path, capsys, args, message):
    write_csv(tmp_path / "data.csv", review_rows(4, seed=0))
    (tmp_path / "notes.txt").write_text("x\n")
    assert main(["evaluate", str(text_out), *[a.replace("{tmp}", str(tmp_path)) for a in args]]) == 2
    err = capsys.readouterr().err
    assert message.replace("{tmp}", str(tmp_path)) in err and "Traceback" not in err


def test_vision_evaluation_matches_the_run_and_predict(tmp_path, vision_run, capsys):
    out = Path(shutil.copytree(vision_run, tmp_path / "run"))
    assert main(["evaluate", str(out)]) == 0
    report, metrics = read(out / "evaluation-test.json"), read(out / "metrics.json")["test"]
    assert {k: report[k] for k in SAME} == {k: metrics[k] for k in SAME}

    folder = write_pattern_folder(tmp_path / "fresh", {"new": 2}, size=40, seed=5) / "new"
    assert main(["evaluate", str(out), "--data", str(folder)]) == 0
    report = read(out / "evaluation-new-train.json")  # a folder of class folders is one split, 'train'
    predictor = load_predictor(out)
    paths = sorted(folder.rglob("*.png"))
    predicted = [top[0][0] for top in predict(predictor, read_inputs(predictor, [str(p) for p in paths]))]
    counts = collections.Counter(zip([p.parent.name for p in paths], predicted, strict=True))
    labels = sorted(PATTERNS)
    assert report["confusion_matrix"]["matrix"] == [[counts[(t, p)] for p in labels] for t in labels]
    assert report["num_samples"] == 6
    with Image.open(out / "evaluation-new-train-confusion_matrix.png") as image:
        assert image.format == "PNG"


def test_model_label_space_matches_new_data_as_training_did():
    names = ["neg", "pos"]
    assert model_label_space(names, Value("string")).value_to_id() == {"neg": 0, "pos": 1}
    assert model_label_space(names, Value("int64")).value_to_id() == {0: 0, 1: 1}  # ids
    assert model_label_space(["1", "2", "5"], Value("int64")).value_to_id() == {1: 0, 2: 1, 5: 2}  # as trained
    assert model_label_space(names, ClassLabel(names=["pos", "neg"])).value_to_id() == {"neg": 0, "pos": 1}
    renamed = model_label_space(["negative", "positive"], ClassLabel(names=["neg", "pos"]), ["negative", "positive"])
    assert renamed.value_to_id() == {"neg": 0, "pos": 1} and renamed.names == ("negative", "positive")


def test_sentence_pairs_with_integer_labels_predict_and_evaluate(tmp_path, tiny_bert, capsys):
    """A saved dataset with two text columns and integer labels: predict reads both columns (as pipeline()
    does from {text, text_pair}), and evaluate matches its integer labels to the model's."""
    from datasets import Dataset, DatasetDict
    from transformers import pipeline

    from .conftest import write_recipe

    premises = ["the movie was good", "the plot was dull", "the film was great", "the acting was bad"] * 6
    hypotheses = ["the film was great", "the movie was awful", "the plot was dull", "the film was superb"] * 6
    stars = [5, 1, 1, 5] * 6
    rows = {"premise": premises, "hypothesis": hypotheses, "stars": stars}
    DatasetDict({"train": Dataset.from_dict(rows), "test": Dataset.from_dict(rows)}).save_to_disk(tmp_path / "ds")
    path = write_recipe(tmp_path / "recipe.yaml", {
        "task": "text-classification", "model": {"name": str(tiny_bert)},
        "data": {"dataset": str(tmp_path / "ds"), "validation_size": 4, "cache_dir": str(tmp_path / "cache"),
                 "columns": {"text": "premise", "text_pair": "hypothesis", "label": "stars"}},
        "training": {"num_train_epochs": 1, "per_device_train_batch_size": 8, "save_strategy": "no",
                     "load_best_model_at_end": False},
        "output": {"dir": str(tmp_path / "out")},
    })
    assert main(["train", str(path)]) == 0
    out = tmp_path / "out"

    write_csv(tmp_path / "pairs.csv", [{"premise": p, "hypothesis": h} for p, h in zip(premises[:4], hypotheses[:4],
                                                                                        strict=True)])
    predictor = load_predictor(out)
    ours = predict(predictor, read_inputs(predictor, [str(tmp_path / "pairs.csv")]), top_k=2)
    theirs = pipeline("text-classification", model=str(out))(
        [{"text": p, "text_pair": h} for p, h in zip(premises[:4], hypotheses[:4], strict=True)], top_k=2)
    for mine, other in zip(ours, theirs, strict=True):
        assert [label for label, _ in mine] == [a["label"] for a in other]
        assert [score for _, score in mine] == pytest.approx([a["score"] for a in other], abs=1e-5)
    assert main(["predict", str(out), "a single text"]) == 2
    assert "this model classifies sentence pairs; give a csv/jsonl file with columns 'premise' and 'hypothesis'" \
        in capsys.readouterr().err

    assert main(["evaluate", str(out), "--data", str(tmp_path / "ds"), "--split", "test"]) == 0
    report = read(out / "evaluation-ds-test.json")
    assert report["confusion_matrix"]["labels"] == ["1", "5"] and report["num_samples"] == 24
    assert report["per_class"]["5"]["support"] == 12
