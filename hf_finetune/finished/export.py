"""Export a finished run's model to ONNX, checked against PyTorch with ONNX Runtime.

    hf-finetune export OUTPUT_DIR --format onnx [--opset N] [--output-dir DIR] [--external-data]

    export_onnx         torch.onnx.export(dynamo=True) with a dynamic batch axis (and sequence, for text),
                        the label names in the model's metadata and in labels.json beside it, then
                        `verify` at shapes other than the traced example
    load_onnx_predictor a Predictor (as `hf-finetune predict` uses) whose model runs in ONNX Runtime

The example traced has batch 2 and sequence 16: torch.export specialises dimensions of size 0 and 1,
so tracing at batch 1 would give a graph that only takes batch 1. Optimum, the usual exporter,
does not support transformers 5, hence torch's own exporter (as timm's utils/onnx.py does).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hf_finetune.errors import NotAFinishedRunError, UserError
from hf_finetune.extras import require

logger = logging.getLogger(__name__)

ONNX_DIR = "onnx"
MODEL_FILE = "model.onnx"
LABELS_FILE = "labels.json"
METADATA_KEY = "hf_finetune"  # metadata_props entry: JSON with task, labels, inputs, max_length
ATOL = 1e-4  # fp32: ONNX Runtime's kernels against PyTorch's
EXTERNAL_DATA_FROM = 2 * 1024**3  # protobuf's limit for one file: larger weights go to model.onnx.data
EXAMPLE_BATCH, EXAMPLE_SEQUENCE = 2, 16  # traced shapes: >= 2, so torch.export keeps them dynamic
CHECK_BATCHES = (1, 3, 5)  # checked shapes differ from the traced ones
CHECK_SEQUENCES = (1, 7, 33)


@dataclass
class ExportResult:
    path: Path
    opset: int | None
    external_data: bool
    example: list[int] = field(default_factory=list)  # the traced input shape
    checks: list[dict[str, Any]] = field(default_factory=list)  # per checked shape: max abs diff, argmax agreement
    files: list[Path] = field(default_factory=list)

    @property
    def max_abs_diff(self) -> float:
        return max(c["max_abs_diff"] for c in self.checks)

    @property
    def argmax_agreement(self) -> float:
        return min(c["argmax_agreement"] for c in self.checks)


def _require_onnx() -> tuple[Any, Any]:
    onnx = require("onnx", "onnx", "hf-finetune export --format onnx")
    require("onnxscript", "onnx", "hf-finetune export --format onnx")  # torch.onnx.export(dynamo=True) needs it
    ort = require("onnxruntime", "onnx", "hf-finetune export --format onnx")
    return onnx, ort


class _Logits:
    """The model as a function of its input tensors, returning logits only (one ONNX output)."""

    def __new__(cls, model: Any, names: list[str]) -> Any:
        import torch

        class Logits(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *tensors: Any) -> Any:
                return self.model(**dict(zip(names, tensors, strict=True))).logits

        return Logits().eval()


def export_onnx(out_dir: str | os.PathLike, *, opset: int | None = None, output_dir: str | os.PathLike | None = None,
                external_data: bool | None = None) -> ExportResult:
    """Exports the run's model to `<out_dir>/onnx/model.onnx` (or `output_dir`) and verifies it.

    Args:
        out_dir: a finished run's output folder.
        opset: the ONNX opset (default: the exporter's).
        output_dir: where to write (default `<out_dir>/onnx`, then listed in run.json so push uploads it).
        external_data: weights in a separate model.onnx.data file (default: when they exceed 2 GB).

    Raises:
        UserError: not a finished run, a missing onnx extra, or an export that fails the check.
    """
    import torch

    from hf_finetune.outputs import check_writable_dir, make_output_dir, output_lock, read_run, record_files
    from hf_finetune.predictor import load_predictor
    from hf_finetune.tasks import require

    _require_onnx()
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise NotAFinishedRunError(f"OUTPUT_DIR: {out_dir} is not a folder")
    dest, key = (Path(output_dir), "--output-dir") if output_dir is not None else (out_dir / ONNX_DIR, "OUTPUT_DIR")
    check_writable_dir(dest, key)  # before the model loads and the exporter runs
    with output_lock(out_dir, "export", "OUTPUT_DIR"):
        _refuse_ensemble(out_dir)
        predictor = load_predictor(out_dir)
        require(predictor.task, "export", f"OUTPUT_DIR: {out_dir}")
        make_output_dir(dest, key)
        path = dest / MODEL_FILE
        model = predictor.model.float().eval()
        inputs = predictor.inputs
        names = inputs.input_names(predictor)
        example = inputs.example_inputs(predictor, EXAMPLE_BATCH, EXAMPLE_SEQUENCE, seed=0)
        dynamic = inputs.dynamic_shapes(predictor, names)
        wrapper = _Logits(model, names)
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        external = size > EXTERNAL_DATA_FROM if external_data is None else external_data
        for stale in (path, path.with_name(path.name + ".data")):
            stale.unlink(missing_ok=True)
        metadata = {"task": predictor.task, "labels": predictor.labels, "inputs": names,
                    "max_length": predictor.max_length}
        with warnings.catch_warnings():  # "axis name batch will not be used": the names are kept as given
            warnings.filterwarnings("ignore", message=".*axis name.*", category=UserWarning)
            try:
                program = torch.onnx.export(wrapper, tuple(example[n] for n in names), dynamo=True,
                                            input_names=names, output_names=["logits"], dynamic_shapes=dynamic,
                                            opset_version=opset, verbose=False)
            except Exception as exc:  # the exporter's errors are long: keep the summary line
                raise UserError(f"export: torch.onnx.export failed for {type(model).__name__}: "
                                f"{_summary(exc)}") from exc
            program.model.metadata_props[METADATA_KEY] = json.dumps(metadata)
            program.model.metadata_props["id2label"] = json.dumps(dict(enumerate(predictor.labels)))
            program.save(str(path), external_data=external)
        (dest / LABELS_FILE).write_text(json.dumps(predictor.labels, indent=2) + "\n", encoding="utf-8")
        result = ExportResult(path=path, opset=_opset(path), external_data=external,
                              example=list(example[names[0]].shape))
        result.checks = verify(path, predictor, wrapper, names)
        if result.max_abs_diff > ATOL or result.argmax_agreement < 1.0:
            raise UserError(f"export: {path} does not match PyTorch (max abs difference {result.max_abs_diff:.2e}, "
                            f"argmax agreement {result.argmax_agreement:.1%}; needed <= {ATOL:g} and 100%)")
        result.files = [p for p in (path, path.with_name(path.name + ".data"), dest / LABELS_FILE) if p.is_file()]
        if dest.resolve().parent == out_dir.resolve() and read_run(out_dir) is not None:
            written = [f"{dest.name}/{p.name}" for p in result.files]
            removed = [f"{dest.name}/{p.name}" for p in (path, path.with_name(path.name + ".data"), dest / LABELS_FILE)
                       if not p.is_file()]
            record_files(out_dir, written, forget=removed)  # push uploads them
        return result


def _refuse_ensemble(out_dir: Path) -> None:
    """An ensemble folder has no model of its own: say how to export its members, or make one model of it."""
    from hf_finetune.outputs import read_finished_run, read_run

    run = read_run(out_dir)
    if run is None or run.get("kind") != "ensemble":
        return
    members = read_finished_run(out_dir).member_folders()
    commands = "; ".join(f"hf-finetune export {m} --format onnx --output-dir {out_dir}-onnx/{m.name}" for m in members)
    raise UserError(
        f"OUTPUT_DIR: {out_dir} is an ensemble of {len(members)} runs, with no model of its own to export (its "
        f"members' probabilities are averaged at prediction time). Export its members one by one ({commands}), "
        "or make one model of it: name the folder as distill.teacher in a recipe (distillation), or, for runs "
        "of one backbone, hf-finetune ensemble --method soup")


def _summary(exc: Exception) -> str:
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = next((line for line in lines if line.startswith("<class")), lines[0] if lines else type(exc).__name__)
    return detail


def _opset(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def verify(path: Path, predictor: Any, wrapper: Any, names: list[str]) -> list[dict[str, Any]]:
    """ONNX Runtime (CPU) against PyTorch at shapes other than the traced example."""
    import numpy as np
    import torch

    session = _session(path, "export")
    checks = []
    for seed, shape in enumerate(zip(CHECK_BATCHES, CHECK_SEQUENCES, strict=True), start=1):
        inputs = predictor.inputs.example_inputs(predictor, *shape, seed=seed)
        with torch.inference_mode():
            expected = wrapper(*(inputs[n] for n in names)).float().numpy()
        got = session.run(["logits"], {n: inputs[n].numpy() for n in names})[0]
        axis = 1 if got.ndim == 4 else -1  # (batch, classes, height, width): the class of each pixel
        checks.append({"shape": list(inputs[names[0]].shape), "max_abs_diff": float(np.abs(got - expected).max()),
                       "argmax_agreement": float((got.argmax(axis) == expected.argmax(axis)).mean())})
    return checks


def _session(path: Path, key: str = "--onnx-model") -> Any:
    """An ONNX Runtime session (CPU) of the model in `path`.

    Raises:
        UserError: starting with `key`, when ONNX Runtime cannot load the file (not ONNX, damaged, an
            operator it lacks): never its own exception from deep inside.
    """
    _, ort = _require_onnx()
    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        if not _from_onnxruntime(exc):
            raise
        raise UserError(f"{key}: {path} is not an ONNX model that ONNX Runtime can load ({_summary(exc)}); use a "
                        "model.onnx written by hf-finetune export OUTPUT_DIR --format onnx") from None


def _from_onnxruntime(exc: BaseException) -> bool:
    """True for ONNX Runtime's own errors (InvalidProtobuf, Fail, InvalidArgument, ...: plain Exceptions)."""
    return type(exc).__module__.startswith("onnxruntime") or isinstance(exc, (OSError, ValueError, RuntimeError))


def format_result(result: ExportResult) -> str:
    lines = [f"Exported {result.path} (opset {result.opset}"
             f"{', weights in ' + result.path.name + '.data' if result.external_data else ''})",
             f"Checked with ONNX Runtime against PyTorch at shapes other than the traced "
             f"{'x'.join(map(str, result.example))} example (needed: max abs difference <= {ATOL:g}, "
             "argmax agreement 100%):"]
    for check in result.checks:
        shape = "x".join(map(str, check["shape"]))
        lines.append(f"  input {shape:<12} max abs difference {check['max_abs_diff']:.2e}  "
                     f"argmax agreement {check['argmax_agreement']:.0%}")
    lines.append(f"Files: {', '.join(str(p) for p in result.files)}")
    return "\n".join(lines) + "\n"


# --- running an exported model ---------------------------------------------------------------------------

class OnnxModel:
    """An ONNX Runtime session called like a transformers model: `model(**tensors).logits`."""

    def __init__(self, path: str | os.PathLike, key: str = "--onnx-model"):
        self.path, self.key = Path(path), key
        self.session = _session(self.path, key)
        self.inputs = [i.name for i in self.session.get_inputs()]
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.metadata = json.loads(meta[METADATA_KEY]) if METADATA_KEY in meta else {}
        except ValueError:
            self.metadata = {}
        if not isinstance(self.metadata, dict):
            self.metadata = {}
        if "logits" not in [o.name for o in self.session.get_outputs()]:
            raise UserError(f"{key}: {self.path} has no 'logits' output: it was not written by hf-finetune export")

    def __call__(self, **tensors: Any) -> Any:
        import numpy as np
        import torch

        missing = [n for n in self.inputs if n not in tensors]
        if missing:
            raise UserError(f"{self.key}: {self.path} needs inputs {missing} that this run's preprocessing does not "
                            "make: it was exported from another model")
        feed = {n: np.ascontiguousarray(tensors[n].numpy()) for n in self.inputs}
        try:
            logits = self.session.run(["logits"], feed)[0]
        except Exception as exc:
            if not _from_onnxruntime(exc):
                raise
            raise UserError(f"{self.key}: {self.path} does not take this run's inputs ({_summary(exc)}): it was "
                            "exported from another model") from None
        return SimpleNamespace(logits=torch.from_numpy(logits))


def onnx_model_path(out_dir: str | os.PathLike, path: str | os.PathLike | None = None) -> Path:
    return Path(path) if path else Path(out_dir) / ONNX_DIR / MODEL_FILE


def load_onnx_predictor(out_dir: str | os.PathLike, path: str | os.PathLike | None = None) -> Any:
    """A Predictor whose model is the exported ONNX file, with the run's tokenizer or image transform.

    Raises:
        UserError: no exported model (says how to make one), or a missing onnx extra.
    """
    from transformers import AutoConfig

    from hf_finetune.predictor import Predictor, output_task
    from hf_finetune.tasks import get_task

    model_path = onnx_model_path(out_dir, path)
    key = "--onnx-model" if path else "--onnx"
    if not model_path.is_file():
        raise NotAFinishedRunError(f"{key}: {model_path} not found; make it with: hf-finetune export {out_dir} "
                                   "--format onnx")
    task, recipe = output_task(out_dir)
    _check_recorded_export(Path(out_dir), model_path)
    model = OnnxModel(model_path, key)
    if model.metadata.get("task") not in (None, task):
        raise UserError(f"{key}: {model_path} was exported from an {model.metadata['task']} model, but {out_dir} "
                        f"holds a {task} run: give the run it was exported from")
    labels = model.metadata.get("labels") or _labels_beside(model_path, key)
    config = AutoConfig.from_pretrained(out_dir, local_files_only=True)
    model.config = config  # what the run stored beside the weights (multi-label: the tuned thresholds)
    preprocessor = get_task(task).inputs.preprocessor(out_dir, config, recipe, model.metadata.get("max_length"),
                                                      local_files_only=True)
    return Predictor(task, model, list(labels), recipe, **preprocessor)


def _labels_beside(model_path: Path, key: str) -> list[str]:
    """The labels.json that export writes beside model.onnx, for a model without hf-finetune's metadata."""
    try:
        labels = json.loads(model_path.with_name(LABELS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        labels = None
    if not isinstance(labels, list) or not labels:
        raise UserError(f"{key}: {model_path} names no labels (no hf-finetune metadata in it and no readable "
                        f"{LABELS_FILE} beside it): use a model written by hf-finetune export")
    return [str(label) for label in labels]


def _check_recorded_export(out_dir: Path, model_path: Path) -> None:
    """An export that run.json lists (hf-finetune export into the run) must be what export wrote."""
    from hf_finetune.outputs import read_run
    from hf_finetune.outputs.finished import check_weights_intact

    run = read_run(out_dir)
    try:
        name = model_path.resolve().relative_to(out_dir.resolve()).as_posix()
    except ValueError:  # an export elsewhere: nothing recorded about it
        return
    if run is not None:
        check_weights_intact(out_dir, run, [n for n in (name, name + ".data") if n in (run.get("checksums") or {})])
