"""`accelerate launch` with accelerate_configs/cpu_ddp.yaml (two processes, gloo on the CPU) for the tests.

Each launch gets a free port of its own: the suite runs in several processes at once (pytest-xdist), and two
launches on the config's fixed main_process_port would meet on it ("address already in use").
"""

from __future__ import annotations

import sys
from pathlib import Path

from .postgres import free_port

REPO = Path(__file__).resolve().parent.parent.parent


def two_process_launch(*args: str) -> list[str]:
    """The command line: `accelerate launch --config_file accelerate_configs/cpu_ddp.yaml` on a free port, then
    `args` (a script and its arguments, or -m and a module)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(REPO / "accelerate_configs" / "cpu_ddp.yaml"), "--main_process_port", str(free_port()), *args]
