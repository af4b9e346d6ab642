"""Without the Hub: bundled metrics still work, and Hub names fail fast with a way forward."""

from __future__ import annotations

import pytest

from hf_finetune import hub
from hf_finetune.cli import main
from hf_finetune.errors import HubUnreachableError
from hf_finetune.metrics import ClassificationMetrics, load_metric

from .conftest import write_recipe


def test_the_test_session_cannot_reach_the_hub():
    assert hub.unreachable_reason() is not None


def test_bundled_metrics_load_offline_and_match_sklearn():
    from sklearn.metrics import f1_score, precision_score, recall_score

    preds, refs = [0, 2, 1, 1, 0, 2, 2], [0, 1, 1, 2, 0, 2, 1]
    metrics = ClassificationMetrics(["accuracy", "precision", "recall", "f1", "matthews_correlation"],
                                    ["a", "b", "c"])
    out = metrics.compute(preds, refs)
    assert out["accuracy"] == pytest.approx(4 / 7)
    assert out["precision"] == pytest.approx(precision_score(refs, preds, average="macro"))
    assert out["recall"] == pytest.approx(recall_score(refs, preds, average="macro"))
    assert out["f1"] == pytest.approx(f1_score(refs, preds, average="macro"))
    report = metrics.report(preds, refs)
    assert report["confusion_matrix"]["matrix"] == [[2, 0, 0], [0, 1, 2], [0, 1, 1]]
    assert report["per_class"]["b"]["support"] == 3
    assert report["per_class"]["c"]["precision"] == pytest.approx(1 / 3)


def test_hub_metric_offline_says_which_metrics_are_bundled():
    with pytest.raises(HubUnreachableError) as info:
        load_metric("glue")
    message = str(info.value)
    assert message.startswith("metrics: 'glue' is not a local path") and "unreachable" in message
    assert "bundled and work offline: accuracy, precision, recall, f1" in message


def _run_fast(path, capsys) -> str:
    assert main(["train", str(path)]) == 2  # fails fast: the no_retry_waits fixture fails a retry loop
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_hub_model_offline_fails_fast_with_a_local_path_hint(tmp_path, text_recipe, capsys, no_retry_waits):
    text_recipe["model"]["name"] = "google-bert/bert-base-uncased"
    err = _run_fast(write_recipe(tmp_path / "r.yaml", text_recipe), capsys)
    assert "model.name: 'google-bert/bert-base-uncased' is not a local path" in err
    assert "Hugging Face Hub, which is unreachable here" in err
    assert "hf download google-bert/bert-base-uncased --local-dir models/bert-base-uncased" in err
    assert "model.name: models/bert-base-uncased" in err


def test_hub_dataset_offline_fails_fast_with_a_local_path_hint(tmp_path, text_recipe, capsys, no_retry_waits):
    text_recipe["data"] = {"dataset": "stanfordnlp/imdb"}
    err = _run_fast(write_recipe(tmp_path / "r.yaml", text_recipe), capsys)
    assert "data.dataset: 'stanfordnlp/imdb' is not a local path" in err and "unreachable" in err
    assert "save_to_disk" in err and "data.files" in err
