"""image-classification: one class per image, on a timm backbone wrapped for transformers."""

from hf_finetune.tasks.base import Task
from hf_finetune.tasks.classification import CLASSIFICATION
from hf_finetune.tasks.image import ImageInputs

TASK = Task(
    name="image-classification",
    pipeline_task="image-classification",
    card_name="Image Classification",
    inputs=ImageInputs(),
    problem=CLASSIFICATION,
    example_input='"path/to/image.jpg"',
    auto_model="AutoModelForImageClassification",
)
