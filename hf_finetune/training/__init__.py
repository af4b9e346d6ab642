"""Training: recipe.training -> TrainingArguments, the Trainer and its assembly, strategies, callbacks, checkpoints."""
