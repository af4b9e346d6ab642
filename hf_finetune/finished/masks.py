"""Predicted masks of a semantic-segmentation run: one per image, at the image's own size.

    predict_masks    class ids per pixel, as pipeline("image-segmentation") computes them (the saved image
                     processor resizes, the logits are upsampled back to the image's size)
    format_masks     one line per image: the share of its pixels given to each class
    write_masks      --output DIR: DIR/<image stem>.png, a palette PNG whose indices are the class ids (a
                     viewer shows colours, a reader gets ids), with --overlay DIR/<stem>_overlay.png (the
                     mask blended on the image), and DIR/predictions.jsonl listing them
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from hf_finetune.errors import UserError
from hf_finetune.outputs import make_output_dir

OVERLAY_ALPHA = 0.5  # share of the mask's colour in an overlay pixel


def predict_masks(predictor: Any, items: list[Any], batch_size: int = 8, top_k: int = 1) -> list[dict[str, Any]]:
    """A record per image: its mask (class ids, image height x width) and each class's share of its pixels."""
    import torch

    from hf_finetune.data.images import decode_image

    processor = predictor.tokenizer
    out = []
    for start in range(0, len(items), batch_size):
        images = [decode_image(item.value) for item in items[start:start + batch_size]]
        inputs = processor(images, return_tensors="pt")
        with torch.inference_mode():
            outputs = predictor.model(pixel_values=inputs["pixel_values"])
        masks = processor.post_process_semantic_segmentation(outputs, target_sizes=[im.size[::-1] for im in images])
        for mask in masks:
            ids = mask.cpu().numpy().astype(np.int64)
            counts = np.bincount(ids.reshape(-1), minlength=len(predictor.labels))
            shares = {predictor.labels[i]: float(c / ids.size) for i, c in enumerate(counts) if c}
            out.append({"mask": ids, "shares": dict(sorted(shares.items(), key=lambda kv: -kv[1]))})
    return out


def format_masks(item: Any, record: dict[str, Any]) -> str:
    """`background 72.1%, square 18.0%, disc 9.9%  path/to/image.png`."""
    shares = ", ".join(f"{name} {share:.1%}" for name, share in record["shares"].items())
    return f"{shares}  {item.value}"


def palette(num_labels: int) -> list[int]:
    """A PNG palette: a distinct colour per class id (tab20 order), the rest black."""
    from matplotlib import colormaps

    colours = (colormaps["tab20"](np.arange(num_labels) % 20)[:, :3] * 255).astype(int)
    flat = [int(v) for rgb in colours for v in rgb]
    return flat + [0] * (768 - len(flat))


def write_masks(path: str | Path, items: list[Any], records: list[dict[str, Any]], overlay: bool = False) -> None:
    """Writes a palette PNG of class ids per image into the folder `path` (and overlays), and predictions.jsonl.

    Raises:
        UserError: `path` names a file rather than a folder.
    """
    from PIL import Image

    from hf_finetune.data.images import decode_image

    folder = Path(path)
    if folder.suffix.lower() in (".jsonl", ".csv", ".json") or folder.is_file():
        raise UserError(f"--output: {folder}: a segmentation model writes a mask PNG per image; name a folder")
    make_output_dir(folder, "--output")
    num_labels = max((int(r["mask"].max()) for r in records), default=0) + 1
    colours = palette(max(num_labels, 256 // 3))
    used: set[str] = set()
    with open(folder / "predictions.jsonl", "w", encoding="utf-8") as listing:
        for item, record in zip(items, records, strict=True):
            stem = Path(str(item.value)).stem
            name = stem if stem not in used else f"{stem}_{len(used)}"
            used.add(name)
            mask = Image.fromarray(record["mask"].astype(np.uint8), mode="P")
            mask.putpalette(colours)
            mask.save(folder / f"{name}.png")
            entry: dict[str, Any] = {"input": item.value, "mask": f"{name}.png", "shares": record["shares"]}
            if overlay:
                image = decode_image(item.value)
                blended = Image.blend(image, mask.convert("RGB"), OVERLAY_ALPHA)
                blended.save(folder / f"{name}_overlay.png")
                entry["overlay"] = f"{name}_overlay.png"
            listing.write(json.dumps(entry, ensure_ascii=False) + "\n")
