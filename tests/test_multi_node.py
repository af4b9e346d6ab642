"""Two "machines" on this one: `accelerate_configs/multi_node.yaml` launched twice, machine_rank 0 and 1.

Each launch is what one machine of a real cluster runs (one process each here, gloo on the CPU,
rendezvous at 127.0.0.1). The pair is killed right after a checkpoint, launched again with resume,
and must end with the weights of one uninterrupted process, its output folder written once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_finetune.cli import main

from .conftest import FILLER, NEGATIVE, POSITIVE, REPO, write_recipe
from .helpers.postgres import free_port

pytestmark = pytest.mark.slow
ATOL, RTOL = 1e-5, 1e-4  # two processes sum the same per-sample gradients in another order


def launch_machines(script: list[str], tmp_path: Path, name: str) -> list[tuple[int, str]]:
    """Both machines' `accelerate launch` at once; (exit code, output) of each."""
    port = free_port()
    launched = []
    for rank in (0, 1):
        log = (tmp_path / f"{name}-machine{rank}.log").open("w")
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                   str(REPO / "accelerate_configs" / "multi_node.yaml"), "--mixed_precision", "no",
                   "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(rank),
                   "--main_process_ip", "127.0.0.1", "--main_process_port", str(port), *script]
        launched.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO), log))
    results = []
    for process, log in launched:
        code = process.wait(timeout=600)
        log.close()
        results.append((code, Path(log.name).read_text()))
    return results


def test_two_machines_checkpoint_resume_and_match_one_process(tmp_path, text_recipe):
    from hf_finetune.testing import write_tiny_bert

    text_recipe["model"]["name"] = str(write_tiny_bert(tmp_path / "bert", POSITIVE + NEGATIVE + FILLER, dropout=0.0))
    text_recipe["batch"] = {"global_size": 16}
    text_recipe["training"].update(num_train_epochs=2, learning_rate=5e-3, bf16=False, per_device_train_batch_size=16)
    one = write_recipe(tmp_path / "one.yaml", dict(text_recipe, output={"dir": str(tmp_path / "one")}))
    assert main(["train", str(one)]) == 0

    two = write_recipe(tmp_path / "two.yaml", dict(text_recipe, output={"dir": str(tmp_path / "two")}))
    # 48 rows / 16 = 3 steps an epoch: both machines die right after the checkpoint of epoch 1 (step 3).
    died = launch_machines([str(REPO / "tests" / "helpers" / "train_then_die.py"), "kill-after-save", "3", "train",
                            str(two)], tmp_path, "die")
    assert all(code != 0 for code, _ in died), [out[-2000:] for _, out in died]
    out = tmp_path / "two"
    assert (out / "checkpoints" / "checkpoint-3").is_dir() and not (out / "run.json").exists()

    resumed = launch_machines(["hf_finetune/run.py", str(two), "training.resume_from_checkpoint=auto"], tmp_path,
                              "resume")
    assert [code for code, _ in resumed] == [0, 0], [out[-3000:] for _, out in resumed]
    text = "".join(output for _, output in resumed)
    assert "checkpoint-3" in text  # resumed from the checkpoint both machines wrote, not from the start
    assert text.count("Done in") == 1  # the output is written once, by the main process of machine 0
    assert text.count("Batch: 16 samples per optimizer step = 2 processes x 8 per device") == 1
    assert (out / "run.json").is_file() and not (out / ".staging").exists()
    a, b = load_file(tmp_path / "one" / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=ATOL, rtol=RTOL, msg=key)
