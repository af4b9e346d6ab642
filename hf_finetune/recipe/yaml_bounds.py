"""The YAML of a recipe, bounded: nesting and aliases on the event stream, duplicate keys and the expanded
size on the composed node graph, then Python values with a bad scalar located.

`recipe/file.py` owns the limits and the loader class and passes them in (`Bounds`), so a test or a
caller can change them in one place. Both PyYAML loaders (pure Python and libyaml) produce the same
events and nodes, so every check here behaves alike under either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from hf_finetune.errors import Problem


@dataclass(frozen=True)
class Bounds:
    """The limits a recipe's YAML must stay within (see recipe/file.py for why each is what it is)."""

    depth: int  # nesting levels
    values: int  # values once aliases are expanded
    aliases: int  # raw `*alias` uses


class Refused(Exception):
    """One problem found; `read_recipe_file` adds the file name and raises `RecipeError`."""

    def __init__(self, path: str, message: str, syntax: bool = False):
        super().__init__(message)
        self.problem = Problem(path, message)
        self.syntax = syntax  # not YAML at all (as opposed to YAML that breaks a bound)


_MERGE_TAG = "tag:yaml.org,2002:merge"
# Keys that mapping construction rewrites (`<<`, `=`) and that cannot be built on their own.
_KEY_ONLY_TAGS = (_MERGE_TAG, "tag:yaml.org,2002:value")


def yaml_message(exc: yaml.YAMLError) -> str:
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


def join(path: str, label: str) -> str:
    if not label:
        return path
    if label.startswith("["):
        return path + label
    return f"{path}.{label}" if path else label


def check_events(text: str, loader_class: type, bounds: Bounds) -> int:
    """Bounds nesting and aliases on the event stream, before any node is built; returns the alias count.

    Checking here, rather than on composed nodes, is what keeps PyYAML's recursive composer from ever
    seeing 10,000 nested brackets, and it stops reading at the first problem.
    """
    stack: list[_Open] = []
    open_uids: set[int] = set()
    anchors: dict[str, tuple[int, int]] = {}  # anchor -> (uid of the node it names, 0 for a scalar; line)
    aliases = 0
    for uid, event in enumerate(yaml.parse(text, Loader=loader_class), start=1):
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            _check_alias(event, stack, aliases, anchors, open_uids, bounds.aliases)
            if stack:
                stack[-1].advance(f"*{event.anchor}")
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor:
                _define_anchor(event, 0, anchors)
            if stack:
                stack[-1].advance(event.value)
        elif isinstance(event, yaml.CollectionStartEvent):
            if len(stack) >= bounds.depth:
                raise Refused(_here(stack), f"nested more than {bounds.depth} levels deep; a recipe needs only a few")
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
        path = join(path, frame.child_label())
    return path


def _define_anchor(event: yaml.NodeEvent, uid: int, anchors: dict[str, tuple[int, int]]) -> None:
    # The composer refuses a re-used anchor name too, but words it "second occurrence" and nothing more.
    mark = event.start_mark
    if event.anchor in anchors:
        raise Refused("", f"not valid YAML (line {mark.line + 1}, column {mark.column + 1}): anchor "
                           f"&{event.anchor} is defined twice (first on line {anchors[event.anchor][1]}); "
                           "give the second one another name")
    anchors[event.anchor] = (uid, mark.line + 1)


def _check_alias(event: yaml.AliasEvent, stack: list[_Open], count: int, anchors: dict[str, tuple[int, int]],
                 open_uids: set[int], max_aliases: int) -> None:
    line = event.start_mark.line + 1
    if count > max_aliases:
        raise Refused(_here(stack), f"more than {max_aliases:,} aliases in one recipe; a recipe needs only a few")
    if event.anchor not in anchors:
        # Reported here so both loaders word it the same way.
        raise Refused("", f"not valid YAML (line {line}, column {event.start_mark.column + 1}): "
                           f"found undefined alias '{event.anchor}'")
    if anchors[event.anchor][0] in open_uids:
        raise Refused(_here(stack), f"alias *{event.anchor} (line {line}) refers to a node that contains it; "
                             "recursive anchors are not supported")


class GraphCheck:
    """Duplicate keys and expanded size/depth, on the composed graph where an alias is a shared node.

    Each node is visited once, on its first (defining) occurrence; later aliases reuse its memoised
    (values, depth), so a bomb is measured in time proportional to its text, not its expansion.
    """

    def __init__(self, loader: Any, has_aliases: bool, bounds: Bounds):
        self.loader = loader
        self.has_aliases = has_aliases
        self.bounds = bounds
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
            raise Refused(path, "an alias refers to a node that contains it; recursive anchors are not supported")
        self.open.add(id(node))
        values, depth = 1, 0
        for child, child_path in self._children(node, path):
            child_values, child_depth = self.visit(child, child_path)
            values += child_values
            depth = max(depth, child_depth)
        depth += 1
        self.open.discard(id(node))
        if values > self.bounds.values:
            raise Refused(path, self._too_many())
        if depth > self.bounds.depth:
            raise Refused(path, f"nested more than {self.bounds.depth} levels deep once aliases are expanded; "
                                 "a recipe needs only a few")
        self.memo[id(node)] = (values, depth)
        return values, depth

    def _too_many(self) -> str:
        if self.has_aliases:
            return (f"aliases expand this to more than {self.bounds.values:,} values; a recipe needs far fewer "
                    "(is this an alias bomb?)")
        return f"has more than {self.bounds.values:,} values; a recipe needs far fewer"

    def _children(self, node: Node, path: str) -> list[tuple[Node, str]]:
        if isinstance(node, SequenceNode):
            return [(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        assert isinstance(node, MappingNode)
        self._check_duplicates(node, path)
        children = []
        for key, value in node.value:
            children.append((key, join(path, "<key>")))
            children.append((value, join(path, _key_label(key))))
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
                    raise Refused(join(path, "<<"), f"duplicate merge key (lines {merge_line} and {line}); "
                                                      "merge several mappings with '<<: [*a, *b]'")
                merge_line = line
                continue
            identity = self._identity(key)
            if identity is None:
                continue
            if identity in seen:
                raise Refused(join(path, _key_label(key)), f"duplicate key (lines {seen[identity]} and {line})")
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


def construct(loader: Any, root: Node) -> Any:
    """Python values for the checked graph; a scalar its tag cannot build is reported with its place."""
    try:
        return loader.construct_document(root)
    except yaml.YAMLError:
        raise
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, OverflowError) as exc:
        # PyYAML lets e.g. `2024-02-30` (a timestamp) or `!!int x` fail with a bare ValueError; find it.
        raise _locate_bad_scalar(root, type(loader)) or Refused("", f"not valid YAML: {exc}") from None


def _locate_bad_scalar(root: Node, loader_class: type) -> Refused | None:
    loader = loader_class("")
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
                return Refused(path, f"cannot read {node.value!r} as a {kind} (line {node.start_mark.line + 1}): "
                                      f"{exc}")
        elif isinstance(node, SequenceNode):
            todo.extend((item, f"{path}[{i}]") for i, item in reversed(list(enumerate(node.value))))
        elif isinstance(node, MappingNode):
            for key, value in reversed(node.value):
                todo.append((value, join(path, _key_label(key))))
                todo.append((key, join(path, "<key>")))
    return None
