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

This module imports only `hf_finetune.errors`, the standard library and PyYAML, so it can move freely.
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from typing import Any

import yaml
import yaml.reader
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from hf_finetune.errors import Problem, RecipeError

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
# loaders produce alike, so results do not depend on which one is installed.
_LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_MERGE_TAG = "tag:yaml.org,2002:merge"
# Keys that mapping construction rewrites (`<<`, `=`) and that cannot be built on their own.
_KEY_ONLY_TAGS = (_MERGE_TAG, "tag:yaml.org,2002:value")
# What YAML accepts as text (PyYAML's own rule); anything else means the file is not a text recipe.
_NON_PRINTABLE = yaml.reader.Reader.NON_PRINTABLE


class _Refused(Exception):
    """Internal: one problem found; `read_recipe_file` adds the file name and raises `RecipeError`."""

    def __init__(self, path: str, message: str, syntax: bool = False):
        super().__init__(message)
        self.problem = Problem(path, message)
        self.syntax = syntax  # not YAML at all (as opposed to YAML that breaks a bound)


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

def _load(text: str) -> Any:
    """Parses, checks and constructs the single YAML document in `text` (None when it is empty)."""
    try:
        alias_count = _check_events(text)
        root = yaml.compose(text, Loader=_LOADER)
        if root is None:
            return None
        loader = _LOADER("")
        _GraphCheck(loader, has_aliases=alias_count > 0).visit(root, "")
        return _construct(loader, root)
    except yaml.YAMLError as exc:
        raise _Refused("", _yaml_message(exc), syntax=True) from None
    except RecursionError:
        # The event pass bounds nesting first, so this is a last line of defence, not a path taken.
        raise _Refused("", f"nested too deeply to read (more than {MAX_DEPTH} levels)") from None


def _yaml_message(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"not valid YAML{where}: {problem}"


@dataclass
class _Open:
    """A mapping or sequence being read in the event stream, and where its next child goes."""

    is_map: bool
    uid: int
    key: str = ""
    expect_key: bool = True
    index: int = 0

    def child_label(self) -> str:
        if not self.is_map:
            return f"[{self.index}]"
        return "<key>" if self.expect_key else self.key

    def advance(self, key_text: str) -> None:
        """One child finished: a key (remembered for paths), a value or a sequence item."""
        if not self.is_map:
            self.index += 1
        elif self.expect_key:
            self.key, self.expect_key = key_text, False
        else:
            self.expect_key = True


def _join(path: str, label: str) -> str:
    if not label:
        return path
    if label.startswith("["):
        return path + label
    return f"{path}.{label}" if path else label


def _check_events(text: str) -> int:
    """Bounds nesting and aliases on the event stream, before any node is built; returns the alias count.

    Checking here, rather than on composed nodes, is what keeps PyYAML's recursive composer from ever
    seeing 10,000 nested brackets, and it stops reading at the first problem.
    """
    stack: list[_Open] = []
    open_uids: set[int] = set()
    anchors: dict[str, tuple[int, int]] = {}  # anchor -> (uid of the node it names, 0 for a scalar; line)
    aliases = 0
    for uid, event in enumerate(yaml.parse(text, Loader=_LOADER), start=1):
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            _check_alias(event, stack, aliases, anchors, open_uids)
            if stack:
                stack[-1].advance(f"*{event.anchor}")
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor:
                _define_anchor(event, 0, anchors)
            if stack:
                stack[-1].advance(event.value)
        elif isinstance(event, yaml.CollectionStartEvent):
            if len(stack) >= MAX_DEPTH:
                raise _Refused(_here(stack), f"nested more than {MAX_DEPTH} levels deep; a recipe needs only a few")
            # Like the composer, register the anchor before the children, so an alias inside is recursive.
            if event.anchor:
                _define_anchor(event, uid, anchors)
            stack.append(_Open(isinstance(event, yaml.MappingStartEvent), uid))
            open_uids.add(uid)
        elif isinstance(event, yaml.CollectionEndEvent):
            open_uids.discard(stack.pop().uid)
            if stack:
                stack[-1].advance("<key>")
    return aliases


def _here(stack: list[_Open]) -> str:
    """The dotted path where the next node in the stream goes (built only for a message)."""
    path = ""
    for frame in stack:
        path = _join(path, frame.child_label())
    return path


def _define_anchor(event: yaml.NodeEvent, uid: int, anchors: dict[str, tuple[int, int]]) -> None:
    # The composer refuses a re-used anchor name too, but words it "second occurrence" and nothing more.
    mark = event.start_mark
    if event.anchor in anchors:
        raise _Refused("", f"not valid YAML (line {mark.line + 1}, column {mark.column + 1}): anchor "
                           f"&{event.anchor} is defined twice (first on line {anchors[event.anchor][1]}); "
                           "give the second one another name")
    anchors[event.anchor] = (uid, mark.line + 1)


def _check_alias(event: yaml.AliasEvent, stack: list[_Open], count: int, anchors: dict[str, tuple[int, int]],
                 open_uids: set[int]) -> None:
    line = event.start_mark.line + 1
    if count > MAX_ALIASES:
        raise _Refused(_here(stack), f"more than {MAX_ALIASES:,} aliases in one recipe; a recipe needs only a few")
    if event.anchor not in anchors:
        # Reported here so both loaders word it the same way.
        raise _Refused("", f"not valid YAML (line {line}, column {event.start_mark.column + 1}): "
                           f"found undefined alias '{event.anchor}'")
    if anchors[event.anchor][0] in open_uids:
        raise _Refused(_here(stack), f"alias *{event.anchor} (line {line}) refers to a node that contains it; "
                             "recursive anchors are not supported")


class _GraphCheck:
    """Duplicate keys and expanded size/depth, on the composed graph where an alias is a shared node.

    Each node is visited once, on its first (defining) occurrence; later aliases reuse its memoised
    (values, depth), so a bomb is measured in time proportional to its text, not its expansion.
    """

    def __init__(self, loader: Any, has_aliases: bool):
        self.loader = loader
        self.has_aliases = has_aliases
        self.memo: dict[int, tuple[int, int]] = {}
        self.open: set[int] = set()

    def visit(self, node: Node, path: str) -> tuple[int, int]:
        """(values, nesting depth) of `node` once aliases are expanded; raises past the limits."""
        if isinstance(node, ScalarNode):
            return 1, 0
        known = self.memo.get(id(node))
        if known is not None:
            return known
        if id(node) in self.open:  # the event pass refuses this first; kept so the walk always ends
            raise _Refused(path, "an alias refers to a node that contains it; recursive anchors are not supported")
        self.open.add(id(node))
        values, depth = 1, 0
        for child, child_path in self._children(node, path):
            child_values, child_depth = self.visit(child, child_path)
            values += child_values
            depth = max(depth, child_depth)
        depth += 1
        self.open.discard(id(node))
        if values > MAX_VALUES:
            raise _Refused(path, self._too_many())
        if depth > MAX_DEPTH:
            raise _Refused(path, f"nested more than {MAX_DEPTH} levels deep once aliases are expanded; "
                                 "a recipe needs only a few")
        self.memo[id(node)] = (values, depth)
        return values, depth

    def _too_many(self) -> str:
        if self.has_aliases:
            return (f"aliases expand this to more than {MAX_VALUES:,} values; a recipe needs far fewer "
                    "(is this an alias bomb?)")
        return f"has more than {MAX_VALUES:,} values; a recipe needs far fewer"

    def _children(self, node: Node, path: str) -> list[tuple[Node, str]]:
        if isinstance(node, SequenceNode):
            return [(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        assert isinstance(node, MappingNode)
        self._check_duplicates(node, path)
        children = []
        for key, value in node.value:
            children.append((key, _join(path, "<key>")))
            children.append((value, _join(path, _key_label(key))))
        return children

    def _check_duplicates(self, node: MappingNode, path: str) -> None:
        """Refuses a key given twice in one mapping: YAML would keep the last one without a word.

        Keys are compared as Python values, as the dict would ('1' vs 1 differ, 'yes' and 'true' collide);
        keys brought in by a `<<` merge are overrides, not duplicates.
        """
        seen: dict[Any, int] = {}
        merge_line = 0
        for key, _ in node.value:
            line = key.start_mark.line + 1
            if key.tag == _MERGE_TAG:
                if merge_line:
                    raise _Refused(_join(path, "<<"), f"duplicate merge key (lines {merge_line} and {line}); "
                                                      "merge several mappings with '<<: [*a, *b]'")
                merge_line = line
                continue
            identity = self._identity(key)
            if identity is None:
                continue
            if identity in seen:
                raise _Refused(_join(path, _key_label(key)), f"duplicate key (lines {seen[identity]} and {line})")
            seen[identity] = line

    def _identity(self, key: Node) -> Any:
        """The key as the dict will see it, or None for keys that cannot be compared (complex, unbuildable)."""
        if not isinstance(key, ScalarNode):
            return None
        try:
            value = self.loader.construct_object(key)
            hash(value)
        except Exception:  # an unbuildable key is reported, with its line, when the document is built
            return None
        return value


def _key_label(key: Node) -> str:
    return str(key.value) if isinstance(key, ScalarNode) else "<key>"


def _construct(loader: Any, root: Node) -> Any:
    """Python values for the checked graph; a scalar its tag cannot build is reported with its place."""
    try:
        return loader.construct_document(root)
    except yaml.YAMLError:
        raise
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, OverflowError) as exc:
        # PyYAML lets e.g. `2024-02-30` (a timestamp) or `!!int x` fail with a bare ValueError; find it.
        raise _locate_bad_scalar(root) or _Refused("", f"not valid YAML: {exc}") from None


def _locate_bad_scalar(root: Node) -> _Refused | None:
    loader = _LOADER("")
    seen: set[int] = set()
    todo: list[tuple[Node, str]] = [(root, "")]
    while todo:
        node, path = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, ScalarNode) and node.tag not in _KEY_ONLY_TAGS:
            try:
                loader.construct_object(node)
            except Exception as exc:
                kind = node.tag.rsplit(":", 1)[-1]
                return _Refused(path, f"cannot read {node.value!r} as a {kind} (line {node.start_mark.line + 1}): "
                                      f"{exc}")
        elif isinstance(node, SequenceNode):
            todo.extend((item, f"{path}[{i}]") for i, item in reversed(list(enumerate(node.value))))
        elif isinstance(node, MappingNode):
            for key, value in reversed(node.value):
                todo.append((value, _join(path, _key_label(key))))
                todo.append((key, _join(path, "<key>")))
    return None
