"""Text inputs (BERT and its family): what every text task shares.

Texts (and an optional second text per row) are tokenized by the backbone's own tokenizer at the
run's max_length (tasks/text_length.py), cached once, padded per batch.
"""

from __future__ import annotations

import math
from typing import Any

from datasets import Value

from hf_finetune import hub
from hf_finetune.data.encodings import TextEncoding, default_cache_dir, text_columns
from hf_finetune.data.labels import blank_rows
from hf_finetune.data.text import check_text_columns, tokenize_split
from hf_finetune.errors import DataError
from hf_finetune.tasks.base import Inputs, Preprocessing
from hf_finetune.tasks.text_length import resolve_max_length

# AdamW learning rates for text encoders by size (the Trainer default, 5e-5, is a BERT-base rate:
# cautious for small distilled encoders); measured in benchmarks/quality.py.
TEXT_LR_BY_SIZE = ((50e6, 1e-4), (200e6, 5e-5), (math.inf, 2e-5))  # (parameters below, rate)
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


class TextInputs(Inputs):
    kind = "text"
    input_keys = ("text", "text_pair")
    sections = frozenset({"preprocessing"})
    foreign_model_keys = frozenset({"channels_last"})
    defaults = frozenset({"max_length", "probe"})
    # Texts are tokenized per teacher once and its outputs cached: a teacher's tokenizer may differ.
    teacher_cached = True
    tune_learning_rates = (1e-5, 3e-4)  # spans the encoders' 2e-5..1e-4 (TEXT_LR_BY_SIZE)
    # bf16 autocast (fp32 master weights) runs transformer matmuls on the CPU's AMX units: a MiniLM
    # training step 1.6x faster, evaluation 2.8x.
    bf16_on_amx = True
    literal_inputs = True

    def describe_model(self, spec: Any) -> str:
        """The backbone as the check report names it (its config is read, never its weights)."""
        from hf_finetune.models.backbones import load_text_config

        config = load_text_config(spec)
        where = "local folder" if hub.is_local_path(spec.name) else "Hub"
        return f"{spec.name} ({where}, {config.model_type})"

    def load_config(self, spec: Any) -> Any:
        from hf_finetune.models.backbones import load_text_config

        return load_text_config(spec)

    def foreign_config(self, config: Any) -> str | None:
        """What the backbone is instead, when its config says it is no text encoder."""
        if getattr(config, "model_type", None) == "timm_wrapper":
            return "is a timm vision model; {task} needs a text encoder"
        return None

    def check_columns(self, splits: dict[str, Any], recipe: Any, names: dict[str, str]) -> None:
        check_text_columns(splits, text_columns(recipe), names)

    def preprocessing(self, recipe: Any, *, augment: bool = True, pad_to_multiple_of: int | None = None
                      ) -> Preprocessing:
        """The backbone's tokenizer at the resolved max_length (`augment` means nothing to texts)."""
        from hf_finetune.models.backbones import build_tokenizer, load_text_config

        tokenizer = build_tokenizer(recipe.model)
        max_length = resolve_max_length(recipe, tokenizer, load_text_config(recipe.model))
        return Preprocessing(TextEncoding(tokenizer, max_length, pad_to_multiple_of), tokenizer,
                             {"max_length": max_length}, {"preprocessing": {"max_length": max_length}},
                             verb="tokenizing")

    def build_backbone(self, spec: Any, labels: Any, tokenizer: Any = None) -> Any:
        """The backbone with a new classification head sized to `labels`."""
        from hf_finetune.models.backbones import build_text_model, build_tokenizer

        return build_text_model(spec, labels, tokenizer if tokenizer is not None else build_tokenizer(spec))

    def finish_model(self, recipe: Any, model: Any, prep: Preprocessing, data: Any) -> dict[str, Any]:
        """Settles what the saved model needs; returns the model keys resolved on the way."""
        from hf_finetune.models.attention import trained_attention
        from hf_finetune.models.hidden_dropout import trained_hidden_dropout
        from hf_finetune.models.pooling import pooling_layer

        # Saved with the model: `pipeline(..., truncation=True)` then cuts inputs where training did.
        prep.tokenizer.model_max_length = prep.encoding.max_length
        # what the classifier reads, as resolved (auto becomes mean or cls: models/pooling.py)
        return ({"pooling": "mean" if pooling_layer(model) is not None else "cls"} | trained_attention(model)
                | trained_hidden_dropout(model))

    def recognises(self, config: dict[str, Any]) -> bool:
        return "architecture" not in config  # not a timm wrapper

    def preprocessor(self, folder: Any, config: Any, recipe: dict[str, Any], max_length: int | None = None,
                     **kwargs: Any) -> dict[str, Any]:
        """The saved tokenizer, at the run's max_length (else the backbone's limit)."""
        from transformers import AutoTokenizer

        from hf_finetune.data.text import default_max_length

        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        max_length = (max_length or (recipe.get("preprocessing") or {}).get("max_length")
                      or default_max_length(tokenizer, config))
        return {"tokenizer": tokenizer, "max_length": max_length}

    def finished_encoding(self, predictor: Any) -> TextEncoding:
        """A finished model's preprocessing: its saved tokenizer at the run's max_length."""
        return TextEncoding(predictor.tokenizer, predictor.max_length)

    def encode(self, predictor: Any, items: list[Any]) -> dict[str, Any]:
        """A batch of items as model keyword arguments, tokenized as evaluation did."""
        texts = [item.value for item in items]
        pairs = [item.pair for item in items] if predictor.text_pair_column else None
        return dict(predictor.tokenizer(texts, pairs, truncation=True, max_length=predictor.max_length,
                                        padding=True, return_tensors="pt"))

    def input_names(self, predictor: Any) -> list[str]:
        import inspect

        accepted = inspect.signature(predictor.model.forward).parameters
        return [n for n in INPUT_NAMES if n in predictor.tokenizer.model_input_names and n in accepted]

    def example_inputs(self, predictor: Any, batch: int, length: int, seed: int) -> dict[str, Any]:
        """Random token ids of the vocabulary, rows after the first padded at random points."""
        import torch

        length = min(length, predictor.max_length)
        generator = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, len(predictor.tokenizer), (batch, length), generator=generator)
        mask = torch.ones(batch, length, dtype=torch.long)
        for row in range(1, batch):
            keep = int(torch.randint(1, length + 1, (1,), generator=generator))
            mask[row, keep:] = 0
            ids[row, keep:] = predictor.tokenizer.pad_token_id
        tensors = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
        return {name: tensors[name] for name in self.input_names(predictor)}

    def dynamic_shapes(self, predictor: Any, names: list[str]) -> Any:
        import torch

        batch = torch.export.Dim("batch", min=1)
        sequence = torch.export.Dim("sequence", min=1, max=predictor.max_length)
        return (tuple({0: batch, 1: sequence} for _ in names),)  # forward(*tensors): one varargs entry

    def learning_rate(self, model: Any) -> tuple[float, str]:
        """The AdamW learning rate for the encoder's size."""
        params = sum(p.numel() for p in model.parameters())
        rate = next(lr for below, lr in TEXT_LR_BY_SIZE if params < below)
        return rate, f"text encoder of {params / 1e6:.0f}M parameters"

    def usable_rows(self, ds: Any, recipe: Any, key: str, where: str) -> Any:
        """The rows of an unlabelled pool a text model can read: rows with an empty text are left out."""
        import logging

        inputs = self.columns(recipe)
        for input_key, column in inputs:
            feature = ds.features[column]
            if not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
                raise DataError(f"{key}: column '{column}' (data.columns.{input_key}) of the unlabelled pool "
                                f"({where}) holds {feature!r}, not text")
        blank = sorted({row for _, column in inputs for row in blank_rows(ds, column)})
        if blank:
            if len(blank) == len(ds):
                raise DataError(f"{key}: every row of the unlabelled pool ({where}) has an empty text: "
                                "the pool is empty")
            logging.getLogger(__name__).warning(
                "Unlabelled pool: leaving out %d rows with an empty text (first: row %d)", len(blank), blank[0])
            blank_set = set(blank)
            ds = ds.select([i for i in range(len(ds)) if i not in blank_set])
        return ds

    def unlabelled_dataset(self, recipe: Any, rows: Any, prep_record: dict[str, Any], tokenizer: Any) -> Any:
        """Unlabelled rows tokenized as evaluation is (cached like the splits)."""
        from pathlib import Path

        cols, data = recipe.data.columns, recipe.data
        cache_dir = Path(data.cache_dir) if data.cache_dir else default_cache_dir()
        return tokenize_split(rows, tokenizer, cols.text, cols.text_pair, prep_record["max_length"], cache_dir,
                              data.num_proc, description="tokenizing the unlabelled pool").dataset

    def hub_base_model(self, name: str) -> str:
        return name

    def feature_pooling(self, spec: Any) -> str:
        """What rank reads of the backbone: its sentence-transformers pooling, else its head's input."""
        from pathlib import Path

        from hf_finetune.models.pooling import sentence_transformers_pooling

        st = sentence_transformers_pooling(spec.name) if Path(spec.name).is_dir() else None
        return "model's head" if st is None else st[0] + (" + normalize" if st[1] else "")
