"""Ensembles and soups of finished runs: the maths pinned on tiny models, the refusals, the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from hf_finetune.cli import main
from hf_finetune.combine.ensemble import build_ensemble, load_ensemble
from hf_finetune.combine.members import (
    IncompatibleMembersError,
    check_same_labels,
    check_soupable,
    load_members,
)
from hf_finetune.combine.soup import average_state_dicts, build_soup, greedy_ingredients
from hf_finetune.finished.predict import Item, load_predictor

TEXTS = ["the film was really wonderful", "the plot was dull", "the acting was quite terrible", "a superb movie"]


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns(".hf-finetune.lock"))
    return dest


def _edit_json(path: Path, **changes) -> None:
    value = json.loads(path.read_text())
    value.update(changes)
    path.write_text(json.dumps(value))


def test_an_ensemble_of_one_run_is_refused(text_run, tmp_path, capsys):
    for method in ("logits", "soup", "greedy-soup"):
        assert main(["ensemble", str(tmp_path / "ens"), str(text_run), "--method", method]) == 2
        err = capsys.readouterr().err
        assert "error: RUN_DIR: give at least two finished runs" in err and "a copy of it" in err
        assert f"hf-finetune predict {text_run}" in err
    assert not (tmp_path / "ens").exists()


def test_ensemble_of_twins_equals_their_run(text_run, tmp_path, capsys):
    twin = _copy(text_run, tmp_path / "twin")
    result = build_ensemble(tmp_path / "ens", [text_run, twin])
    member_metrics = json.loads((text_run / "metrics.json").read_text())
    for role in ("validation", "test"):
        for key in ("accuracy", "f1", "precision", "recall"):
            assert result.metrics[role][key] == pytest.approx(member_metrics[role][key])
        assert result.metrics[role]["confusion_matrix"] == member_metrics[role]["confusion_matrix"]
    ensemble, member = load_ensemble(tmp_path / "ens"), load_predictor(text_run)
    items = [Item(t) for t in TEXTS]
    with torch.inference_mode():
        assert torch.equal(ensemble.probabilities(items), member.probabilities(items))

    # predict and evaluate accept the folder, and answer as the member does
    assert main(["predict", str(tmp_path / "ens"), *TEXTS, "--top-k", "2"]) == 0
    ens_lines = capsys.readouterr().out
    assert main(["predict", str(text_run), *TEXTS, "--top-k", "2"]) == 0
    assert ens_lines == capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "ens"), "--split", "validation"]) == 0
    report = json.loads((tmp_path / "ens" / "evaluation-validation.json").read_text())
    assert report["accuracy"] == pytest.approx(member_metrics["validation"]["accuracy"])
    assert "evaluation-validation.json" in json.loads((tmp_path / "ens" / "run.json").read_text())["files"]


def test_ensemble_folder_card_members_and_weights(text_run, tmp_path):
    twin = _copy(text_run, tmp_path / "twin")
    result = build_ensemble(tmp_path / "ens", [text_run, twin], weights="validation")
    folder = tmp_path / "ens"
    spec = json.loads((folder / "ensemble.json").read_text())
    assert [m["weight"] for m in spec["members"]] == pytest.approx([0.5, 0.5])
    assert (folder / spec["members"][1]["folder"] / "model.safetensors").is_file()  # self-contained
    card = (folder / "README.md").read_text()
    assert "**ensemble**" in card and "twin" in card and "validation accuracy" in card
    assert set(result.metrics["members"]) == {text_run.name, "twin"}
    # two identical members: the mean of equal probabilities is each of them
    assert result.metrics["test"]["accuracy"] == pytest.approx(result.metrics["members"]["twin"]["test"]["accuracy"])
    with pytest.raises(Exception, match="holds a finished run"):
        build_ensemble(folder, [twin, text_run])
    assert main(["ensemble", str(folder), str(twin), str(text_run), "--overwrite"]) == 0
    assert [m["name"] for m in json.loads((folder / "ensemble.json").read_text())["members"]] == ["twin", text_run.name]


def test_soup_of_identical_runs_equals_the_run(text_run, tmp_path):
    twin = _copy(text_run, tmp_path / "twin")
    triplet = _copy(text_run, tmp_path / "triplet")
    result = build_soup(tmp_path / "soup", [text_run, twin, triplet])
    from safetensors.torch import load_file

    original = load_file(text_run / "model.safetensors")
    souped = load_file(tmp_path / "soup" / "model.safetensors")
    assert original.keys() == souped.keys()
    for key, tensor in original.items():
        assert torch.equal(tensor, souped[key]), key
    member_metrics = json.loads((text_run / "metrics.json").read_text())
    assert result.metrics["test"]["accuracy"] == pytest.approx(member_metrics["test"]["accuracy"])
    # an ordinary model folder: pipeline() loads it and answers as the run does
    from transformers import pipeline

    soup = pipeline("text-classification", model=str(tmp_path / "soup"))(TEXTS)
    run = pipeline("text-classification", model=str(text_run))(TEXTS)
    assert [a["label"] for a in soup] == [b["label"] for b in run]
    assert [a["score"] for a in soup] == pytest.approx([b["score"] for b in run])
    assert json.loads((tmp_path / "soup" / "run.json").read_text())["kind"] == "soup"


def test_greedy_soup_keeps_only_ingredients_that_improve_validation(text_run, tmp_path):
    twin = _copy(text_run, tmp_path / "twin")
    result = build_soup(tmp_path / "greedy", [text_run, twin], method="greedy-soup")
    # the twin's soup scores the same as the run alone: no strict improvement, so it is left out
    assert result.metrics["soup"]["ingredients"] == [text_run.name]
    assert result.metrics["soup"]["decisions"][1] == {"member": "twin", "score": pytest.approx(
        result.metrics["validation"]["accuracy"]), "kept": False}

    scores = {(0,): 0.7, (0, 2): 0.75, (0, 2, 1): 0.74}
    kept, log = greedy_ingredients([0, 2, 1], [0.7, 0.5, 0.6], lambda ids: scores[tuple(ids)])
    assert kept == [0, 2] and [d["kept"] for d in log] == [True, True, False]


def test_integer_buffers_are_not_averaged():
    first = torch.nn.BatchNorm1d(3).state_dict()
    second = torch.nn.BatchNorm1d(3).state_dict()
    first["num_batches_tracked"].fill_(10)
    second["num_batches_tracked"].fill_(21)
    first["running_mean"].fill_(1.0)
    second["running_mean"].fill_(2.0)
    out = average_state_dicts([first, second])
    assert out["num_batches_tracked"].item() == 10 and out["num_batches_tracked"].dtype == torch.long
    assert torch.equal(out["running_mean"], torch.full((3,), 1.5))


def test_refusals_name_the_difference(text_run, vision_run, tmp_path):
    swapped = _copy(text_run, tmp_path / "swapped")
    config = json.loads((swapped / "config.json").read_text())
    _edit_json(swapped / "config.json", id2label={"0": config["id2label"]["1"], "1": config["id2label"]["0"]})
    with pytest.raises(IncompatibleMembersError, match="same label names in a different order"):
        check_same_labels(load_members([text_run, swapped]))
    renamed = _copy(text_run, tmp_path / "renamed")
    _edit_json(renamed / "config.json", id2label={"0": "neg", "1": "positive"})
    with pytest.raises(IncompatibleMembersError, match="lacks pos; adds positive"):
        build_ensemble(tmp_path / "e1", [text_run, renamed])
    with pytest.raises(IncompatibleMembersError, match="image-classification run but"):
        build_ensemble(tmp_path / "e2", [text_run, vision_run])

    other_backbone = _copy(text_run, tmp_path / "other-backbone")
    _edit_json(other_backbone / "run.json", base_model="google-bert/bert-base-uncased")
    with pytest.raises(IncompatibleMembersError, match="fine-tuned from 'google-bert/bert-base-uncased'"):
        check_soupable(load_members([text_run, other_backbone]))
    deeper = _copy(text_run, tmp_path / "deeper")
    _edit_json(deeper / "config.json", num_hidden_layers=3)
    with pytest.raises(IncompatibleMembersError, match="'num_hidden_layers' is 3 vs 2"):
        check_soupable(load_members([text_run, deeper]))
    # through the command line: one message, exit code 2
    assert main(["ensemble", str(tmp_path / "e3"), str(text_run), str(deeper), "--method", "soup"]) == 2
    assert main(["ensemble", str(tmp_path / "e4"), str(text_run), str(text_run)]) == 2  # the same run twice


def test_vision_ensemble_and_soup(vision_run, tmp_path):
    twin = _copy(vision_run, tmp_path / "twin")
    ensemble = build_ensemble(tmp_path / "ens", [vision_run, twin])
    soup = build_soup(tmp_path / "soup", [vision_run, twin])
    member = json.loads((vision_run / "metrics.json").read_text())
    assert ensemble.metrics["test"]["accuracy"] == pytest.approx(member["test"]["accuracy"])
    assert soup.metrics["test"]["accuracy"] == pytest.approx(member["test"]["accuracy"])
    assert main(["evaluate", str(tmp_path / "ens")]) == 0
    report = json.loads((tmp_path / "ens" / "evaluation-test.json").read_text())
    assert report["accuracy"] == pytest.approx(member["test"]["accuracy"])
