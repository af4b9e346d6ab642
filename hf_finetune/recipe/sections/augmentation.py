"""`augmentation`: training-time image augmentation, as timm's `create_transform` takes it."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from hf_finetune.recipe.sections.base import Section

# Friendly names for timm's augmentation policy strings.
AUTO_AUGMENT_ALIASES = {
    "randaugment": "rand-m9-mstd0.5-inc1",  # timm's standard RandAugment recipe
    "trivialaugment": "rand-n1-m10-mstd101-p1.0",  # one op, uniform magnitude, always applied
    "augmix": "augmix-m5-w3",
}


class Augmentation(Section):
    """Training-time image augmentation (evaluation always uses resize + center crop)."""

    crop_scale: tuple[float, float] = Field(
        (0.08, 1.0), description="Random resized crop: range of the image area kept (ImageNet standard)."
    )
    crop_ratio: tuple[float, float] = Field((0.75, 4 / 3), description="Random resized crop: aspect-ratio range.")
    hflip: float = Field(0.5, ge=0, le=1, description="Probability of a horizontal flip.")
    vflip: float = Field(0.0, ge=0, le=1, description="Probability of a vertical flip.")
    color_jitter: float = Field(
        0.4, ge=0, description="Brightness/contrast/saturation jitter strength (0 = off; off with auto_augment)."
    )
    auto_augment: str | None = Field(
        None,
        description="randaugment, trivialaugment, augmix, or a timm policy string (rand-m9-mstd0.5-inc1, augmix-m5-w3).",
    )
    random_erasing: float = Field(0.0, ge=0, le=1, description="Probability of erasing a random rectangle.")
    mixup: float = Field(0.0, ge=0, description="Mixup alpha (0 = off); targets become soft.")
    cutmix: float = Field(0.0, ge=0, description="CutMix alpha (0 = off); targets become soft.")
    mix_prob: float = Field(1.0, ge=0, le=1, description="Probability of mixing a batch when mixup/cutmix is on.")
    mix_switch_prob: float = Field(0.5, ge=0, le=1, description="With both on: probability of CutMix over mixup.")

    @field_validator("auto_augment")
    @classmethod
    def _known_policy(cls, value: str | None) -> str | None:
        if value is None:
            return value
        policy = AUTO_AUGMENT_ALIASES.get(value, value)
        import timm.data.auto_augment as aa

        try:
            if policy.startswith("rand"):
                aa.rand_augment_transform(policy, {})
            elif policy.startswith("augmix"):
                aa.augment_and_mix_transform(policy, {})
            else:
                aa.auto_augment_transform(policy, {})
        except (AssertionError, ValueError, KeyError) as exc:
            raise ValueError(
                f"unknown augmentation policy {value!r} ({exc}); use {', '.join(AUTO_AUGMENT_ALIASES)} "
                "or a timm policy string such as rand-m9-mstd0.5-inc1"
            ) from None
        return value

    @property
    def mixes(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    @field_validator("crop_scale", "crop_ratio")
    @classmethod
    def _ordered_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 < low <= high:
            raise ValueError(f"must be [low, high] with 0 < low <= high, got {list(value)}")
        return value

    def timm_kwargs(self) -> dict[str, Any]:
        """Arguments for `timm.data.create_transform(is_training=True)`."""
        return {
            "scale": tuple(self.crop_scale),
            "ratio": tuple(self.crop_ratio),
            "hflip": self.hflip,
            "vflip": self.vflip,
            "color_jitter": self.color_jitter,
            "auto_augment": AUTO_AUGMENT_ALIASES.get(self.auto_augment, self.auto_augment),
            "re_prob": self.random_erasing,
            "re_mode": "pixel",  # erase with per-pixel noise (timm's recommended mode)
        }
