"""Building backbones: any sequence-classification family, a head sized to the labels, safe loading."""

from __future__ import annotations

import pytest
import torch

from hf_finetune.data.labels import LabelSpace
from hf_finetune.errors import ModelError
from hf_finetune.models.backbones import build_text_model, build_tokenizer
from hf_finetune.recipe import ModelSpec
from hf_finetune.testing import write_tiny_text_model

from .conftest import FILLER, NEGATIVE, POSITIVE

LABELS = LabelSpace(names=("negative", "neutral", "positive"), values=("negative", "neutral", "positive"))


@pytest.mark.parametrize("model_type", ["bert", "distilbert", "roberta", "gpt2"])
def test_sequence_classification_backbones_get_a_labelled_head(tmp_path, model_type):
    path = write_tiny_text_model(tmp_path / model_type, POSITIVE + NEGATIVE + FILLER, model_type)
    spec = ModelSpec(name=str(path))
    tokenizer = build_tokenizer(spec)
    model = build_text_model(spec, LABELS, tokenizer)
    assert model.config.num_labels == 3
    assert model.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    assert model.config.label2id == {"negative": 0, "neutral": 1, "positive": 2}
    assert tokenizer.pad_token is not None and model.config.pad_token_id == tokenizer.pad_token_id
    if model_type == "gpt2":
        assert tokenizer.pad_token == tokenizer.eos_token  # GPT-2 ships without a pad token
    batch = tokenizer(["the movie was good", "bad"], padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, 3)
    # Padding must not change a row's prediction (the decoder pools the last non-pad token).
    with torch.no_grad():
        alone = model(**tokenizer(["bad"], return_tensors="pt")).logits
    torch.testing.assert_close(logits[1], alone[0], atol=1e-4, rtol=1e-4)


def test_pretrained_encoder_weights_are_loaded(tmp_path, tiny_bert):
    from transformers import AutoModel

    spec = ModelSpec(name=str(tiny_bert))
    model = build_text_model(spec, LABELS, build_tokenizer(spec))
    original = AutoModel.from_pretrained(tiny_bert)
    torch.testing.assert_close(model.bert.embeddings.word_embeddings.weight, original.embeddings.word_embeddings.weight)
    random = build_text_model(ModelSpec(name=str(tiny_bert), pretrained=False), LABELS, build_tokenizer(spec))
    assert not torch.equal(random.bert.embeddings.word_embeddings.weight, original.embeddings.word_embeddings.weight)


def test_missing_local_model_is_named(tmp_path):
    with pytest.raises(ModelError, match="model.name: local folder not found: ./models/nothing-here"):
        build_tokenizer(ModelSpec(name="./models/nothing-here"))


def test_pickle_weights_are_refused_unless_allowed(tmp_path, tiny_bert):
    import shutil

    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_bert, folder)
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    spec = ModelSpec(name=str(folder))
    with pytest.raises(ModelError, match="no safetensors weights; pickle-based weights .* model.allow_pickle: true"):
        build_text_model(spec, LABELS, build_tokenizer(spec))
    allowed = ModelSpec(name=str(folder), allow_pickle=True)
    model = build_text_model(allowed, LABELS, build_tokenizer(allowed))
    torch.testing.assert_close(model.bert.embeddings.word_embeddings.weight, state["embeddings.word_embeddings.weight"])
