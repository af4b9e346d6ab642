"""hf-finetune: fine-tune text and vision backbones from one YAML recipe on Trainer + Accelerate."""

__version__ = "0.1.0"
