"""Reads a recipe YAML file into a plain mapping, refusing anything that is not a small, sane YAML file.

A recipe file comes from the user, so this reader must turn every way a file can be wrong into one
`RecipeError` that names the key (dotted path) and says what to change: a missing or unreadable file,
bytes that are not UTF-8 text, YAML syntax errors, duplicate keys (which YAML would drop silently),
recursive anchors, alias bombs and absurd nesting. None of these may surface as a traceback, a
`RecursionError` or a hang in a later stage.

The file is read in three passes, each cheap: the YAML event stream bounds nesting and aliases before
anything is built (so PyYAML's recursive composer cannot overflow); the composed node graph, where an
alias is a shared node, is checked for duplicate keys and for the size it would have once aliases are
expanded (counted with memoisation, never expanded); only then are Python values constructed.

The YAML checks themselves are in recipe/yaml_bounds.py; this module holds the limits, the loader and
the file. Both import only `hf_finetune.errors`, the standard library and PyYAML, so they can move freely.
"""

from __future__ import annotations

import math
import os
import stat
from typing import Any

import yaml
import yaml.reader

from hf_finetune.errors import Problem, RecipeError
from hf_finetune.recipe.yaml_bounds import Bounds
from hf_finetune.recipe.yaml_bounds import GraphCheck as _GraphCheck
from hf_finetune.recipe.yaml_bounds import Refused as _Refused
from hf_finetune.recipe.yaml_bounds import check_events as _check_events
from hf_finetune.recipe.yaml_bounds import construct as _construct
from hf_finetune.recipe.yaml_bounds import join as _join
from hf_finetune.recipe.yaml_bounds import yaml_message as _yaml_message

# Recipes are a few KB; a file past this is a mistake (a dataset or a checkpoint passed by accident),
# and refusing it early keeps the pure-Python parser, if that is the one in use, from taking seconds.
MAX_BYTES = 1_000_000
# Real recipes nest 3-4 levels. 50 leaves ample room while keeping PyYAML's recursive composer and
# constructor (about 3 Python frames per level) far below the interpreter's recursion limit.
MAX_DEPTH = 50
# Values the document would hold once aliases are expanded: a recipe has a few hundred at most, while
# a "billion laughs" bomb reaches 10**9. 100,000 is built in well under a second.
MAX_VALUES = 100_000
# Raw `*alias` uses: a recipe needs a handful; this bounds the work before the expansion count runs.
MAX_ALIASES = 1_000

# The C loader (libyaml) is about 10x faster; every check below works on events and nodes, which both
# loaders produce alike, so results do not depend on which one is installed. Where libyaml stops at a
# limit of its own, the file is read again with the pure-Python loader (`_load`), so the message is
# still this reader's, with its key path, whichever libyaml release is installed.
_LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# What YAML accepts as text (PyYAML's own rule); anything else means the file is not a text recipe.
_NON_PRINTABLE = yaml.reader.Reader.NON_PRINTABLE


def read_recipe_file(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a recipe file with YAML's safe loader, refusing files that are not sane recipes.

    Args:
        path: The recipe file.

    Returns:
        The top-level mapping, as plain Python values ({} for an empty file). Keys are passed through
        as YAML made them (validation reports non-string keys); `<<` merge keys are applied.

    Raises:
        RecipeError: With one problem (a dotted key path, or "" for the whole file) when the file is
            missing, a directory, unreadable, over `MAX_BYTES`, binary or not UTF-8, not valid YAML, not
            a mapping, or has duplicate keys, recursive aliases, more than `MAX_ALIASES` aliases, more
            than `MAX_VALUES` values once aliases are expanded, or nesting deeper than `MAX_DEPTH`.
    """
    source = str(path)
    try:
        text = _decode(_read_bytes(source))
        raw = _load(text)
    except _Refused as refused:
        raise RecipeError([refused.problem], source=source) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RecipeError([Problem("", f"a recipe must be a YAML mapping, got {type(raw).__name__}")], source)
    return raw


def read_override_value(text: str, key: str) -> Any:
    """The value of a `key=text` override, parsed as YAML with the same bounds as a recipe file.

    Text that is not valid YAML is kept as the literal string (`name=a: b` means the string).

    Raises:
        RecipeError: naming `key` when the value has duplicate keys, recursive aliases, or expands or
            nests beyond the limits.
    """
    try:
        return _load(text)
    except _Refused as refused:
        if refused.syntax:
            return text
        raise RecipeError([Problem(_join(key, refused.problem.path), str(refused))]) from None


# --- the file ----------------------------------------------------------------------------------------

def _read_bytes(path: str) -> bytes:
    """The file's bytes, after checking it is a regular, readable file of a recipe's size."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise _Refused("", f"recipe file not found: {path}") from None
    except PermissionError:
        raise _Refused("", "permission denied: cannot open the recipe file (check its permissions)") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        raise _Refused("", f"cannot open the recipe file: {_os_reason(exc)}") from None
    if stat.S_ISDIR(info.st_mode):
        raise _Refused("", "is a directory, not a recipe file")
    # Opening a FIFO or a device could block or never end; only regular files are recipes.
    if not stat.S_ISREG(info.st_mode):
        raise _Refused("", "is not a regular file (a pipe, socket or device), not a recipe file")
    if info.st_size > MAX_BYTES:
        raise _Refused("", _too_big(info.st_size))
    try:
        with open(path, "rb") as handle:
            # One byte past the limit: files whose size stat cannot tell (or that grew) stay bounded.
            data = handle.read(MAX_BYTES + 1)
    except PermissionError:
        raise _Refused("", "permission denied: cannot read the recipe file (check its permissions)") from None
    except OSError as exc:
        raise _Refused("", f"cannot read the recipe file: {_os_reason(exc)}") from None
    if len(data) > MAX_BYTES:
        raise _Refused("", _too_big(len(data)))
    return data


def _os_reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def _too_big(size: int) -> str:
    # Rounded up, so a file just past the limit never reads as "1.0 MB" against a 1 MB limit.
    megabytes = math.ceil(size / 100_000) / 10
    return f"recipe file is {megabytes:.1f} MB; recipes are small YAML files (the limit is {MAX_BYTES / 1e6:g} MB)"


def _decode(data: bytes) -> str:
    """UTF-8 text (a BOM is dropped), or a message that names where the file stops being text.

    Messages give positions and code points, never the offending bytes themselves: echoing binary to
    a terminal garbles it.
    """
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise _Refused("", "is UTF-16 text; save the recipe as UTF-8")
    nul = data.find(b"\x00")
    if nul >= 0:
        line, column = _byte_position(data, nul)
        raise _Refused("", f"looks like a binary file, not a YAML recipe (a NUL byte at byte offset {nul}, "
                           f"line {line}, column {column})")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, column = _byte_position(data, exc.start)
        raise _Refused("", f"is not UTF-8 text: byte 0x{data[exc.start]:02X} at byte offset {exc.start} "
                           f"(line {line}, column {column}) is not valid UTF-8; save the recipe as UTF-8") from None
    bad = _NON_PRINTABLE.search(text)
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        raise _Refused("", f"contains control character U+{ord(bad.group()):04X} (line {line}, column {column}); "
                           "a recipe is plain text: is this a binary file?")
    return text


def _byte_position(data: bytes, offset: int) -> tuple[int, int]:
    """1-based line and column (in bytes) of a byte offset."""
    line_start = data.rfind(b"\n", 0, offset) + 1
    return data.count(b"\n", 0, offset) + 1, offset - line_start + 1


# --- the YAML ----------------------------------------------------------------------------------------

def _load(text: str, loader_class: type | None = None) -> Any:
    """Parses, checks and constructs the single YAML document in `text` (None when it is empty)."""
    loader_class = loader_class or _LOADER
    try:
        bounds = Bounds(depth=MAX_DEPTH, values=MAX_VALUES, aliases=MAX_ALIASES)  # read now: tests change them
        alias_count = _check_events(text, loader_class, bounds)
        root = yaml.compose(text, Loader=loader_class)
        if root is None:
            return None
        loader = loader_class("")
        _GraphCheck(loader, has_aliases=alias_count > 0, bounds=bounds).visit(root, "")
        return _construct(loader, root)
    except yaml.YAMLError as exc:
        if loader_class is not yaml.SafeLoader and _is_library_limit(exc):
            # libyaml stops at limits of its own (PyYAML 6.0.4's stops at 1,000 levels of nesting, while
            # scanning ahead, before this reader sees the events): the pure-Python loader has none, so
            # the file gets this reader's own checks and messages, whatever libyaml's limits are.
            return _load(text, yaml.SafeLoader)
        raise _Refused("", _yaml_message(exc), syntax=True) from None
    except RecursionError:
        # The event pass bounds nesting first, so this is a last line of defence, not a path taken.
        raise _Refused("", f"nested too deeply to read (more than {MAX_DEPTH} levels)") from None


def _is_library_limit(exc: yaml.YAMLError) -> bool:
    """True for an error where libyaml refuses by a limit of its own ("exceeded maximum nesting depth"),
    not because the text is not YAML."""
    text = " ".join(str(part) for part in (getattr(exc, "problem", None), getattr(exc, "context", None), exc))
    return "maximum" in text.lower() or "depth" in text.lower()


