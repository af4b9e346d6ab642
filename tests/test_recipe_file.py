"""The hardened recipe reader: every bad file is one RecipeError naming the file and the key, never a hang."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import yaml

from hf_finetune.errors import Problem, RecipeError
from hf_finetune.recipe import file as recipe_file
from hf_finetune.recipe.file import read_recipe_file

LOADERS = [yaml.SafeLoader] + ([yaml.CSafeLoader] if hasattr(yaml, "CSafeLoader") else [])


@pytest.fixture(autouse=True, params=LOADERS, ids=lambda loader: loader.__name__)
def loader(request, monkeypatch):
    """Every test runs with the pure-Python and the libyaml loader: the checks must not depend on it."""
    monkeypatch.setattr(recipe_file, "_LOADER", request.param)
    return request.param


def write(tmp_path: Path, content: str | bytes, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def refused(path: Path) -> tuple[Problem, str]:
    """The single problem and the printed message; only RecipeError may come out, naming the file."""
    with pytest.raises(RecipeError) as info:
        read_recipe_file(path)
    exc = info.value
    assert type(exc) is RecipeError
    assert len(exc.problems) == 1 and exc.source == str(path)
    assert path.name in str(exc)
    return exc.problems[0], str(exc)


def bomb(indent: str = "") -> str:
    """Billion laughs: nine anchors, each a list repeating the previous one nine times (9**9 values)."""
    lines = [f'{indent}a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{indent}{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    return "\n".join(lines) + "\n"


RECIPE = """\
# A typical recipe, padded to about 100 lines.
task: text-classification
model:
  name: bert-base-uncased
  trust_remote_code: false
data:
  files:
    train: data/train.csv
    validation: data/validation.csv
  columns:
    text: text
    label: label
metrics: [accuracy, precision, recall, f1]
training:
  learning_rate: 2.0e-5
  num_train_epochs: 3
  per_device_train_batch_size: 16
output:
  dir: outputs/run
""" + "".join(f"  # note {i}\nextra_{i}:\n  value: {i}\n  name: item-{i}\n" for i in range(20))


# --- valid files ---------------------------------------------------------------------------------------

def test_valid_recipe_reads_to_its_mapping(tmp_path):
    raw = read_recipe_file(write(tmp_path, RECIPE))
    assert raw["model"] == {"name": "bert-base-uncased", "trust_remote_code": False}
    assert raw["training"]["learning_rate"] == 2e-5 and raw["extra_19"] == {"value": 19, "name": "item-19"}


def test_anchors_aliases_and_merges_still_work(tmp_path):
    text = """\
defaults: &defaults
  learning_rate: 2.0e-5
  num_train_epochs: 3
logging: &logging {logging_steps: 10}
training:
  <<: *defaults
  num_train_epochs: 5
eval:
  <<: [*logging, *defaults]
metrics: &m [accuracy, f1]
report:
  metrics: *m
"""
    raw = read_recipe_file(write(tmp_path, text))
    assert raw["training"] == {"learning_rate": 2e-5, "num_train_epochs": 5}
    assert raw["eval"] == {"logging_steps": 10, "learning_rate": 2e-5, "num_train_epochs": 3}
    assert raw["report"] == {"metrics": ["accuracy", "f1"]}


@pytest.mark.parametrize("content", ["", "# only a comment\n", "~\n", "\ufeff"])
def test_empty_file_reads_as_empty_mapping(tmp_path, content):
    assert read_recipe_file(write(tmp_path, content)) == {}


def test_non_string_top_level_keys_pass_through(tmp_path):
    assert read_recipe_file(write(tmp_path, "1: one\ntask: x\n'1': quoted\n")) == {1: "one", "task": "x", "1": "quoted"}


def test_utf8_bom_is_accepted(tmp_path):
    assert read_recipe_file(write(tmp_path, "\ufefftask: café\n".encode())) == {"task": "café"}


def test_typical_recipe_is_parsed_once_with_the_chosen_loader(tmp_path, monkeypatch, loader):
    """What keeps reading fast: one event pass and one compose, with the loader in use (libyaml where
    installed), and no second pass with the pure-Python loader (which costs about 10x)."""
    path = write(tmp_path, RECIPE)
    assert RECIPE.count("\n") >= 95
    parsed, composed = calls(monkeypatch, yaml, "parse"), calls(monkeypatch, yaml, "compose")
    assert read_recipe_file(path)["task"] == "text-classification"
    assert [kwargs["Loader"] for _, kwargs in parsed + composed] == [loader, loader]


def calls(monkeypatch, owner, name: str) -> list[tuple[tuple, dict]]:
    """Records the calls of `owner.name` (still calling it), in the order made."""
    seen: list[tuple[tuple, dict]] = []
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        seen.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return seen


def never(monkeypatch, owner, name: str) -> None:
    """Makes `owner.name` fail the test if it is called."""

    def called(*args, **kwargs):
        raise AssertionError(f"{name} was called")

    monkeypatch.setattr(owner, name, called)


# --- the file ------------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    problem, _ = refused(path)
    assert problem == Problem("", f"recipe file not found: {path}")


def test_directory(tmp_path):
    path = tmp_path / "recipes.yaml"
    path.mkdir()
    problem, _ = refused(path)
    assert problem == Problem("", "is a directory, not a recipe file")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a FIFO")
def test_fifo_is_refused_without_blocking(tmp_path):
    path = tmp_path / "pipe.yaml"
    os.mkfifo(path)
    problem, _ = refused(path)
    assert problem.path == "" and "not a regular file" in problem.message


def test_unreadable_file(tmp_path, monkeypatch):
    path = write(tmp_path, "task: x\n")
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything: make the open fail as it would for a user

        def denied(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(recipe_file, "open", denied, raising=False)
    try:
        problem, _ = refused(path)
    finally:
        path.chmod(0o644)
    assert problem.path == "" and "permission denied" in problem.message


def test_huge_file_is_refused_before_parsing(tmp_path, monkeypatch):
    path = write(tmp_path, "# padding\n" * 120_000)  # 1.2 MB
    never(monkeypatch, recipe_file, "_decode")
    never(monkeypatch, recipe_file, "_load")
    problem, _ = refused(path)
    assert problem.path == "" and problem.message.startswith("recipe file is 1.2 MB; recipes are small YAML files")


def test_not_utf8_names_the_byte_and_line_without_echoing_it(tmp_path):
    data = "task: x\nmodel:\n  name: café\n".encode("latin-1")
    path = write(tmp_path, data)
    problem, printed = refused(path)
    offset = data.index(b"\xe9")
    assert problem.path == ""
    assert "not UTF-8" in problem.message and f"byte offset {offset}" in problem.message
    assert "line 3, column 12" in problem.message
    assert "\xe9" not in printed and "\\xe9" not in printed and "caf" not in printed


def test_binary_junk(tmp_path):
    junk = b"\x89PNG\r\n\x1a\n" + random.Random(0).randbytes(2000)
    problem, printed = refused(write(tmp_path, junk))
    assert problem.path == "" and "binary file" in problem.message and "NUL byte at byte offset" in problem.message
    assert "PNG" not in printed


def test_utf16_is_named(tmp_path):
    problem, _ = refused(write(tmp_path, "task: x\n".encode("utf-16")))
    assert problem.path == "" and "UTF-16" in problem.message and "UTF-8" in problem.message


def test_control_character(tmp_path):
    problem, _ = refused(write(tmp_path, "task: x\nmodel: a\x07b\n"))
    assert problem.path == "" and "control character U+0007 (line 2, column 9)" in problem.message


# --- the YAML ------------------------------------------------------------------------------------------

def test_invalid_yaml_keeps_todays_wording(tmp_path):
    problem, _ = refused(write(tmp_path, "task: x\nmetrics: [accuracy\n"))
    assert problem.path == "" and problem.message.startswith("not valid YAML (line 3, column 1): ")


def test_undefined_alias(tmp_path):
    problem, _ = refused(write(tmp_path, "task: *nope\n"))
    assert problem == Problem("", "not valid YAML (line 1, column 7): found undefined alias 'nope'")


def test_anchor_defined_twice(tmp_path):
    problem, _ = refused(write(tmp_path, "a: &x [1]\nb: &x [2]\n"))
    assert problem == Problem("", "not valid YAML (line 2, column 4): anchor &x is defined twice (first on line 1); "
                                  "give the second one another name")


def test_two_documents(tmp_path):
    problem, _ = refused(write(tmp_path, "task: x\n---\ntask: y\n"))
    assert problem.message.startswith("not valid YAML (line 2, column 1): ")


def test_top_level_must_be_a_mapping(tmp_path):
    problem, _ = refused(write(tmp_path, "- task: x\n"))
    assert problem == Problem("", "a recipe must be a YAML mapping, got list")


def test_duplicate_key_names_path_and_both_lines(tmp_path):
    text = "task: x\ntraining:\n  num_train_epochs: 3\n  learning_rate: 1.0e-4\n  a: 1\n  b: 2\n  c: 3\n  d: 4\n" \
           "  learning_rate: 2.0e-5\n"
    problem, _ = refused(write(tmp_path, text))
    assert problem == Problem("training.learning_rate", "duplicate key (lines 4 and 9)")


def test_duplicate_key_at_top_level_and_inside_a_list(tmp_path):
    problem, _ = refused(write(tmp_path, "task: x\nmodel: {name: a}\ntask: y\n"))
    assert problem == Problem("task", "duplicate key (lines 1 and 3)")
    problem, _ = refused(write(tmp_path, "callbacks:\n  - name: a\n  - {name: b, patience: 1, name: c}\n"))
    assert problem == Problem("callbacks[1].name", "duplicate key (lines 3 and 3)")


def test_keys_that_collide_as_values_are_duplicates(tmp_path):
    # YAML 1.1 reads both as True, and the dict would silently keep one.
    problem, _ = refused(write(tmp_path, "flags:\n  yes: 1\n  true: 2\n"))
    assert problem == Problem("flags.true", "duplicate key (lines 2 and 3)")


def test_a_merged_key_overridden_is_not_a_duplicate_but_two_merge_keys_are(tmp_path):
    assert read_recipe_file(write(tmp_path, "a: &a {x: 1}\nb:\n  <<: *a\n  x: 2\n"))["b"] == {"x": 2}
    problem, _ = refused(write(tmp_path, "a: &a {x: 1}\nc: &c {y: 1}\nb:\n  <<: *a\n  <<: *c\n"))
    assert problem.path == "b.<<" and "duplicate merge key (lines 4 and 5)" in problem.message


@pytest.mark.parametrize("text, path", [("a: &x [*x]\n", "a[0]"),
                                        ("task: x\ntraining: &t\n  nested: {loop: *t}\n", "training.nested.loop")])
def test_recursive_alias(tmp_path, text, path):
    problem, _ = refused(write(tmp_path, text))
    assert problem.path == path and "refers to a node that contains it" in problem.message
    assert "recursive" in problem.message


@pytest.mark.parametrize("text, path", [(bomb(), "f"), ("task: x\ntraining:\n" + bomb("  "), "training.f")],
                         ids=["top-level", "under-training"])
def test_alias_bomb_is_refused_without_expanding_it(tmp_path, monkeypatch, text, path):
    path_ = write(tmp_path, text)
    visits = calls(monkeypatch, recipe_file._GraphCheck, "visit")
    never(monkeypatch, recipe_file, "_construct")  # refused before any value is built
    problem, _ = refused(path_)
    assert problem.path == path and "expand this to more than 100,000 values" in problem.message
    # Each node is measured once (memoised): the 9 lists of 9 items and the top, not the 9**9 expansion.
    assert len(visits) < 200


def test_too_many_aliases(tmp_path):
    problem, _ = refused(write(tmp_path, "a: &a 1\nb: [" + ", ".join(["*a"] * 1001) + "]\n"))
    assert problem.path == "b[1000]" and "more than 1,000 aliases" in problem.message


def test_many_plain_values_without_aliases(tmp_path, monkeypatch):
    monkeypatch.setattr(recipe_file, "MAX_VALUES", 1_000)  # the same check, without parsing 100,000 values
    problem, _ = refused(write(tmp_path, "values: [" + ",".join(["1"] * 1_000) + "]\n"))
    assert problem.path == "values" and "has more than 1,000 values" in problem.message


def test_deep_flow_nesting(tmp_path):
    problem, _ = refused(write(tmp_path, "data: " + "[" * 10_000 + "]" * 10_000 + "\n"))
    # The top mapping is level 1 and `data` level 2: the 51st level is 49 lists further in.
    assert problem.path == "data" + "[0]" * 49 and "nested more than 50 levels deep" in problem.message


def test_deep_block_mapping(tmp_path):
    problem, _ = refused(write(tmp_path, "".join(" " * i + f"k{i}:\n" for i in range(500))))
    assert problem.path == ".".join(f"k{i}" for i in range(50))
    assert "nested more than 50 levels deep" in problem.message


def test_deep_nesting_made_by_aliases(tmp_path):
    text = "a: &a " + "[" * 30 + "]" * 30 + "\nb: [" + "[" * 25 + "*a" + "]" * 25 + "]\n"
    problem, _ = refused(write(tmp_path, text))
    assert problem.path == "b" + "[0]" * 5 and "more than 50 levels deep once aliases are expanded" in problem.message


def test_no_recursion_error_escapes_even_past_the_depth_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(recipe_file, "MAX_DEPTH", 10**6)
    problem, _ = refused(write(tmp_path, "a: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n"))
    assert problem.path == "" and "nested too deeply to read" in problem.message


class _LimitedLoader(yaml.SafeLoader):
    """A loader that, like libyaml 0.2.6 (PyYAML 6.0.4), stops at a nesting limit of its own while scanning
    ahead: a ScannerError with no key path, before any event reaches the reader's own depth check."""

    def fetch_flow_collection_start(self, token_class):
        if self.flow_level >= 10:
            raise yaml.scanner.ScannerError("while increasing flow level", self.get_mark(),
                                            "exceeded maximum nesting depth", self.get_mark())
        super().fetch_flow_collection_start(token_class)


@pytest.mark.parametrize("depth", [60, 10_000])
def test_a_yaml_library_limit_gives_the_readers_own_message(tmp_path, monkeypatch, depth):
    monkeypatch.setattr(recipe_file, "_LOADER", _LimitedLoader)
    problem, printed = refused(write(tmp_path, "data: " + "[" * depth + "]" * depth + "\n"))
    assert problem.path == "data" + "[0]" * 49 and "nested more than 50 levels deep" in problem.message
    assert "exceeded maximum nesting depth" not in printed
    # Within both limits nothing changes, and a syntax error is still the loader's own message.
    assert read_recipe_file(write(tmp_path, "data: " + "[" * 9 + "]" * 9 + "\n"))["data"] == [[[[[[[[[]]]]]]]]]
    problem, _ = refused(write(tmp_path, "data: [1, 2\n"))
    assert problem.message.startswith("not valid YAML (line ")


def test_value_yaml_cannot_build_is_located(tmp_path):
    problem, _ = refused(write(tmp_path, "task: x\nrun:\n  date: 2024-02-30\n"))
    assert problem.path == "run.date" and "cannot read '2024-02-30' as a timestamp (line 3)" in problem.message


def test_mutated_recipes_give_a_mapping_or_a_recipe_error(tmp_path):
    rng = random.Random(1)
    data = RECIPE[:600].encode()
    for _ in range(150):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.choice(b"[]{}&*!:-,'\"\n #|>\xff\x00x")
        path = write(tmp_path, bytes(mutated))
        try:
            assert isinstance(read_recipe_file(path), dict)
        except RecipeError as exc:
            assert path.name in str(exc)


def test_an_override_value_has_the_same_bounds_as_a_file(monkeypatch):
    from hf_finetune.recipe import apply_overrides

    laughs = "{" + ", ".join(
        [f"a0: &a0 [{', '.join(['x'] * 9)}]"]
        + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]) + "}"
    visits = calls(monkeypatch, recipe_file._GraphCheck, "visit")
    never(monkeypatch, recipe_file, "_construct")
    with pytest.raises(RecipeError) as caught:
        apply_overrides({}, [f"training.lr_scheduler_kwargs={laughs}"])
    assert len(visits) < 200  # measured, never expanded
    assert "training.lr_scheduler_kwargs" in str(caught.value) and "100,000 values" in str(caught.value)
    # Text that is not YAML stays a literal string, as before.
    assert apply_overrides({}, ["card.license=a: b: c"])["card"]["license"] == "a: b: c"
