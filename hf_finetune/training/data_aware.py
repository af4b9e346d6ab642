"""Defaults that read the data and the backbone, decided at run time for the keys the recipe leaves unset.

Each default is a `Decision` with its reason; the run logs them, applies them to a copy of the
recipe, and writes them into the resolved recipe (the user's own value always wins). Thresholds
are measured in `benchmarks/quality.py` on real backbones and real data (full, few-label and
imbalanced BBC News with MiniLM; digits with EfficientNet-Lite): see benchmarks/README.md.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from hf_finetune.tasks import task_of
from hf_finetune.tasks.image import CNN_LR as CNN_LR
from hf_finetune.tasks.image import VISION_TRANSFORMER_LR as VISION_TRANSFORMER_LR
from hf_finetune.tasks.text import TEXT_LR_BY_SIZE as TEXT_LR_BY_SIZE
from hf_finetune.training.few_label import (
    KFOLD_BELOW_VALIDATION_ROWS_PER_CLASS,
    WEIGHT_DECAY_CANDIDATES,
    FeatureSource,
    ProbeChoice,
    choose_probe_schedule,
    one_thread,
)

logger = logging.getLogger(__name__)

# Imbalance = largest / smallest training class.
SELECT_ON_F1_FROM = 1.5  # accuracy rewards the majority class: select the model on macro-F1 instead
CLASS_WEIGHTS_FROM = 3.0  # the loss itself is then dominated by the majority: weight classes by 1/frequency
# Training budget, in optimizer steps and epochs (the Trainer's default is 3 epochs, whatever the size).
MIN_OPTIMIZER_STEPS = 100  # a new head and a backbone need this many updates to move from their start
MAX_EPOCHS = 20  # ...but a tiny set gets no more passes than this
LARGE_SET = 50_000  # rows from which 2 epochs are enough (and 1 from 10x this)
# Learning rates of the AdamW fine-tuning recipes per backbone family (the Trainer default, 5e-5,
# is a BERT-base rate: it barely moves a CNN and is cautious for small distilled encoders).
# (per task: TEXT_LR_BY_SIZE in tasks/text.py; CNN_LR, VISION_TRANSFORMER_LR in tasks/image.py)
HEAD_LR_FACTOR = 10.0  # the new head starts from random weights: it learns faster than the backbone
# LoRA's updates start at zero and are low-rank: its recipes train at about 10x the full fine-tuning
# rate (the LoRA paper's RoBERTa/DeBERTa GLUE runs: 4e-4 to 5e-4 against 1e-5 to 3e-5), capped here.
LORA_LR_FACTOR, LORA_LR_CAP = 10.0, 1e-3
WARMUP_SHARE = 0.1  # of all steps; protects the pretrained weights from the first, noisy updates
# Few labels on a sentence encoder (a backbone read by mean pooling, models/pooling.py): a linear probe
# on its frozen embeddings, cached once, matched or beat full fine-tuning on few-label BBC News
# (macro-F1 0.839 vs 0.846 on 124 imbalanced rows, 0.921 vs 0.896 on 16 per class) in 1/7 and 1/10
# of the time. With 300 per class the probe stays close on this word-level task (0.963 vs 0.969)
# but fine-tuning is better, and it is what tasks beyond topic words need (not measured here).
# Below this many training rows per class on average the probe is the default: above the measured
# 16-25, at the top of the 8-64 per class that few-shot methods such as SetFit are built for.
# Sentence pairs keep fine-tuning: the embeddings were trained on single texts, not on pairs.
# Beyond topics (issue 34; benchmarks/README.md, few-label section; 3 seeds, only train and test given, so the
# validation is carved): with its schedule chosen by k-fold (training/few_label.py, below 10 validation rows
# per class) the probe scored test macro-F1 0.464 / 0.499 / 0.546 on VADER sentiment (3 classes) at 8 / 16 / 32
# per class, against 0.218 / 0.311 / 0.400 for the example script and 0.381 / 0.403 / 0.425 for TF-IDF + LR;
# on NRC emotion words (4 classes) 0.354 / 0.440 / 0.469 against 0.202 / 0.288 / 0.377 and 0.100 (words).
PROBE_BELOW_ROWS_PER_CLASS = 32
# The probe is chosen only where its k-fold macro-F1 on the training rows (training/few_label.py) reaches this:
# frozen embeddings that separate the classes (topics) leave fine-tuning little to add, those that do not
# (sentiment, emotion words) leave it much. Measured (benchmarks/README.md, few-label section, 3 seeds, the
# last epoch kept): fine-tuning instead of the probe gained +0.015 / +0.034 / +0.074 test macro-F1 on VADER
# at 8 / 16 / 32 per class, where the probe's k-fold scored 0.34-0.61, and +0.072 / +0.027 / +0.015 on NRC
# words (k-fold 0.32-0.58); on BBC topics at 16 per class the two tied (0.921 probe, 0.920 full).
FINE_TUNE_BELOW_PROBE_F1 = 0.8
PROBE_LR = 1e-2  # a linear layer on layer-normed features, from random weights: AdamW's usual probe rate
PROBE_MIN_STEPS = 400  # cheap steps (one linear layer on cached vectors); selection picks the best epoch
PROBE_MAX_EPOCHS = 50
# From this many labelled training rows a text model's hidden-state dropout is off (model.hidden_dropout unset;
# models/hidden_dropout.py). Decided before the model is built: the dropout layers take their rate when created.
# Measured with all-MiniLM-L6-v2, 3 seeds each (benchmarks/README.md, "Hidden-state dropout off"): on six real
# text sets of 500 to about 1,700 training rows (VADER ratings and STS-B pairs, regression, 600 each; BBC News
# imbalanced, 620, and full, 1,491; NRC emotion words, multi-label, 500; WNUT-16 tweets, entities) the test
# figure moved by -0.003 to +0.006, inside the seeds' spread, and training steps took 0-11% less time (full BBC
# 7-11% in four comparisons: a run 264 s against 283 s, the example script's 299 s; imbalanced BBC 5% and 0%);
# on six few-label sets of 24 to 128 rows (VADER sentiment, NRC words; 8, 16, 32 per class) it cost 0.004 to
# 0.029 macro-F1 on five of them: with few rows the dropout still regularises.
HIDDEN_DROPOUT_OFF_FROM_ROWS = 500
# Evaluations during training choose the kept epoch (and feed the curve); where at least two epochs follow it, the
# first epoch's is skipped (training.eval_delay). After one epoch the learning rate is still near its peak, and in
# 14 runs at defaults on eight real data sets of six tasks (benchmarks/README.md, "The first epoch's evaluation":
# BBC News topics, imbalanced and full; WNUT-16 entities; NRC emotion words, multi-label; VADER and STS-B
# regression, 5 epochs; digits; texture segmentation, 5 epochs) epoch 1 was never strictly the best on validation:
# in 13 a later epoch scored 0.003 to 0.119 above it, and in one (full BBC, seed 42) it tied the last, where the
# last scored test macro-F1 0.963 against its 0.953. Each evaluation is a pass over the validation split: about
# 5 s of the 15 s of evaluations in a 125 s run on imbalanced BBC, time the example script does not spend (issue 31).
EVALUATE_FROM_EPOCH = 2
# finetune keys that only mean something when the backbone trains: a recipe that sets one asks for fine-tuning
FINE_TUNING_KEYS = {"strategy", "cache_features", "lora", "unfreeze_every", "unfreeze_unit", "blocks_per_unfreeze",
                    "probe_epochs", "head_learning_rate", "backbone_lr_scale", "layer_decay"}


@dataclass(frozen=True)
class Decision:
    """One default the run chose: the dotted recipe key, its value, and why."""

    key: str
    value: Any
    reason: str

    @property
    def section(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def name(self) -> str:
        return self.key.split(".", 1)[1]


def hidden_dropout_decision(recipe: Any, inputs: Any, data: Any) -> Decision | None:
    """`model.hidden_dropout` 0 where the recipe leaves it unset, the inputs are text and the run has at least
    HIDDEN_DROPOUT_OFF_FROM_ROWS labelled training rows (self-training's pseudo-labels do not count: with few
    real labels the dropout regularises); None otherwise, and for streamed data (its row count is unknown)."""
    if (not recipe.finetune.data_aware or recipe.model.hidden_dropout is not None or data.streaming
            or "hidden_dropout" in inputs.foreign_model_keys):
        return None
    rows = len(data.label_rows) - data.pseudo_rows
    if rows < HIDDEN_DROPOUT_OFF_FROM_ROWS:
        return None
    return Decision("model.hidden_dropout", 0.0,
                    f"{rows} labelled training rows, at least {HIDDEN_DROPOUT_OFF_FROM_ROWS}: on real text sets of "
                    "that size the dropout bought no test score, and steps are up to 11% faster without it; with fewer "
                    "rows it regularises, and the backbone's rate is kept")


def class_counts(train: Any, num_labels: int, labeling: Any = None) -> np.ndarray:
    """Training rows per class (words per tag for token classification: the task's labeling counts)."""
    from hf_finetune.data.labels import ClassLabeling

    return np.asarray((labeling or ClassLabeling()).counts(train, num_labels))


def imbalance(counts: np.ndarray) -> float:
    present = counts[counts > 0]
    return float(present.max() / present.min()) if len(present) else 1.0


def _user_set(recipe: Any, section: str, key: str) -> bool:
    if section == "training":
        return key in recipe.user_training_keys
    return key in getattr(recipe, section).model_fields_set


def data_aware_defaults(recipe: Any, train: Any, num_labels: int, model: Any, global_batch: int,
                        validation_counts: np.ndarray | None = None,
                        features: FeatureSource | None = None, pseudo_rows: int = 0,
                        evaluations_read: bool = False) -> list[Decision]:
    """The defaults this data and backbone call for, for the keys the recipe leaves unset.

    Args:
        recipe: the validated recipe (house defaults applied).
        train: the preprocessed training split (labels encoded).
        num_labels: the size of the label space.
        model: the backbone with its new head.
        global_batch: samples per optimizer step.
        validation_counts: validation rows per class; with `features`, a probe whose validation holds
            fewer than KFOLD_BELOW_VALIDATION_ROWS_PER_CLASS rows of a class has its schedule chosen by
            k-fold on the training rows (training/few_label.py) instead of by validation.
        features: computes the training rows' cached features and class ids, on demand.
        pseudo_rows: how many of `train`'s last rows are self-training's pseudo-labels. The probe-or-fine-tune
            choice reads the other rows only, so every round trains the way round 0 chose; a probe's schedule
            is then chosen for all the rows it trains on.
        evaluations_read: a callback reads every evaluation (tune's pruning, rank's pauses): the first epoch is
            evaluated too (`training.eval_delay: 0`, so a trial's resolved recipe trains the trial again).
    """
    decisions: list[Decision] = []

    def decide(key: str, value: Any, reason: str) -> None:
        section, name = key.split(".", 1)
        if not _user_set(recipe, section, name):
            decisions.append(Decision(key, value, reason))

    problem = task_of(recipe).problem
    counts = class_counts(train, num_labels, problem.labeling)
    ratio = imbalance(counts)
    n = len(train)
    # Pseudo-labels are the teacher's own predictions: frozen features that separate them show what the teacher
    # put there, not how the task separates, and their number is not evidence either. Judged on them, a
    # fine-tuned teacher's student switched to the probe (issue 34's NRC words, 8 per class).
    labelled = n - pseudo_rows
    probe = _probe_reason(recipe, model, labelled, num_labels, pseudo_rows)
    few_validation = _few_validation_rows(counts, validation_counts)
    choice = None  # the probe's k-fold: does it separate these classes, and with which schedule
    if (probe is not None and features is not None and not _user_set(recipe, "training", "max_steps")
            and not _user_set(recipe, "training", "num_train_epochs")):
        every_row = functools.cache(features)  # extracted once, read by both k-folds below

        def labelled_rows() -> tuple[Any, np.ndarray]:
            rows, labels = every_row()
            return rows[:labelled], labels[:labelled]

        labelled_ratio = imbalance(class_counts(train.select(range(labelled)), num_labels, problem.labeling)
                                   if pseudo_rows else counts)
        separates = _kfold_probe(recipe, labelled_rows if pseudo_rows else every_row, num_labels, global_batch,
                                 labelled_ratio)
        judged = f"{separates.describe()}{' (the labelled rows only)' if pseudo_rows else ''}"
        if separates.score < FINE_TUNE_BELOW_PROBE_F1:
            decide("finetune.strategy", "full",
                   f"{labelled} {'labelled ' if pseudo_rows else ''}training rows for {num_labels} classes would "
                   f"call for a probe, but {judged}: below {FINE_TUNE_BELOW_PROBE_F1}, the frozen embeddings do not "
                   "separate these classes, so the encoder is fine-tuned")
            probe = None
        else:
            probe += f"; {judged}, at least {FINE_TUNE_BELOW_PROBE_F1}: the frozen embeddings separate the classes"
            # the probe's epochs and weight decay, for every row this round trains on
            choice = _kfold_probe(recipe, every_row, num_labels, global_batch, ratio) if pseudo_rows else separates
    if few_validation is not None and choice is None and _last_epoch_rule_applies(recipe, problem):
        # An epoch chosen on one or two rows a class is chosen on noise: at run_classification.py's settings on
        # BBC News at 16 per class (8 rows carved), the best epoch scored test macro-F1 0.625 +- 0.051 and the
        # last 0.727 +- 0.073 over 3 seeds (benchmarks/equal_settings.py). A probe whose k-fold ran keeps its
        # last epoch below, with the schedule the k-fold chose.
        decide("training.load_best_model_at_end", False, few_validation_reason(few_validation))
    if probe is not None:
        decide("finetune.strategy", "linear_probe", probe)
        decide("finetune.cache_features", True, "the frozen backbone's features are computed once, not every epoch")
    if ratio >= SELECT_ON_F1_FROM and "f1" in recipe.metrics and "select_f1" in problem.defaults:
        decide("training.metric_for_best_model", "f1",
               f"classes are imbalanced ({counts.max()} vs {counts[counts > 0].min()} training rows): accuracy "
               "would reward predicting the majority, macro-F1 counts every class")
    if ratio >= CLASS_WEIGHTS_FROM and "class_weights" in problem.defaults:
        decide("finetune.class_weights", "balanced",
               f"the largest class has {ratio:.1f}x the rows of the smallest: without weights the loss is "
               "dominated by the majority")

    for key, value, reason in problem.data_defaults(counts, n, head_labels(model, num_labels)):  # the task's own
        decide(key, value, reason)

    steps_per_epoch = max(1, math.ceil(n / global_batch))
    kfold = choice is not None and few_validation is not None
    if kfold:
        decisions += _kfold_schedule_decisions(recipe, choice, few_validation)
    if not _user_set(recipe, "training", "max_steps") and not kfold:
        if probe is not None:
            epochs = min(PROBE_MAX_EPOCHS, max(3, math.ceil(PROBE_MIN_STEPS / steps_per_epoch)))
            why = (f"a probe on cached features: {epochs} epochs of {steps_per_epoch} steps (at least "
                   f"{PROBE_MIN_STEPS} steps where {PROBE_MAX_EPOCHS} epochs allow; each costs one linear layer)")
        elif n >= 10 * LARGE_SET:
            epochs, why = 1, f"{n:,} training rows: one pass is enough"
        elif n >= LARGE_SET:
            epochs, why = 2, f"{n:,} training rows: two passes are enough"
        else:
            least = problem.min_optimizer_steps or MIN_OPTIMIZER_STEPS
            epochs = min(MAX_EPOCHS, max(3, math.ceil(least / steps_per_epoch)))
            why = (f"{n:,} training rows make {steps_per_epoch} optimizer steps per epoch; {epochs} epochs give "
                   f"{epochs * steps_per_epoch} steps (at least {least} where the data allows"
                   f"{'; ' + problem.min_optimizer_steps_why if problem.min_optimizer_steps else ''})")
        decide("training.num_train_epochs", float(epochs), why)
    delay = evaluation_delay(recipe, decisions)
    if delay is not None:  # where a callback reads every evaluation, pinned so the resolved recipe trains it again
        decide("training.eval_delay", *((0.0, "a callback reads every evaluation (tune's pruning, rank's pauses): the "
                                         "first epoch is evaluated too") if evaluations_read else delay))

    if not _user_set(recipe, "training", "learning_rate"):
        # The optimizer recipe is one unit: who picks the learning rate picks warmup and head rate too.
        rate, family = task_of(recipe).inputs.learning_rate(model)
        if probe is not None:
            rate, family = PROBE_LR, "a linear probe: only the new head trains, from random weights"
        if recipe.finetune.strategy == "lora":
            rate = min(rate * LORA_LR_FACTOR, max(rate, LORA_LR_CAP))
            family += f"; LoRA adapters train at {LORA_LR_FACTOR:g}x that (at most {LORA_LR_CAP:g})"
        decide("training.learning_rate", rate, family)
        if recipe.finetune.strategy != "linear_probe" and probe is None:
            decide("finetune.head_learning_rate", min(rate * HEAD_LR_FACTOR, 1e-2),
                   f"the new head starts from random weights: {HEAD_LR_FACTOR:g}x the backbone rate")
        decide("training.warmup_steps", WARMUP_SHARE,
               "a short warmup keeps the first noisy updates from wrecking the pretrained weights")
    return decisions


def evaluation_delay(recipe: Any, decisions: list[Decision]) -> tuple[float, str] | None:
    """`training.eval_delay` that skips the first epoch's evaluation, and why, for a run that fine-tunes for at
    least EVALUATE_FROM_EPOCH + 1 epochs with an evaluation every epoch (`decisions`: those made so far, which may
    set the epochs and choose the probe), no early stopping and no self-training (a round that continues from its
    teacher starts trained: where it is best was not measured); None otherwise."""
    training = {**recipe.training, **{d.name: d.value for d in decisions if d.section == "training"}}
    strategy = next((d.value for d in decisions if d.key == "finetune.strategy"), recipe.finetune.strategy)
    if (training.get("eval_strategy") != "epoch" or recipe.finetune.early_stopping_patience is not None
            or strategy == "linear_probe" or recipe.self_training is not None
            or _user_set(recipe, "training", "max_steps")):
        return None
    epochs = float(training.get("num_train_epochs", 3))
    if epochs < EVALUATE_FROM_EPOCH + 1:
        return None
    return (EVALUATE_FROM_EPOCH - 0.5,  # Trainer: evaluate where eval_delay <= the epoch (2.0 at the second's end)
            f"{epochs:g} epochs: the first is not evaluated (evaluations from epoch {EVALUATE_FROM_EPOCH} on); "
            "after one epoch at a learning rate still near its peak, the first epoch was never strictly the best on "
            "validation in the measured runs, and each evaluation costs a pass over the validation split")


def few_validation_reason(rows: int) -> str:
    return (f"validation holds {rows} row{'s' if rows != 1 else ''} of a class (fewer than "
            f"{KFOLD_BELOW_VALIDATION_ROWS_PER_CLASS}): choosing an epoch on it would be noise, the last epoch is kept")


def _last_epoch_rule_applies(recipe: Any, problem: Any) -> bool:
    """Whether the task keeps its last epoch on a few validation rows: the problem asks for the rule, and
    no early stopping is set (early stopping asks for selection on validation, however few its rows)."""
    return "last_epoch_on_few_validation" in problem.defaults and recipe.finetune.early_stopping_patience is None


def few_validation_warning(recipe: Any, train: Any, validation: Any, num_labels: int, keeps_best: bool) -> str | None:
    """With `finetune.data_aware: false`, the warning that the best epoch will be chosen on too few rows."""
    problem = task_of(recipe).problem
    if not keeps_best or not _last_epoch_rule_applies(recipe, problem):
        return None
    rows = _few_validation_rows(class_counts(train, num_labels, problem.labeling),
                                class_counts(validation, num_labels, problem.labeling))
    if rows is None:
        return None
    return (f"training.load_best_model_at_end: the validation split holds {rows} row{'s' if rows != 1 else ''} of a "
            f"class (fewer than {KFOLD_BELOW_VALIDATION_ROWS_PER_CLASS}), so the kept epoch is chosen on noise; on "
            "BBC News at 16 articles per topic this cost 0.10 test macro-F1 against keeping the last epoch "
            "(benchmarks/equal_settings.py). Set it to false, give a larger validation split, or leave "
            "finetune.data_aware on, which keeps the last epoch here")


def _few_validation_rows(train_counts: np.ndarray, validation_counts: np.ndarray | None) -> int | None:
    """The validation rows of its rarest training class when fewer than KFOLD_BELOW_VALIDATION_ROWS_PER_CLASS."""
    if validation_counts is None:
        return None
    present = np.asarray(validation_counts)[np.asarray(train_counts) > 0]
    rarest = int(present.min()) if len(present) else 0
    return rarest if rarest < KFOLD_BELOW_VALIDATION_ROWS_PER_CLASS else None


def _kfold_probe(recipe: Any, features: FeatureSource, num_labels: int, global_batch: int,
                 ratio: float) -> ProbeChoice:
    """The probe's best schedule (epochs, weight decay) and its held-out macro-F1, by k-fold on the training rows.

    The training settings the recipe sets itself (learning rate, weight decay, warmup, class weights) are
    held as they are and only the rest is chosen.
    """
    import torch

    training = recipe.training
    lr = training.get("learning_rate", PROBE_LR) if _user_set(recipe, "training", "learning_rate") else PROBE_LR
    warmup = training.get("warmup_steps", WARMUP_SHARE) if _user_set(recipe, "training", "warmup_steps") else WARMUP_SHARE
    decays = ((float(training["weight_decay"]),) if _user_set(recipe, "training", "weight_decay")
              else WEIGHT_DECAY_CANDIDATES)
    balanced = recipe.finetune.class_weights == "balanced" or (
        ratio >= CLASS_WEIGHTS_FROM and "class_weights" not in recipe.finetune.model_fields_set)
    rows, labels = features()
    weights = None
    if balanced:
        counts = np.bincount(labels, minlength=num_labels).astype(float)
        weights = torch.tensor(np.where(counts > 0, len(labels) / (num_labels * np.maximum(counts, 1)), 0.0),
                               dtype=torch.float32)
    with one_thread():
        return choose_probe_schedule(rows, labels, num_labels, lr=lr, batch_size=global_batch, warmup_share=warmup,
                                     class_weights=weights, seed=int(training.get("seed", 42)), weight_decays=decays)


def _kfold_schedule_decisions(recipe: Any, choice: ProbeChoice, few_validation: int) -> list[Decision]:
    """The probe's epochs and weight decay from its k-fold, and its last epoch kept (validation is too small)."""
    where = (f"validation holds {few_validation} row{'s' if few_validation != 1 else ''} of a class (fewer than "
             f"{KFOLD_BELOW_VALIDATION_ROWS_PER_CLASS}): choosing on it would be noise")
    out: list[Decision] = []
    for key, value, reason in (
        ("training.num_train_epochs", float(choice.epochs), f"{where}; {choice.describe()}"),
        ("training.weight_decay", choice.weight_decay, f"chosen with the epochs by {choice.folds}-fold cross-validation"),
        ("training.load_best_model_at_end", False,
         "the k-fold chose the whole schedule: its last epoch is kept, validation is reported, not selected on"),
    ):
        if not _user_set(recipe, *key.split(".", 1)):
            out.append(Decision(key, value, reason))
    return out


def head_labels(model: Any, num_labels: int) -> list[str]:
    """The labels of the model's new head, in id order (their ids, for a model without a config)."""
    id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
    return [str(id2label.get(i, i)) for i in range(num_labels)]


def _probe_reason(recipe: Any, model: Any, rows: int, num_labels: int, pseudo_rows: int = 0) -> str | None:
    """Why this run should be a linear probe on cached features, or None when it should fine-tune.
    `rows`: the labelled training rows; `pseudo_rows`: self-training's pseudo-labels beside them (not counted)."""
    from hf_finetune.models.pooling import pooling_layer

    per_class = rows / max(1, num_labels)
    if ("probe" not in task_of(recipe).inputs.defaults or pooling_layer(model) is None or per_class >= PROBE_BELOW_ROWS_PER_CLASS
            or recipe.data.columns.text_pair is not None
            or FINE_TUNING_KEYS & recipe.finetune.model_fields_set or recipe.distill.teacher is not None):
        return None
    counted = f"{rows} labelled training rows (the {pseudo_rows} pseudo-labels not counted)" if pseudo_rows else \
        f"{rows} training rows"
    return (f"{counted} for {num_labels} classes ({per_class:.0f} per class, below "
            f"{PROBE_BELOW_ROWS_PER_CLASS}) on a sentence encoder: a probe on its frozen embeddings comes within "
            "a few points of fine-tuning at about a tenth of the time (finetune.strategy: full for the last points)")


def apply_decisions(recipe: Any, decisions: list[Decision]) -> Any:
    """A copy of the recipe with the decisions applied (the user's Recipe is left as it is)."""
    updates: dict[str, dict[str, Any]] = {}
    for d in decisions:
        updates.setdefault(d.section, {})[d.name] = d.value
    training = {**recipe.training, **updates.pop("training", {})}
    if "metric_for_best_model" in training and "greater_is_better" not in recipe.user_training_keys:
        training["greater_is_better"] = not str(training["metric_for_best_model"]).endswith("loss")
    copies = {section: getattr(recipe, section).model_copy(update=values) for section, values in updates.items()}
    return recipe.model_copy(update={"training": training, **copies})


def log_decisions(decisions: list[Decision]) -> None:
    for d in decisions:
        logger.info("Default from the data: %s = %s (%s)", d.key, d.value, d.reason)
