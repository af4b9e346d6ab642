"""The recipe's schema: every section and key typed, defaulted and described (pydantic models)."""

from __future__ import annotations

import math
import typing
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

Task = Literal["text-classification", "image-classification"]
TASKS: tuple[str, ...] = typing.get_args(Task)

# Local data files: extension -> `datasets` builder name.
FILE_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


class Section(BaseModel):
    """A recipe section: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value: Any, info: Any) -> Any:
        """`true` is no count and NaN no rate: pydantic would take them as 1 and nan."""
        annotation = cls.model_fields[info.field_name].annotation
        args = set(typing.get_args(annotation) or (annotation,))
        if isinstance(value, bool) and args & {int, float} and bool not in args:
            raise ValueError(f"expected a number, got {value!r} (bool)")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value!r}")
        return value


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
    pooling: Literal["auto", "cls", "mean"] = Field(
        "auto",
        description="What the text classifier reads: cls (the model's own head, on [CLS]) or mean (the mean of "
        "the token states, as a frozen BERT layer that pipeline() loads); auto: mean where the backbone's "
        "sentence-transformers config says it was trained that way (all-MiniLM-L6-v2), else cls.",
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


class UnlabeledSpec(Section):
    """Rows without labels for self-training: the recipe's input columns; a label column is only scored."""

    files: list[str] | None = Field(
        None, description="Local files of unlabelled rows (csv/tsv/json/jsonl/parquet, globs allowed), with the "
        "recipe's input columns; a label column there is never trained on, only used to score the pseudo-labels.",
    )
    split: str | None = Field(
        None, description="A split of the recipe's own data source to use without its labels (e.g. unlabeled).",
    )
    image_folder: str | None = Field(
        None, description="A folder of images (any depth, no class folders needed) to use without labels.",
    )
    max_samples: int | None = Field(
        None, gt=0, description="Use at most this many unlabelled rows (seeded by data.seed).",
    )

    @field_validator("files", mode="before")
    @classmethod
    def _paths_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


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
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Seed for carving validation and for sample caps.")
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
    unlabeled: UnlabeledSpec | None = Field(
        None, description="Unlabelled rows for self-training (needs a self_training section).",
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


Strategy = Literal["full", "linear_probe", "gradual_unfreeze", "probe_then_full", "lora"]


class LoraSpec(Section):
    """LoRA adapters (finetune.strategy: lora, through peft): low-rank updates of chosen backbone layers."""

    r: int = Field(8, gt=0, description="LoRA rank: the inner size of each low-rank update.")
    alpha: float = Field(16, gt=0, description="LoRA scaling numerator: updates are scaled by alpha / r.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the input of each LoRA update.")
    target_modules: list[str] | None = Field(
        None,
        description="Backbone modules (name or name suffix) that get adapters (default per architecture: BERT "
        "family query/value, timm ViTs qkv, other timm models their linear layers; recorded).",
    )


class Finetune(Section):
    """How to fine-tune: which parameters train when, at which learning rate, with which loss."""

    strategy: Strategy = Field(
        "full",
        description="full: everything trains; linear_probe: only the new head; gradual_unfreeze: head first, "
        "then backbone blocks top-down; probe_then_full: linear probe, then full fine-tuning (LP-FT); "
        "lora: LoRA adapters on the frozen backbone, the new head in full (needs the lora extra).",
    )
    lora: LoraSpec = Field(default_factory=LoraSpec, description="LoRA settings (finetune.strategy: lora).")
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
    data_aware: bool = Field(
        True,
        description="Let the data and backbone choose what the recipe leaves unset: epochs, learning rates and "
        "warmup, class weights, the selection metric, max_length, a probe on cached features for few labels on a "
        "sentence encoder, no image flips where mirroring changes the class (each logged with its reason and recorded).",
    )


class Distill(Section):
    """Knowledge distillation: the recipe's model (the student) also learns the teacher's soft predictions."""

    teacher: str | None = Field(
        None,
        description="Teacher: a finished run folder or an ensemble folder (`hf-finetune ensemble`) with the same "
        "labels; null for no distillation.",
    )
    temperature: float = Field(
        2.0, gt=0, description="Softens teacher and student probabilities in the distillation term (T)."
    )
    alpha: float = Field(
        0.5, ge=0, le=1,
        description="Loss = alpha x cross-entropy with the labels + (1 - alpha) x T^2 x KL(teacher || student).",
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
    save_adapter: bool = Field(
        False,
        description="finetune.strategy lora: also keep the LoRA adapter in PEFT's layout in <output.dir>/adapter "
        "(the folder itself always holds the merged model).",
    )


def _hub_id(value: str | None) -> str | None:
    """A Hub repository id (owner/name or name), or None."""
    if value is not None:
        from hf_finetune.hub import repo_id_problem

        problem = repo_id_problem(value)
        if problem:
            raise ValueError(problem)
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


RankScore = Literal["logme", "knn", "probe", "hscore"]


class RankSpec(Section):
    """`hf-finetune rank`: score candidate backbones on frozen features before any fine-tuning."""

    candidates: list[ModelSpec] | None = Field(
        None,
        description="Backbones to rank: model.name values, or model sections ({name: ..., pretrained: false}); "
        "`--candidates` on the command line replaces them.",
    )
    by: RankScore = Field(
        "logme", description="Score that orders the table and picks the winner: logme, knn, probe or hscore."
    )
    hscore: bool = Field(False, description="Also compute the H-score (Ledoit-Wolf shrinkage covariance).")
    knn_k: int = Field(5, gt=0, description="Neighbours of the k-NN validation accuracy (cosine similarity).")
    batch_size: int = Field(32, gt=0, description="Rows per forward pass while extracting features.")
    output_dir: str | None = Field(
        None, description="Where rank.json and rank.png go (default: <output.dir>-rank)."
    )
    cache_dir: str | None = Field(
        None, description="Feature cache (default: rank-features in data.cache_dir, or in the datasets cache's hf_finetune folder)."
    )

    @field_validator("candidates", mode="before")
    @classmethod
    def _names_are_model_sections(cls, value: Any) -> Any:
        """A bare name is the model section {name: NAME}."""
        if isinstance(value, list):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value


class SearchDimension(Section):
    """One searched recipe key: a number range (`low`, `high`, `log`, `step`) or a list of `choices`."""

    low: int | float | None = Field(None, description="Smallest value (numbers).")
    high: int | float | None = Field(None, description="Largest value (numbers).")
    log: bool = Field(False, description="Sample on a log scale (needs low > 0).")
    step: int | float | None = Field(None, gt=0, description="Grid step between low and high (not with log).")
    choices: list[Any] | None = Field(None, description="The values to choose from (any YAML values).")

    @model_validator(mode="after")
    def _range_or_choices(self) -> SearchDimension:
        numbers = [k for k in ("low", "high", "step") if getattr(self, k) is not None]
        if self.choices is not None:
            if numbers or self.log:
                raise ValueError("give either choices or a number range (low, high), not both")
            if not self.choices:
                raise ValueError("choices is empty; give at least one value")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (numbers), or choices: [...]")
        if self.low > self.high:
            raise ValueError(f"low ({self.low:g}) is greater than high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got low {self.low:g}")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        return self

    @property
    def is_int(self) -> bool:
        """An integer range: low, high (and step) written as whole numbers."""
        values = [v for v in (self.low, self.high, self.step) if v is not None]
        return self.choices is None and all(isinstance(v, int) for v in values)


class SearchObjective(Section):
    metric: str | None = Field(
        None, description="Validation metric to optimize (default: the run's selection metric, "
        "training.metric_for_best_model as the run resolves it); each trial also selects its checkpoint on it."
    )
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="maximize or minimize (default: minimize for a loss, else maximize)."
    )


class SearchSampler(Section):
    type: Literal["tpe", "random"] = Field("tpe", description="Optuna sampler: tpe (TPESampler) or random.")
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Sampler seed (offset by the trials already in the study).")
    startup_trials: int = Field(10, ge=0, description="tpe: random trials before the model of good trials is used.")


class SearchPruner(Section):
    type: Literal["successive_halving", "hyperband", "median", "none"] = Field(
        "successive_halving",
        description="Stops poor trials at an evaluation: successive_halving (asynchronous, ASHA), hyperband, "
        "median, or none.",
    )
    min_resource: int | Literal["auto"] = Field(
        1, description="successive_halving/hyperband: evaluations before a trial can be pruned (auto: "
        "Optuna's estimate from the first complete trial, which is never pruned against)."
    )
    reduction_factor: int = Field(3, ge=2, description="successive_halving/hyperband: keep 1 in this many per rung.")
    warmup_evaluations: int = Field(1, ge=0, description="median: evaluations before a trial can be pruned.")

    @field_validator("min_resource")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"must be at least 1 (or auto), got {value}")
        return value


class SearchSpec(Section):
    """Hyperparameter search (`hf-finetune tune`): space, objective, sampler, pruner, budget, storage."""

    space: dict[str, SearchDimension] | None = Field(
        None, description="Recipe keys to search, e.g. {training.learning_rate: {low: 1e-5, high: 1e-3, log: true}} "
        "(default: a fine-tuning space, printed by tune)."
    )
    objective: SearchObjective = Field(default_factory=SearchObjective, description="What the search optimizes.")
    sampler: SearchSampler = Field(default_factory=SearchSampler, description="How trials are proposed.")
    pruner: SearchPruner = Field(default_factory=SearchPruner, description="How poor trials are stopped early.")
    trials: int = Field(20, gt=0, description="Trials in the study in all (every run and worker together); "
                                              "running tune again continues up to this many.")
    timeout: str | float | None = Field(
        None, description="Wall time of one tune command (90s, 30m, 2h or seconds); no trial starts after it."
    )
    storage: str | None = Field(
        None, description="SQLAlchemy URL of the study database (default: sqlite:///<output.dir>/study.db); "
        "one PostgreSQL/MySQL URL lets workers on several machines share the study."
    )
    study_name: str | None = Field(None, description="Study name in the storage (default: the recipe file name).")
    keep_trials: bool = Field(
        False, description="Keep every trial's model; by default only the best trial's folder stays."
    )
    baseline_trial: bool = Field(
        True, description="Trial 0 of a new study is the recipe at its own defaults (the data-aware values one "
        "run would use), so the best trial is never below one default run on validation; skipped when the space "
        "cannot take those values."
    )

    @field_validator("space", mode="before")
    @classmethod
    def _dotted_keys(cls, value: Any) -> Any:
        """Nested mappings ({training: {learning_rate: {...}}}) become dotted keys (training.learning_rate)."""
        if not isinstance(value, dict):
            return value
        flat: dict[str, Any] = {}

        def walk(node: dict, prefix: str) -> None:
            for key, item in node.items():
                dotted = f"{prefix}{key}"
                if isinstance(item, dict) and item and not set(item) & set(SearchDimension.model_fields):
                    walk(item, dotted + ".")
                else:
                    flat[dotted] = item

        walk(value, "")
        return flat

    @field_validator("timeout")
    @classmethod
    def _duration(cls, value: str | float | None) -> str | float | None:
        if value is not None:
            seconds(value)
        return value


def seconds(value: str | float | int) -> float:
    """A duration in seconds from 90, 90s, 30m, 2h or 1d.

    Raises:
        ValueError: not a positive duration.
    """
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = str(value).strip().lower()
    try:
        number = float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"expected a duration such as 90s, 30m or 2h (or seconds), got {value!r}")
    return number


class SelfTraining(Section):
    """Self-training: label the unlabelled pool with the model, keep the confident labels, train again."""

    rounds: int = Field(3, gt=0, le=100, description="Self-training rounds after the first, labelled-only training.")
    threshold: float = Field(
        0.9, gt=0, le=1, description="Keep a pseudo-label when the model's probability for it is at least this.",
    )
    class_thresholds: dict[str, float] | None = Field(
        None, description="Thresholds for some classes ({label: threshold}); the others use threshold.",
    )
    max_class_share: float | None = Field(
        None, gt=0, le=1,
        description="Largest share of a round's pseudo-labels one class may take (the most confident are kept); "
        "unset: no cap.",
    )
    init: Literal["backbone", "continue"] = Field(
        "backbone",
        description="Each round trains from the pretrained backbone with a new head (backbone), or goes on from "
        "the previous best round's model (continue).",
    )
    min_improvement: float = Field(
        0.0, ge=0,
        description="A round must raise the validation selection metric by more than this, else self-training stops.",
    )
    score_test_each_round: bool = Field(
        False, description="Also score the test split after every round, for measurement (never used to choose).",
    )

    @field_validator("class_thresholds")
    @classmethod
    def _thresholds_in_range(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for label, threshold in (value or {}).items():
            if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
                raise ValueError(f"the threshold of '{label}' must be in (0, 1], got {threshold!r}")
        return value


class Recipe(Section):
    task: Task = Field(description="text-classification or image-classification.")
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
