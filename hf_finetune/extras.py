"""Optional dependencies: each feature that needs one says which pip extra installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

from hf_finetune.errors import UserError


class MissingExtraError(UserError):
    """An optional package is not installed; the message names the extra that installs it."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Imports `module`, or raises an error naming `pip install "hf-finetune[extra]"`.

    Args:
        module: the import name (peft, onnxruntime).
        extra: the pyproject extra that installs it (lora, onnx).
        purpose: what needs it, for the message (e.g. "finetune.strategy: lora").
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{purpose} needs the '{module}' package, which is not installed ({exc}); install the '{extra}' extra: "
            f'pip install "hf-finetune[{extra}]" (or pip install -e ".[{extra}]" in a checkout)'
        ) from None
