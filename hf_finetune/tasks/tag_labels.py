"""The label space of token classification: every word's tag, read into IOB2, checked, encoded as ids.

    TagLabeling.prepare        training: the tag set from the training split, every split checked against it
    TagLabeling.prepare_eval   a finished run: new labelled data in the model's own tag set

Tags are names (B-PER) or ids with a ClassLabel sequence feature (or `data.label_names`). The tag set
keeps the order of the dataset's names where they are IOB2 already, else O, then B- and I- of each
type; a type seen in training gets both B- and I-. A row whose tokens and tags differ in length, an
empty sentence, a tag the model's tag set lacks: each is an error naming the split, the row and,
for CoNLL files, the file and line. Malformed sequences are counted and reported (tasks/tags.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from datasets import ClassLabel, Dataset, List, Value

from hf_finetune.data.conll import LINE_COLUMN
from hf_finetune.data.labels import LABEL_COLUMN, LabelSpace
from hf_finetune.errors import DataError, show
from hf_finetune.tasks.tags import UnknownTag, complete, entity_types, is_iob2_tag, tag_names, to_iob2

logger = logging.getLogger(__name__)

SHOWN = 3  # malformed sentences named in a warning


def where(ds: Dataset, row: int, split: str) -> str:
    """`split 'train' row 12 (data/train.conll:88)`: the row, and its file and line when known."""
    text = f"split '{split}' row {row}"
    source = ds[row] if ({"__source_file__", LINE_COLUMN} & set(ds.column_names)) else {}
    if "__source_file__" in source and LINE_COLUMN in source:
        text += f" ({source['__source_file__']}:{source[LINE_COLUMN]})"
    elif "__source_file__" in source:
        text += f" ({source['__source_file__']})"
    return text


def _sequence_feature(ds: Dataset, column: str) -> Any:
    feature = ds.features[column]
    return getattr(feature, "feature", None)  # List / Sequence of something; None for anything else


def source_names(ds: Dataset, tags: str, label_names: list[str] | None) -> list[str] | None:
    """The names of integer tags: the ClassLabel's (renamed by data.label_names), or data.label_names."""
    inner = _sequence_feature(ds, tags)
    if isinstance(inner, ClassLabel):
        if label_names is not None and len(label_names) != inner.num_classes:
            raise DataError(f"data.label_names: gives {len(label_names)} names but column '{tags}' has "
                            f"{inner.num_classes} tags ({', '.join(inner.names)})")
        return list(label_names or inner.names)
    return list(label_names) if label_names is not None else None


@dataclass
class ReadSplit:
    """One split's sentences with IOB2 tags, and what reading them found."""

    tags: list[list[str]]
    malformed: int = 0  # tags
    malformed_rows: list[int] | None = None


def read_tags(ds: Dataset, recipe: Any, split: str) -> ReadSplit:
    """Checks the tokens and tags of every row and reads the tags into IOB2.

    Raises:
        DataError: a column of the wrong type, an empty sentence, tokens and tags of different lengths, a tag
            id without a name or a tag the scheme cannot read, naming the split, row, file and line.
    """
    data = recipe.data
    tokens, tags, scheme = data.columns.tokens, data.columns.tags, data.tag_scheme
    inner = _sequence_feature(ds, tokens)
    if not (isinstance(inner, Value) and inner.dtype in ("string", "large_string")):
        raise DataError(f"data.columns.tokens: column '{tokens}' of split '{split}' holds {ds.features[tokens]!r}, "
                        "not lists of words (strings)")
    inner_tags = _sequence_feature(ds, tags)
    names = source_names(ds, tags, data.label_names)
    numeric = isinstance(inner_tags, ClassLabel) or (isinstance(inner_tags, Value) and inner_tags.dtype.startswith(
        ("int", "uint")))
    if not (numeric or (isinstance(inner_tags, Value) and inner_tags.dtype in ("string", "large_string"))):
        raise DataError(f"data.columns.tags: column '{tags}' of split '{split}' holds {ds.features[tags]!r}, not lists "
                        "of tags (names, or ids with a ClassLabel sequence feature)")
    if numeric and names is None:
        raise DataError(f"data.columns.tags: column '{tags}' of split '{split}' holds tag ids without names: give "
                        "a ClassLabel sequence feature, or name the ids 0..K-1 with data.label_names")
    out = ReadSplit([], 0, [])
    for row, (words, labels) in enumerate(zip(ds[tokens], ds[tags], strict=True)):
        if not words or not labels:
            empty = "tokens" if not words else "tags"
            raise DataError(f"data.columns.{empty}: {where(ds, row, split)} has no {empty} (an empty sentence)")
        if len(words) != len(labels):
            raise DataError(f"data.columns.tags: {where(ds, row, split)} has {len(words)} tokens but {len(labels)} "
                            "tags; every token needs one tag")
        if any(w is None for w in words):
            raise DataError(f"data.columns.tokens: {where(ds, row, split)} has a missing (null) token")
        if numeric:
            bad = next((t for t in labels if t is None or not 0 <= t < len(names)), "none")
            if bad != "none":
                raise DataError(f"data.columns.tags: {where(ds, row, split)} holds tag id {show(bad)}, outside "
                                f"0..{len(names) - 1} ({len(names)} tag names)")
            labels = [names[t] for t in labels]
        elif any(t is None for t in labels):
            raise DataError(f"data.columns.tags: {where(ds, row, split)} has a missing (null) tag")
        try:
            reading = to_iob2(labels, scheme)
        except UnknownTag as exc:
            raise DataError(f"data.columns.tags: {where(ds, row, split)}, token {exc.index} "
                            f"({show(words[exc.index])}): {exc}") from None
        out.tags.append(reading.tags)
        if reading.malformed:
            out.malformed += len(reading.malformed)
            out.malformed_rows.append(row)
    return out


def report_malformed(ds: Dataset, read: ReadSplit, split: str, scheme: str) -> dict[str, Any] | None:
    """Logs and returns what was malformed in a split (None when nothing was)."""
    if not read.malformed:
        return None
    rows = read.malformed_rows or []
    shown = "; ".join(where(ds, row, split) for row in rows[:SHOWN]) + (f"; and {len(rows) - SHOWN} more"
                                                                        if len(rows) > SHOWN else "")
    logger.warning("%d malformed %s tags in %d sentences of split '%s' (an I- tag that continues no entity%s): read "
                   "as the start of an entity, as seqeval and conlleval read them. Check data.tag_scheme. %s",
                   read.malformed, scheme, len(rows), split, ", an entity without E-" if scheme == "IOBES" else "",
                   shown)
    return {"tags": read.malformed, "sentences": len(rows), "first": [where(ds, r, split) for r in rows[:SHOWN]]}


def tag_space(train: Dataset, read: ReadSplit, recipe: Any) -> LabelSpace:
    """The tag set: the dataset's names in their order where they are IOB2, else O, B-/I- of each type."""
    data = recipe.data
    names = source_names(train, data.columns.tags, data.label_names)
    seen = sorted({t for sentence in read.tags for t in sentence})
    if names is not None and data.tag_scheme == "IOB2" and all(is_iob2_tag(n) for n in names):
        ordered = complete(names)
    else:
        types = entity_types(seen + [t for n in (names or []) for t in to_iob2([n], data.tag_scheme).tags])
        ordered = tag_names(types)
    if len(ordered) < 2 or not entity_types(seen):
        raise DataError(f"data.columns.tags: split '{data.splits.train}' tags no entity (every tag is O): there is "
                        "nothing to learn")
    return LabelSpace(names=tuple(ordered), values=tuple(ordered))


def check_known(ds: Dataset, read: ReadSplit, space: LabelSpace, split: str, known_from: str) -> None:
    """Every tag of the split is in the tag set; else a DataError naming the first one that is not."""
    known = set(space.names)
    for row, sentence in enumerate(read.tags):
        unknown = next((t for t in sentence if t not in known), None)
        if unknown is not None:
            raise DataError(f"data.columns.tags: {where(ds, row, split)} has tag '{unknown}' that is not in "
                            f"{known_from}: {', '.join(space.names)}")


def encode(ds: Dataset, read: ReadSplit, space: LabelSpace, tags: str) -> Dataset:
    """The tags as ids in a `labels` column (a ClassLabel sequence carrying the names); the tags column goes."""
    ids = space.label2id
    ds = ds.remove_columns([tags])
    labels = [[ids[t] for t in sentence] for sentence in read.tags]
    return ds.add_column(LABEL_COLUMN, labels, feature=List(ClassLabel(names=list(space.names))))


class TagLabeling:
    """The data stage's labeling for token classification (data/__init__.build_datasets applies it)."""

    stratify = False  # validation is carved by sentence, not stratified

    def prepare(self, splits: dict[str, Dataset], recipe: Any, names: dict[str, str]
                ) -> tuple[dict[str, Dataset], LabelSpace, dict[str, Any]]:
        data = recipe.data
        read = {role: read_tags(ds, recipe, names[role]) for role, ds in splits.items()}
        malformed = {role: found for role, ds in splits.items()
                     if (found := report_malformed(ds, read[role], names[role], data.tag_scheme))}
        space = tag_space(splits["train"], read["train"], recipe)
        for role, ds in splits.items():
            if role != "train":
                check_known(ds, read[role], space, names[role], "the training split's tags")
        encoded = {role: encode(ds, read[role], space, data.columns.tags) for role, ds in splits.items()}
        return encoded, space, {"tag_scheme": data.tag_scheme, "malformed": malformed}

    def prepare_eval(self, ds: Dataset, recipe: Any, split: str, model_labels: list[str]) -> tuple[Dataset, LabelSpace]:
        read = read_tags(ds, recipe, split)
        report_malformed(ds, read, split, recipe.data.tag_scheme)
        space = LabelSpace(names=tuple(model_labels), values=tuple(model_labels))
        check_known(ds, read, space, split, "the model's tags")
        return encode(ds, read, space, recipe.data.columns.tags), space

    def preflight(self, splits: dict[str, Dataset], recipe: Any, names: dict[str, str], complete: bool
                  ) -> list[str] | None:
        """The tag set when the splits are complete (every tag checked), else None."""
        if not complete:
            for role, ds in splits.items():
                read_tags(ds, recipe, names[role])  # the sampled rows are checked all the same
            return None
        return list(self.prepare(splits, recipe, names)[1].names)

    def counts(self, train: Dataset, num_labels: int) -> Any:
        """Training words per tag (the tags the loss sees)."""
        import numpy as np

        flat = [t for sentence in train[LABEL_COLUMN] for t in sentence if t >= 0]
        return np.bincount(np.asarray(flat, dtype=np.int64), minlength=num_labels)
