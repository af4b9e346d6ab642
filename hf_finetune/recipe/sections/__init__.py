"""The recipe's sections, one module each: its pydantic schema and the checks that need only that section.

    base            Section: unknown keys are errors; a bool or NaN is no number
    model           the pretrained backbone
    data            source, splits, columns, caps, the unlabelled pool; FILE_FORMATS
    preprocessing   text input preprocessing
    augmentation    training-time image augmentation (timm policies)
    finetune        strategy, learning rates, loss, LoRA keys
    batch           the global batch size
    distill         knowledge distillation settings
    metrics         the `evaluate` metrics; the names of the bundled ones
    training        TrainingArguments fields against the installed transformers; house defaults
    output          the output folder
    hub             pushing to the Hub; Hub repository ids
    card            model card metadata
    rank            ranking candidate backbones
    search          hyperparameter search
    self_training   self-training rounds

Checks that span sections live in recipe/cross.py; recipe/schema.py composes the sections into `Recipe`.
"""
