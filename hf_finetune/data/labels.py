"""The label space: which classes exist, their names in order, and the mapping to ids.

Names come from a `ClassLabel` feature when the dataset has one (its order is kept), from
`data.label_names` for integer labels, and otherwise from the sorted distinct values of the
training split (numeric order for integers). Every other split may only use labels seen in train.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow.compute as pc
from datasets import ClassLabel, Dataset, Value

from hf_finetune.errors import DataError, show

LABEL_COLUMN = "labels"  # the column the model and the Trainer see


@dataclass(frozen=True)
class LabelSpace:
    """Class names in id order; `values` are the raw dataset values that map to each id."""

    names: tuple[str, ...]
    values: tuple[object, ...]
    # transformers' config.problem_type: which loss the model's own head applies (its sequence and
    # image classification heads read it: cross-entropy, BCE with logits over label sets, MSE on scores)
    problem_type: str = "single_label_classification"

    @property
    def num_labels(self) -> int:
        return len(self.names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def value_to_id(self) -> dict[object, int]:
        return {value: i for i, value in enumerate(self.values)}


def row_hint(ds: Dataset, row: int) -> str:
    if "__source_file__" in ds.column_names:
        return f"row {row} ({ds[row]['__source_file__']})"
    return f"row {row}"


def null_rows(ds: Dataset, column: str) -> list[int]:
    values = ds.with_format("arrow")[column]
    mask = pc.is_null(values)
    if not pc.any(mask).as_py():
        return []
    return pc.indices_nonzero(mask).to_pylist()


def blank_rows(ds: Dataset, column: str) -> list[int]:
    """Rows of a text column that are null, empty or whitespace only (nothing for the tokenizer to read)."""
    values = ds.with_format("arrow")[column]
    mask = pc.or_kleene(pc.is_null(values), pc.equal(pc.utf8_trim_whitespace(values), ""))
    mask = pc.fill_null(mask, True)
    if not pc.any(mask).as_py():
        return []
    return pc.indices_nonzero(mask).to_pylist()


def require_labels(ds: Dataset, column: str, subject: str) -> None:
    """Every row has a label; else a DataError naming how many lack one and the first of them."""
    missing = null_rows(ds, column)
    if missing:
        raise DataError(
            f"data.columns.label: {subject} has {len(missing)} rows without a label, "
            f"first at {row_hint(ds, missing[0])}"
        )


def build_label_space(
    splits: dict[str, Dataset], train_split: str, column: str, label_names: list[str] | None
) -> LabelSpace:
    """Derives the label space from the training split and checks every split against it.

    Args:
        splits: role ("train", "validation", "test") -> dataset, all holding `column`.
        train_split: the training split's name in the source dataset, for messages.
        column: the label column.
        label_names: `data.label_names`, names for integer labels 0..K-1 (or the order of string labels).

    Raises:
        DataError: naming the split, row or label that is wrong.
    """
    train = splits["train"]
    feature = train.features[column]
    require_labels(train, column, f"column '{column}' of split '{train_split}'")
    for role, ds in splits.items():
        _check_one_kind(ds, column, train_split if role == "train" else role)

    present = train.unique(column)
    if len(present) < 2:
        only = present[0] if present else "nothing"
        if isinstance(feature, ClassLabel) and present and 0 <= only < len(feature.names):
            only = feature.names[only]
        raise DataError(
            f"data.columns.label: split '{train_split}' has a single class ('{only}'); "
            "classification needs at least two"
        )
    if isinstance(feature, ClassLabel):
        space = _from_class_label(train, column, feature, label_names)
    elif isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        space = _from_values(sorted(train.unique(column)), label_names, kind="string")
    elif isinstance(feature, Value) and feature.dtype == "bool":
        space = _from_values(sorted(train.unique(column)), label_names, kind="bool")
    elif isinstance(feature, Value) and (feature.dtype.startswith(("int", "uint"))):
        space = _from_values(sorted(train.unique(column)), label_names, kind="int")
    elif isinstance(feature, Value) and feature.dtype.startswith("float"):
        values = train.unique(column)
        if all(float(v).is_integer() for v in values):
            space = _from_values(sorted(int(v) for v in values), label_names, kind="int")
        else:
            example = next(v for v in values if not float(v).is_integer())
            raise DataError(
                f"data.columns.label: column '{column}' holds fractional numbers (e.g. {example}); "
                "classification needs string or integer labels (regression is not supported)"
            )
    else:
        raise DataError(
            f"data.columns.label: column '{column}' holds {feature!r}; labels must be strings or integers"
        )

    for role, ds in splits.items():
        if role != "train":
            check_split_labels(ds, role, column, space)
    return space


def _check_one_kind(ds: Dataset, column: str, split: str) -> None:
    """Labels are all names or all integers: a mix (1 and 'neg', or '1' and 'neg') is a data error.

    Also refuses values that are neither (lists: multi-label data; mappings), naming the first.
    """
    feature = ds.features[column]
    if isinstance(feature, ClassLabel) or (isinstance(feature, Value) and feature.dtype not in (
            "string", "large_string")):
        return  # one Arrow type: cannot mix
    # Strings: their distinct values (few); anything else (JSON-typed, lists): the values themselves.
    values = ds.unique(column) if isinstance(feature, Value) else ds[column]
    kinds: dict[str, list[str]] = {"integers": [], "names": []}
    for value in values:
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, (int, float)) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
            kind = "integers"
        elif isinstance(value, str):
            kind = "names"
        else:
            raise DataError(f"data.columns.label: column '{column}' of split '{split}' holds {show(value)} "
                            f"({type(value).__name__}); labels must be strings or integers"
                            + (" (multi-label classification is not supported)" if isinstance(value, list) else ""))
        if len(kinds[kind]) < 3 and str(value) not in kinds[kind]:
            kinds[kind].append(str(value))
    if kinds["integers"] and kinds["names"]:
        raise DataError(
            f"data.columns.label: column '{column}' of split '{split}' mixes integers "
            f"({', '.join(kinds['integers'])}) and names ({', '.join(kinds['names'])}); use one kind "
            "(names, or integers 0..K-1 with data.label_names)")


def _from_class_label(
    train: Dataset, column: str, feature: ClassLabel, label_names: list[str] | None
) -> LabelSpace:
    names = list(feature.names)
    if label_names is not None:
        if len(label_names) != len(names):
            raise DataError(
                f"data.label_names: gives {len(label_names)} names but column '{column}' has "
                f"{len(names)} classes ({', '.join(names)})"
            )
        names = list(label_names)
    negatives = [v for v in train.unique(column) if v < 0]
    if negatives:
        raise DataError(
            f"data.columns.label: column '{column}' of the training split holds {negatives[0]} "
            "(no label; hidden test labels?)"
        )
    # values are the ClassLabel's own names, so other splits are matched by name, not position.
    return LabelSpace(names=tuple(names), values=tuple(feature.names))


def _from_values(values: list, label_names: list[str] | None, kind: str) -> LabelSpace:
    if label_names is None:
        return LabelSpace(names=tuple(str(v) for v in values), values=tuple(values))
    if kind == "int":
        outside = [v for v in values if not 0 <= v < len(label_names)]
        if outside:
            raise DataError(
                f"data.label_names: names integer labels 0..{len(label_names) - 1}, "
                f"but the training split holds {outside[0]}"
            )
        return LabelSpace(names=tuple(label_names), values=tuple(range(len(label_names))))
    # String labels: label_names fixes their order and must name every one.
    unknown = [str(v) for v in values if str(v) not in label_names]
    if unknown:
        raise DataError(f"data.label_names: does not list the training label '{unknown[0]}'")
    by_name = {str(v): v for v in values}
    return LabelSpace(
        names=tuple(label_names), values=tuple(by_name.get(n, n) for n in label_names)
    )


def model_label_space(names: list[str], feature: object, label_names: list[str] | None = None) -> LabelSpace:
    """A trained model's label space (its id2label names, in id order), matched to new data's label column.

    Rows are matched by class name. Integer labels are matched to integer class names as training
    matched them (labels 1, 2, 5 were ids 0, 1, 2), and are class ids when the names are not integers
    (training used `data.label_names`). A ClassLabel whose names training replaced with
    `data.label_names` is matched by position, as training matched it.

    Args:
        names: the model's class names in id order.
        feature: the `datasets` feature of the new data's label column.
        label_names: the run's `data.label_names`, if it had them.
    """
    labels = tuple(names)
    if isinstance(feature, ClassLabel):
        renamed = label_names is not None and len(feature.names) == len(names) and not set(feature.names) <= set(names)
        return LabelSpace(labels, tuple(feature.names) if renamed else labels)
    if isinstance(feature, Value) and feature.dtype == "bool":
        return LabelSpace(labels, tuple(name == "True" for name in names))
    if isinstance(feature, Value) and feature.dtype.startswith(("int", "uint", "float")):
        if all(name.lstrip("-").isdigit() for name in names):
            return LabelSpace(labels, tuple(int(name) for name in names))
        return LabelSpace(labels, tuple(range(len(names))))
    return LabelSpace(labels, labels)


def check_split_labels(ds: Dataset, role: str, column: str, space: LabelSpace,
                       known_from: str = "the training split", listed_as: str = "training labels") -> None:
    """Every label of `ds` must be in `space`; raises a DataError naming the first one that is not."""
    feature = ds.features.get(column)
    if feature is None:
        return
    require_labels(ds, column, f"split '{role}'")
    values = ds.unique(column)
    if isinstance(feature, ClassLabel):
        hidden = [v for v in values if v < 0]
        if hidden:
            raise DataError(
                f"data.columns.label: split '{role}' has labels {hidden[0]} (no label): its labels are "
                f"hidden; choose another split for data.splits.{role} or set it to null"
            )
        values = [feature.names[v] for v in values]
        known = set(space.values)
    else:
        known = set(space.values) | set(space.names)
        if feature.dtype.startswith("float"):
            values = [int(v) if float(v).is_integer() else v for v in values]
    unknown = sorted((v for v in values if v not in known), key=str)
    if unknown:
        raise DataError(
            f"data.columns.label: split '{role}' has label '{unknown[0]}' that does not appear in "
            f"{known_from}" + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
            + f"; {listed_as}: {', '.join(space.names)}"
        )


def label_mapping(feature: object, space: LabelSpace) -> dict[object, int]:
    """Raw label value -> class id, for a label column of this feature (ClassLabel ids by their names)."""
    if isinstance(feature, ClassLabel):
        by_name = space.value_to_id()
        mapping = {i: by_name[name] for i, name in enumerate(feature.names) if name in by_name}
    else:
        mapping = {}
        for value, idx in space.value_to_id().items():
            mapping[value] = idx
            mapping[str(value)] = idx
        if feature.dtype.startswith("float"):
            mapping.update({float(k): v for k, v in mapping.items() if isinstance(k, int)})
    return mapping


def encode_labels(ds: Dataset, column: str, space: LabelSpace) -> Dataset:
    """Adds the integer `labels` column (a ClassLabel carrying the names) and drops the raw column."""
    mapping = label_mapping(ds.features[column], space)

    def encode(batch):
        return {LABEL_COLUMN: [mapping[v] for v in batch[column]]}

    drop = [column] if column != LABEL_COLUMN else None
    encoded = ds.map(encode, batched=True, desc="encoding labels", remove_columns=drop)
    return encoded.cast_column(LABEL_COLUMN, ClassLabel(names=list(space.names)))


class ClassLabeling:
    """Single-label classification's labeling: one class per row (the data stage's default).

    A task's labeling turns the label columns of the raw splits into the `labels` column and the label
    space; token classification brings its own (tasks/tag_labels.py).
    """

    stratify = True  # validation is carved stratified by class where every class allows it

    def prepare(self, splits: dict[str, Dataset], recipe: object, names: dict[str, str]
                ) -> tuple[dict[str, Dataset], LabelSpace, dict[str, object]]:
        """(splits with `labels`, the label space from the training split, notes for the run record)."""
        data = recipe.data  # type: ignore[attr-defined]
        space = build_label_space(splits, data.splits.train, data.columns.label, data.label_names)
        return {role: encode_labels(ds, data.columns.label, space) for role, ds in splits.items()}, space, {}

    def prepare_eval(self, ds: Dataset, recipe: object, split: str, model_labels: list[str]
                     ) -> tuple[Dataset, LabelSpace]:
        """One split of new data labelled in a finished model's label space."""
        data = recipe.data  # type: ignore[attr-defined]
        column = data.columns.label
        space = model_label_space(model_labels, ds.features[column], data.label_names)
        check_split_labels(ds, split, column, space, known_from="the model's labels", listed_as="the model's labels")
        return encode_labels(ds, column, space), space

    def preflight(self, splits: dict[str, Dataset], recipe: object, names: dict[str, str], complete: bool
                  ) -> list[str] | None:
        """The class names when they can be known before training (complete data, or a ClassLabel)."""
        data = recipe.data  # type: ignore[attr-defined]
        if complete or isinstance(splits["train"].features[data.columns.label], ClassLabel):
            return list(build_label_space(splits, data.splits.train, data.columns.label, data.label_names).names)
        return None

    def counts(self, train: Dataset, num_labels: int) -> object:
        """Training rows per class."""
        import numpy as np

        return np.bincount(np.asarray(train[LABEL_COLUMN]), minlength=num_labels)
