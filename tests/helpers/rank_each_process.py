"""Runs `rank` in every process of a launch and records, per process, which features came from the cache.

    accelerate launch --config_file accelerate_configs/cpu_ddp.yaml tests/helpers/rank_each_process.py RECIPE OUT_DIR
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's hf_finetune

from hf_finetune.rank import rank  # noqa: E402
from hf_finetune.recipe import load_recipe  # noqa: E402

if __name__ == "__main__":
    recipe_path, out = sys.argv[1], Path(sys.argv[2])
    result = rank(load_recipe(recipe_path))
    process = int(os.environ.get("RANK", "0"))
    (out / f"process{process}.json").write_text(json.dumps({r["name"]: r["from_cache"] for r in result.rows}))
