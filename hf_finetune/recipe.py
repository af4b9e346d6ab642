"""The recipe: one YAML file describing one fine-tuning run, validated into typed sections.

Loading goes: YAML (safe loader) -> dotted overrides -> schema (pydantic, unknown keys forbidden)
-> the `training` section checked against the installed `TrainingArguments` -> cross-field checks.
Every problem found on the way is collected and raised together as one `RecipeError`, each with
its dotted key path and, for a misspelt key, the closest valid name.
"""

from __future__ import annotations

import copy
import glob
import os
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, TypeAdapter, ValidationError, field_validator

from hf_finetune.errors import Problem, RecipeError
from hf_finetune.metric_names import BUNDLED_METRICS, metric_keys, suggest_bundled
from hf_finetune.training_args import check_training_section, did_you_mean, show, training_fields

Task = Literal["text-classification", "image-classification"]
TASKS: tuple[str, ...] = typing.get_args(Task)

# Local data files: extension -> `datasets` builder name.
FILE_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}

TOKEN_HINT = "run `hf auth login` or set the HF_TOKEN environment variable"


class Section(BaseModel):
    """A recipe section: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSpec(Section):
    name: str = Field(
        description="Backbone: a Hub id (bert-base-uncased, timm/resnet50.a1_in1k, hf-hub:timm/...), "
        "a timm architecture name (resnet50) or a local folder."
    )
    revision: str | None = Field(None, description="Hub branch, tag or commit of the backbone.")
    trust_remote_code: bool = Field(
        False, description="Run Python code shipped in the model's Hub repository (off unless you trust it)."
    )
    pretrained: bool = Field(
        True, description="Load pretrained weights; false builds the architecture with random weights."
    )
    allow_pickle: bool = Field(
        False,
        description="Allow pickle-based weights (pytorch_model.bin); pickle can run code, so safetensors only by default.",
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] | None = Field(
        None, description="Attention kernel of text models (default: the fastest available, sdpa; recorded)."
    )
    channels_last: bool | None = Field(
        None, description="Channels-last memory layout for convolutional vision models (default: on with a GPU)."
    )


class Columns(Section):
    text: str | None = Field(None, description="Text column (text-classification; default `text`).")
    text_pair: str | None = Field(None, description="Second text column for sentence-pair tasks.")
    image: str | None = Field(
        None, description="Image column: images or file paths (image-classification; default `image`)."
    )
    label: str = Field("label", description="Label column: strings or integers, ClassLabel or plain.")


class SplitNames(Section):
    train: str = Field("train", description="Split to train on.")
    validation: str | None = Field(
        "validation",
        description="Split for model selection; when the dataset has none (or null), carved from train.",
    )
    test: str | None = Field("test", description="Split for the final held-out score; null for none.")


class SampleCaps(Section):
    train: int | None = Field(None, gt=0, description="Use at most this many training rows (seeded shuffle).")
    validation: int | None = Field(None, gt=0, description="Use at most this many validation rows.")
    test: int | None = Field(None, gt=0, description="Use at most this many test rows.")


class DataSpec(Section):
    dataset: str | None = Field(
        None, description="Hub dataset id (stanfordnlp/imdb), or a folder written by `Dataset.save_to_disk`."
    )
    config: str | None = Field(None, description="Hub dataset configuration name (e.g. sst2 for glue).")
    revision: str | None = Field(None, description="Hub dataset branch, tag or commit.")
    files: dict[str, list[str]] | None = Field(
        None,
        description="Local files per split: {train: a.csv, test: b.jsonl}; csv/tsv/json/jsonl/parquet, globs allowed.",
    )
    image_folder: str | None = Field(
        None,
        description="Folder of images, one sub-folder per class (optionally inside train/validation/test folders).",
    )
    splits: SplitNames = Field(default_factory=SplitNames, description="Which split names to use.")
    columns: Columns = Field(default_factory=Columns, description="Which columns hold inputs and labels.")
    label_names: list[str] | None = Field(
        None, description="Names for integer labels 0..K-1 when the dataset has no ClassLabel names."
    )
    validation_size: float = Field(
        0.1, gt=0, description="Share (<1) or number of rows (>=1) of train carved out as validation when needed."
    )
    seed: int = Field(42, description="Seed for carving validation and for sample caps.")
    max_samples: SampleCaps = Field(default_factory=SampleCaps, description="Per-split row caps for quick runs.")
    bad_images: Literal["error", "skip"] = Field(
        "error", description="Unreadable images: stop with their paths, or skip them and report the count."
    )
    num_proc: int | None = Field(None, gt=0, description="Processes for dataset preprocessing (default: 1).")
    cache_dir: str | None = Field(
        None, description="Where preprocessed splits are cached (default: the `datasets` cache)."
    )
    verify_images: bool = Field(
        True,
        description="Decode every image once before training (cached) to find unreadable files up front.",
    )

    @field_validator("files", mode="before")
    @classmethod
    def _paths_as_lists(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out = {}
        for split, paths in value.items():
            if isinstance(paths, str):
                paths = [paths]
            if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
                raise ValueError(f"data.files.{split} must be a path or a list of paths, got {paths!r}")
            out[split] = paths
        return out

    @field_validator("validation_size")
    @classmethod
    def _whole_number_when_count(cls, value: float) -> float:
        if value >= 1 and value != int(value):
            raise ValueError("a row count (>= 1) must be a whole number; use a value below 1 for a share")
        return value


class Preprocessing(Section):
    max_length: int | None = Field(
        None, gt=0, description="Truncate texts to this many tokens (default and cap: the tokenizer's limit)."
    )


# Friendly names for timm's augmentation policy strings.
AUTO_AUGMENT_ALIASES = {
    "randaugment": "rand-m9-mstd0.5-inc1",  # timm's standard RandAugment recipe
    "trivialaugment": "rand-n1-m10-mstd101-p1.0",  # one op, uniform magnitude, always applied
    "augmix": "augmix-m5-w3",
}


class Augmentation(Section):
    """Training-time image augmentation (evaluation always uses resize + center crop)."""

    crop_scale: tuple[float, float] = Field(
        (0.08, 1.0), description="Random resized crop: range of the image area kept (ImageNet standard)."
    )
    crop_ratio: tuple[float, float] = Field((0.75, 4 / 3), description="Random resized crop: aspect-ratio range.")
    hflip: float = Field(0.5, ge=0, le=1, description="Probability of a horizontal flip.")
    vflip: float = Field(0.0, ge=0, le=1, description="Probability of a vertical flip.")
    color_jitter: float = Field(
        0.4, ge=0, description="Brightness/contrast/saturation jitter strength (0 = off; off with auto_augment)."
    )
    auto_augment: str | None = Field(
        None,
        description="randaugment, trivialaugment, augmix, or a timm policy string (rand-m9-mstd0.5-inc1, augmix-m5-w3).",
    )
    random_erasing: float = Field(0.0, ge=0, le=1, description="Probability of erasing a random rectangle.")
    mixup: float = Field(0.0, ge=0, description="Mixup alpha (0 = off); targets become soft.")
    cutmix: float = Field(0.0, ge=0, description="CutMix alpha (0 = off); targets become soft.")
    mix_prob: float = Field(1.0, ge=0, le=1, description="Probability of mixing a batch when mixup/cutmix is on.")
    mix_switch_prob: float = Field(0.5, ge=0, le=1, description="With both on: probability of CutMix over mixup.")

    @field_validator("auto_augment")
    @classmethod
    def _known_policy(cls, value: str | None) -> str | None:
        if value is None:
            return value
        policy = AUTO_AUGMENT_ALIASES.get(value, value)
        import timm.data.auto_augment as aa

        try:
            if policy.startswith("rand"):
                aa.rand_augment_transform(policy, {})
            elif policy.startswith("augmix"):
                aa.augment_and_mix_transform(policy, {})
            else:
                aa.auto_augment_transform(policy, {})
        except (AssertionError, ValueError, KeyError) as exc:
            raise ValueError(
                f"unknown augmentation policy {value!r} ({exc}); use {', '.join(AUTO_AUGMENT_ALIASES)} "
                "or a timm policy string such as rand-m9-mstd0.5-inc1"
            ) from None
        return value

    @property
    def mixes(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    @field_validator("crop_scale", "crop_ratio")
    @classmethod
    def _ordered_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 < low <= high:
            raise ValueError(f"must be [low, high] with 0 < low <= high, got {list(value)}")
        return value

    def timm_kwargs(self) -> dict[str, Any]:
        """Arguments for `timm.data.create_transform(is_training=True)`."""
        return {
            "scale": tuple(self.crop_scale),
            "ratio": tuple(self.crop_ratio),
            "hflip": self.hflip,
            "vflip": self.vflip,
            "color_jitter": self.color_jitter,
            "auto_augment": AUTO_AUGMENT_ALIASES.get(self.auto_augment, self.auto_augment),
            "re_prob": self.random_erasing,
            "re_mode": "pixel",  # erase with per-pixel noise (timm's recommended mode)
        }


Strategy = Literal["full", "linear_probe", "gradual_unfreeze", "probe_then_full"]


class Finetune(Section):
    """How to fine-tune: which parameters train when, at which learning rate, with which loss."""

    strategy: Strategy = Field(
        "full",
        description="full: everything trains; linear_probe: only the new head; gradual_unfreeze: head first, "
        "then backbone blocks top-down; probe_then_full: linear probe, then full fine-tuning (LP-FT).",
    )
    cache_features: bool = Field(
        False,
        description="linear_probe: compute frozen-backbone features once (eval preprocessing) and train the head "
        "on them.",
    )
    unfreeze_every: float = Field(
        1, gt=0, description="gradual_unfreeze: unfreeze more blocks every this many epochs (or steps)."
    )
    unfreeze_unit: Literal["epoch", "step"] = Field("epoch", description="gradual_unfreeze: unit of unfreeze_every.")
    blocks_per_unfreeze: int = Field(1, gt=0, description="gradual_unfreeze: blocks unfrozen at each stage.")
    probe_epochs: float = Field(
        1, gt=0, description="probe_then_full: epochs of linear probing before the whole model trains."
    )
    head_learning_rate: float | None = Field(
        None, gt=0, description="Learning rate of the new head (default: training.learning_rate)."
    )
    backbone_lr_scale: float = Field(
        1.0, gt=0, description="Backbone learning rate = training.learning_rate x this (e.g. 0.1)."
    )
    layer_decay: float | None = Field(
        None, gt=0, le=1,
        description="Layer-wise decay: the block d steps below the head gets backbone rate x decay^d.",
    )
    class_weights: Literal["balanced"] | list[float] | dict[str, float] | None = Field(
        None,
        description="Weighted loss: balanced (n / (classes x count)), a list in label order, or {label: weight}; "
        "the resolved recipe records the weights used.",
    )
    early_stopping_patience: int | None = Field(
        None, gt=0, description="Stop after this many evaluations without improvement of the selection metric."
    )
    early_stopping_threshold: float = Field(
        0.0, ge=0, description="Smallest change of the selection metric that counts as an improvement."
    )


class Batch(Section):
    """Batch size stated for the whole run, independent of how many processes share it."""

    global_size: int | None = Field(
        None, gt=0,
        description="Samples per optimizer step over all processes; per-device batch and gradient accumulation "
        "are derived for the number of processes. Unset: training.per_device_train_batch_size is used as given.",
    )
    max_per_device: int | None = Field(
        None, gt=0,
        description="Largest per-device batch when deriving from global_size "
        "(default: training.per_device_train_batch_size).",
    )


class OutputSpec(Section):
    dir: str | None = Field(None, description="Output folder (default: outputs/<recipe file name>).")
    overwrite: bool = Field(False, description="Replace a finished run in output.dir instead of refusing.")
    keep_checkpoints: bool = Field(
        False, description="Keep <output.dir>/checkpoints after a successful run (they are only needed to resume)."
    )


def _hub_id(value: str | None) -> str | None:
    """A Hub repository id (owner/name or name), or None."""
    if value is not None:
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(value)
        except HFValidationError:
            raise ValueError(
                f"'{value}' is not a valid Hub repository id: use owner/name or name (letters, digits, "
                "'-', '_' and '.'; at most 96 characters)"
            ) from None
    return value


class HubSpec(Section):
    """Publishing the finished run; the token comes from HF_TOKEN or `hf auth login`, never from here."""

    push: bool = Field(
        False, description="Upload the finished output folder to the Hub (token: HF_TOKEN or `hf auth login`)."
    )
    repo_id: str | None = Field(None, description="Hub repository to push to: owner/name (or name, under your account).")
    private: bool = Field(
        True, description="Create the repository private; an existing repository keeps its visibility."
    )
    revision: str | None = Field(None, description="Branch to push to (created when missing; default: main).")

    @field_validator("repo_id")
    @classmethod
    def _valid_repo_id(cls, value: str | None) -> str | None:
        return _hub_id(value)


class CardSpec(Section):
    """Model card metadata that the run cannot know by itself."""

    license: str | None = Field(
        None, description="License id for the model card (apache-2.0, mit, other, ...); omitted when unset."
    )
    base_model: str | None = Field(
        None, description="Hub id credited as the base model when model.name is a local folder (default: none)."
    )
    dataset: str | None = Field(
        None, description="Hub dataset id credited in the card when the data is local (default: none)."
    )

    @field_validator("base_model", "dataset")
    @classmethod
    def _valid_hub_ids(cls, value: str | None) -> str | None:
        return _hub_id(value)


class Recipe(Section):
    task: Task = Field(description="text-classification or image-classification.")
    model: ModelSpec = Field(description="The pretrained backbone.")
    data: DataSpec = Field(description="Where the data comes from and which columns to use.")
    preprocessing: Preprocessing = Field(default_factory=Preprocessing, description="Input preprocessing.")
    finetune: Finetune = Field(default_factory=Finetune, description="Fine-tuning strategy and learning rates.")
    batch: Batch = Field(default_factory=Batch, description="Global batch size, derived per device.")
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

    # The `training` keys the user wrote (the rest are defaults that the run may adapt to the hardware).
    _explicit_training: set[str] = PrivateAttr(default_factory=set)
    _source: str | None = PrivateAttr(default=None)  # the recipe file, for messages

    @property
    def source(self) -> str | None:
        return self._source

    @property
    def is_text(self) -> bool:
        return self.task == "text-classification"

    @property
    def is_vision(self) -> bool:
        return self.task == "image-classification"

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe, without the keys that do not apply to its task (valid recipe input)."""
        exclude: dict[str, Any]
        if self.is_text:
            exclude = {"augmentation": True, "model": {"channels_last"},
                       "data": {"image_folder": True, "bad_images": True, "verify_images": True,
                                "columns": {"image"}}}
        else:
            exclude = {"preprocessing": True, "model": {"attn_implementation"},
                       "data": {"columns": {"text", "text_pair"}}}
        return self.model_dump(mode="json", exclude=exclude)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


# --- house defaults for the `training` section ------------------------------------------------------

def training_defaults_for(task: str) -> dict[str, Any]:
    """Our defaults, applied under the recipe's own `training` values (and shown in the resolved recipe)."""
    defaults: dict[str, Any] = {
        "eval_strategy": "epoch",
        "save_strategy": "epoch",
        "save_total_limit": 2,  # the best checkpoint is always kept on top of this
        "load_best_model_at_end": True,
        "logging_strategy": "steps",
        "logging_steps": 0.02,  # a fraction: about 50 log lines per run, whatever its length
        "report_to": "none",
        "seed": 42,
        "optim": "adamw_torch_fused",  # one fused kernel for the whole update (CPU and GPU)
    }
    if task == "text-classification":
        # Batches of similar length waste little compute on padding (dynamic padding does the rest).
        defaults["train_sampling_strategy"] = "group_by_length"
    return defaults


# --- loading -------------------------------------------------------------------------------------------

def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a recipe file with YAML's safe loader (no Python objects can be constructed)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError([Problem("", f"recipe file not found: {path}")])
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError([Problem("", f"not valid YAML{where}: {problem}")], source=str(path)) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError([Problem("", f"a recipe must be a YAML mapping, got {type(raw).__name__}")], str(path))
    return raw


def _section_model(annotation: Any) -> type[BaseModel] | None:
    for arg in typing.get_args(annotation) or (annotation,):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _is_free_mapping(annotation: Any) -> bool:
    """True for dict-typed fields whose keys are the user's own (data.files, training)."""
    for arg in typing.get_args(annotation) or (annotation,):
        if typing.get_origin(arg) is dict or arg is dict:
            return True
    return False


def _check_override_path(parts: list[str]) -> str | None:
    """Returns a message when a dotted override path names no recipe key, else None."""
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
        sub = _section_model(annotation)
        if sub is None:
            if _is_free_mapping(annotation):
                return None
            return f"{here}: is a value, not a section; set it as {here}=..."
        model = sub
    return None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Applies `dotted.key=value` overrides; values are parsed as YAML (`3e-5`, `[a, b]`, `null`)."""
    raw = copy.deepcopy(raw)
    problems: list[Problem] = []
    for item in overrides:
        if "=" not in item:
            problems.append(Problem(item, "an override must look like dotted.key=value"))
            continue
        key, _, text = item.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not key or any(not p for p in parts):
            problems.append(Problem(key or item, "an override must look like dotted.key=value"))
            continue
        message = _check_override_path(parts)
        if message:
            problems.append(Problem("", f"override '{item}': {message}"))
            continue
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text  # not YAML: keep it as the literal string
        node = raw
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    if problems:
        raise RecipeError(problems)
    return raw


def _unknown_key(key: str, valid: Any) -> str:
    if "token" in key.lower():
        return f"tokens never go in a recipe: {TOKEN_HINT}"  # and the value is never echoed
    return "unknown key" + did_you_mean(key, valid)


def _pydantic_problems(exc: ValidationError, prefix: list[str]) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = prefix + [str(p) for p in err["loc"] if not isinstance(p, int)]
        path = ".".join(loc) + "".join(f"[{p}]" for p in err["loc"] if isinstance(p, int))
        kind = err["type"]
        if kind == "extra_forbidden":
            model = Recipe
            for part in loc[:-1]:
                sub = _section_model(model.model_fields[part].annotation) if part in model.model_fields else None
                if sub is None:
                    break
                model = sub
            message = _unknown_key(loc[-1], model.model_fields)
        elif kind == "missing":
            message = "required key is missing"
            model = Recipe
            for part in loc:
                field = model.model_fields.get(part)
                if field is None:
                    break
                if part == loc[-1] and field.description:
                    message += f" ({field.description})"
                model = _section_model(field.annotation) or model
        elif kind in ("model_type", "dict_type") and not isinstance(err.get("input"), dict):
            value = err.get("input")
            message = f"must be a section (a mapping of keys), got {show(value)} ({type(value).__name__})"
        elif kind == "value_error":
            message = str(err.get("ctx", {}).get("error", err["msg"]))
        elif kind == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            message = f"{show(err['input'])} is not allowed; expected {expected}"
            choices = [c.strip().strip("'") for c in expected.replace(" or ", ", ").split(",")]
            if isinstance(err["input"], str):
                message += did_you_mean(err["input"], choices)
        else:
            value = err.get("input")
            shown = f"{show(value)} ({type(value).__name__})" if not isinstance(value, dict) else "a mapping"
            message = f"{err['msg'][0].lower()}{err['msg'][1:]}, got {shown}"
        problems.append(Problem(path, message))
    return problems


def _cross_checks(task: str | None, data: DataSpec | None, prep: Preprocessing | None,
                  augmentation: Augmentation | None) -> list[Problem]:
    """Checks that need several keys at once; a section that failed validation is skipped (None)."""
    problems: list[Problem] = []
    if task == "text-classification" and augmentation not in (None, Augmentation()):
        problems.append(Problem("augmentation", "only applies to task: image-classification"))
    if data is None:
        return problems
    cols = data.columns
    sources = [k for k in ("dataset", "files", "image_folder") if getattr(data, k) is not None]
    if not sources:
        problems.append(Problem("data", "say where the data is: data.dataset, data.files or data.image_folder"))
    elif len(sources) > 1:
        problems.append(
            Problem("data", f"give one data source, not {' and '.join('data.' + s for s in sources)}")
        )
    for key in ("config", "revision"):
        if getattr(data, key) is not None and data.dataset is None:
            problems.append(Problem(f"data.{key}", "only applies with data.dataset (a Hub dataset)"))

    if data.files is not None:
        if not data.files:
            problems.append(Problem("data.files", "is empty; give at least a train file"))
        elif data.splits.train not in data.files:
            problems.append(
                Problem(
                    "data.files",
                    f"has no '{data.splits.train}' split (the training split, data.splits.train); "
                    f"keys given: {', '.join(data.files)}",
                )
            )
        for split, paths in data.files.items():
            key = f"data.files.{split}"
            if not paths:
                problems.append(Problem(key, "no files given"))
            for p in paths:
                suffix = Path(p).suffix.lower()
                if suffix not in FILE_FORMATS:
                    problems.append(
                        Problem(key, f"'{p}': unsupported file type; use {', '.join(FILE_FORMATS)}")
                    )
                elif not glob.glob(p):
                    problems.append(Problem(key, f"file not found: {p}"))
            if len({FILE_FORMATS.get(Path(p).suffix.lower()) for p in paths}) > 1:
                problems.append(Problem(key, "files of one split must share a format"))
    if data.image_folder is not None and not Path(data.image_folder).is_dir():
        problems.append(Problem("data.image_folder", f"folder not found: {data.image_folder}"))
    if data.dataset is not None and data.dataset.startswith((".", "/", "~")) and not Path(data.dataset).exists():
        problems.append(Problem("data.dataset", f"local dataset folder not found: {data.dataset}"))
    if data.label_names is not None and len(set(data.label_names)) != len(data.label_names):
        problems.append(Problem("data.label_names", "names must be unique"))
    used = [c for c in (cols.text, cols.text_pair, cols.image) if c is not None]
    if cols.label in used:
        problems.append(Problem("data.columns.label", f"'{cols.label}' is also used as an input column"))
    if cols.text is not None and cols.text == cols.text_pair:
        problems.append(Problem("data.columns.text_pair", "must differ from data.columns.text"))

    if task == "text-classification":
        if cols.image is not None:
            problems.append(Problem("data.columns.image", "only applies to task: image-classification"))
        for key in ("bad_images", "verify_images"):
            if getattr(data, key) != DataSpec.model_fields[key].default:
                problems.append(Problem(f"data.{key}", "only applies to task: image-classification"))
        if data.image_folder is not None:
            problems.append(Problem("data.image_folder", "only applies to task: image-classification"))
    elif task == "image-classification":
        if data.bad_images == "skip" and not data.verify_images:
            problems.append(
                Problem("data.bad_images", "'skip' needs data.verify_images: true to find the images to skip")
            )
        for key in ("text", "text_pair"):
            if getattr(cols, key) is not None:
                problems.append(Problem(f"data.columns.{key}", "only applies to task: text-classification"))
        if prep is not None and prep.max_length is not None:
            problems.append(
                Problem(
                    "preprocessing.max_length",
                    "only applies to text; image size comes from the backbone's pretrained config",
                )
            )
    return problems


def _finetune_checks(ft: Finetune, training: dict[str, Any] | None, task: str | None,
                     augmentation: Augmentation | None) -> list[Problem]:
    """Keys that only mean something for one strategy, and what a strategy needs from training."""
    problems: list[Problem] = []
    default = Finetune()
    only_for = {
        "cache_features": "linear_probe",
        "unfreeze_every": "gradual_unfreeze",
        "unfreeze_unit": "gradual_unfreeze",
        "blocks_per_unfreeze": "gradual_unfreeze",
        "probe_epochs": "probe_then_full",
    }
    for key, strategy in only_for.items():
        if getattr(ft, key) != getattr(default, key) and ft.strategy != strategy:
            problems.append(Problem(f"finetune.{key}", f"only applies to finetune.strategy: {strategy}"))
    if ft.strategy == "linear_probe":
        for key in ("layer_decay", "backbone_lr_scale"):
            if getattr(ft, key) != getattr(default, key):
                problems.append(Problem(f"finetune.{key}", "has no effect with linear_probe: the backbone is frozen"))
    if ft.cache_features and augmentation is not None and augmentation != Augmentation():
        problems.append(Problem("augmentation", "has no effect with finetune.cache_features: features are computed "
                                                "once, with evaluation preprocessing"))
    if isinstance(ft.class_weights, list) and any(w <= 0 for w in ft.class_weights):
        problems.append(Problem("finetune.class_weights", "weights must be positive"))
    if isinstance(ft.class_weights, dict) and any(w <= 0 for w in ft.class_weights.values()):
        problems.append(Problem("finetune.class_weights", "weights must be positive"))
    if training is not None:
        if ft.early_stopping_patience is not None:
            if not training.get("load_best_model_at_end") or training.get("eval_strategy", "no") == "no":
                problems.append(Problem("finetune.early_stopping_patience",
                                        "needs evaluations and training.load_best_model_at_end: true"))
        if augmentation is not None and augmentation.mixes and task == "image-classification":
            batch = training.get("per_device_train_batch_size", 8)
            if batch % 2:
                problems.append(Problem("training.per_device_train_batch_size",
                                        f"mixup/cutmix pair up samples: needs an even batch size, got {batch}"))
            if training.get("dataloader_drop_last") is False:
                problems.append(Problem("training.dataloader_drop_last",
                                        "mixup/cutmix need full (even) batches: leave it true"))
    return problems


def _hub_checks(hub: HubSpec | None) -> list[Problem]:
    if hub is not None and hub.push and hub.repo_id is None:
        return [Problem("hub.repo_id", "required when hub.push is true (e.g. my-name/my-model)")]
    return []


def _metric_checks(metrics: list[str]) -> list[Problem]:
    problems = []
    if not metrics:
        problems.append(Problem("metrics", "give at least one metric (e.g. [accuracy])"))
    for i, name in enumerate(metrics):
        near = suggest_bundled(name)
        if near:
            problems.append(Problem(f"metrics[{i}]", f"unknown metric '{name}'; did you mean '{near}'?"))
    return problems


def _training_cross_checks(t: dict[str, Any], metrics: list[str] | None) -> list[Problem]:
    problems: list[Problem] = []
    if t.get("load_best_model_at_end"):
        eval_s, save_s = t.get("eval_strategy", "no"), t.get("save_strategy", "steps")
        if eval_s == "no":
            problems.append(
                Problem("training.load_best_model_at_end", "needs evaluations: set training.eval_strategy")
            )
        elif save_s == "best":
            pass  # saving on a new best already follows evaluation
        elif eval_s != save_s:
            problems.append(
                Problem(
                    "training.load_best_model_at_end",
                    f"needs training.eval_strategy and training.save_strategy to match "
                    f"(they are '{eval_s}' and '{save_s}')",
                )
            )
        elif eval_s == "steps":
            eval_steps = t.get("eval_steps") or t.get("logging_steps", 500)
            save_steps = t.get("save_steps", 500)
            both_counts = eval_steps >= 1 and save_steps >= 1
            if both_counts and save_steps % eval_steps != 0:
                problems.append(
                    Problem(
                        "training.save_steps",
                        f"must be a multiple of training.eval_steps ({eval_steps:g}) to keep the best checkpoint",
                    )
                )
    metric = t.get("metric_for_best_model")
    if metric is not None and metrics is not None:
        produced = metric_keys(metrics) | {"loss"}
        bare = metric[len("eval_"):] if metric.startswith("eval_") else metric
        if bare not in produced:
            problems.append(
                Problem(
                    "training.metric_for_best_model",
                    f"'{metric}' is not produced by this run; it produces {', '.join(sorted(produced))}"
                    + did_you_mean(bare, produced),
                )
            )
    resume = t.get("resume_from_checkpoint")
    if resume is not None and resume != "auto" and not Path(resume).is_dir():
        problems.append(
            Problem("training.resume_from_checkpoint", f"use 'auto' or an existing checkpoint folder; not found: {resume}")
        )
    if t.get("fp16") and t.get("bf16"):
        problems.append(Problem("training.fp16", "choose one of training.fp16 and training.bf16"))
    return problems


def _resolve_training(task: str, user: dict[str, Any], metrics: list[str] | None,
                      augmentation: Augmentation | None = None) -> dict[str, Any]:
    """House defaults under the user's `training` values, plus the model-selection metric."""
    training = training_defaults_for(task)
    if task == "image-classification" and augmentation is not None and augmentation.mixes:
        training["dataloader_drop_last"] = True  # mixing pairs samples within a batch: no odd last batch
    training.update(user)
    if training.get("load_best_model_at_end") and training.get("metric_for_best_model") is None:
        # Select on the first metric the recipe asks for; "loss" when that metric is not bundled.
        first = metrics[0] if metrics else None
        keys = BUNDLED_METRICS.get(first, ()) if first else ()
        training["metric_for_best_model"] = keys[0] if keys else "loss"
    if "greater_is_better" not in user and training.get("metric_for_best_model"):
        training["greater_is_better"] = not str(training["metric_for_best_model"]).endswith("loss")
    return training


def _resolve_data(task: str, data: DataSpec) -> None:
    cols = data.columns
    if task == "text-classification" and cols.text is None:
        cols.text = "text"
    if task == "image-classification" and cols.image is None:
        cols.image = "image"


def validate_recipe(raw: dict[str, Any], source: str | None = None) -> Recipe:
    """Validates a raw recipe mapping into a `Recipe`, reporting every problem at once.

    Each top-level section is validated on its own, so a mistake in one section does not hide the
    mistakes in another; checks that span sections run on the sections that are valid.

    Args:
        raw: the parsed YAML mapping, overrides already applied.
        source: the recipe file path, used in messages and for the default output folder.

    Raises:
        RecipeError: listing every problem with its dotted key path.
    """
    problems: list[Problem] = []
    fields = Recipe.model_fields
    for key in raw:
        if key not in fields:
            problems.append(Problem(str(key), _unknown_key(str(key), fields)))
    parts: dict[str, Any] = {}
    for name, field in fields.items():
        if name == "training":
            parts[name], training_problems = check_training_section(raw.get("training"))
            problems += training_problems
            if training_problems:
                parts[name] = None
            continue
        if name not in raw:
            if field.is_required():
                problems.append(Problem(name, f"required key is missing ({field.description})"))
                parts[name] = None
            continue
        try:
            parts[name] = TypeAdapter(field.annotation).validate_python(raw[name])
        except ValidationError as exc:
            problems += _pydantic_problems(exc, prefix=[name])
            parts[name] = None

    task = parts.get("task")
    data = parts.get("data")
    metrics = parts.get("metrics", fields["metrics"].default_factory())
    if task is not None and data is not None:
        _resolve_data(task, data)
    problems += _cross_checks(task, data, parts.get("preprocessing"), parts.get("augmentation"))
    problems += _hub_checks(parts.get("hub"))
    if metrics is not None:
        problems += _metric_checks(metrics)
    if parts.get("training") is not None and task is not None:
        parts["training"] = _resolve_training(task, parts["training"], metrics, parts.get("augmentation"))
        problems += _training_cross_checks(parts["training"], metrics)
    model = parts.get("model")
    if model is not None and task is not None:
        if task == "text-classification" and model.channels_last is not None:
            problems.append(Problem("model.channels_last", "only applies to task: image-classification"))
        if task == "image-classification" and model.attn_implementation is not None:
            problems.append(Problem("model.attn_implementation",
                                    "only applies to text models; timm picks its attention kernel itself"))
    batch = parts.get("batch")
    if batch is not None:
        if batch.max_per_device is not None and batch.global_size is None:
            problems.append(Problem("batch.max_per_device", "only applies with batch.global_size"))
        user_training = raw.get("training") if isinstance(raw.get("training"), dict) else {}
        if batch.global_size is not None and "gradient_accumulation_steps" in user_training:
            problems.append(Problem("training.gradient_accumulation_steps",
                                    "is derived from batch.global_size; set one or the other"))
    if parts.get("finetune") is not None:
        problems += _finetune_checks(parts["finetune"], parts.get("training"), task, parts.get("augmentation"))
    if problems:
        raise RecipeError(problems, source)
    recipe = Recipe(**{k: v for k, v in parts.items() if v is not None})
    recipe._explicit_training = set(raw.get("training") or {})
    recipe._source = source
    if recipe.output.dir is None:
        stem = Path(source).stem if source else "run"
        recipe.output.dir = str(Path("outputs") / stem)
    return recipe


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    """Reads, overrides and validates a recipe file."""
    raw = read_yaml(path)
    try:
        raw = apply_overrides(raw, overrides or [])
    except RecipeError as exc:
        raise RecipeError(exc.problems, str(path)) from None
    return validate_recipe(raw, str(path))


# --- reference --------------------------------------------------------------------------------------

def _type_name(annotation: Any) -> str:
    text = str(annotation) if typing.get_origin(annotation) else getattr(annotation, "__name__", str(annotation))
    return text.replace("typing.", "").replace("NoneType", "None").replace("Literal", "one of ")


def field_reference() -> list[tuple[str, str, str, str]]:
    """Rows of (dotted key, type, default, description) for every recipe key, for docs and `fields`."""
    rows: list[tuple[str, str, str, str]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            path = f"{prefix}{name}"
            sub = _section_model(field.annotation)
            if sub is not None:
                walk(sub, path + ".")
                continue
            if field.is_required():
                default = "required"
            elif field.default_factory is not None:
                default = repr(field.default_factory())
            else:
                default = repr(field.default)
            rows.append((path, _type_name(field.annotation), default, field.description or ""))

    walk(Recipe, "")
    return rows


def markdown_reference() -> str:
    """The recipe reference table of README.md (a test keeps the two identical)."""
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for key, type_name, default, description in field_reference():
        cells = [f"`{key}`", type_name, f"`{default}`" if default != "required" else "required", description]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
