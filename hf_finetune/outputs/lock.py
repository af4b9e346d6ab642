"""One process per output folder: a lock file naming its holder (pid, host), stale locks detected.

Two runs in one folder used to publish one run's card, the other's recipe and weights from neither.
`train`, `evaluate` and `push` hold the lock while they use the folder; under `accelerate launch`
only the main process takes it (the other processes belong to the same run).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from hf_finetune.errors import OutputLockedError, OutputNotWritableError

logger = logging.getLogger(__name__)

LOCK_FILE = ".hf-finetune.lock"


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid from its holder."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    now = _process_start(pid)
    return started is None or now is None or now == started


def _holder() -> dict[str, object]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "process_start": _process_start(os.getpid()),
            "command": " ".join(["hf-finetune", *sys.argv[1:2]]),
            "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def is_main_process() -> bool:
    """True in the launcher's main process (global rank 0), or without a launcher."""
    return int(os.environ.get("RANK", "0") or 0) == 0


@contextlib.contextmanager
def output_lock(out_dir: str | os.PathLike, what: str, key: str = "output.dir") -> Iterator[None]:
    """Holds `<out_dir>/.hf-finetune.lock` for the duration; `out_dir` must exist.

    Args:
        out_dir: the output folder.
        what: what this process does there (train, evaluate, push), for the other's message.
        key: what names the folder in messages (output.dir, or OUTPUT_DIR for a command's argument).

    Raises:
        OutputLockedError: another live process holds the folder (its pid, host, command and start).
        OutputNotWritableError: the lock file cannot be written (a read-only or immutable folder).
    """
    if not is_main_process():
        yield
        return
    path = Path(out_dir) / LOCK_FILE
    held = _read_holder(path) if path.exists() else None
    if held is not None and held.get("pid") == os.getpid() and held.get("host") == socket.gethostname():
        yield  # this process holds it already (train pushes at the end of its run)
        return
    holder = {**_holder(), "command": f"hf-finetune {what}"}
    for _ in range(3):  # a stale lock is removed, then taken again; another process may win the race
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _remove_if_stale(path):
                raise OutputLockedError(_locked_message(path, what, key)) from None
            continue
        except OSError as exc:  # a read-only, immutable or full place: the folder cannot be held
            raise OutputNotWritableError(
                f"{key}: cannot write the lock file {path}: {exc.strerror or exc}; {what} holds the folder while it "
                "works, so that no run changes it meanwhile: make the folder writable, or work on a copy of it"
            ) from None
        with os.fdopen(fd, "w") as handle:
            json.dump(holder, handle)
        break
    else:
        raise OutputLockedError(_locked_message(path, what, key))
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if json.loads(path.read_text()).get("pid") == holder["pid"]:
                path.unlink()


def _read_holder(path: Path) -> dict[str, object] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _remove_if_stale(path: Path) -> bool:
    """Removes the lock when its holder is gone (same host, process not running); True when removed."""
    holder = _read_holder(path)
    if holder is None:  # half-written by a process killed while taking it, or damaged
        stale = True
    elif holder.get("host") != socket.gethostname():
        return False  # another machine's process cannot be checked from here
    else:
        try:
            stale = not _alive(int(holder.get("pid", -1)), holder.get("process_start"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            stale = True
    if stale:
        logger.warning("Removing a stale lock %s (its process is gone): %s", path, holder)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return stale


def _locked_message(path: Path, what: str, key: str) -> str:
    holder = _read_holder(path) or {}
    who = (f"{holder.get('command', 'another hf-finetune process')} (pid {holder.get('pid', '?')} on "
           f"{holder.get('host', '?')}, since {holder.get('since', '?')})")
    return (f"{key}: {path.parent} is in use by {who}; cannot {what} there at the same time. Wait for it "
            f"to finish, or choose another output folder. If that process is gone (another machine's cannot be "
            f"checked from here), delete {path}.")
