"""text-regression and image-regression: one or several numbers per input, on the classification backbones.

    inputs      texts (and pairs) on a BERT-family encoder, or images on a timm backbone: the classification
                tasks' own Inputs (tasks/text.py, tasks/image.py)
    targets     data.columns.targets (several) or data.columns.label (one), numbers; standardised with the
                training split's mean and std (tasks/targets.py)
    model       AutoModelForSequenceClassification / AutoModelForImageClassification with num_labels = the
                number of targets, id2label = their names, config.problem_type = "regression" (so the
                model's own head applies MSE when given labels, and pipeline() applies no function)
    loss        per-target MSE on standardised targets (finetune.regression_loss: huber for noisy targets)
    metrics     RMSE, MAE, R², Pearson, Spearman per target and averaged, in original units; selection on
                Pearson (training.metric_for_best_model may name another); baseline: the training mean;
                collapse: a prediction spread below 10% of the targets' (metrics/regression.py)
    saved model the target scale is folded into the head's final linear layer after the final evaluation
                (W' = std * W, b' = std * b + mean), so the saved model outputs original units: pipeline(),
                predict, evaluate and an ONNX export read values directly. config.json records the scale
                under `hf_finetune_target_scale` (with `folded: true`).
    predict     one value per target (finished/values.py)

Served (tests/test_regression.py): full fine-tuning, linear_probe, probe_then_full, gradual_unfreeze,
layer_decay, cache_features, lora, export, tune. Refused by `check`, naming the task, until built:
    rank            the ranking scores (LogME, k-NN, probe) are written for class labels here; LogME's
                    real-valued form is not wired
    ensemble, soup  the ensemble averages softmax probabilities (predictor.probabilities); averaging values
                    needs its own combiner
    distill         the distillation loss is a KL divergence between class distributions; value targets
                    need an MSE blend
    self_training   pseudo-labels are kept by class confidence; a number has no confidence to threshold
"""

from __future__ import annotations

from typing import Any

from hf_finetune.errors import ModelError
from hf_finetune.tasks.base import CardWords, Task, TaskProblem
from hf_finetune.tasks.image import ImageInputs
from hf_finetune.tasks.targets import TargetLabeling
from hf_finetune.tasks.text import TextInputs

SCALE_KEY = "hf_finetune_target_scale"  # config.json: {"mean": [...], "std": [...], "folded": true}
HUBER_DELTA = 1.0  # in standard deviations of the target: errors beyond one std count linearly


class RegressionLoss:
    """Per-target squared error (or Huber) on standardised targets, one term per (row, target).

    The Trainer counts the items of a step as the label entries that are not -100: rows x targets here,
    so the summed terms divided by that count are the mean over rows and targets, whatever the
    accumulation and the number of processes (training/trainer.py).
    """

    def __init__(self, kind: str = "mse"):
        self.kind = kind

    def __call__(self, logits: Any, targets: Any) -> Any:
        import torch.nn.functional as F

        logits = logits.float().reshape(targets.shape[0], -1)
        targets = targets.float().reshape(logits.shape)
        if self.kind == "huber":
            return F.huber_loss(logits, targets, reduction="none", delta=HUBER_DELTA).reshape(-1)
        return F.mse_loss(logits, targets, reduction="none").reshape(-1)


def head_layers(model: Any, num_targets: int) -> list[Any]:
    """The linear layers that produce the model's outputs (two under LoRA: peft keeps the original beside
    the trained copy of a module it saves)."""
    import torch

    from hf_finetune.models.blocks import split_model

    try:
        head = {id(p) for _, p in split_model(model).head.params}
    except Exception:  # an architecture split_model does not know: every output-sized linear layer
        head = None
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == num_targets
              and (head is None or id(m.weight) in head)]
    if not layers:
        layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == num_targets]
    if not layers:
        raise ModelError(f"{type(model).__name__}: no linear layer of {num_targets} outputs to carry the target scale")
    return layers


def fold_scale(model: Any, mean: Any, std: Any) -> None:
    """Makes the model output original units: its head's y = Wx + b becomes std * (Wx + b) + mean."""
    import torch

    mean_t = torch.as_tensor(list(mean), dtype=torch.float32)
    std_t = torch.as_tensor(list(std), dtype=torch.float32)
    with torch.no_grad():
        for layer in head_layers(model, len(mean_t)):
            if layer.bias is None:
                raise ModelError("the regression head has no bias to carry the targets' mean")
            layer.weight.mul_(std_t.to(layer.weight.device, layer.weight.dtype).unsqueeze(1))
            layer.bias.mul_(std_t.to(layer.bias.device, layer.bias.dtype)).add_(
                mean_t.to(layer.bias.device, layer.bias.dtype))


def _config_of(model: Any) -> Any:
    config = getattr(model, "config", None)
    base = getattr(model, "get_base_model", None)  # peft
    return base().config if base is not None else config


class Regression(TaskProblem):
    kind = "values"
    labeling = TargetLabeling()
    defaults = frozenset()  # class weights and macro-F1 selection are class ideas
    problem_type = "regression"  # a bare folder (config.json, no run.json) with it is a regression model
    # A value head fits more slowly than a class boundary. On both real regression sets (VADER's human ratings and
    # STS-B sentence pairs, 600 training rows each: 75 steps an epoch at batch 8; benchmarks/README.md, "Text
    # regression", "A minimum of steps") validation Pearson was still rising at the 3 default epochs (225 steps).
    # Five epochs (375 steps) gave test Pearson 0.772 +- 0.004 against 0.761 +- 0.007 on VADER and 0.739 +- 0.003
    # against 0.739 +- 0.010 on STS-B (3 seeds each), in 1.6x the time. Learning rates 5e-5 and 2e-4, layer decay
    # 0.8 and the Huber loss each lost on one set or both. At 300 rows (10 epochs against 3) +0.022 and +0.002.
    # Image regression was not measured.
    min_optimizer_steps = 375
    min_optimizer_steps_why = ("regression: on two real 600-row text sets validation Pearson still rose after 225 "
                               "steps, and 375 gained test Pearson on one and held it on the other")
    peft_task_type = None  # a plain PeftModel, as for classification: the head is saved whole (modules_to_save)
    card = CardWords(
        labels="It predicts {n} number(s) per {kind}: {labels}.",
        head="a new linear regression head of {n} output(s) (randomly initialised; trained on standardised "
             "targets, the scale folded into the saved head)",
        per_class="Per target",
        per_class_column="target",
        baseline="always predicting {name}",
        usage='from transformers import pipeline\nregressor = pipeline("{task}", model="{model}", '
              'function_to_apply="none")\nprint(regressor({example}))  # the value, in the targets\' units',
        metric_titles={"pearson": "Pearson correlation", "spearman": "Spearman correlation", "rmse": "RMSE",
                       "mae": "MAE", "r2": "R²"},
        averages={},
        per_class_fields=("pearson", "spearman", "rmse", "mae", "r2"),
    )

    def metrics(self, names: list[str], labels: list[str]) -> Any:
        """Metrics in original units (a finished model's outputs)."""
        from hf_finetune.metrics.regression import RegressionMetrics

        return RegressionMetrics(names, labels)

    def run_metrics(self, names: list[str], labels: Any) -> Any:
        """Metrics of a training run: predictions and labels are standardised; figures in original units."""
        from hf_finetune.metrics.regression import RegressionMetrics

        return RegressionMetrics(names, list(labels.names), labels.mean, labels.std)

    def baselines(self, results: dict[str, Any], counts: Any) -> list[str]:
        from hf_finetune.metrics.regression import add_regression_baselines

        return add_regression_baselines(results)

    def loss(self, finetune: Any, label_smoothing: float, class_weights: Any) -> Any:
        return RegressionLoss(finetune.regression_loss)

    def settle(self, model: Any, labels: Any, results: dict[str, Any]) -> None:
        """Folds the training scale into the head, so the saved model outputs original units."""
        fold_scale(model, labels.mean, labels.std)
        setattr(_config_of(model), SCALE_KEY, {**labels.scale, "folded": True})


REGRESSION = Regression()

CAPABILITIES = frozenset({"tune", "export", "lora", "linear_probe", "probe_then_full", "gradual_unfreeze",
                          "layer_decay", "cache_features"})

TEXT_TASK = Task(
    name="text-regression",
    pipeline_task="text-classification",
    card_name="Text Regression",
    inputs=TextInputs(),
    problem=REGRESSION,
    capabilities=CAPABILITIES,
    example_input='"A wonderful, moving film."',
    auto_model="AutoModelForSequenceClassification",
)

IMAGE_TASK = Task(
    name="image-regression",
    pipeline_task="image-classification",
    card_name="Image Regression",
    inputs=ImageInputs(),
    problem=REGRESSION,
    capabilities=CAPABILITIES,
    example_input='"path/to/image.jpg"',
    auto_model="AutoModelForImageClassification",
)
