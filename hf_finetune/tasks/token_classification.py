"""token-classification: a tag per word (named entities), on a BERT-family encoder with a fast tokenizer.

    inputs      sentences as lists of words (`data.columns.tokens`): CoNLL files (data/conll.py), JSON
                lines, parquet or Hub datasets; tokenized with the word ids of a fast tokenizer, long
                sentences in overlapping windows (data/words.py)
    labels      a tag per word (`data.columns.tags`), IOB2/IOB1/IOBES read into IOB2 (tasks/tags.py,
                tasks/tag_labels.py)
    model       AutoModelForTokenClassification: a new linear head on every token's state; the loss is
                cross-entropy over the words' first sub-tokens (every sub-token with label_all_tokens)
    metrics     entity-level precision, recall and F1 (micro and macro over entity types, seqeval), per
                entity type, token accuracy; selection on entity micro-F1; baseline: every word O
    predict     entities with their text, type, score and character offsets (finished/entities.py);
                the saved folder loads in pipeline("token-classification", aggregation_strategy="simple")
"""

from __future__ import annotations

from typing import Any

from datasets import Value

from hf_finetune.errors import DataError, ModelError, Problem, RecipeError
from hf_finetune.tasks.base import CardWords, Preprocessing, Task, TaskProblem
from hf_finetune.tasks.tag_labels import TagLabeling
from hf_finetune.tasks.text import TextInputs
from hf_finetune.tasks.text_length import resolve_max_length


class WordInputs(TextInputs):
    """Texts given as words, each word tagged: what token classification reads."""

    kind = "words"  # the recipe's TASK_INPUTS: texts given as words (their preprocessing keys are text's too)
    input_keys = ("tokens",)
    label_key = "tags"
    defaults = frozenset({"max_length"})  # no probe: a probe on a sentence embedding cannot tag words
    literal_inputs = True  # predict: a text to tag, split into words as the tokenizer splits them

    def recognises(self, config: dict[str, Any]) -> bool:
        return super().recognises(config) and any(str(a).endswith("ForTokenClassification")
                                                  for a in config.get("architectures") or ())

    def check_columns(self, splits: dict[str, Any], recipe: Any, names: dict[str, str]) -> None:
        """The tokens column holds lists of strings (the tags are checked with the labels)."""
        column = recipe.data.columns.tokens
        for role, ds in splits.items():
            inner = getattr(ds.features[column], "feature", None)
            if not (isinstance(inner, Value) and inner.dtype in ("string", "large_string")):
                raise DataError(f"data.columns.tokens: column '{column}' of split '{names[role]}' holds "
                                f"{ds.features[column]!r}, not lists of words (strings)")

    def preprocessing(self, recipe: Any, *, augment: bool = True, pad_to_multiple_of: int | None = None
                      ) -> Preprocessing:
        """The backbone's fast tokenizer at the resolved max_length, windows overlapping by the stride."""
        from hf_finetune.data.words import WordEncoding, default_stride, special_template
        from hf_finetune.models.backbones import build_tokenizer, load_text_config

        tokenizer = build_tokenizer(recipe.model)
        if not getattr(tokenizer, "is_fast", False):
            raise ModelError(f"model.name: the tokenizer of {recipe.model.name} is not a fast (Rust) tokenizer; "
                             "token-classification needs its word ids to tag words (and its offsets for pipeline())")
        max_length = resolve_max_length(recipe, tokenizer, load_text_config(recipe.model))
        prefix, suffix = special_template(tokenizer)
        budget = max_length - len(prefix) - len(suffix)
        stride = recipe.preprocessing.stride
        if stride is None:
            stride = default_stride(budget)
        elif 2 * stride >= budget:
            raise RecipeError([Problem("preprocessing.stride", f"{stride} shared tokens must be less than half "
                                          f"of the {budget} tokens a window of max_length {max_length} holds")])
        label_all = recipe.preprocessing.label_all_tokens
        encoding = WordEncoding(tokenizer, max_length, stride, label_all, pad_to_multiple_of)
        record = {"max_length": max_length, "stride": stride, "label_all_tokens": label_all}
        return Preprocessing(encoding, tokenizer, record, {"preprocessing": {"max_length": max_length,
                                                                             "stride": stride}},
                             verb="tokenizing")

    def build_backbone(self, spec: Any, labels: Any, tokenizer: Any = None) -> Any:
        """The backbone with a new token-classification head sized to the tags."""
        from hf_finetune.models.backbones import build_token_model, build_tokenizer

        return build_token_model(spec, labels, tokenizer if tokenizer is not None else build_tokenizer(spec))

    def finish_model(self, recipe: Any, model: Any, prep: Preprocessing, data: Any) -> dict[str, Any]:
        """The tokenizer's max length, for pipeline(); the attention kernel and the dropouts as resolved."""
        from hf_finetune.models.attention import trained_attention
        from hf_finetune.models.hidden_dropout import trained_hidden_dropout

        prep.tokenizer.model_max_length = prep.encoding.max_length
        return trained_attention(model) | trained_hidden_dropout(model)

    def finished_encoding(self, predictor: Any) -> Any:
        """A finished model's preprocessing of tagged sentences: its tokenizer, max_length and stride."""
        from hf_finetune.data.words import WordEncoding, default_stride, special_template

        prep = predictor.recipe.get("preprocessing") or {}
        stride = prep.get("stride")
        if stride is None:
            prefix, suffix = special_template(predictor.tokenizer)
            stride = default_stride(predictor.max_length - len(prefix) - len(suffix))
        return WordEncoding(predictor.tokenizer, predictor.max_length, stride)


class TokenTagging(TaskProblem):
    kind = "entities"
    labeling = TagLabeling()
    defaults = frozenset()  # selection is on entity F1 already; O outnumbering every tag is the norm, not a flaw
    peft_task_type = "TOKEN_CLS"
    card = CardWords(
        labels="It tags each word of a text with one of {n} tags: {labels}.",
        head="a new {n}-way token-classification head (randomly initialised; one prediction per token)",
        per_class="Per entity type",
        per_class_column="entity type",
        baseline="tagging every word '{name}' (no entity)",
        usage='from transformers import pipeline\ntagger = pipeline("{task}", model="{model}", '
              'aggregation_strategy="simple")\nprint(tagger({example}))',
        metric_titles={"f1": "Entity F1 (micro)", "precision": "Entity precision (micro)",
                       "recall": "Entity recall (micro)", "accuracy": "Token accuracy",
                       "macro_f1": "Entity F1 (macro)", "macro_precision": "Entity precision (macro)",
                       "macro_recall": "Entity recall (macro)"},
        averages={"f1": "micro", "precision": "micro", "recall": "micro", "macro_f1": "macro",
                  "macro_precision": "macro", "macro_recall": "macro"},
    )

    def metrics(self, names: list[str], labels: list[str]) -> Any:
        from hf_finetune.metrics.entities import EntityMetrics

        return EntityMetrics(names, labels)

    def baselines(self, results: dict[str, Any], counts: Any) -> list[str]:
        from hf_finetune.metrics.entities import add_entity_baselines

        return add_entity_baselines(results)


# Served and tested (tests/test_token_classification.py). Not served, refused by `check` naming the task:
# rank (features per token), ensemble, soup, distill (per-token teachers), self_training (whole sentences),
# cache_features (a probe on one vector per text).
CAPABILITIES = frozenset({"tune", "export", "lora", "linear_probe", "probe_then_full", "gradual_unfreeze",
                          "layer_decay"})

TASK = Task(
    name="token-classification",
    pipeline_task="token-classification",
    card_name="Token Classification",
    inputs=WordInputs(),
    problem=TokenTagging(),
    capabilities=CAPABILITIES,
    example_input='"My name is Clara and I live in Berkeley, California."',
    auto_model="AutoModelForTokenClassification",
)
