"""`accelerate launch hf_finetune/run.py RECIPE [dotted.key=value ...]`: the same as `hf-finetune train`.

Launched as a script, so it also works from a checkout that is not installed.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):
    # As a script, Python puts this folder first on sys.path, where our module names (data, metrics,
    # pipeline...) could shadow other packages: put the repository root there instead.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from hf_finetune.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
