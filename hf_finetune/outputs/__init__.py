"""The output folder: locked while in use, protected when it holds a finished run, published atomically.

Layout of `output.dir`:

    config.json, model.safetensors, tokenizer files   the fine-tuned model (pipeline() loads the folder)
    recipe.yaml                                       the resolved recipe
    metrics.json                                      final validation and test metrics
    run.json                                          marks the run finished (status complete), lists its files
                                                      and the weights' sizes and sha256, checked on every read
    checkpoints/                                      Trainer checkpoints while training (for resuming)
    .next-checkpoints/                                an overwriting run's checkpoints, until it publishes
    .staging/, .previous/                             the run being published, the run it replaces (briefly)
    .hf-finetune.lock                                 the process using the folder (pid, host)

    folder     what may be written where: guards, staging, publishing, recovery
    finished   reading a finished run (recipe, metrics, manifest), its weights checked against run.json
    lock       one process per output folder
"""

from hf_finetune.outputs.finished import FinishedRun, read_finished_run, read_run
from hf_finetune.outputs.folder import (
    CHECKPOINTS,
    RUN_FILE,
    STAGING,
    check_writable_dir,
    checkpoints_dir,
    guard_output_dir,
    make_output_dir,
    output_dir_problem,
    output_dir_refusal,
    prediction_file,
    prepare_output_dir,
    publish,
    record_files,
    settle_checkpoints,
    staging_dir,
)
from hf_finetune.outputs.lock import LOCK_FILE, output_lock

__all__ = [
    "CHECKPOINTS", "LOCK_FILE", "RUN_FILE", "STAGING", "FinishedRun", "check_writable_dir", "checkpoints_dir",
    "guard_output_dir", "make_output_dir", "prediction_file", "output_dir_problem", "output_dir_refusal", "output_lock",
    "prepare_output_dir", "publish", "read_finished_run", "read_run", "record_files", "settle_checkpoints",
    "staging_dir",
]
