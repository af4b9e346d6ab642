"""text-classification: one class per text (or per pair of texts), on a BERT-family encoder."""

from hf_finetune.tasks.base import Task
from hf_finetune.tasks.classification import CLASSIFICATION
from hf_finetune.tasks.text import TextInputs

TASK = Task(
    name="text-classification",
    pipeline_task="text-classification",
    card_name="Text Classification",
    inputs=TextInputs(),
    problem=CLASSIFICATION,
    example_input='"A wonderful, moving film."',
    auto_model="AutoModelForSequenceClassification",
)
