"""Reading a finished run's output folder: the one reader predict, evaluate, push and the card use."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hf_finetune.errors import DamagedRunError, NotAFinishedRunError
from hf_finetune.outputs.folder import recover_interrupted_publish
from hf_finetune.outputs.manifest import ENSEMBLE_FILE, RUN_FILE, file_checksum, read_run


@dataclass
class FinishedRun:
    """A finished run's output folder, as predict, evaluate, push and the card read it."""

    folder: Path
    manifest: dict[str, Any]  # run.json

    @property
    def task(self) -> str:
        return self.manifest["task"]

    @functools.cached_property
    def recipe(self) -> dict[str, Any]:
        """The resolved recipe the run saved (recipe.yaml), as a plain mapping."""
        return _read_mapping(self.folder / "recipe.yaml", yaml.safe_load)

    @functools.cached_property
    def metrics(self) -> dict[str, Any]:
        """The run's metrics.json: validation, test and train figures."""
        return _read_mapping(self.folder / "metrics.json", json.loads)

    @property
    def kind(self) -> str:
        """`run` (trained), `soup` (weight-averaged runs: a plain model folder) or `ensemble` (no model
        of its own: its members' probabilities are averaged)."""
        return str(self.manifest.get("kind", "run"))

    @property
    def is_ensemble(self) -> bool:
        return self.kind == "ensemble"

    @functools.cached_property
    def ensemble(self) -> dict[str, Any]:
        """An ensemble folder's ensemble.json: method, members (folder inside this one, weight), labels."""
        if not self.is_ensemble:
            raise NotAFinishedRunError(f"OUTPUT_DIR: {self.folder} is a {self.kind}, not an ensemble")
        return _read_mapping(self.folder / ENSEMBLE_FILE, json.loads)

    def member_folders(self) -> list[Path]:
        """An ensemble's member run folders (copies inside the ensemble folder), in order."""
        members = self.ensemble.get("members")
        if not isinstance(members, list) or not members:
            raise NotAFinishedRunError(f"OUTPUT_DIR: {self.folder / ENSEMBLE_FILE} lists no members; the folder "
                                       "is damaged")
        return [self.folder / str(m["folder"]) for m in members]


def _read_mapping(path: Path, parse: Any) -> dict[str, Any]:
    try:
        value = parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise NotAFinishedRunError(f"OUTPUT_DIR: cannot read {path}: {exc}") from None
    if not isinstance(value, dict):
        raise NotAFinishedRunError(f"OUTPUT_DIR: {path} is not a mapping; the folder is damaged")
    return value


def read_finished_run(out_dir: str | os.PathLike, consequence: str = "") -> FinishedRun:
    """The finished run in `out_dir`.

    Args:
        out_dir: the output folder.
        consequence: appended to the error (e.g. ": nothing to push").

    Raises:
        NotAFinishedRunError: the folder holds no finished run of this tool (no complete run.json).
    """
    recover_interrupted_publish(Path(out_dir))
    run = read_run(out_dir)
    if run is None:
        raise NotAFinishedRunError(f"OUTPUT_DIR: {out_dir} holds no finished run (no complete {RUN_FILE})"
                                   + consequence)
    check_weights_intact(Path(out_dir), run)
    return FinishedRun(Path(out_dir), run)


# --- the weights are what run.json recorded ------------------------------------------------------------

_INTACT: set[tuple[Any, ...]] = set()  # files verified in this process: (path, size, mtime, inode, sha256)


def check_weights_intact(folder: Path, manifest: dict[str, Any] | None = None,
                         names: Iterable[str] | None = None) -> None:
    """Refuses a run whose weights are not what it wrote: missing, cut short, or with other bytes.

    Each weights file listed in run.json's `checksums` must have its size and sha256 (hashed once per
    process); every safetensors file must hold the bytes its own header describes (which also covers
    runs finished before run.json recorded checksums, and model folders without run.json).

    Args:
        folder: the run's folder.
        manifest: its run.json (None for a model folder without one).
        names: the files to check (default: the model's, every recorded one but an ONNX export's, which
            `predict --onnx` checks when it loads it, so a damaged export can be exported again).

    Raises:
        DamagedRunError: naming the file, what is wrong with it and what to do.
    """
    recorded = (manifest or {}).get("checksums")
    recorded = recorded if isinstance(recorded, dict) else {}
    if names is None:
        names = {n for n in recorded if not n.endswith((".onnx", ".onnx.data"))}
        names |= {p.name for p in folder.glob("*.safetensors")}
    for name in sorted(names):
        path = folder / name
        problem = _damage(path, recorded.get(name))
        if problem:
            raise DamagedRunError(f"{path} {problem}. {_remedy(folder, manifest)}")


def _damage(path: Path, recorded: Any) -> str | None:
    """What is wrong with one weights file, or None."""
    try:
        info = path.stat()
    except OSError:
        return "is missing, though run.json lists it" if recorded else None
    want = recorded if isinstance(recorded, dict) else {}
    if isinstance(want.get("bytes"), int) and info.st_size != want["bytes"]:
        return (f"is damaged: it has {info.st_size:,} bytes where run.json records {want['bytes']:,} "
                f"({'cut short' if info.st_size < want['bytes'] else 'changed'} since the run wrote it)")
    if path.suffix == ".safetensors":
        problem = _safetensors_damage(path, info.st_size)
        if problem:
            return f"is damaged: {problem}"
    sha = want.get("sha256")
    key = (str(path.resolve()), info.st_size, info.st_mtime_ns, info.st_ino, sha)
    if isinstance(sha, str) and key not in _INTACT:
        try:
            actual = file_checksum(path)["sha256"]
        except OSError as exc:
            return f"cannot be read ({exc.strerror or exc})"
        if actual != sha:
            return (f"is damaged: its bytes differ from those the run wrote (sha256 {actual[:12]}..., run.json "
                    f"records {sha[:12]}...)")
        _INTACT.add(key)
    return None


def _safetensors_damage(path: Path, size: int) -> str | None:
    """Whether a safetensors file holds what its header describes: an 8-byte length, the JSON header, the data."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            length = int.from_bytes(head, "little") if len(head) == 8 else -1
            if length < 2 or 8 + length > size:
                return f"it is not a whole safetensors file ({size:,} bytes, no complete header)"
            header = json.loads(f.read(length))
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    except (ValueError, UnicodeDecodeError):
        return "its safetensors header is not readable"
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        return "its safetensors header is not readable"
    if 8 + length + end != size:
        return f"its header describes {8 + length + end:,} bytes of tensors and header, the file has {size:,}"
    return None


def _remedy(folder: Path, manifest: dict[str, Any] | None) -> str:
    kind = str((manifest or {}).get("kind", "run"))
    again = ("train its recipe again (recipe.yaml in the folder; output.overwrite: true replaces it)" if kind == "run"
             else f"make the {kind} again (hf-finetune ensemble ... --overwrite)")
    return f"The folder {folder} cannot be used as it is: restore it from a copy, or {again}"
