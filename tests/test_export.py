"""hf-finetune export --format onnx: dynamic axes checked in ONNX Runtime, labels travel, predict --onnx."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest

from hf_finetune.cli import main
from hf_finetune.errors import NotAFinishedRunError
from hf_finetune.extras import MissingExtraError
from hf_finetune.finished.export import ATOL, export_onnx, format_result, load_onnx_predictor
from hf_finetune.finished.predict import load_predictor, predict, read_inputs

TEXTS = ["the film was good", "awful and boring", "the plot was really quite superb and moving", "dull"]


def same_predictions(run, inputs, top_k=2):
    torch_side, onnx_side = load_predictor(run), load_onnx_predictor(run)
    items = read_inputs(torch_side, inputs)
    expected = predict(torch_side, items, batch_size=3, top_k=top_k)  # batches of 3 and a last partial one
    got = predict(onnx_side, items, batch_size=3, top_k=top_k)
    assert [[label for label, _ in row] for row in got] == [[label for label, _ in row] for row in expected]
    np.testing.assert_allclose([[s for _, s in row] for row in got], [[s for _, s in row] for row in expected],
                               atol=ATOL)


def test_text_export_is_checked_carries_its_labels_and_predicts_like_pytorch(tmp_path, text_run, capsys):
    import onnxruntime

    run = tmp_path / "run"
    shutil.copytree(text_run, run)
    result = export_onnx(run, opset=18)
    # The run cut texts at 8 tokens (its max_length), so the traced example is 2x8.
    assert [c["shape"] for c in result.checks] == [[1, 1], [3, 7], [5, 8]] and result.example == [2, 8]
    assert result.max_abs_diff <= ATOL and result.argmax_agreement == 1.0 and result.opset == 18
    printed = format_result(result)
    assert "(opset 18)" in printed and "traced 2x8 example" in printed
    assert "  input 1x1          max abs difference" in printed
    session = onnxruntime.InferenceSession(str(run / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [str(d) for d in session.get_inputs()[0].shape] == ["batch", "sequence"]
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["hf_finetune"])["labels"] == ["neg", "pos"]
    assert json.loads(meta["id2label"]) == {"0": "neg", "1": "pos"}
    assert json.loads((run / "onnx" / "labels.json").read_text()) == ["neg", "pos"]
    assert "onnx/model.onnx" in json.loads((run / "run.json").read_text())["files"]  # push uploads it
    # Exporting again with external data, then without: run.json lists only the files that are there.
    export_onnx(run, external_data=True)
    assert "onnx/model.onnx.data" in json.loads((run / "run.json").read_text())["files"]
    export_onnx(run, opset=18, external_data=False)
    files = json.loads((run / "run.json").read_text())["files"]
    assert "onnx/model.onnx.data" not in files and not (run / "onnx" / "model.onnx.data").exists()
    assert files.count("onnx/model.onnx") == 1

    same_predictions(run, TEXTS + ["movie"])
    assert main(["predict", str(run), "--onnx", TEXTS[0]]) == 0
    assert capsys.readouterr().out.startswith(("neg (", "pos ("))


def test_vision_export_with_external_data(tmp_path, vision_run, pattern_folder, capsys):
    run = tmp_path / "run"
    shutil.copytree(vision_run, run)
    out = tmp_path / "elsewhere"
    assert main(["export", str(run), "--format", "onnx", "--output-dir", str(out), "--external-data"]) == 0
    printed = capsys.readouterr().out
    assert "weights in model.onnx.data" in printed
    assert printed.count("argmax agreement 100%\n") == 3  # batches 1, 3 and 5; the traced one is 2
    assert (out / "model.onnx.data").stat().st_size > (out / "model.onnx").stat().st_size
    assert "elsewhere" not in json.dumps(json.loads((run / "run.json").read_text())["files"])
    torch_side, onnx_side = load_predictor(run), load_onnx_predictor(run, out / "model.onnx")
    items = read_inputs(torch_side, [str(pattern_folder / "test")])
    expected, got = (predict(p, items, batch_size=4, top_k=3) for p in (torch_side, onnx_side))
    np.testing.assert_allclose([[s for _, s in r] for r in got], [[s for _, s in r] for r in expected], atol=ATOL)
    assert [r[0][0] for r in got] == [r[0][0] for r in expected]


def test_export_errors(tmp_path, text_run, monkeypatch, capsys):
    assert main(["export", str(tmp_path), "--format", "onnx"]) == 2
    assert "holds no finished run" in capsys.readouterr().err
    with pytest.raises(NotAFinishedRunError, match="hf-finetune export .* --format onnx"):
        load_onnx_predictor(text_run)  # nothing exported there
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtraError, match=r"onnxruntime.*hf-finetune\[onnx\]"):
        export_onnx(text_run)
