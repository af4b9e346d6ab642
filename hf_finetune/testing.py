"""Tiny, randomly initialised backbones written to disk, for tests, the offline quickstart and benchmarks.

They have the exact folder layout of real Hub checkpoints (a BERT model + tokenizer; timm's Hub
layout of config.json + model.safetensors), so every code path that loads a Hub model runs on them,
with no network.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_tiny_bert(
    path: str | Path,
    words: Iterable[str],
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 37,
    max_length: int = 128,
    dropout: float = 0.1,
    seed: int = 0,
) -> Path:
    """A BERT encoder (no task head, like a pretrained checkpoint) and a WordPiece tokenizer over `words`."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    path = Path(path)
    vocab_words = SPECIAL_TOKENS + sorted({w.lower() for w in words} - set(SPECIAL_TOKENS))
    # A fast (tokenizers) WordPiece tokenizer: word ids and offsets, as token classification and pipeline() need.
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab_words)}, do_lower_case=True)
    tokenizer.model_max_length = max_length
    config = BertConfig(
        vocab_size=len(vocab_words),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_length,
        pad_token_id=0,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    torch.manual_seed(seed)
    model = BertModel(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_sentence_transformers_config(folder: str | Path, mode: str = "mean", normalize: bool = True) -> Path:
    """The modules.json and 1_Pooling/config.json a sentence-transformers folder carries (in place)."""
    import json

    folder = Path(folder)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    key = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens"}[mode]
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({key: True}))
    return folder


def write_tiny_text_model(path: str | Path, words: Iterable[str], model_type: str, *, hidden_size: int = 32,
                          max_length: int = 64, seed: int = 0) -> Path:
    """A tiny encoder or decoder of another family, as its Hub checkpoint would look.

    `bert`, `distilbert` and `roberta` use a WordPiece tokenizer over `words`; `gpt2` uses a byte-level
    tokenizer with no pad token, as GPT-2 ships.
    """
    import torch
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import AutoConfig, AutoModel, BertTokenizer, GPT2Tokenizer

    path = Path(path)
    if model_type == "gpt2":
        symbols = sorted(ByteLevel.alphabet())
        tokenizer = GPT2Tokenizer(vocab={s: i for i, s in enumerate([*symbols, "<|endoftext|>"])}, merges=[])
        vocab_size = len(symbols) + 1
        sizes = {"n_embd": hidden_size, "n_layer": 2, "n_head": 4, "n_positions": max_length,
                 "bos_token_id": vocab_size - 1, "eos_token_id": vocab_size - 1}
    else:
        vocab_words = SPECIAL_TOKENS + sorted({w.lower() for w in words} - set(SPECIAL_TOKENS))
        tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab_words)}, do_lower_case=True)
        vocab_size = len(vocab_words)
        if model_type == "distilbert":
            sizes = {"dim": hidden_size, "n_layers": 2, "n_heads": 4, "hidden_dim": 37,
                     "max_position_embeddings": max_length, "pad_token_id": 0}
        else:
            # RoBERTa offsets positions past the padding index, hence the two extra positions.
            extra = 2 if model_type == "roberta" else 0
            sizes = {"hidden_size": hidden_size, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "intermediate_size": 37, "max_position_embeddings": max_length + extra, "pad_token_id": 0}
    tokenizer.model_max_length = max_length
    config = AutoConfig.for_model(model_type, vocab_size=vocab_size, **sizes)
    torch.manual_seed(seed)
    AutoModel.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_tiny_timm(
    path: str | Path,
    architecture: str = "test_resnet",
    *,
    num_classes: int = 10,
    pretrained_cfg: dict[str, Any] | None = None,
    model_args: dict[str, Any] | None = None,
    seed: int = 0,
) -> Path:
    """A timm model in timm's Hub layout (config.json + model.safetensors), with a `num_classes` head.

    Args:
        pretrained_cfg: entries that replace the architecture's default data config (input_size,
            mean, std, ...), as a fine-tuned checkpoint on the Hub would carry them.
        model_args: extra `timm.create_model` arguments (e.g. img_size for a ViT), kept in config.json.
    """
    import timm
    import torch
    from timm.models import save_for_hf

    path = Path(path)
    torch.manual_seed(seed)
    model = timm.create_model(architecture, pretrained=False, num_classes=num_classes, **(model_args or {}))
    save_for_hf(model, path, safe_serialization=True)
    if pretrained_cfg:
        config_file = path / "config.json"
        config = json.loads(config_file.read_text())
        config["pretrained_cfg"].update(pretrained_cfg)
        config_file.write_text(json.dumps(config, indent=2))
    return path


PATTERNS = ("horizontal", "vertical", "checkered")


def pattern_image(kind: str, rng: random.Random, size: int = 64) -> Any:
    """Stripes or checks of random period, phase and two random colours, slightly blurred.

    Easy enough that a tiny CNN learns them from scratch in seconds, which makes them good test data.
    """
    import numpy as np
    from PIL import Image, ImageFilter

    period, phase = rng.uniform(6, 16), rng.uniform(0, 16)
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    wave_y, wave_x = np.sin(2 * np.pi * (yy + phase) / period), np.sin(2 * np.pi * (xx + phase) / period)
    diagonal = {"rising": np.sin(2 * np.pi * (xx + yy + phase) / period),  # a mirror turns one into the other
                "falling": np.sin(2 * np.pi * (xx - yy + phase) / period)}
    wave = {"horizontal": wave_y, "vertical": wave_x, "checkered": wave_x * wave_y, **diagonal}[kind]
    on = (wave > 0)[..., None]
    first, second = (np.array([rng.randint(0, 255) for _ in range(3)]) for _ in range(2))
    if kind in diagonal:  # black on white: orientation is then all that tells the two apart
        first, second = np.zeros(3), np.full(3, 255)
    pixels = np.where(on, first, second).astype(np.uint8)
    return Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.5)))


def write_pattern_folder(
    path: str | Path, per_split: dict[str, int], *, size: int = 64, seed: int = 0, odd_modes: bool = False,
    kinds: tuple[str, ...] = PATTERNS,
) -> Path:
    """An image folder: <path>/<split>/<pattern>/<pattern>_NNN.png, `per_split[split]` images per class.

    Args:
        kinds: the classes: PATTERNS (mirror-invariant stripes and checks) or the diagonals `rising` and
            `falling`, which a horizontal mirror swaps.
        odd_modes: save about one image in ten as grayscale and one in ten with transparent
            stripes, as real folders have, so that conversion to RGB is exercised.
    """
    import numpy as np
    from PIL import Image

    path = Path(path)
    rng = random.Random(seed)
    for split, n in per_split.items():
        for kind in kinds:
            folder = path / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                image = pattern_image(kind, rng, size)
                roll = rng.random() if odd_modes else 1.0
                if roll < 0.1:
                    image = image.convert("L")
                elif roll < 0.2:
                    rgba = image.convert("RGBA")
                    rgba.putalpha(Image.fromarray(np.where(np.asarray(image.convert("L")) > 127, 255, 0)
                                                  .astype(np.uint8)))
                    image = rgba
                image.save(folder / f"{kind}_{i:03d}.png", optimize=True)
    return path


# --- tagged sentences (token classification) ---------------------------------------------------------------

PEOPLE = ["john", "mary", "anna", "peter", "peters", "smith", "jones", "lee"]
PLACES = ["paris", "berlin", "london", "rome", "springville", "oakville"]
ORGS = ["acme", "globex", "initech", "umbrella"]
SENTENCE_WORDS = ["lives", "in", "works", "for", "met", "visited", "yesterday", "the", "office", "of", "opened",
                  "an", "and", ".", ","]
# word pieces, so that some words become several sub-tokens ("springville" -> spring ##ville, "peters" -> peter ##s)
PIECES = ["spring", "oak", "##ville", "##s", "new", "york"]
NER_WORDS = sorted(set(PEOPLE + PLACES + ORGS + SENTENCE_WORDS + PIECES) - {"springville", "oakville", "peters"})


def tagged_sentences(n: int, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """`n` tagged sentences (tokens, IOB2 tags) of people (PER), places (LOC) and organisations (ORG).

    Names of one or two words (john smith, new york), and words that the tiny tokenizer of
    `write_tiny_bert(path, NER_WORDS)` splits into several sub-tokens.
    """
    rng = random.Random(seed)

    def person() -> list[tuple[str, str]]:
        first = [(rng.choice(PEOPLE[:5]), "B-PER")]
        return first + ([(rng.choice(PEOPLE[5:]), "I-PER")] if rng.random() < 0.5 else [])

    def place() -> list[tuple[str, str]]:
        return [("new", "B-LOC"), ("york", "I-LOC")] if rng.random() < 0.2 else [(rng.choice(PLACES), "B-LOC")]

    def org() -> list[tuple[str, str]]:
        return [(rng.choice(ORGS), "B-ORG")]

    def words(*items: str) -> list[tuple[str, str]]:
        return [(w, "O") for w in items]

    templates = [
        lambda: person() + words("lives", "in") + place() + words("."),
        lambda: person() + words("works", "for") + org() + words("in") + place() + words("."),
        lambda: org() + words("opened", "an", "office", "in") + place() + words("."),
        lambda: words("yesterday", ",") + person() + words("met") + person() + words("."),
        lambda: person() + words("and") + person() + words("visited") + place() + words("."),
        lambda: words("the", "office", "of") + org() + words("in") + place() + words("."),
    ]
    out = []
    for _ in range(n):
        pairs = rng.choice(templates)()
        out.append(([w for w, _ in pairs], [t for _, t in pairs]))
    return out


SHAPE_CLASSES = ("background", "square", "disc")  # class ids 0, 1, 2 of write_shape_masks


def write_shape_masks(folder: str | Path, sizes: dict[str, int], *, size: int = 48, seed: int = 0,
                      ignore_border: bool = True) -> Path:
    """Images of squares and discs on a noisy background, with their masks (PNG of class ids), as
    `folder/images/<split>/i.png` and `folder/masks/<split>/i.png`, and `folder/classes.txt`.

    Each shape has its own colour range, so a tiny model learns them in seconds; with `ignore_border`
    a 1-pixel ring around each shape is marked 255 (not scored), as real data marks uncertain edges.
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(folder)
    for split, n in sizes.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "masks" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image = rng.integers(0, 80, (size, size, 3)).astype(np.uint8)
            mask = np.zeros((size, size), dtype=np.uint8)
            yy, xx = np.mgrid[:size, :size]
            for cls in (1, 2):
                r = int(rng.integers(size // 8, size // 4))
                cy, cx = (int(v) for v in rng.integers(r, size - r, 2))
                inside = (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r) if cls == 1 else \
                    (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
                colour = np.array([200, 60, 60] if cls == 1 else [60, 60, 200]) + rng.integers(-30, 30, 3)
                image[inside] = np.clip(colour + rng.integers(-20, 20, (int(inside.sum()), 3)), 0, 255)
                if ignore_border:
                    ring = (np.abs(yy - cy) <= r + 1) & (np.abs(xx - cx) <= r + 1) & ~inside if cls == 1 else \
                        ((yy - cy) ** 2 + (xx - cx) ** 2 <= (r + 1) ** 2) & ~inside
                    mask[ring & (mask == 0)] = 255
                mask[inside] = cls
            Image.fromarray(image).save(root / "images" / split / f"{i}.png")
            Image.fromarray(mask, mode="L").save(root / "masks" / split / f"{i}.png")
    (root / "classes.txt").write_text("\n".join(SHAPE_CLASSES) + "\n", encoding="utf-8")
    return root
