"""Read back what W&B wrote in offline mode (`WANDB_MODE=offline`): the run's transaction log.

`<WANDB_DIR>/wandb/offline-run-*/run-<id>.wandb` is what `wandb sync` uploads: protobuf `Record`s
(wandb.proto.wandb_internal_pb2) in LevelDB's log format (32 KiB blocks; each chunk a 7-byte header of
CRC32C, length and type: full, first, middle, last), after a 7-byte file header (":W&B", magic, version).
wandb >= 0.20 ships no reader for it in Python (the Go core writes and syncs it), so the test reads it here.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = struct.Struct("<IHB")  # crc32c, length, chunk type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    ident, _magic, _version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B", f"{path} is not a W&B transaction log"
    out, pos, pending = [], 7, b""
    while pos + HEADER.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER.size:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = HEADER.unpack_from(data, pos)
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + HEADER.size:pos + HEADER.size + length]
        pos += HEADER.size + length
        if kind in (FIRST, MIDDLE):
            pending = chunk if kind == FIRST else pending + chunk
            continue
        payload = pending + chunk if kind == LAST else chunk
        pending = b""
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        out.append(record)
    return out


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


@dataclass
class OfflineRun:
    """One offline run: its name, project, group, config, history rows, final summary, artifacts, exit code."""

    name: str
    project: str
    group: str
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None


def read_run(folder: Path) -> OfflineRun:
    (log,) = Path(folder).glob("run-*.wandb")
    run = None
    for record in records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = OfflineRun(record.run.display_name, record.run.project, record.run.run_group)
            run.config.update({_key(i): json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            run.config.update({_key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            run.summary.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "artifact":
            run.artifacts.append({"name": record.artifact.name, "type": record.artifact.type,
                                  "files": sorted(e.path for e in record.artifact.manifest.contents)})
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    assert run is not None, f"{log} holds no run record"
    return run


def offline_runs(wandb_dir: Path) -> dict[str, OfflineRun]:
    """Every offline run under WANDB_DIR, by name."""
    runs = [read_run(folder) for folder in sorted((Path(wandb_dir) / "wandb").glob("offline-run-*"))]
    return {run.name: run for run in runs}
