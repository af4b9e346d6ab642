"""What a task is: the one home of everything that differs between tasks.

A task pairs a problem (`TaskProblem`: single-label classification, token tags; label sets, scores,
masks next) with the inputs it reads (`Inputs`: texts, words or images). The pipeline and every
command ask the recipe's task (`hf_finetune.tasks.task_of`) instead of branching on the modality:

    columns read, preflight checks      Inputs.columns, Inputs.check_columns, Inputs.describe_model
    preprocessing + collator            Inputs.preprocessing -> an encoding (data/encodings.py, data/words.py)
    label space                         TaskProblem.labeling (data/labels.py, tasks/tag_labels.py)
    model class + head                  Inputs.build_backbone, Task.auto_model
    metrics + selection, baseline       TaskProblem.metrics, TaskProblem.baselines (metrics/)
    predict output, export inputs       TaskProblem.kind (finished/predict.py), Inputs.encode, Inputs.example_inputs
    pipeline() name, card               Task.pipeline_task, Task.card_name, TaskProblem.card
    data-aware defaults                 Inputs.learning_rate, Inputs.defaults, TaskProblem.defaults
    capabilities                        Task.capabilities: a recipe asking for another one is refused
    loss, scores, stored decisions      TaskProblem.loss, TaskProblem.activation, TaskProblem.settle
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Every capability a task may serve; `check` refuses a recipe whose task does not list the one it uses.
# Strategies are named as finetune.strategy names them ("full" is every task's).
CAPABILITIES = frozenset({"tune", "rank", "ensemble", "soup", "distill", "self_training", "export", "lora",
                          "linear_probe", "probe_then_full", "gradual_unfreeze", "layer_decay", "cache_features"})


@dataclass
class Preprocessing:
    """How a run's inputs are prepared, as its task resolved it from the backbone and the data."""

    encoding: Any  # data/encodings.py: TextEncoding or ImageEncoding
    tokenizer: Any = None  # saved with a text model
    record: dict[str, Any] = field(default_factory=dict)  # run.json's `preprocessing`
    decided: dict[str, dict[str, Any]] = field(default_factory=dict)  # recipe keys resolved here
    verb: str = "preprocessing"  # what the main process does first, for the log


class Inputs:
    """What a modality's tasks share: columns, checks, backbone loading, preprocessing, batch encoding."""

    kind: str = ""  # "text" or "image": the inputs read (a name for messages and the record)
    input_keys: tuple[str, ...] = ()  # data.columns keys the inputs come from
    label_key: str = "label"  # the data.columns key of the labels (tags: a tag per word)
    sections: frozenset[str] = frozenset()  # recipe sections only these inputs read
    libraries: tuple[str, ...] = ()  # libraries whose versions the run records beside torch/transformers
    foreign_model_keys: frozenset[str] = frozenset()  # model keys that mean nothing to these inputs
    defaults: frozenset[str] = frozenset()  # data-aware defaults that apply (training/data_aware.py, mirror.py)
    folder_key: str | None = None  # the data key that reads a folder of input files (data.image_folder)
    teacher_cached: bool = False  # distillation: teacher outputs cached once (True) or computed per batch

    tune_learning_rates: tuple[float, float] = (1e-5, 3e-4)  # tune's default range, around the data-aware rates
    bf16_on_amx: bool = False  # bf16 autocast pays on CPUs with AMX (transformer matmuls)
    decode_workers: bool = False  # decoding the inputs is worth loader worker processes
    literal_inputs: bool = False  # predict: an argument that names no file is an input itself (a text)

    def recognises(self, config: dict[str, Any]) -> bool:
        """Whether a bare model folder's config.json (no run.json beside it) is a backbone of these inputs."""
        return False

    def preprocessor(self, folder: Any, config: Any, recipe: dict[str, Any], max_length: int | None = None,
                     **kwargs: Any) -> dict[str, Any]:
        """A finished model's preprocessing, as Predictor fields (its saved tokenizer, or its image transform)."""
        raise NotImplementedError

    def decode(self, items: list[Any]) -> list[Any]:
        """Items read once for several models (an ensemble's members): as they are, unless decoding costs."""
        return items

    def foreign_config(self, config: Any) -> str | None:
        """What the backbone is instead, when its config says it cannot read these inputs ({task}: the task)."""
        return None

    def columns(self, recipe: Any) -> list[tuple[str, str]]:
        """(data.columns key, column name) of every input column the recipe names."""
        cols = recipe.data.columns
        return [(key, getattr(cols, key)) for key in self.input_keys if getattr(cols, key) is not None]

    def columns_of(self, recipe_dict: dict[str, Any]) -> dict[str, str]:
        """The same from a resolved recipe mapping (a finished run's recipe.yaml)."""
        cols = (recipe_dict.get("data") or {}).get("columns") or {}
        return {key: cols[key] for key in self.input_keys if cols.get(key)}


@dataclass(frozen=True)
class CardWords:
    """How the model card speaks of a problem's labels, head, metrics and baseline."""

    labels: str  # "{n}" and "{labels}": what the model does with its inputs
    head: str  # the new head, for the training procedure
    per_class: str  # the title of the per-label table
    per_class_column: str  # its first column
    baseline: str  # "{name}": what the trivial model does
    usage: str  # the pipeline() example: {task}, {model}, {example}
    metric_titles: dict[str, str] = field(default_factory=dict)  # metric key -> the card's name for it
    averages: dict[str, str] = field(default_factory=dict)  # metric key -> how it averages over labels
    per_class_fields: tuple[str, ...] = ("precision", "recall", "f1", "support")  # the per-label table's columns


class TaskProblem:
    """What a problem brings to its tasks: labels, metrics and selection, baseline, predictions, card words."""

    kind: str = ""  # what one prediction is: "classes" (top-k labels of an input), "entities" (spans of a text),
    # "values" (numbers, one per target), "label_sets" (labels over their thresholds) or "masks" (a class per pixel)
    labeling: Any = None  # how the data's label columns become `labels` and the label space (data stage)
    defaults: frozenset[str] = frozenset()  # data-aware defaults that read the labels: select_f1, class_weights,
    # last_epoch_on_few_validation
    peft_task_type: str | None = None  # peft's TaskType for LoRA (None: a plain PeftModel)
    problem_type: str | None = None  # the config.problem_type that marks a bare model folder as this problem's
    card: CardWords | None = None
    min_optimizer_steps: int | None = None  # the fewest optimizer steps a run needs where the data allows
    # (None: training/data_aware.py's MIN_OPTIMIZER_STEPS) and why, for the log
    min_optimizer_steps_why: str = ""

    def metrics(self, names: list[str], labels: list[str]) -> Any:
        """The metrics of one evaluation (`compute_metrics`, `report`, `for_dataset`)."""
        raise NotImplementedError

    def baselines(self, results: dict[str, Any], counts: Any) -> list[str]:
        """Adds the trivial model's scores to each evaluated split; returns the collapse warnings."""
        raise NotImplementedError

    def run_metrics(self, names: list[str], labels: Any) -> Any:
        """The metrics of a training run, given its label space (regression: in the targets' training scale)."""
        return self.metrics(names, list(labels.names))

    def finished_metrics(self, names: list[str], labels: list[str], config: Any) -> Any:
        """The metrics of a finished model (evaluate), which may read what its config stores (thresholds)."""
        return self.metrics(names, labels)

    def loss(self, finetune: Any, label_smoothing: float, class_weights: Any) -> Any:
        """The per-sample training loss (training/trainer.py): regression's MSE or Huber, label sets' BCE with
        pos_weight; None: single-label cross-entropy (ClassificationLoss)."""
        return None

    def activation(self, logits: Any) -> Any:
        """Scores of a batch of logits: softmax over classes (multi-label: a sigmoid per label)."""
        import torch

        return torch.softmax(logits.float(), dim=-1)

    def data_defaults(self, counts: Any, rows: int, names: list[str]) -> list[tuple[str, Any, str]]:
        """(recipe key, value, reason) defaults this problem decides from its training labels (data_aware.py)."""
        return []

    def settle(self, model: Any, labels: Any, results: dict[str, Any]) -> None:
        """Keeps in the model, before it is saved, what training and the final evaluation decided: label sets'
        thresholds tuned on validation, regression's target scale folded into the head."""

    def figures(self, model: Any, data: Any, folder: Any) -> list[str]:
        """Pictures of the trained model's predictions drawn into the run's folder, for the card (file names)."""
        return []


@dataclass(frozen=True)
class Task:
    """One task of the recipe's `task` key."""

    name: str  # the recipe's `task`
    pipeline_task: str  # what transformers.pipeline() and the card's model-index call it
    card_name: str  # the model-index task type shown on the Hub
    inputs: Inputs
    problem: TaskProblem
    capabilities: frozenset[str] = CAPABILITIES
    example_input: str = ""  # what the card's usage example passes to pipeline()
    auto_model: str = ""  # the transformers Auto class that loads the saved folder

    def supports(self, capability: str) -> bool:
        return capability in self.capabilities
