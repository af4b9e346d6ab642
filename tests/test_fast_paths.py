"""The fast defaults compute the same thing as the plain way (speed itself is measured in benchmarks/)."""

from __future__ import annotations

import pytest
import torch

from hf_finetune.data.labels import LabelSpace
from hf_finetune.data.text import TextCollator
from hf_finetune.models.backbones import build_text_model, build_tokenizer
from hf_finetune.recipe import ModelSpec
from hf_finetune.training.samplers import SeededLengthGroupedSampler

from .conftest import FILLER, NEGATIVE, POSITIVE


def test_length_grouped_sampler_covers_every_sample_once_per_epoch():
    lengths = [int(x) for x in torch.randint(1, 300, (1037,), generator=torch.Generator().manual_seed(0))]
    sampler = SeededLengthGroupedSampler(lengths, batch_size=32, seed=7)
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert sorted(order) == list(range(len(lengths)))  # a permutation: each sample exactly once
        orders.append(order)
    assert orders[0] != orders[1] != orders[2]  # reshuffled every epoch
    sampler.set_epoch(1)
    assert list(sampler) == orders[1]  # the same epoch gives the same order (what resume relies on)
    # Batches group similar lengths: far less padding than random batches.
    def padding(order):
        batches = [order[i:i + 32] for i in range(0, len(order), 32)]
        return sum(max(lengths[j] for j in b) * len(b) - sum(lengths[j] for j in b) for b in batches)
    random_order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(1)).tolist()
    assert padding(orders[0]) < 0.3 * padding(random_order)


def test_validation_is_evaluated_in_row_order_where_a_callback_reads_the_predictions():
    """Grouped by length, text validation is evaluated in an order of its own tokenizer's lengths; rank pairs one
    candidate's predictions with another's row by row (its ties after fine-tuning), so it asks for row order."""
    from types import SimpleNamespace

    from datasets import Dataset

    from hf_finetune.training.trainer import FinetuneTrainer

    validation = Dataset.from_dict({"input_ids": [[1] * n for n in (5, 1, 9, 3)], "length": [5, 1, 9, 3]})
    trainer = SimpleNamespace(args=SimpleNamespace(train_sampling_strategy="group_by_length", world_size=1),
                              eval_in_order=True)
    sampler = FinetuneTrainer._get_eval_sampler(trainer, validation)
    assert isinstance(sampler, torch.utils.data.SequentialSampler) and list(sampler) == [0, 1, 2, 3]
    assert FinetuneTrainer.eval_in_order is False  # otherwise grouped by length, as training is


def test_epoch_source_overrides_set_epoch():
    sampler = SeededLengthGroupedSampler(list(range(1, 100)), batch_size=8, seed=1, epoch_source=lambda: 3)
    sampler.set_epoch(0)
    reference = SeededLengthGroupedSampler(list(range(1, 100)), batch_size=8, seed=1)
    reference.set_epoch(3)
    assert list(sampler) == list(reference)


def _model_and_tokenizer(tiny_bert):
    spec = ModelSpec(name=str(tiny_bert))
    tokenizer = build_tokenizer(spec)
    labels = LabelSpace(("neg", "pos"), ("neg", "pos"))
    return build_text_model(spec, labels, tokenizer).eval(), tokenizer


def test_dynamic_padding_gives_the_same_loss_as_padding_to_max_length(tiny_bert):
    model, tokenizer = _model_and_tokenizer(tiny_bert)
    texts = ["good", "the movie was really quite good and the acting was superb", "bad film", "dull"]
    labels = torch.tensor([1, 1, 0, 0])
    # What the data stage stores: ids only (no attention mask, no segment ids for single texts).
    rows = [{"input_ids": tokenizer(t, return_attention_mask=False, return_token_type_ids=False)["input_ids"],
             "labels": int(y), "length": 0} for t, y in zip(texts, labels, strict=True)]
    dynamic = TextCollator(tokenizer)(rows)
    padded = tokenizer(texts, padding="max_length", max_length=64, return_tensors="pt")
    assert dynamic["input_ids"].shape[1] < padded["input_ids"].shape[1]
    with torch.no_grad():
        out_dynamic = model(input_ids=dynamic["input_ids"], attention_mask=dynamic["attention_mask"])
        out_padded = model(**padded)
    torch.testing.assert_close(out_dynamic.logits, out_padded.logits, atol=1e-5, rtol=1e-5)
    loss = torch.nn.functional.cross_entropy
    torch.testing.assert_close(loss(out_dynamic.logits, labels), loss(out_padded.logits, labels), atol=1e-6, rtol=1e-5)


@pytest.mark.slow
def test_compiled_and_eager_models_agree_on_cpu(tmp_path):
    from hf_finetune.testing import write_tiny_bert

    path = write_tiny_bert(tmp_path / "bert", POSITIVE + NEGATIVE + FILLER, dropout=0.0)
    model, tokenizer = _model_and_tokenizer(path)
    batch = tokenizer(["the movie was good", "bad"], padding=True, return_tensors="pt")
    compiled = torch.compile(model)
    with torch.no_grad():
        eager_logits = model(**batch).logits
        compiled_logits = compiled(**batch).logits
    torch.testing.assert_close(compiled_logits, eager_logits, atol=1e-5, rtol=1e-4)


def test_the_validation_report_reuses_the_kept_weights_own_full_precision_evaluation():
    """training/kept_evaluation.py: the best checkpoint's evaluation (or the last step's), never one made
    under mixed precision, and never the predictions of a later predict() call."""
    from types import SimpleNamespace

    import numpy as np

    from hf_finetune.training.kept_evaluation import KeptEvaluations

    scored = []
    kept = KeptEvaluations(lambda pred: scored.append(pred) or {"accuracy": 1.0})
    state = SimpleNamespace(global_step=0, best_model_checkpoint=None)
    for step, best in ((10, 10), (20, 10), (30, 10)):
        state.global_step, state.best_model_checkpoint = step, f"/out/checkpoints/checkpoint-{best}"
        kept(SimpleNamespace(predictions=np.full(4, step), label_ids=np.zeros(4)))
        kept.on_evaluate(None, state, None, metrics={"eval_loss": step / 100, "eval_accuracy": 1.0})
    assert len(scored) == 3 and sorted(kept.by_step) == [10, 30]  # the best and the latest only
    kept(SimpleNamespace(predictions=np.full(4, -1), label_ids=np.zeros(4)))  # predict() on the test split
    model = SimpleNamespace()
    trainer = SimpleNamespace(model=model, state=state, args=SimpleNamespace(load_best_model_at_end=True))
    step, predictions, _, loss = kept.kept(trainer)
    assert step == 10 and (predictions == 10).all() and loss == 0.1
    trainer.args.load_best_model_at_end = False  # the last step's weights are kept
    assert kept.kept(trainer)[0] == 30
    model.__dict__["_original_forward"] = object()  # evaluated under bf16/fp16 autocast: score again
    assert kept.kept(trainer) is None
    del model.__dict__["_original_forward"]
    state.global_step = 40  # no evaluation at the last step
    assert kept.kept(trainer) is None
    # Where evaluations outnumber saves, the best evaluation (best_global_step) may have no checkpoint: kept too,
    # for what reads the best evaluation's predictions (rank's ties: search/trials.PauseAt).
    state.best_global_step = 30
    for step in (50, 60):
        state.global_step = step
        kept(SimpleNamespace(predictions=np.full(4, step), label_ids=np.zeros(4)))
        kept.on_evaluate(None, state, None, metrics={"eval_loss": 0.5, "eval_accuracy": 1.0})
    assert sorted(kept.by_step) == [10, 30, 60]
