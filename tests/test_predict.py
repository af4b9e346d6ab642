"""`hf-finetune predict`: the same labels and scores as `transformers.pipeline()`, from strings, files or folders."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hf_finetune.cli import main
from hf_finetune.data.images import decode_image
from hf_finetune.finished.predict import load_predictor, predict, read_inputs

TEXTS = ["the movie was really great", "the plot was dull", "wonderful", "the film was quite boring and bad",
         "the acting was superb and the plot was moving", "terrible"]


def assert_same(ours, theirs):
    assert len(ours) == len(theirs)
    for mine, other in zip(ours, theirs, strict=True):
        assert [label for label, _ in mine] == [a["label"] for a in other]
        np.testing.assert_allclose([score for _, score in mine], [a["score"] for a in other], atol=1e-5)


def test_text_predictions_equal_the_pipeline(text_run):
    from transformers import pipeline

    predictor = load_predictor(text_run)
    ours = predict(predictor, read_inputs(predictor, TEXTS), batch_size=4, top_k=2)  # padded batches
    # truncation=True: pipeline() then cuts inputs at the max_length the run trained with (saved with
    # the tokenizer), as predict does.
    theirs = pipeline("text-classification", model=str(text_run))(TEXTS, top_k=2, truncation=True)
    assert predictor.max_length < max(len(predictor.tokenizer(t)["input_ids"]) for t in TEXTS)
    assert_same(ours, theirs)
    assert {top[0][0] for top in ours} == {"neg", "pos"}  # the model tells the classes apart
    for top in ours:
        assert top[0][1] >= top[1][1] and sum(score for _, score in top) == pytest.approx(1.0, abs=1e-5)


def test_predict_cli_reads_strings_and_files_and_writes_jsonl_and_csv(text_run, tmp_path, capsys):
    (tmp_path / "one.txt").write_text("the movie was really great\n\nthe plot was dull\n")
    with open(tmp_path / "reviews.csv", "w", newline="") as f:
        csv.writer(f).writerows([["id", "text"], [1, "wonderful"], [2, "terrible"]])
    (tmp_path / "more.jsonl").write_text("\n".join(json.dumps({"review": t}) for t in TEXTS[3:5]) + "\n")

    args = ["predict", str(text_run), "the film was awful", str(tmp_path / "one.txt"), str(tmp_path / "reviews.csv"),
            "--batch-size", "2", "--top-k", "2", "--output", str(tmp_path / "p.jsonl")]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    inputs = ["the film was awful", "the movie was really great", "the plot was dull", "wonderful", "terrible"]
    assert [line.split("  ", 1)[1] for line in lines] == inputs
    records = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["input"] for r in records] == inputs
    for line, record in zip(lines, records, strict=True):
        assert line.startswith(f"{record['label']} ({record['score']:.3f}), ")
        assert [t["label"] for t in record["top_k"]][0] == record["label"] and len(record["top_k"]) == 2

    assert main(["predict", str(text_run), str(tmp_path / "more.jsonl"), "--column", "review",
                 "--output", str(tmp_path / "p.csv")]) == 0
    capsys.readouterr()
    with open(tmp_path / "p.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["input"] for r in rows] == TEXTS[3:5] and list(rows[0]) == ["input", "label", "score"]
    predictor = load_predictor(text_run)
    expected = predict(predictor, read_inputs(predictor, TEXTS[3:5]))
    assert [(r["label"], pytest.approx(float(r["score"]), abs=1e-6)) for r in rows] == [top[0] for top in expected]


def test_predict_reads_standard_input(text_run, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("wonderful\n\nterrible\n"))
    assert main(["predict", str(text_run), "-"]) == 0
    assert [line.split("  ", 1)[1] for line in capsys.readouterr().out.splitlines()] == ["wonderful", "terrible"]


def write_images(folder: Path) -> list[Path]:
    """RGB and grayscale images of several sizes, some in a sub-folder, plus a file that is not an image."""
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(40, 48), (32, 32), (64, 20), (50, 50), (33, 70)]):
        sub = folder / ("nested" if i % 2 else "")
        sub.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        if i == 3:
            image = image.convert("L")
        path = sub / f"img_{i}.{'jpg' if i == 4 else 'png'}"
        image.save(path)
        paths.append(path)
    (folder / "notes.md").write_text("not an image")
    return sorted(paths)


def test_image_predictions_equal_the_pipeline(vision_run, tmp_path, capsys):
    from transformers import pipeline

    paths = write_images(tmp_path / "images")
    assert main(["predict", str(vision_run), str(tmp_path / "images"), "--top-k", "3", "--batch-size", "2",
                 "--output", str(tmp_path / "p.jsonl")]) == 0
    records = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["input"] for r in records] == [str(p) for p in paths]  # every image, recursively, and nothing else
    theirs = pipeline("image-classification", model=str(vision_run))([str(p) for p in paths], top_k=3)
    assert_same([[(t["label"], t["score"]) for t in r["top_k"]] for r in records], theirs)
    assert len(capsys.readouterr().out.splitlines()) == len(paths)


def test_transparent_images_are_read_as_in_training(vision_run, tmp_path):
    """RGBA goes on white as training saw it (pipeline() would drop alpha); same scores as pipeline on that RGB."""
    from transformers import pipeline

    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 20, 40))
    path = tmp_path / "transparent.png"
    rgba.save(path)
    predictor = load_predictor(vision_run)
    ours = predict(predictor, read_inputs(predictor, [str(path)]), top_k=3)
    theirs = pipeline("image-classification", model=str(vision_run))([decode_image(str(path))], top_k=3)
    assert_same(ours, theirs)


def test_image_list_files_resolve_paths_next_to_them(vision_run, tmp_path, capsys):
    paths = write_images(tmp_path / "images")
    with open(tmp_path / "images" / "list.csv", "w", newline="") as f:
        csv.writer(f).writerows([["image"], *[[str(p.relative_to(tmp_path / "images"))] for p in paths[:2]]])
    assert main(["predict", str(vision_run), str(tmp_path / "images" / "list.csv"), str(paths[2])]) == 0
    assert [line.split("  ", 1)[1] for line in capsys.readouterr().out.splitlines()] == [str(p) for p in paths[:3]]


@pytest.mark.parametrize("case, message", [
    (["missing.csv"], "error: INPUTS: file not found: missing.csv"),
    (["{tmp}/data.csv", "--column", "txt"], "error: --column: {tmp}/data.csv has no column 'txt' (columns: id, text); "
                                            "did you mean 'text'?"),
    (["{tmp}"], "error: INPUTS: {tmp} is a folder; a text model reads texts, or files ending in"),
    (["great", "--output", "{tmp}/p.txt"], "error: --output: {tmp}/p.txt: write .jsonl or .csv"),
    (["{tmp}/empty.txt"], "error: INPUTS: nothing to label"),
])
def test_predict_errors_name_the_input(text_run, tmp_path, capsys, case, message):
    (tmp_path / "data.csv").write_text("id,text\n1,good\n")
    (tmp_path / "empty.txt").write_text("\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in case]
    assert main(["predict", str(text_run), *args]) == 2
    err = capsys.readouterr().err
    assert message.replace("{tmp}", str(tmp_path)) in err and "Traceback" not in err


def test_predict_needs_a_model_folder(tmp_path, vision_run, capsys):
    assert main(["predict", str(tmp_path), "x"]) == 2
    assert f"error: OUTPUT_DIR: {tmp_path} holds no finished run (no run.json) and no model" in capsys.readouterr().err
    assert main(["predict", str(vision_run), str(tmp_path / "nope.png")]) == 2
    assert f"error: INPUTS: no such file or folder: {tmp_path / 'nope.png'}" in capsys.readouterr().err
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    assert main(["predict", str(vision_run), str(tmp_path / "broken.png")]) == 2
    assert f"unreadable image {tmp_path / 'broken.png'}" in capsys.readouterr().err


def _copy_run(run: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(run, dest)
    return dest


def test_pickle_weights_are_refused_by_predict_and_evaluate(text_run, tmp_path, capsys):
    import torch
    from safetensors.torch import load_file

    out = _copy_run(text_run, tmp_path / "pickled")
    torch.save(load_file(out / "model.safetensors"), out / "pytorch_model.bin")
    (out / "model.safetensors").unlink()
    run = json.loads((out / "run.json").read_text())  # a run that wrote pickle weights: run.json says so
    run["checksums"] = {}
    (out / "run.json").write_text(json.dumps(run))
    for command in (["predict", str(out), "great"], ["evaluate", str(out)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"error: OUTPUT_DIR: {out} holds only pickle-based weights (pytorch_model.bin)" in err
        assert "model.allow_pickle: true" in err and "Traceback" not in err


@pytest.mark.parametrize("damage", ["config", "run", "recipe"])
def test_a_damaged_output_folder_is_an_error_not_a_traceback(text_run, tmp_path, capsys, damage):
    out = _copy_run(text_run, tmp_path / "damaged")
    if damage == "config":
        (out / "config.json").write_text("{not json")
    elif damage == "run":
        (out / "run.json").unlink()
        (out / "config.json").write_text("[1, 2]")
    else:
        (out / "recipe.yaml").write_bytes(b"\xff\xfe not yaml")
    for command in (["predict", str(out), "great"], ["evaluate", str(out)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: OUTPUT_DIR: ") and "Traceback" not in err


def test_unreadable_inputs_and_outputs_are_named(text_run, tmp_path, capsys):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    assert main(["predict", str(text_run), str(tmp_path / "latin1.txt")]) == 2
    err = capsys.readouterr().err
    assert f"error: INPUTS: cannot read {tmp_path / 'latin1.txt'}" in err and "UTF-8" in err
    (tmp_path / "afile").write_text("x")
    assert main(["predict", str(text_run), "great", "--output", str(tmp_path / "afile" / "p.csv")]) == 2
    assert f"error: --output: {tmp_path / 'afile'} is a file, not a folder" in capsys.readouterr().err
    assert main(["evaluate", str(text_run), "--output-dir", str(tmp_path / "afile" / "sub")]) == 2
    err = capsys.readouterr().err
    assert f"error: --output-dir: {tmp_path / 'afile' / 'sub'} sits under {tmp_path / 'afile'}, which is a file" in err


def long_review(size: int) -> str:
    """A review of about `size` characters: words of the tiny vocabulary, sentences with slashes and dots."""
    words = "the movie was really great and the acting was superb, 10/10. the plot was moving. "
    return (words * (size // len(words) + 1))[:size].strip()


@pytest.mark.parametrize("size", [271, 10_000])
def test_a_long_text_is_a_text_not_a_file_name(text_run, tmp_path, capsys, size):
    text = long_review(size)
    assert main(["predict", str(text_run), text, "wonderful", "--output", str(tmp_path / "p.jsonl")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].split("  ", 1)[1].startswith(text[:40])
    records = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["input"] for r in records] == [text, "wonderful"]


def test_a_text_is_a_file_only_when_it_names_one_or_looks_like_a_path(text_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "great").write_text("a file named like a word\n")
    (tmp_path / "reviews.txt").write_text("wonderful\nterrible\n")
    # An existing file is read (and a text model refuses a file it cannot read, saying how to mean the words).
    assert main(["predict", str(text_run), "great"]) == 2
    err = capsys.readouterr().err
    assert "error: INPUTS: great is a file; a text model reads texts" in err and "--text great" in err
    assert main(["predict", str(text_run), "--text", "great", "--file", "reviews.txt"]) == 0
    assert [line.split("  ", 1)[1] for line in capsys.readouterr().out.splitlines()] == \
        ["great", "wonderful", "terrible"]  # in the order given
    # A missing file that looks like a path (a separator, a known extension) is an error, not a text.
    for missing in ("missing.csv", "data/missing", str(tmp_path / "nope.jsonl")):
        assert main(["predict", str(text_run), missing]) == 2
        err = capsys.readouterr().err
        assert f"error: INPUTS: file not found: {missing}" in err and "--text" in err
    # Words with a slash or a dot between spaces are a text.
    assert main(["predict", str(text_run), "great movie, 10/10. really moving"]) == 0
    assert capsys.readouterr().out.count("\n") == 1
    # --file settles it the other way: a name that must be a file.
    assert main(["predict", str(text_run), "--file", "wonderful"]) == 2
    assert "error: --file: file not found: wonderful" in capsys.readouterr().err


def test_an_image_model_refuses_texts_by_name(vision_run, tmp_path, capsys):
    assert main(["predict", str(vision_run), long_review(10_000)]) == 2
    err = capsys.readouterr().err
    assert "error: INPUTS: no such file or folder: the movie was really great" in err and "Traceback" not in err
    assert len(err) < 600  # the message shortens the input
    assert main(["predict", str(vision_run), "--text", "great"]) == 2
    assert "error: --text: an image model labels images" in capsys.readouterr().err


def test_inputs_may_come_before_and_after_flags(text_run, capsys):
    from hf_finetune.cli import build_parser

    assert build_parser().parse_args(["predict", "RUN", "--onnx", "a text", "--top-k", "2", "b"]).inputs == \
        ["a text", "b"]
    assert main(["predict", str(text_run), "wonderful", "--top-k", "2", "a=b is a text", "--text", "dull"]) == 0
    assert [line.split("  ", 1)[1] for line in capsys.readouterr().out.splitlines()] == \
        ["wonderful", "a=b is a text", "dull"]
