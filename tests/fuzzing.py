"""Seeded mutations of the quickstart recipes, and the invariant every mutant must keep through `train`.

Shared by `tests/test_fuzz.py` (a fixed set of seeds, run in-process) and `benchmarks/fuzz_recipes.py`
(a thousand seeds, one process each). A mutant starts from `recipes/quickstart_text.yaml` or
`recipes/quickstart_vision.yaml`, pointed at tiny models and data (`write_assets`) and forced to a
short run (`training.max_steps` 2-3, `output.dir: out`, relative to the folder it runs in), then gets
1-3 mutations (`MUTATIONS`): values of another type, numbers out of range, unknown keys at any depth,
deep nesting, YAML anchors, aliases and merge keys, unicode in names and paths, token-looking values
(under token-named keys, pasted into ordinary ones, as key names), random `TrainingArguments` fields,
a swapped task, removed keys, or changes that keep the recipe valid (so that a good share of mutants trains). It is rendered as YAML text,
since anchors, alias bombs and nesting past the reader's bounds exist only there.

The invariant (`judge`): `hf-finetune train` on the mutant either trains (exit 0, and the output
folder has a complete run.json), refuses it (exit 2, an `error: ...` line, no traceback) or stops on a
non-finite loss (exit 1 with that message); no token-looking value from the recipe reaches stdout,
stderr or any file the run writes. Everything else (an exception escaping `main`, a printed
traceback, another exit code, a run past its time limit) is a failure, reported with the seed and
the recipe text.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import functools
import json
import math
import os
import random
import re
import shutil
import signal
import string
import traceback
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .helpers.isolation import write_csv

REPO = Path(__file__).resolve().parent.parent
TASKS = ("text-classification", "image-classification")
QUICKSTART = {"text-classification": REPO / "recipes" / "quickstart_text.yaml",
              "image-classification": REPO / "recipes" / "quickstart_vision.yaml"}

# Outcomes of one mutant.
TRAINED, REFUSED, NON_FINITE, FAILURE = "trained", "refused", "non-finite", "failure"
NON_FINITE_MESSAGE = "error: training stopped: the loss became NaN or infinite"

# Exit code of a benchmark child whose `main` let an exception escape (`main` itself never returns it).
ESCAPED_EXIT = 70

# Rows per split of the tiny reviews: one optimizer step per epoch at the quickstart's batch size (32),
# so a mutant whose max_steps is gone still trains in seconds.
DATA_SIZES = {"train": 30, "validation": 9, "test": 9}
WORDS = {"pos": ["good", "great", "superb"], "neg": ["bad", "awful", "dull"], "mid": ["fine", "okay", "average"]}
FILLER = ["the", "movie", "film", "was", "really", "quite", "plot"]

# Names with accents, emoji, right-to-left text and marks, zero-width characters: real file systems
# and recipes hold all of them, and each has broken some path or message handling somewhere.
UNICODE_DIR = "données ✓ 🤗 \u05e2\u05d1\u05e8\u05d9\u05ea\u200f \u0645\u0631\u062d\u0628\u0627 zero\u200bwidth"
UNICODE_STRINGS = [
    "ünïcödé", "🤗✓", "\u202eevil\u202c.csv", "שלום", "مرحبا", "zero\u200bwidth", "\ufeffbom", "a\u0301\u0301\u0301",
    "line\u2028sep", "tab\there", "nul\x00byte", "\x1b[31mred", "..", "/", "~", "", " ", "CON", "a" * 300,
    "日本語のモデル", "emoji 👩\u200d👩\u200d👧 family", "\u00a0nbsp\u00a0", "new\nline",
]
TOKEN_KEYS = ["token", "hub_token", "password", "secret", "HF_TOKEN", "api_token", "access_token"]
UNKNOWN_KEYS = ["extra", "lr", "epochs", "Name", 7, "", "ünknown ✓", "__class__", "training", "model", "null",
                "1e-5", "TASK", " task", "task "]
# Every type a YAML value can take, and the edges of the numeric ones.
JUNK: list[Any] = [True, False, 0, 1, -1, 10**12, 1e300, float("nan"), float("inf"), float("-inf"), 1.5, -2.5,
                   "", "text", "1e-5", "null", "yes", "auto", "ünïcödé ✓", [], [1, "a"], [[]], {}, {"a": 1},
                   {"": None}, None]
# Range edges for numbers; HUGE stands for the "huge" value of the caller (`make_mutant(huge=...)`).
HUGE = object()
NUMBERS: list[Any] = [0, -1, HUGE, 0.5, 1e-12, 1, 2, -0.0, 2**63, float("nan"), float("inf")]

# training keys whose size is the length of the run: the mutations keep them bounded (see `_bound_run`).
MAX_STEPS = 3
# TrainingArguments fields the random-field mutation leaves out, and why: compiling a model takes
# minutes on a CPU (torch_compile_backend and _mode switch compilation on too), beyond any per-recipe
# time limit, so they would measure the compiler rather than the recipe handling.
SLOW_FIELDS = {"torch_compile", "torch_compile_backend", "torch_compile_mode"}
# Fields where a huge value starts that many processes: bounded to what a small machine survives.
SMALL_FIELDS = {"dataloader_num_workers": [0, 1, 2, -1], "dataloader_prefetch_factor": [None, 0, 1, 2, -1]}


def token_like(rng: random.Random) -> str:
    """A value shaped like a Hugging Face access token: `hf_` (or `api_org_`) and 34 letters and digits."""
    prefix = rng.choices(["hf_", "api_org_"], [9, 1])[0]
    return prefix + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(34))


# Where a token may sit in a string: alone, or joined to the words and paths around it on either side.
TOKEN_POSITIONS = ("whole", "prefix", "suffix", "joined-before", "joined-after", "middle", "component", "file name",
                   "bearer")


def embed_token(value: str, token: str, rng: random.Random) -> tuple[str, str]:
    """`value` carrying `token` at a random position (TOKEN_POSITIONS); returns (new value, the position)."""
    position = rng.choice(TOKEN_POSITIONS)
    cut = rng.randrange(len(value) + 1) if value else 0
    new = {
        "whole": token,
        "prefix": f"{token}_{value}",
        "suffix": f"{value}_{token}",
        "joined-before": f"x{token}{value}",  # no separator: a word character right before hf_
        "joined-after": f"{value}{token}",
        "middle": value[:cut] + token + value[cut:],
        "component": f"{value}/{token}" if value else token,
        "file name": f"{value}_{token}.csv",
        "bearer": f"Bearer {token}",
    }[position]
    return new, position


# --- tiny assets ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Assets:
    """Tiny models and data the mutants train on, plus copies under unicode names."""

    bert: Path
    resnet: Path
    text_files: dict[str, str]
    image_folder: str
    unicode_bert: str
    unicode_text_files: dict[str, str]
    unicode_image_folder: str


def _review_rows(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    labels = list(WORDS)
    return [{"text": f"the {rng.choice(FILLER)} was {rng.choice(WORDS[labels[i % 3]])}", "label": labels[i % 3]}
            for i in range(n)]


def assets_in(folder: str | os.PathLike, bert: str | os.PathLike | None = None,
              resnet: str | os.PathLike | None = None) -> Assets:
    """The paths `write_assets(folder, bert, resnet)` writes (or wrote), without writing anything."""
    folder = Path(folder).resolve()
    odd = folder / UNICODE_DIR
    return Assets(
        bert=Path(bert).resolve() if bert is not None else folder / "tiny-bert",
        resnet=Path(resnet).resolve() if resnet is not None else folder / "tiny-resnet",
        text_files={split: str(folder / "reviews" / f"{split}.csv") for split in DATA_SIZES},
        image_folder=str(folder / "patterns"),
        unicode_bert=str(odd / "模型 ✓"),
        unicode_text_files={split: str(odd / f"{split} ünï ✓\u200b.csv") for split in DATA_SIZES},
        unicode_image_folder=str(odd / "images 🖼"),
    )


def write_assets(folder: str | os.PathLike, bert: str | os.PathLike | None = None,
                 resnet: str | os.PathLike | None = None) -> Assets:
    """Writes the tiny data (and models, unless given) that mutants train on.

    Args:
        folder: where to write; created when missing.
        bert: an existing tiny BERT folder (the tests' session fixture), or None to write one.
        resnet: an existing tiny timm ResNet folder with a 32 px input size, or None to write one.

    Returns:
        The paths, all absolute, so a mutant's recipe does not depend on the folder it runs in.
    """
    from hf_finetune.testing import write_pattern_folder, write_tiny_bert, write_tiny_timm

    assets = assets_in(folder, bert, resnet)
    if bert is None:
        write_tiny_bert(assets.bert, [w for group in WORDS.values() for w in group] + FILLER)
    if resnet is None:
        write_tiny_timm(assets.resnet, "test_resnet", pretrained_cfg={"input_size": [3, 32, 32], "crop_pct": 1.0})
    for i, (split, n) in enumerate(DATA_SIZES.items()):
        write_csv(Path(assets.text_files[split]), _review_rows(n, seed=i))
    write_pattern_folder(assets.image_folder, {"train": 4, "validation": 2, "test": 2}, size=32, odd_modes=True)
    Path(assets.unicode_bert).parent.mkdir(parents=True, exist_ok=True)
    for split in DATA_SIZES:
        shutil.copyfile(assets.text_files[split], assets.unicode_text_files[split])
    shutil.copytree(assets.image_folder, assets.unicode_image_folder, dirs_exist_ok=True)
    shutil.copytree(assets.bert, assets.unicode_bert, dirs_exist_ok=True)
    return assets


def base_recipe(task: str, assets: Assets, max_steps: int = 2) -> dict[str, Any]:
    """The quickstart recipe of `task`, pointed at the tiny assets and forced to a short run in `out`."""
    recipe = yaml.safe_load(QUICKSTART[task].read_text(encoding="utf-8"))
    if task == "text-classification":
        recipe["model"]["name"] = str(assets.bert)
        recipe["data"]["files"] = dict(assets.text_files)
    else:
        recipe["model"]["name"] = str(assets.resnet)
        recipe["data"]["image_folder"] = assets.image_folder
    recipe["training"]["max_steps"] = max_steps
    recipe["output"]["dir"] = "out"  # relative: inside the folder the mutant runs in
    return recipe


# --- the mutant ------------------------------------------------------------------------------------------

@dataclass
class Mutant:
    """One mutated recipe, as the YAML text to write, with what was done to it."""

    seed: str
    task: str
    text: str
    mutations: list[str]
    secrets: list[str]  # the token-looking values in the recipe: none may leave the recipe file


class _Shared:
    """Marks a scalar that the YAML text gives once with an anchor and then as aliases."""


class _SharedStr(str, _Shared):
    pass


class _SharedFloat(float, _Shared):
    pass


class _SharedInt(int, _Shared):
    pass


@dataclass
class _Merge:
    """A mapping written as `{<<: *anchor, ...extra}`: YAML's merge key over another mapping of the recipe."""

    base: dict[str, Any]
    extra: dict[str, Any]


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        if isinstance(data, _Shared | _Merge):
            return False
        return super().ignore_aliases(data)


def _represent_merge(dumper: yaml.SafeDumper, data: _Merge) -> yaml.MappingNode:
    node = yaml.MappingNode("tag:yaml.org,2002:map", [])
    pairs = [(yaml.ScalarNode("tag:yaml.org,2002:merge", "<<"), dumper.represent_data(data.base))]
    pairs += [(dumper.represent_data(k), dumper.represent_data(v)) for k, v in data.extra.items()]
    node.value = pairs
    return node


_Dumper.add_representer(_SharedStr, yaml.SafeDumper.represent_str)
_Dumper.add_representer(_SharedFloat, yaml.SafeDumper.represent_float)
_Dumper.add_representer(_SharedInt, yaml.SafeDumper.represent_int)
_Dumper.add_representer(_Merge, _represent_merge)


@dataclass
class _Context:
    rng: random.Random
    task: str
    assets: Assets
    huge: int
    secrets: list[str] = field(default_factory=list)
    raw: dict[str, str] = field(default_factory=dict)  # placeholder -> YAML text put in its place
    text_edits: list[Callable[[str], str]] = field(default_factory=list)  # applied to the rendered text

    def placeholder(self, yaml_text: str) -> str:
        name = f"FUZZRAW{len(self.raw)}X"
        self.raw[name] = yaml_text
        return name


Path_ = tuple[Any, ...]


def _key_paths(node: Any, prefix: Path_ = (), seen: frozenset[int] = frozenset()) -> list[Path_]:
    """Dotted paths (as tuples) of every key of every mapping in the recipe.

    Shared objects (aliases) may make the recipe a cycle; `seen` stops the walk going round it.
    """
    out: list[Path_] = []
    if isinstance(node, _Merge):
        node = node.extra
    if isinstance(node, dict) and id(node) not in seen:
        for key, value in node.items():
            out.append((*prefix, key))
            out += _key_paths(value, (*prefix, key), seen | {id(node)})
    return out


def _mappings(node: Any, prefix: Path_ = (), seen: frozenset[int] = frozenset()) -> list[Path_]:
    """Paths of every mapping in the recipe, the root included."""
    if isinstance(node, _Merge):
        node = node.extra
    if not isinstance(node, dict) or id(node) in seen:
        return []
    out = [prefix]
    for key, value in node.items():
        out += _mappings(value, (*prefix, key), seen | {id(node)})
    return out


def _get(recipe: Any, path: Path_) -> Any:
    node = recipe
    for key in path:
        node = node.extra if isinstance(node, _Merge) else node
        node = node[key]
    return node


def _set(recipe: dict[str, Any], path: Path_, value: Any) -> None:
    """Sets a value, creating the mappings on the way (replacing whatever non-mapping was there)."""
    node: Any = recipe
    for key in path[:-1]:
        node = node.extra if isinstance(node, _Merge) else node
        if not isinstance(node.get(key), dict | _Merge):
            node[key] = {}
        node = node[key]
    node = node.extra if isinstance(node, _Merge) else node
    node[path[-1]] = value


def _dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 50 else text[:47] + "..."


def _junk(rng: random.Random, unlike: Any = None) -> Any:
    """A random value of another type than `unlike`."""
    choices = [v for v in JUNK if type(v) is not type(unlike)]
    return copy.deepcopy(rng.choice(choices))


# --- mutations: each returns a description, or None when it does not apply to this recipe --------------

def mutate_retype(recipe: dict[str, Any], ctx: _Context) -> str | None:
    """Replaces a value (or a whole section) with one of another type."""
    paths = _key_paths(recipe)
    if not paths:
        return None
    path = ctx.rng.choice(paths)
    value = _junk(ctx.rng, _get(recipe, path))
    _set(recipe, path, value)
    return f"retype {_dotted(path)} = {_describe(value)}"


def mutate_numeric(recipe: dict[str, Any], ctx: _Context) -> str | None:
    """Moves a number to an edge of its range: 0, -1, 1e9, 0.5 where an int goes, nan, ..."""
    paths = [p for p in _key_paths(recipe)
             if isinstance(_get(recipe, p), int | float) and not isinstance(_get(recipe, p), bool)]
    if not paths:
        return None
    path = ctx.rng.choice(paths)
    value = ctx.rng.choice(NUMBERS)
    if value is HUGE:
        value = ctx.rng.choice([ctx.huge, float(ctx.huge)])
    _set(recipe, path, value)
    return f"numeric {_dotted(path)} = {_describe(value)}"


def mutate_unknown_key(recipe: dict[str, Any], ctx: _Context) -> str | None:
    """Adds a key no section knows, at any depth (free mappings such as lr_scheduler_kwargs included)."""
    places = _mappings(recipe) + [("training", "lr_scheduler_kwargs"), ("data", "files"), ("a", "b", "c")]
    path = (*ctx.rng.choice(places), ctx.rng.choice(UNKNOWN_KEYS))
    value = _junk(ctx.rng)
    _set(recipe, path, value)
    return f"unknown key {_dotted(path)} = {_describe(value)}"


def mutate_deep_nesting(recipe: dict[str, Any], ctx: _Context) -> str | None:
    """Puts a deeply nested value somewhere: within the reader's bounds (50 levels) and past them."""
    rng = ctx.rng
    path = rng.choice([*_key_paths(recipe), ("training", "lr_scheduler_kwargs", "deep"), ("deep",)])
    depth = rng.choice([3, 10, 49, 50, 51, 200, 5000])
    kind = rng.choice(["list", "map", "mixed"])
    if kind == "list":
        text = "[" * depth + "]" * depth
    elif kind == "map":
        text = "{a: " * depth + "1" + "}" * depth
    else:
        text = "{a: [" * (depth // 2) + "1" + "]}" * (depth // 2)
    _set(recipe, path, ctx.placeholder(text))
    return f"deep nesting {_dotted(path)} = {kind} x{depth}"


def mutate_alias(recipe: dict[str, Any], ctx: _Context) -> str | None:
    """YAML anchors and aliases: shared sections and scalars, merge keys, a recursive alias, alias bombs."""
    rng = ctx.rng
    paths = _key_paths(recipe)
    kind = rng.choice(["share", "share", "scalar", "scalar", "merge", "merge", "recursive", "bomb"])
    target = rng.choice([*paths, ("training", "lr_scheduler_kwargs"), ("extra",)])
    if kind in ("share", "scalar"):
        wanted = (dict, list) if kind == "share" else (str, int, float)
        sources = [p for p in paths if isinstance(_get(recipe, p), wanted) and not isinstance(_get(recipe, p), bool)
                   and p[: len(target)] != target and target[: len(p)] != p]
        if not sources:
            return None
        source = rng.choice(sources)
        value = _get(recipe, source)
        if kind == "scalar":
            shared = {str: _SharedStr, int: _SharedInt, float: _SharedFloat}[type(value)](value)
            _set(recipe, source, shared)
            value = shared
        _set(recipe, target, value)  # the same object twice: the dumper writes &anchor, then *alias
        return f"alias {_dotted(target)} = *{_dotted(source)}"
    if kind == "merge":
        sections = [p for p in _mappings(recipe) if p and isinstance(_get(recipe, p), dict)]
        if len(sections) < 2:
            return None
        source, into = rng.sample(sections, 2)
        if into[: len(source)] == source or source[: len(into)] == into:
            return None
        base = _get(recipe, source)
        _set(recipe, into, _Merge(base, dict(_get(recipe, into))))
        return f"merge {_dotted(into)} <<: *{_dotted(source)}"
    if kind == "recursive":
        _set(recipe, target, ctx.placeholder(rng.choice(["&r [*r]", "&r {a: *r}", "&r [1, [2, *r]]"])))
        return f"recursive alias at {_dotted(target)}"
    levels, width = rng.choice([(3, 4), (4, 9), (9, 9)])  # 64 values, 6,561, 387 million
    parts = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    parts += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    _set(recipe, target, ctx.placeholder("{" + ", ".join(parts) + "}"))
    return f"alias bomb {width}^{levels} at {_dotted(target)}"


def mutate_unicode(recipe: dict[str, Any], ctx: _Context) -> str | None:
    """Unicode (emoji, right-to-left, zero-width, control characters) in names and paths."""
    rng, assets = ctx.rng, ctx.assets
    text = ctx.task == "text-classification"
    kind = rng.choice(["real path", "real path", "output", "missing path", "string", "column", "metric"])
    if kind == "real path":  # the same files and model under unicode names: must train
        choice = rng.choice(["model", "data"])
        if choice == "model" and text:
            path, value = ("model", "name"), assets.unicode_bert
        elif text:
            path, value = ("data", "files"), dict(assets.unicode_text_files)
        else:
            path, value = ("data", "image_folder"), assets.unicode_image_folder
    elif kind == "output":
        path, value = ("output", "dir"), "out " + rng.choice(["ünï ✓ 🤗", "\u202eRTL\u202c", "zero\u200bwidth",
                                                              "日本語", "a\u0301", "\ufeffbom"])
    elif kind == "missing path":
        path = rng.choice([("model", "name"), ("data", "files", "train"), ("data", "image_folder"),
                           ("data", "cache_dir"), ("data", "dataset")])
        value = str(Path(assets.image_folder).parent / f"missing {rng.choice(UNICODE_STRINGS)}")
        if path[-1] == "train":
            value += ".csv"
        elif path[-1] == "cache_dir":  # a cache that does not exist yet is created: keep it in the run's folder
            value = f"cache {rng.choice(UNICODE_STRINGS)}"
    elif kind == "column":
        path = ("data", "columns", rng.choice(["text", "label", "image", "text_pair"]))
        value = rng.choice(UNICODE_STRINGS)
    elif kind == "metric":
        path, value = ("metrics",), ["accuracy", rng.choice(UNICODE_STRINGS)]
    else:
        paths = [p for p in _key_paths(recipe) if isinstance(_get(recipe, p), str)]
        if not paths:
            return None
        path, value = rng.choice(paths), rng.choice(UNICODE_STRINGS)
    _set(recipe, path, value)
    return f"unicode {_dotted(path)} = {_describe(value)}"


def mutate_token(recipe: dict[str, Any], ctx: _Context) -> str | None:
    """A token-looking value: under a token-named key at any depth, pasted into an ordinary key, or as a key."""
    rng = ctx.rng
    token = token_like(rng)
    ctx.secrets.append(token)
    places = _mappings(recipe) + [("training", "lr_scheduler_kwargs"), ("training",), ("hub",), ("data", "files"),
                                  ("model",), ("x", "y", "z"), ("training", "lr_scheduler_kwargs", "nested")]
    kind = rng.choices(["named key", "pasted", "joined", "as key"], [5, 2, 3, 2])[0]
    if kind == "pasted":  # where a user might paste one by mistake, or any string of the recipe
        paths = [p for p in _key_paths(recipe) if isinstance(_get(recipe, p), str)]
        path = rng.choice([*paths, ("hub", "repo_id"), ("model", "revision"), ("training", "run_name")])
        _set(recipe, path, rng.choice([token, f"Bearer {token}", f"{token}\n"]))
        return f"token pasted into {_dotted(path)}"
    if kind == "joined":  # inside a name or path of the recipe, joined to the words around it
        paths = [p for p in _key_paths(recipe) if isinstance(_get(recipe, p), str)]
        path = rng.choice([*paths, ("output", "dir"), ("training", "run_name"), ("data", "files", "train")])
        try:
            current = _get(recipe, path)
        except (KeyError, TypeError, AttributeError):
            current = ""
        value, position = embed_token(current if isinstance(current, str) else "", token, rng)
        _set(recipe, path, value)
        return f"token joined into {_dotted(path)} ({position})"
    if kind == "as key":  # free mappings (data.files, *_kwargs) take any key name
        path = (*rng.choice(places), token)
        _set(recipe, path, rng.choice([1, "x.csv", str(Path(ctx.assets.text_files["train"])), True]))
        return f"token as a key under {_dotted(path[:-1]) or '(root)'}"
    path = (*rng.choice(places), rng.choice(TOKEN_KEYS))
    value: Any = rng.choice([token, token, [token], {"value": token}, f"Bearer {token}"])
    _set(recipe, path, value)
    return f"token under {_dotted(path)}"


def _enum_values(annotation: Any) -> list[str]:
    for arg in typing.get_args(annotation) or (annotation,):
        if isinstance(arg, type) and issubclass(arg, enum.Enum):
            return [str(m.value) for m in arg]
    return []


def _typed_value(name: str, annotation: Any, rng: random.Random, huge: int) -> Any:
    """A plausible value for a TrainingArguments field, from its type annotation."""
    if name in SMALL_FIELDS:
        return rng.choice(SMALL_FIELDS[name])
    choices = _enum_values(annotation)
    if choices and rng.random() < 0.8:
        return rng.choice(choices)
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    if type(None) in typing.get_args(annotation) and rng.random() < 0.15:
        return None
    kind = rng.choice(args)
    origin = typing.get_origin(kind) or kind
    if origin is bool:
        return rng.choice([True, False])
    if origin is int:
        return rng.choice([0, 1, 2, 3, -1, huge])
    if origin is float:
        return rng.choice([0.0, 0.1, 0.5, 1.0, 2.0, -1.0, float(huge), 1e-8, float("nan"), float("inf")])
    if origin is dict:
        return rng.choice([{}, {"a": 1}, {"num_cycles": 2}, {"min_lr": 1e-6}, {"power": 2.0}])
    if origin is list:
        return rng.choice([[], ["x"], ["query", "value"]])
    if origin is str:
        return rng.choice(["", "x", "auto", "none", "all", "steps", "epoch", "ünïcödé", "tensorboard", "wandb",
                           "debug", "underflow_overflow", "spawn", "fork", "gloo", "full_shard", "cpu"])
    return _junk(rng)


@functools.cache
def training_argument_fields() -> dict[str, Any]:
    """Name -> type annotation of every init field of the installed `transformers.TrainingArguments`.

    All of them, the ones hf-finetune manages itself (output_dir, push_to_hub, hub_token, ...) included:
    a recipe may name any, and those must be refused by name.
    """
    from transformers import TrainingArguments

    hints = typing.get_type_hints(TrainingArguments)
    return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(TrainingArguments) if f.init}


def mutate_training_argument(recipe: dict[str, Any], ctx: _Context) -> str | None:
    """Sets a random field of the installed `transformers.TrainingArguments`, with a random value."""
    rng = ctx.rng
    fields = training_argument_fields()
    name = rng.choice(sorted(set(fields) - SLOW_FIELDS))
    value = _typed_value(name, fields[name], rng, ctx.huge) if rng.random() < 0.8 else _junk(rng)
    if name.endswith("token") and isinstance(value, str):
        value = token_like(rng)
        ctx.secrets.append(value)
    _set(recipe, ("training", name), value)
    return f"training.{name} = {_describe(value)}"


def mutate_task(recipe: dict[str, Any], ctx: _Context) -> str | None:
    """Swaps the task for the other one, or for a near miss."""
    other = [t for t in TASKS if t != ctx.task][0]
    value = ctx.rng.choice([other, other, "Text-Classification", "image_classification", "token-classification",
                            " text-classification", "classification"])
    recipe["task"] = value
    return f"task = {value!r}"


def mutate_remove(recipe: dict[str, Any], ctx: _Context) -> str | None:
    """Removes a required key (task, model, model.name, data, its source) or any other key."""
    required = [("task",), ("model",), ("model", "name"), ("data",), ("data", "files"), ("data", "image_folder"),
                ("data", "files", "train"), ("training",), ("training", "max_steps"), ("output",), ("output", "dir")]
    paths = _key_paths(recipe)
    candidates = [p for p in required if p in paths] if ctx.rng.random() < 0.7 else paths
    if not candidates:
        return None
    path = ctx.rng.choice(candidates)
    parent = _get(recipe, path[:-1]) if len(path) > 1 else recipe
    parent = parent.extra if isinstance(parent, _Merge) else parent
    del parent[path[-1]]
    return f"remove {_dotted(path)}"


def mutate_valid(recipe: dict[str, Any], ctx: _Context) -> str | None:
    """A change that keeps the recipe valid: another learning rate, strategy, loss or schedule."""
    rng = ctx.rng
    text = ctx.task == "text-classification"
    strategy = rng.choice(["full", "linear_probe", "gradual_unfreeze", "probe_then_full"])
    options: list[tuple[Path_, Any]] = [
        (("training", "learning_rate"), rng.choice([1e-5, 5e-5, 3e-4, 1e-3, "2e-5"])),
        (("finetune", "strategy"), strategy),
        (("finetune", "strategy"), strategy),
        (("finetune", "class_weights"), "balanced"),
        (("training", "label_smoothing_factor"), rng.choice([0.0, 0.1, 0.2])),
        (("finetune", "head_learning_rate"), 1e-3),
        (("finetune", "backbone_lr_scale"), 0.1),
        (("training", "lr_scheduler_type"), rng.choice(["linear", "cosine", "constant", "constant_with_warmup"])),
        (("training", "gradient_accumulation_steps"), 2),
        (("training", "weight_decay"), 0.0),
        (("batch", "global_size"), 16),
        (("data", "max_samples", "train"), 20),
        (("finetune", "early_stopping_patience"), 1),
        (("training", "seed"), rng.randrange(1000)),
        (("metrics",), ["accuracy", "f1"]),
    ]
    if text:
        options.append((("preprocessing", "max_length"), rng.choice([8, 16, 64])))
    else:
        options += [(("augmentation", "hflip"), 0.2), (("augmentation", "auto_augment"), "randaugment"),
                    (("augmentation", "mixup"), 0.2), (("augmentation", "random_erasing"), 0.25)]
    path, value = rng.choice(options)
    _set(recipe, path, value)
    if path == ("finetune", "strategy") and value == "probe_then_full":
        _set(recipe, ("finetune", "probe_epochs"), 0.5)
    return f"valid {_dotted(path)} = {value!r}"


def mutate_diverge(recipe: dict[str, Any], ctx: _Context) -> str | None:
    """A learning rate so high that the loss turns NaN or infinite: the run must stop with exit 1."""
    value = ctx.rng.choice([1e30, 1e20, 1e8])
    _set(recipe, ("training", "learning_rate"), value)
    _set(recipe, ("training", "max_steps"), MAX_STEPS)  # warmup keeps step 1 at lr 0; step 3 sees the NaN
    return f"diverge training.learning_rate = {value:g}"


def mutate_text(recipe: dict[str, Any], ctx: _Context) -> str | None:
    """Edits of the YAML text itself: duplicate keys, a byte-order mark, CRLF, a truncated file, comments."""
    rng = ctx.rng
    kind = rng.choice(["duplicate", "bom", "crlf", "truncate", "comment", "tabs"])
    if kind == "duplicate":
        ctx.text_edits.append(lambda text: text + "task: text-classification\n")
    elif kind == "bom":
        ctx.text_edits.append(lambda text: "\ufeff" + text)
    elif kind == "crlf":
        ctx.text_edits.append(lambda text: text.replace("\n", "\r\n"))
    elif kind == "truncate":
        cut = rng.random()
        ctx.text_edits.append(lambda text: text[: int(len(text) * cut)])
    elif kind == "comment":
        ctx.text_edits.append(lambda text: text.replace("\n", "  # ünï ✓ 🤗 &a *a\n", 3))
    else:
        ctx.text_edits.append(lambda text: text.replace("\n  ", "\n\t", 1))
    return f"text {kind}"


# (mutation, weight): the valid ones weigh most, so that a good share of mutants reaches training.
MUTATIONS: list[tuple[Callable[[dict[str, Any], _Context], str | None], float]] = [
    (mutate_valid, 7.0),
    (mutate_training_argument, 3.0),
    (mutate_retype, 1.5),
    (mutate_numeric, 1.5),
    (mutate_unicode, 1.5),
    (mutate_token, 1.5),
    (mutate_alias, 1.0),
    (mutate_unknown_key, 0.7),
    (mutate_deep_nesting, 0.5),
    (mutate_remove, 0.6),
    (mutate_task, 0.3),
    (mutate_text, 0.4),
    (mutate_diverge, 0.4),
]


def _bound_run(recipe: dict[str, Any]) -> None:
    """Keeps the run short whatever the mutations did: at most `MAX_STEPS` optimizer steps, or one epoch.

    A mutation may set max_steps to any value that is not a long run (1e9 becomes `MAX_STEPS`); when
    it is gone or not a positive count, the epochs decide, and more than one becomes one. Invalid
    values (strings, nan) stay: validation is what they test.
    """
    training = recipe.get("training")
    if isinstance(training, _Merge):
        training = training.extra
    if not isinstance(training, dict):
        return
    steps = training.get("max_steps")
    if isinstance(steps, int | float) and not isinstance(steps, bool) and math.isfinite(steps) and steps > MAX_STEPS:
        training["max_steps"] = MAX_STEPS
        return
    if isinstance(steps, int) and not isinstance(steps, bool) and steps > 0:
        return
    epochs = training.get("num_train_epochs", 3)
    if isinstance(epochs, int | float) and not isinstance(epochs, bool) and math.isfinite(epochs) and epochs > 1:
        training["num_train_epochs"] = 1


# Keys whose folder the run writes into or walks: a mutation may give them any string, but never one that
# leaves the folder the mutant runs in (the fuzzer runs as whatever user starts it, maybe root).
CONTAINED = [("output", "dir"), ("data", "cache_dir"), ("data", "image_folder")]


def _contain_paths(recipe: dict[str, Any], assets: Assets) -> None:
    """Rewrites absolute, home or parent paths of `CONTAINED` keys to names inside the run's folder."""
    for path in CONTAINED:
        try:
            value = _get(recipe, path)
        except (KeyError, TypeError, AttributeError):
            continue
        if not isinstance(value, str) or value.startswith(str(Path(assets.image_folder).parent)):
            continue
        if os.path.isabs(value) or value.startswith("~") or os.path.normpath(value).startswith(".."):
            _set(recipe, path, "inside-" + value.lstrip("/~"))


def render(recipe: dict[str, Any], ctx: _Context) -> str:
    """The recipe as YAML text: anchors named &a, &b, ..., placeholders replaced, text edits applied."""
    text = yaml.dump(recipe, Dumper=_Dumper, sort_keys=False, allow_unicode=ctx.rng.random() < 0.7, width=1000)
    names: dict[str, str] = {}

    def anchor(match: re.Match) -> str:  # PyYAML's &id001 / *id001 become &a / *a, &b / *b, ...
        name = names.setdefault(match.group(2), string.ascii_lowercase[len(names) % 26] * (1 + len(names) // 26))
        return f"{match.group(1)}{name}"

    text = re.sub(r"([&*])id(\d{3})\b", anchor, text)
    for name, raw in ctx.raw.items():
        text = re.sub(rf"\b{name}\b", lambda _m, raw=raw: raw, text)
    for edit in ctx.text_edits:
        text = edit(text)
    return text


def make_mutant(seed: int | str, assets: Assets, huge: int = 10**9) -> Mutant:
    """The mutant of `seed`: a quickstart recipe (task chosen by the seed) with 1-3 mutations, as YAML text.

    Half the mutants get one mutation, a quarter two, a quarter three.

    Args:
        seed: any int or string; the same seed gives the same mutant for the same assets.
        assets: the tiny models and data the recipe points at (`write_assets`).
        huge: the "huge" number that range mutations use. 1e9 as a batch size is accepted and costs
            8 GB (torch's BatchSampler makes a list of that length): the test suite passes less.
    """
    rng = random.Random(f"hf-finetune-fuzz:{seed}")
    task = rng.choice(TASKS)
    recipe = base_recipe(task, assets, max_steps=rng.choice([2, 3]))
    ctx = _Context(rng, task, assets, huge)
    ops, weights = zip(*MUTATIONS, strict=True)
    done: list[str] = []
    for _ in range(rng.choices([1, 2, 3], [2, 1, 1])[0]):  # single mutations most: they pin a failure down
        for _attempt in range(5):  # a mutation that does not apply (nothing to alias, ...) draws again
            description = rng.choices(ops, weights)[0](recipe, ctx)
            if description:
                done.append(description)
                break
    _bound_run(recipe)
    _contain_paths(recipe, assets)
    return Mutant(str(seed), task, render(recipe, ctx), done, ctx.secrets)


# --- running one mutant and judging the outcome -----------------------------------------------------------

class TimeLimitExceeded(BaseException):
    """Raised in `main` by the alarm of `run_in_process` (a BaseException: `except Exception` won't catch it)."""


@dataclass
class RunResult:
    """What one `hf-finetune train` of a mutant did."""

    returncode: int | None  # None when an exception escaped `main` or the time limit passed
    stdout: str = ""
    stderr: str = ""
    escaped: str | None = None  # the traceback of an exception that escaped `main`
    timed_out: bool = False
    seconds: float = 0.0


def run_in_process(recipe_path: str | os.PathLike, work_dir: str | os.PathLike, time_limit: float) -> RunResult:
    """Runs `hf_finetune.cli.main(["train", recipe_path])` here, in `work_dir`, under a time limit (see
    `run_main_in_process`)."""
    return run_main_in_process(["train", str(recipe_path)], work_dir, time_limit)


def run_main_in_process(argv: list[str], work_dir: str | os.PathLike, time_limit: float) -> RunResult:
    """Runs `hf_finetune.cli.main(argv)` here, in `work_dir`, under a time limit.

    Output is not captured here (the caller does, e.g. pytest's capfd, at the file-descriptor level so
    that libraries writing to the original streams are seen too). The process's working directory,
    environment and torch's determinism switch are restored afterwards, since a recipe may change them
    (`training.full_determinism`) and the next mutant must not inherit that.

    Returns:
        The exit code, or the traceback of an exception that escaped, or `timed_out`.
    """
    import time

    import torch

    from hf_finetune.cli import main

    def alarm(signum: int, frame: Any) -> None:
        raise TimeLimitExceeded(f"no result after {time_limit:g}s")

    cwd, environ = os.getcwd(), dict(os.environ)
    deterministic = torch.are_deterministic_algorithms_enabled()
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, time_limit)
    started = time.monotonic()
    result = RunResult(None)
    try:
        os.chdir(work_dir)
        result.returncode = main(list(argv))
    except TimeLimitExceeded:
        result.timed_out = True
    except BaseException:  # noqa: B036 - anything escaping main is the finding, SystemExit included
        result.escaped = traceback.format_exc()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        result.seconds = time.monotonic() - started
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(environ)
        torch.use_deterministic_algorithms(deterministic)
    return result


@dataclass
class Verdict:
    """The outcome of one mutant and, for a failure, what went wrong."""

    outcome: str  # TRAINED, REFUSED, NON_FINITE or FAILURE
    problems: list[str]


# A progress bar that was still open when the error was printed: "67%|######   | 2/3 [00:02<00:01, 1.5s/it]".
_OPEN_BAR = re.compile(r".*\d+/\d+ \[[^\]]*\]")


def _error_messages(lines: list[str]) -> list[str]:
    """The `error: ...` lines of stderr; one glued to the end of an open progress bar counts too."""
    out = []
    for line in lines:
        if not line.startswith("error: "):
            bar = _OPEN_BAR.match(line)
            line = line[bar.end():] if bar else ""
        if line.startswith("error: "):
            out.append(line)
    return out


def _complete(run_file: Path) -> bool:
    try:
        return json.loads(run_file.read_text(encoding="utf-8")).get("status") == "complete"
    except (OSError, ValueError, AttributeError):
        return False


def _leaks(secrets: list[str], result: RunResult, work_dir: Path) -> list[str]:
    """Where a token of the input reached: stdout, stderr, or the name or content of a file under `work_dir`."""
    from hf_finetune.errors import redact

    problems = []
    paths = list(work_dir.rglob("*")) if work_dir.is_dir() else []
    for token in secrets:
        if token in result.stdout:
            problems.append("token leaked to stdout")
        if token in result.stderr:
            problems.append("token leaked to stderr")
        for path in paths:
            if token in str(path.relative_to(work_dir)):
                problems.append(f"token leaked into a file name: {redact(str(path.relative_to(work_dir)))}")
            elif path.is_file() and not path.is_symlink() and token.encode() in path.read_bytes():
                problems.append(f"token leaked into {path.relative_to(work_dir)}")
    return problems


def judge(mutant: Mutant, result: RunResult, work_dir: str | os.PathLike) -> Verdict:
    """Checks the invariant for one run of `mutant` (see the module docstring).

    Args:
        mutant: the recipe that ran.
        result: what the run returned and printed.
        work_dir: the folder it ran in; every file under it was written by the run.
    """
    work_dir = Path(work_dir)
    problems: list[str] = []
    code = result.returncode
    printed = result.stdout + result.stderr
    lines = result.stderr.splitlines()
    if result.timed_out:
        problems.append(f"no result within the time limit ({result.seconds:.0f}s)")
    elif result.escaped is not None:
        problems.append("an exception escaped main: " + result.escaped.strip().splitlines()[-1])
    elif code == ESCAPED_EXIT:
        problems.append("an exception escaped main: " + (lines[-1] if lines else "?"))
    elif "Traceback (most recent call last)" in printed:
        problems.append(f"exit {code} with a traceback printed")
    elif code == 0:
        if not any(_complete(path) for path in work_dir.rglob("run.json")):
            problems.append("exit 0 but no run.json with status complete under the output folder")
    elif code == 2:
        if not any(len(message) > len("error: ") for message in _error_messages(lines)):
            problems.append("exit 2 without an `error: ...` line on stderr")
    elif code == 1:
        if not any(message.startswith(NON_FINITE_MESSAGE) for message in _error_messages(lines)):
            problems.append("exit 1 without the non-finite-loss message")
    else:
        problems.append(f"unexpected exit code {code}")
    problems += _leaks(mutant.secrets, result, work_dir)
    if problems:
        outcome = FAILURE
    elif code == 0:
        outcome = TRAINED
    elif code == 2:
        outcome = REFUSED
    else:
        outcome = NON_FINITE
    return Verdict(outcome, problems)


def failure_report(mutant: Mutant, result: RunResult, verdict: Verdict, lines: int = 15) -> str:
    """A failure as a reader needs it: the seed, what was mutated, the problems, the recipe, the last lines."""
    tail = (result.escaped or result.stderr).strip().splitlines()[-lines:]
    return "\n".join([
        f"seed {mutant.seed!r} ({mutant.task}): {'; '.join(verdict.problems)}",
        f"mutations: {'; '.join(mutant.mutations)}",
        "recipe:", mutant.text.rstrip(), "last lines of stderr:", *tail,
    ])




# --- the second pass: finished-run commands on damaged, foreign and unwritable folders ---------------------
#
# predict, evaluate, export, ensemble, rank and a run distilled from a teacher, each given a copy of a tiny
# finished run (`FinishedAssets`) that may be damaged (weights cut short, altered, emptied or gone, a
# checksum that does not match; run.json, config.json, recipe.yaml or metrics.json unreadable or missing),
# foreign (an empty folder, someone else's files, a file, nothing, a model folder without run.json), asked
# to write where it cannot (under a file, under /proc, onto a file), and, in a share of the cases, with a
# token shape put into one of its arguments at any position (`embed_token`).
#
# The invariant (`judge_finished`): exit 0, or exit 2 with an `error: ...` line; never a traceback, another
# exit code or a hang; never exit 0 where the case must be refused (damaged weights, a folder that holds no
# run, an output that cannot be written, a token in an argument); a refused command leaves the run folders
# it was given as they were; no token reaches stdout, stderr or any file.

RAN = "ran"  # a finished-run command that exited 0
FINISHED_COMMANDS: list[tuple[str, float]] = [("predict", 4), ("evaluate", 3), ("ensemble", 2), ("rank", 1.5),
                                              ("distill", 1), ("export", 1)]
WEIGHTS_DAMAGE = ("truncated weights", "flipped weights", "empty weights", "deleted weights", "wrong checksum")
FOLDER_DAMAGE = ("garbage run.json", "run.json a list", "run.json publishing", "garbage config.json",
                 "deleted config.json", "garbage recipe.yaml", "deleted recipe.yaml", "garbage metrics.json",
                 "deleted tokenizer")
FOREIGN = ("empty folder", "someone else's files", "a file", "missing", "model without run.json")
CONDITIONS: list[tuple[str, float]] = [("intact", 6), *((d, 1) for d in WEIGHTS_DAMAGE),
                                       *((d, 0.5) for d in FOLDER_DAMAGE), *((f, 0.6) for f in FOREIGN)]
UNWRITABLE = ("under a file", "under /proc", "a file")
TARGETS: list[tuple[str, float]] = [("new", 4), *((t, 1) for t in UNWRITABLE)]
TOKEN_SHARE = 0.3  # cases with a token shape in an argument
RUN, OTHER_RUN, A_FILE = "run", "run2", "afile"  # names in the case's work folder


@dataclass(frozen=True)
class FinishedAssets:
    """Pristine tiny finished runs (never changed: every case copies the one it uses) and the train assets."""

    runs: dict[str, Path]  # task -> finished run folder
    assets: Assets


def finished_assets_in(folder: str | os.PathLike, assets: Assets) -> FinishedAssets:
    """The paths `write_finished_assets(folder, assets)` writes (or wrote)."""
    folder = Path(folder).resolve()
    return FinishedAssets({task: folder / "runs" / task for task in TASKS}, assets)


def write_finished_assets(folder: str | os.PathLike, assets: Assets) -> FinishedAssets:
    """Trains one tiny run per task (two optimizer steps) for the finished-run cases."""
    from hf_finetune.cli import main

    finished = finished_assets_in(folder, assets)
    Path(folder).mkdir(parents=True, exist_ok=True)
    for task, out in finished.runs.items():
        recipe = base_recipe(task, assets, max_steps=2)
        recipe["output"]["dir"] = str(out)
        path = Path(folder) / f"{task}.yaml"
        path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
        if main(["train", str(path)]) != 0:
            raise RuntimeError(f"the finished run for {task} did not train")
    return finished


@dataclass
class FinishedCase:
    """One finished-run command: its arguments (paths relative to the folder it runs in) and what was done."""

    seed: str
    command: str
    task: str
    condition: str  # what was done to the run folder (CONDITIONS)
    target: str  # where it writes (TARGETS)
    argv: list[str]
    must_refuse: list[str]  # why exit 0 would be wrong (empty: exit 0 and exit 2 are both clean outcomes)
    secrets: list[str]
    recipe: dict[str, Any] | None = None  # rank and distill: written as recipe.yaml in the work folder

    @property
    def mutations(self) -> list[str]:
        return [f"{self.command} on a {self.task} run: {self.condition}, output {self.target}",
                *(f"must refuse: {why}" for why in self.must_refuse)]

    @property
    def text(self) -> str:
        """The case as a reader needs it (what `failure_report` prints for a recipe)."""
        shown = " ".join(repr(a) if " " in a or not a else a for a in self.argv)
        recipe = f"recipe.yaml:\n{yaml.safe_dump(self.recipe, sort_keys=False)}" if self.recipe else ""
        return f"hf-finetune {shown}\n{recipe}"


def _pick(rng: random.Random, weighted: list[tuple[str, float]]) -> str:
    names, weights = zip(*weighted, strict=True)
    return rng.choices(names, weights)[0]


def _target_path(target: str, name: str) -> str:
    return {"new": name, "under a file": f"{A_FILE}/{name}", "under /proc": f"/proc/hf-finetune-fuzz/{name}",
            "a file": A_FILE}[target]


def make_finished_case(seed: int | str, finished: FinishedAssets) -> FinishedCase:
    """The finished-run case of `seed`: a command, the state of the run it is given, where it writes, and
    perhaps a token in one of its arguments."""
    rng = random.Random(f"hf-finetune-fuzz-finished:{seed}")
    command = _pick(rng, FINISHED_COMMANDS)
    task = rng.choice(TASKS)
    condition = "intact" if command == "rank" else _pick(rng, CONDITIONS)
    target = _pick(rng, TARGETS)
    must: list[str] = []
    reads_weights = command != "rank"
    if condition in WEIGHTS_DAMAGE and reads_weights:
        must.append(f"the run's weights: {condition}")
    bare_ok = command in ("predict", "export")  # they use a model folder without run.json, with a warning
    if condition in FOREIGN and not (condition == "model without run.json" and bare_ok):
        must.append(f"the run folder: {condition}")
    text = task == "text-classification"
    assets = finished.assets
    recipe = None
    if command == "predict":
        inputs = rng.sample(["the movie was great", "the plot was dull. 10/10 / 5 stars", "x" * 10_000,
                             "--text=fine", "--file=reviews.csv", "reviews.csv", "missing.csv"], rng.randint(1, 3)) \
            if text else rng.sample([f"{assets.image_folder}/test", "images", "missing.png", "--file=images"],
                                    rng.randint(1, 2))
        argv = ["predict", RUN, *(a for item in inputs for a in (item.split("=", 1) if item.startswith("--")
                                                                  else [item]))]
        if "missing.csv" in inputs or "missing.png" in inputs:
            must.append("an input file that does not exist")
        if rng.random() < 0.6:
            argv += ["--output", _target_path(target, "predictions.jsonl")]
            if target != "new":
                must.append(f"--output is {target}")
        argv += rng.choice([[], ["--top-k", "2"], ["--batch-size", "1"]])
    elif command == "evaluate":
        argv = ["evaluate", RUN, *rng.choice([[], ["--split", "validation"], ["--data", assets.text_files["test"]
                                              if text else f"{assets.image_folder}/test"],
                                              ["--name", "fuzz-eval"]])]
        argv += ["--output-dir", _target_path(target, "evaluation")]
        if target != "new":
            must.append(f"--output-dir is {target}")
    elif command == "export":
        argv = ["export", RUN, "--format", "onnx", "--output-dir", _target_path(target, "onnx")]
        if target != "new":
            must.append(f"--output-dir is {target}")
    elif command == "ensemble":
        members = [RUN] if rng.random() < 0.15 else [RUN, OTHER_RUN]
        if len(members) == 1:
            must.append("an ensemble of one run")
        argv = ["ensemble", _target_path(target, "ensemble"), *members,
                "--method", rng.choice(["logits", "logits", "soup", "greedy-soup"])]
        if target != "new":
            must.append(f"OUT_DIR is {target}")
    elif command == "rank":
        recipe = base_recipe(task, assets)
        recipe["rank"] = {"candidates": [str(assets.bert if text else assets.resnet)]}
        where = _target_path(target, "rank")
        argv = ["rank", "recipe.yaml", *rng.choice([["--output-dir", where], [f"rank.output_dir={where}"],
                                                    [f"rank.cache_dir={where}"]])]
        if target != "new":
            must.append(f"the rank folder is {target}")
    else:  # distill: a short run with the case's run as its teacher
        recipe = base_recipe(task, assets, max_steps=2)
        recipe["distill"] = {"teacher": RUN, "alpha": 0.5}
        recipe["output"]["dir"] = _target_path(target, "student")
        argv = ["train", "recipe.yaml"]
        if target != "new":
            must.append(f"output.dir is {target}")
    secrets: list[str] = []
    if rng.random() < TOKEN_SHARE:
        token = token_like(rng)
        places = [i for i, a in enumerate(argv) if i > 0 and not a.startswith("-") and a != "onnx"
                  and argv[i - 1] not in ("--format", "--method", "--top-k", "--batch-size", "--split")]
        i = rng.choice(places)
        if "=" in argv[i]:  # a recipe override: the token goes into its value
            key, value = argv[i].split("=", 1)
            new, position = embed_token(value, token, rng)
            argv[i] = f"{key}={new}"
        else:
            argv[i], position = embed_token(argv[i], token, rng)
        secrets.append(token)
        must.append(f"a token in argument {i} ({position})")
    return FinishedCase(str(seed), command, task, condition, target, argv, must, secrets, recipe)


def _damage(run: Path, condition: str) -> None:
    """Does `condition` to the copy of a finished run in `run`."""
    weights = run / "model.safetensors"
    if condition == "truncated weights":
        with open(weights, "r+b") as f:
            f.truncate(weights.stat().st_size // 2)
    elif condition == "flipped weights":  # same size, other bytes in the tensor data: only the hash tells
        data = bytearray(weights.read_bytes())
        data[-32:] = bytes(b ^ 0xFF for b in data[-32:])
        weights.write_bytes(bytes(data))
    elif condition == "empty weights":
        weights.write_bytes(b"")
    elif condition == "deleted weights":
        weights.unlink()
    elif condition == "wrong checksum":
        manifest = json.loads((run / "run.json").read_text(encoding="utf-8"))
        manifest["checksums"]["model.safetensors"]["sha256"] = "0" * 64
        (run / "run.json").write_text(json.dumps(manifest), encoding="utf-8")
    elif condition.startswith(("garbage ", "deleted ")):
        name = condition.split(" ", 1)[1]
        names = ["tokenizer.json", "tokenizer_config.json", "vocab.txt"] if name == "tokenizer" else [name]
        for file in names:
            if condition.startswith("deleted "):
                (run / file).unlink(missing_ok=True)
            else:
                (run / file).write_bytes(b"{not json: [\xff\xfe")
    elif condition == "run.json a list":
        (run / "run.json").write_text("[1, 2]", encoding="utf-8")
    elif condition == "run.json publishing":
        manifest = json.loads((run / "run.json").read_text(encoding="utf-8"))
        (run / "run.json").write_text(json.dumps({**manifest, "status": "publishing"}), encoding="utf-8")
    elif condition == "model without run.json":
        (run / "run.json").unlink()


def prepare_finished_case(case: FinishedCase, work_dir: str | os.PathLike,
                          finished: FinishedAssets) -> dict[str, Any]:
    """Makes the case's work folder: the (damaged) run, a second intact run, a file, inputs, recipe.yaml.

    Returns:
        A snapshot of the run folders (relative path -> size, mtime), for `judge_finished`.
    """
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    source = finished.runs[case.task]
    run = work / RUN
    if case.condition == "empty folder":
        run.mkdir()
    elif case.condition == "someone else's files":
        run.mkdir()
        (run / "README.md").write_text("# my project\n", encoding="utf-8")
        (run / "main.py").write_text("print('hello')\n", encoding="utf-8")
        (run / "data.bin").write_bytes(os.urandom(64))
    elif case.condition == "a file":
        run.write_text("not a folder\n", encoding="utf-8")
    elif case.condition != "missing":
        shutil.copytree(source, run)
        _damage(run, case.condition)
    shutil.copytree(source, work / OTHER_RUN)
    (work / A_FILE).write_text("a file, not a folder\n", encoding="utf-8")
    if case.command == "predict":
        write_csv(work / "reviews.csv", _review_rows(4, seed=7))
        shutil.copytree(Path(finished.assets.image_folder) / "test", work / "images")
    if case.recipe is not None:
        (work / "recipe.yaml").write_text(yaml.safe_dump(case.recipe, sort_keys=False), encoding="utf-8")
    return _snapshot(work)


def _snapshot(work: Path) -> dict[str, Any]:
    """(size, mtime) of every file of the run folders the case was given, by relative path."""
    out = {}
    for name in (RUN, OTHER_RUN):
        folder = work / name
        if folder.is_dir():
            for path in folder.rglob("*"):
                if path.is_file() and path.name != ".hf-finetune.lock":
                    info = path.stat()
                    out[str(path.relative_to(work))] = (info.st_size, info.st_mtime_ns)
    return out


def judge_finished(case: FinishedCase, result: RunResult, work_dir: str | os.PathLike,
                   before: dict[str, Any]) -> Verdict:
    """Checks the finished-run invariant for one case (see the section's comment)."""
    work = Path(work_dir)
    problems: list[str] = []
    code = result.returncode
    printed = result.stdout + result.stderr
    if result.timed_out:
        problems.append(f"no result within the time limit ({result.seconds:.0f}s)")
    elif result.escaped is not None:
        problems.append("an exception escaped main: " + result.escaped.strip().splitlines()[-1])
    elif code == ESCAPED_EXIT:
        lines = result.stderr.splitlines()
        problems.append("an exception escaped main: " + (lines[-1] if lines else "?"))
    elif "Traceback (most recent call last)" in printed:
        problems.append(f"exit {code} with a traceback printed")
    elif code == 0 and case.must_refuse:
        problems.append("exit 0, but it must be refused: " + "; ".join(case.must_refuse))
    elif code == 2:
        if not any(len(message) > len("error: ") for message in _error_messages(result.stderr.splitlines())):
            problems.append("exit 2 without an `error: ...` line on stderr")
        elif _snapshot(work) != before:
            changed = sorted(set(_snapshot(work).items()) ^ set(before.items()))
            problems.append(f"refused, but the run folders changed: {changed[0][0]}")
    elif code != 0:
        problems.append(f"unexpected exit code {code}")
    problems += _leaks(case.secrets, result, work)
    outcome = FAILURE if problems else RAN if code == 0 else REFUSED
    return Verdict(outcome, problems)
