"""Recipe checks that need a capability's own logic, for the entry points to pass to recipe validation.

The recipe is data: `hf_finetune.recipe` imports no capability. A check that must read what only a
capability understands (a teacher's run.json) lives with that capability; the commands that load a
recipe to train, check, rank or tune pass `RECIPE_CHECKS` to `validate_recipe` / `load_recipe`, so these
problems come in the same error as the recipe's own, each with its dotted key path.
"""

from __future__ import annotations

from hf_finetune.tasks import capability_problems
from hf_finetune.training.distill import teacher_problems

RECIPE_CHECKS = (
    capability_problems,  # the recipe's task serves the strategy, distillation and self-training it asks for
    teacher_problems,  # distill.teacher: a finished run or ensemble for the recipe's task
)
