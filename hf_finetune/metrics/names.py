"""Names of the metrics shipped with the package: they live with the recipe's metrics section
(hf_finetune/recipe/sections/metrics.py), which checks them without importing this stage."""

from hf_finetune.recipe.sections.metrics import (  # noqa: F401
    BUNDLED_METRICS,
    ENTITY_METRICS,
    LOWER_IS_BETTER,
    REGRESSION_METRICS,
    SEGMENTATION_METRICS,
    metric_keys,
    suggest_bundled,
)
