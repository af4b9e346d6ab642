"""The flip default reads the data: off when mirrored validation images lose their class, else kept."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from hf_finetune.training.mirror import mirror_test


def test_the_mirror_test_needs_a_large_and_significant_loss():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2, 16)) * 3
    labels = np.repeat([0, 1], 20)
    train = centres[labels] + rng.normal(size=(40, 16))
    validation = centres[labels] + rng.normal(size=(40, 16))
    swapped = centres[1 - labels] + rng.normal(size=(40, 16))  # the mirror of a 0 looks like a 1
    test = mirror_test(train, labels, validation, swapped, labels)
    assert (test.plain, test.mirrored, test.lost, test.gained) == (1.0, 0.0, 40, 0)
    assert test.p_value == pytest.approx(0.5 ** 40) and test.changes_class
    same = mirror_test(train, labels, validation, validation + 0.01, labels)
    assert (same.lost, same.gained, same.p_value) == (0, 0, 1.0) and not same.changes_class
    # two of 40 images lost: 5 points, but a sign test cannot tell two from chance (p = 0.25)
    few = swapped.copy()
    few[2:] = validation[2:]
    test = mirror_test(train, labels, validation, few, labels)
    assert test.lost == 2 and test.p_value == pytest.approx(0.25) and not test.changes_class


def _run(vision_recipe, tmp_path, kinds):
    from hf_finetune import train
    from hf_finetune.testing import write_pattern_folder

    folder = write_pattern_folder(tmp_path / "-".join(kinds), {"train": 8, "validation": 8, "test": 4}, size=32,
                                  kinds=kinds)
    recipe = {**vision_recipe, "data": {"image_folder": str(folder)},
              "output": {"dir": str(tmp_path / ("out-" + "-".join(kinds)))}}
    result = train(recipe)
    return yaml.safe_load((result.output_dir / "recipe.yaml").read_text())


def test_mirrored_diagonals_turn_flips_off_and_stripes_keep_them(vision_recipe, tmp_path, caplog):
    caplog.set_level("INFO")
    resolved = _run(vision_recipe, tmp_path, ("rising", "falling"))
    assert resolved["augmentation"]["hflip"] == 0.0
    assert "mirroring changes what these images show" in caplog.text
    caplog.clear()
    resolved = _run(vision_recipe, tmp_path, ("horizontal", "vertical", "checkered"))
    assert resolved["augmentation"]["hflip"] == 0.5
    assert "mirroring keeps the class, so random flips stay on" in caplog.text


def test_the_recipes_own_flip_is_never_second_guessed(vision_recipe):
    from hf_finetune.recipe import validate_recipe
    from hf_finetune.training.mirror import mirror_decision

    own = validate_recipe({**vision_recipe, "augmentation": {"hflip": 0.5}})
    assert mirror_decision(own, data=None, model=None, data_config={}, args=None) is None  # nothing is read
    probe = validate_recipe({**vision_recipe, "finetune": {"strategy": "linear_probe", "cache_features": True}})
    assert mirror_decision(probe, data=None, model=None, data_config={}, args=None) is None  # no augmentation

