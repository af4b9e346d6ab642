"""The recipe: its sections composed into one `Recipe`, and which dotted keys exist.

Each section's schema and the checks that need only that section live in recipe/sections/ (one
module per section); the checks that span sections live in recipe/cross.py. The section models are
re-exported here, so `from hf_finetune.recipe.schema import LoraSpec` keeps working.
"""

from __future__ import annotations

import typing
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, PrivateAttr

from hf_finetune.errors import did_you_mean
from hf_finetune.recipe.sections.augmentation import AUTO_AUGMENT_ALIASES, Augmentation
from hf_finetune.recipe.sections.base import Section
from hf_finetune.recipe.sections.batch import Batch
from hf_finetune.recipe.sections.card import CardSpec
from hf_finetune.recipe.sections.data import (
    FILE_FORMATS,
    Columns,
    DataSpec,
    SampleCaps,
    SplitNames,
    UnlabeledSpec,
)
from hf_finetune.recipe.sections.distill import Distill
from hf_finetune.recipe.sections.finetune import Finetune, LoraSpec, Strategy
from hf_finetune.recipe.sections.hub import HubSpec
from hf_finetune.recipe.sections.model import ModelSpec
from hf_finetune.recipe.sections.output import OutputSpec
from hf_finetune.recipe.sections.preprocessing import Preprocessing
from hf_finetune.recipe.sections.rank import RankScore, RankSpec
from hf_finetune.recipe.sections.search import (
    SearchDimension,
    SearchObjective,
    SearchPruner,
    SearchSampler,
    SearchSpec,
    seconds,
)
from hf_finetune.recipe.sections.self_training import SelfTraining
from hf_finetune.recipe.sections.training import training_fields

__all__ = [
    "AUTO_AUGMENT_ALIASES", "FILE_FORMATS", "TASKS", "Augmentation", "Batch", "CardSpec", "Columns", "DataSpec",
    "Distill", "Finetune", "HubSpec", "LoraSpec", "ModelSpec", "OutputSpec", "Preprocessing", "RankScore",
    "RankSpec", "Recipe", "SampleCaps", "SearchDimension", "SearchObjective", "SearchPruner", "SearchSampler",
    "SearchSpec", "Section", "SelfTraining", "SplitNames", "Strategy", "Task", "UnlabeledSpec", "is_free_mapping",
    "key_path_problem", "section_model", "seconds", "REGRESSION_TASKS", "TASK_INPUTS",
]

Task = Literal["text-classification", "image-classification", "token-classification", "text-multi-label",
               "image-multi-label", "text-regression", "image-regression", "semantic-segmentation"]
TASKS: tuple[str, ...] = typing.get_args(Task)
# The kind of input each task reads, as data: the keys of the other kind mean nothing to it. The
# behaviour is the task layer's (hf_finetune/tasks); tests/test_tasks.py checks that the two agree.
TASK_INPUTS: dict[str, str] = {"text-classification": "text", "image-classification": "image",
                               "token-classification": "words", "text-multi-label": "text",
                               "image-multi-label": "image", "text-regression": "text",
                               "image-regression": "image", "semantic-segmentation": "masks"}
# The tasks that predict numbers (metrics, selection and the target columns are the regression ones).
REGRESSION_TASKS: tuple[str, ...] = ("text-regression", "image-regression")
# Tasks whose rows carry a set of labels (data.columns.labels, data.label_separator; multi-label figures)
MULTI_LABEL_TASKS = frozenset({"text-multi-label", "image-multi-label"})
# Keys and sections only some kinds of input read (the kinds that read them -> the keys), left out of the
# other kinds' resolved recipes.
INPUT_ONLY: dict[tuple[str, ...], dict[str, Any]] = {
    ("text", "words"): {"preprocessing": True, "model": {"attn_implementation", "attention_dropout",
                                                                          "hidden_dropout"}},
    ("text",): {"data": {"columns": {"text", "text_pair"}}},
    ("words",): {"data": {"columns": {"tokens", "tags"}, "tag_scheme": True},
                 "preprocessing": {"label_all_tokens", "stride"}},
    # words: a tag per word, no pooling; masks: a class per pixel
    ("text", "image"): {"model": {"pooling"}, "data": {"columns": {"label", "targets", "labels"}, "label_separator": True}},
    ("image",): {"augmentation": True},
    ("image", "masks"): {"model": {"channels_last"},
                         "data": {"image_folder": True, "bad_images": True, "verify_images": True, "columns": {"image"}}},
    ("masks",): {"data": {"columns": {"mask"}, "mask_folder": True, "ignore_index": True, "label_names_file": True,
                           "image_size": True}},
}


class Recipe(Section):
    task: Task = Field(description="text-classification, image-classification, token-classification, "
                       "text-multi-label, image-multi-label, text-regression, image-regression or "
                       "semantic-segmentation.")
    model: ModelSpec = Field(description="The pretrained backbone.")
    data: DataSpec = Field(description="Where the data comes from and which columns to use.")
    preprocessing: Preprocessing = Field(default_factory=Preprocessing, description="Input preprocessing.")
    finetune: Finetune = Field(default_factory=Finetune, description="Fine-tuning strategy and learning rates.")
    batch: Batch = Field(default_factory=Batch, description="Global batch size, derived per device.")
    distill: Distill = Field(default_factory=Distill, description="Distillation from a finished run or an ensemble.")
    augmentation: Augmentation = Field(
        default_factory=Augmentation, description="Image augmentation for training (image-classification)."
    )
    metrics: list[str] = Field(
        default_factory=lambda: ["accuracy", "precision", "recall", "f1"],
        description="`evaluate` metrics: bundled ones work offline, other names load from the Hub.",
    )
    training: dict[str, Any] = Field(
        default_factory=dict, description="TrainingArguments fields (checked against the installed transformers)."
    )
    output: OutputSpec = Field(default_factory=OutputSpec, description="Where results are written.")
    hub: HubSpec = Field(default_factory=HubSpec, description="Pushing the finished run to the Hugging Face Hub.")
    card: CardSpec = Field(default_factory=CardSpec, description="Model card metadata.")
    rank: RankSpec = Field(default_factory=RankSpec, description="Ranking candidate backbones (`hf-finetune rank`).")
    search: SearchSpec = Field(default_factory=SearchSpec, description="Hyperparameter search (hf-finetune tune).")
    self_training: SelfTraining | None = Field(
        None, description="Self-training on data.unlabeled: rounds, confidence thresholds, class balance.",
    )

    # Where the recipe came from; set once by validation (`set_origin`), read through the properties.
    _user_training_keys: frozenset[str] = PrivateAttr(default_factory=frozenset)
    _source: str | None = PrivateAttr(default=None)  # the recipe file, for messages
    _overrides: tuple[str, ...] = PrivateAttr(default=())

    def set_origin(self, source: str | None, user_training_keys: set[str], overrides: list[str] | None = None) -> None:
        """Records the recipe file, the `training` keys its author wrote and the command-line overrides."""
        self._source = source
        self._user_training_keys = frozenset(user_training_keys)
        self._overrides = tuple(overrides or ())

    @property
    def source(self) -> str | None:
        """The recipe file, for messages (None for a recipe given as a mapping)."""
        return self._source

    @property
    def user_training_keys(self) -> frozenset[str]:
        """The `training` keys the user wrote; the others are defaults the run may adapt to the machine."""
        return self._user_training_keys

    @property
    def overrides(self) -> tuple[str, ...]:
        """The `dotted.key=value` overrides the recipe was loaded with, as given."""
        return self._overrides

    def user_dict(self) -> dict[str, Any]:
        """The keys the recipe's author set, and only those (valid recipe input): a run of it decides its
        data-aware defaults again, where `to_dict`'s every resolved key would count as the author's."""
        out = self.model_dump(mode="json", exclude_unset=True)
        training = {k: v for k, v in self.training.items() if k in self.user_training_keys}
        if training:
            out["training"] = training
        else:
            out.pop("training", None)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe, without the keys that do not apply to its task (valid recipe input)."""
        exclude: dict[str, Any] = {}
        for kinds, keys in INPUT_ONLY.items():  # what the other kinds of input read
            if TASK_INPUTS[self.task] not in kinds:
                _merge_exclusions(exclude, keys)
        for section in ("search", "rank"):  # only `tune` / `rank` read them; a recipe without one stays as it was
            if section not in self.model_fields_set:
                exclude[section] = True
        if self.finetune.strategy != "lora":  # LoRA keys mean nothing to the other strategies
            exclude["finetune"] = {"lora"}
            exclude["output"] = {"save_adapter"}
        if self.self_training is None:  # a run without self-training records no trace of it
            exclude["self_training"] = True
        if self.data.unlabeled is None:
            data_exclude = exclude.setdefault("data", {})
            data_exclude["unlabeled"] = True
        return self.model_dump(mode="json", exclude=exclude)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)



def _merge_exclusions(into: dict[str, Any], more: dict[str, Any]) -> None:
    """Merges pydantic `exclude` specifications: True (the whole key), a set of keys, or a nested mapping."""
    for key, value in more.items():
        value = dict.fromkeys(value, True) if isinstance(value, set) else value
        have = into.get(key)
        if value is True or have is True:
            into[key] = True
        else:
            into[key] = have if isinstance(have, dict) else {}
            _merge_exclusions(into[key], value)


def section_model(annotation: Any) -> type[BaseModel] | None:
    for arg in typing.get_args(annotation) or (annotation,):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def is_free_mapping(annotation: Any) -> bool:
    """True for dict-typed fields whose keys are the user's own (data.files, training)."""
    for arg in typing.get_args(annotation) or (annotation,):
        if typing.get_origin(arg) is dict or arg is dict:
            return True
    return False


def key_path_problem(parts: list[str]) -> str | None:
    """A message when a dotted key path (an override, a searched key) names no recipe key, else None."""
    model: type[BaseModel] = Recipe
    for i, part in enumerate(parts):
        fields = model.model_fields
        here = ".".join(parts[: i + 1])
        if part not in fields:
            return f"{here}: no such recipe key" + did_you_mean(part, fields)
        annotation = fields[part].annotation
        rest = parts[i + 1 :]
        if not rest:
            return None
        if model is Recipe and part == "training":
            key = rest[0]
            if len(rest) > 1:
                return None  # a dict-valued TrainingArguments field (e.g. lr_scheduler_kwargs.x)
            if key not in training_fields():
                return f"{here}.{key}: unknown TrainingArguments field" + did_you_mean(key, training_fields())
            return None
        sub = section_model(annotation)
        if sub is None:
            if is_free_mapping(annotation):
                return None
            return f"{here}: is a value, not a section; set it as {here}=..."
        model = sub
    return None
