"""Logging: one readable stream from the main process; other processes only warn."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
DATEFMT = "%H:%M:%S"


def _rank() -> int:
    # Set by accelerate/torchrun before the process starts; 0 when running alone.
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time (it may be replaced after setup)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


class _Redact(logging.Filter):
    """No log line prints a token or a tracker's credential (errors.redact), whatever the message carried."""

    def filter(self, record: logging.LogRecord) -> bool:
        from hf_finetune.errors import redact

        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


def configure_logging(verbose: bool = False) -> None:
    """Logs `hf_finetune` at INFO (DEBUG when verbose) on the main process, WARNING elsewhere."""
    level = (logging.DEBUG if verbose else logging.INFO) if _rank() == 0 else logging.WARNING
    root = logging.getLogger("hf_finetune")
    root.setLevel(level)
    if not root.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
        handler.addFilter(_Redact())
        root.addHandler(handler)
    root.propagate = True  # our handler prints; propagating lets test log capture see records too
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_warning()
    datasets.utils.logging.set_verbosity_warning()
    if _rank() != 0:
        datasets.disable_progress_bars()
        transformers.utils.logging.set_verbosity_error()


def configure_process_logging(args: Any) -> None:
    """Refines the levels once `TrainingArguments` knows this process's index."""
    if args.process_index != 0:
        logging.getLogger("hf_finetune").setLevel(logging.WARNING)
        import datasets
        import transformers

        datasets.disable_progress_bars()
        transformers.utils.logging.set_verbosity_error()
