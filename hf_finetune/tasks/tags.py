"""Tag schemes of token classification: IOB2, IOB1 and IOBES read into IOB2, and entities read off tags.

    IOB2    B-X starts every entity of type X, I-X continues it, O is outside any entity
    IOB1    I-X starts an entity too; B-X only starts one right after another entity of type X
    IOBES   S-X is a one-token entity, B-X / I-X / E-X begin, continue and end a longer one

Every scheme is read into IOB2: the model learns IOB2 tags, which `pipeline(aggregation_strategy=
"simple")` groups into entities. A tag with an unknown prefix cannot be read and is an error; a
sequence the scheme does not allow (an I- tag that continues no entity, an IOBES entity without its
E-) is malformed: it is read as conlleval and seqeval read it (the I- tag starts an entity) and
counted, so the run can report it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

OUTSIDE = "O"
SCHEMES = {"IOB2": ("B", "I"), "IOB1": ("B", "I"), "IOBES": ("B", "I", "E", "S")}


class UnknownTag(ValueError):
    """A tag whose prefix the scheme does not have (e.g. E-PER in IOB2, or PER without a prefix)."""

    def __init__(self, index: int, tag: str, scheme: str):
        self.index, self.tag, self.scheme = index, tag, scheme
        prefixes = ", ".join(f"{p}-" for p in SCHEMES[scheme])
        hint = ""
        if scheme != "IOBES" and str(tag).startswith(("E-", "S-")):
            hint = " (IOBES tags: set data.tag_scheme: IOBES)"
        super().__init__(f"tag '{tag}' is not {OUTSIDE} and has none of the {scheme} prefixes {prefixes}{hint}")


def split_tag(tag: str) -> tuple[str, str] | None:
    """(prefix, entity type) of a tag: ('O', '') for O, ('B', 'PER') for B-PER; None when it has no prefix."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    prefix, sep, kind = str(tag).partition("-")
    if not sep or not prefix or not kind:
        return None
    return prefix, kind


@dataclass
class Reading:
    """A sentence's tags read into IOB2, and the positions where the scheme's rules were broken."""

    tags: list[str]
    malformed: list[int] = field(default_factory=list)  # token positions


def to_iob2(tags: list[str], scheme: str = "IOB2") -> Reading:
    """Reads one sentence's tags in `scheme` into IOB2.

    Raises:
        UnknownTag: a tag with a prefix the scheme does not have.
    """
    allowed = SCHEMES[scheme]
    out: list[str] = []
    malformed: list[int] = []
    open_type: str | None = None  # the type of the entity the previous token leaves open (None: none open)
    for i, tag in enumerate(tags):
        parts = split_tag(tag)
        if parts is None or (parts[0] != OUTSIDE and parts[0] not in allowed):
            raise UnknownTag(i, tag, scheme)
        prefix, kind = parts
        continues = open_type == kind and prefix in ("I", "E")
        if scheme == "IOBES" and open_type is not None and not continues:
            malformed.append(i - 1)  # the entity before ended without E-
        if prefix == OUTSIDE:
            out.append(OUTSIDE)
            open_type = None
            continue
        if prefix in ("I", "E") and not continues:
            if scheme != "IOB1":  # IOB1 starts entities with I-; the others never do
                malformed.append(i)
            out.append(f"B-{kind}")
        else:
            out.append(f"{'I' if continues else 'B'}-{kind}")
        # IOBES closes an entity with E- and S-: an I- after them would be malformed
        open_type = None if scheme == "IOBES" and prefix in ("E", "S") else kind
    if scheme == "IOBES" and open_type is not None:
        malformed.append(len(tags) - 1)
    return Reading(out, sorted(set(malformed)))


def entity_types(tags: list[str]) -> list[str]:
    """The entity types named by IOB2 tags, sorted."""
    return sorted({parts[1] for tag in tags if (parts := split_tag(tag)) and parts[0] != OUTSIDE})


def tag_names(types: list[str]) -> list[str]:
    """The IOB2 tag set of `types`, in the canonical order: O, then B- and I- of each type."""
    return [OUTSIDE] + [f"{prefix}-{kind}" for kind in types for prefix in ("B", "I")]


def is_iob2_tag(tag: str) -> bool:
    parts = split_tag(tag)
    return parts is not None and parts[0] in (OUTSIDE, "B", "I")


def complete(names: list[str]) -> list[str]:
    """`names` (IOB2 tags in some order) with O, and the B-/I- counterpart of every type, added where missing:
    a type seen only as B-X in training still needs I-X for its longer entities."""
    out = list(names)
    if OUTSIDE not in out:
        out.insert(0, OUTSIDE)
    for kind in entity_types(names):
        for prefix in ("B", "I"):
            if f"{prefix}-{kind}" not in out:
                out.append(f"{prefix}-{kind}")
    return out


def spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """Entities of a sentence's tags as (type, first token, last token + 1), read as conlleval reads them:
    B-X starts an entity, I-X continues an entity of type X and otherwise starts one, O ends it."""
    out: list[tuple[str, int, int]] = []
    current: list = []  # [type, start]
    for i, tag in enumerate(list(tags) + [OUTSIDE]):
        parts = split_tag(tag) or (OUTSIDE, "")
        prefix, kind = parts
        if current and (prefix in (OUTSIDE, "B", "S") or kind != current[0]):
            out.append((current[0], current[1], i))
            current = []
        if prefix != OUTSIDE and not current:
            current = [kind, i]
    return out
