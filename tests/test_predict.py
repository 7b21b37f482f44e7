"""Batch prediction: ``recforge predict`` and ``recforge.load_predictor`` on an exported DeepFM."""

import json
import os
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch
from cli_util import run_cli
from export_util import make_table, model_config, train_and_export

import recforge
from recforge.datasets import DataError
from recforge.errors import ExportError, PredictError

INPUT_ROWS = (150, 97, 53)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A DeepFM export (``export/``) and three parquet input files (``input/part_*.parquet``)."""
    root = tmp_path_factory.mktemp("predict")
    config = model_config("DeepFM")
    config.feature_configs[2].id_feature.separator = "|"  # tags as "3|7" strings (CSV too)
    train_and_export(str(root), config)
    os.makedirs(root / "input")
    for i, rows in enumerate(INPUT_ROWS):
        table = make_table(rows, seed=i + 1, tags_as_lists=False)
        pq.write_table(table, root / "input" / f"part_{i}.parquet")
    return str(root)


def input_table(workdir: str) -> pa.Table:
    files = sorted(os.listdir(os.path.join(workdir, "input")))
    return pa.concat_tables(pq.read_table(os.path.join(workdir, "input", f)) for f in files)


def predict(workdir: str, output: str, *extra: str, check: bool = True, inputs="input/*.parquet"):
    args = ["predict", "--scripted_model_path", "export", "--predict_input_path", inputs]
    args += ["--predict_output_path", output, "--reserved_columns", "id,label", *extra]
    return run_cli(args, workdir, check=check)


@pytest.fixture(scope="module")
def predicted(workdir):
    """``recforge predict`` with 2 workers into ``out/``: {output file: table}."""
    proc = predict(workdir, "out", "--output_columns", "probs", "--num_workers", "2")
    assert "rows/s" in proc.stderr
    out = os.path.join(workdir, "out")
    return {name: pq.read_table(os.path.join(out, name)) for name in sorted(os.listdir(out))}


def by_id(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas().set_index("id").sort_index()


def test_two_workers_write_every_input_row_exactly_once(workdir, predicted):
    assert sorted(predicted) == ["part-00000.parquet", "part-00001.parquet"]
    for table in predicted.values():
        assert table.column_names == ["id", "label", "probs"]  # reserved first, then outputs
        assert table.num_rows > 0
    output = pa.concat_tables(predicted.values())
    expected = input_table(workdir)
    ids = output.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == expected.num_rows == sum(INPUT_ROWS)
    got, want = by_id(output), by_id(expected)
    assert list(got.index) == list(want.index)
    assert (got["label"] == want["label"]).all()  # reserved columns stay with their rows
    probs = got["probs"].to_numpy()
    assert ((probs > 0) & (probs < 1)).all() and probs.std() > 0


def test_python_predictor_matches_the_command(workdir, predicted):
    cli = by_id(pa.concat_tables(predicted.values()))["probs"]
    frame = input_table(workdir).to_pandas()
    predictor = recforge.load_predictor(os.path.join(workdir, "export"))
    assert predictor.outputs == ["logits", "probs", "y"]
    result = predictor.predict(frame)
    assert list(result) == predictor.outputs
    probs = pd.Series(result["probs"], index=frame["id"]).sort_index()
    np.testing.assert_allclose(probs.to_numpy(), cli.to_numpy(), rtol=0, atol=1e-6)

    # a dict of lists and a DataFrame result give the same numbers
    head = frame.head(20)
    as_dict = {column: head[column].tolist() for column in head.columns}
    scored = predictor.predict(as_dict, output_columns=["probs"], as_frame=True)
    assert list(scored.columns) == ["probs"] and len(scored) == 20
    np.testing.assert_allclose(scored["probs"], result["probs"][:20], rtol=0, atol=1e-6)


def test_rerun_replaces_the_earlier_output(workdir, predicted, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(os.path.join(workdir, "out"), out)
    predict(workdir, str(out), "--num_workers", "0", "--batch_size", "64")
    assert sorted(os.listdir(out)) == ["part-00000.parquet"]
    table = pq.read_table(out / "part-00000.parquet")
    assert table.column_names == ["id", "label", "logits", "probs", "y"]  # all outputs
    assert sorted(table.column("id").to_pylist()) == sorted(by_id(input_table(workdir)).index)


def test_csv_input_into_one_file_with_two_workers(workdir, predicted, tmp_path):
    pacsv.write_csv(input_table(workdir), tmp_path / "input.csv")
    output = tmp_path / "scores.parquet"
    predict(
        workdir,
        str(output),
        "--output_columns",
        "probs",
        "--num_workers",
        "2",
        "--batch_size",
        "32",
        inputs=str(tmp_path / "input.csv"),
    )
    assert sorted(os.listdir(tmp_path)) == ["input.csv", "scores.parquet"]
    got = by_id(pq.read_table(output))
    want = by_id(pa.concat_tables(predicted.values()))
    assert list(got.index) == list(want.index)  # one file (<2 workers): batches interleave
    np.testing.assert_allclose(got["probs"], want["probs"], rtol=0, atol=1e-6)


def fails(workdir: str, *args: str, inputs: str = "input/*.parquet") -> str:
    proc = predict(workdir, "bad_out", *args, inputs=inputs, check=False)
    assert proc.returncode == 2, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    assert not os.path.exists(os.path.join(workdir, "bad_out", "part-00000.parquet"))
    return proc.stderr


def test_input_without_a_feature_column(workdir, tmp_path):
    pq.write_table(make_table(10, tags_as_lists=False).drop(["price"]), tmp_path / "x.parquet")
    err = fails(workdir, inputs=str(tmp_path / "x.parquet"))
    assert "column 'price' needed by feature 'price'" in err and "x.parquet" in err


def test_input_column_of_the_wrong_type(workdir, tmp_path):
    table = make_table(40, tags_as_lists=False)
    price = pa.array(["1.5"] * 39 + ["abc"])
    table = table.set_column(table.column_names.index("price"), "price", price)
    pq.write_table(table, tmp_path / "x.parquet")
    err = fails(
        workdir, "--num_workers", "2", "--batch_size", "8", inputs=str(tmp_path / "x.parquet")
    )
    assert "feature 'price' (column 'price')" in err and "'abc'" in err


def test_export_dir_without_the_model_file(workdir, tmp_path):
    broken = tmp_path / "export"
    shutil.copytree(os.path.join(workdir, "export"), broken)
    os.remove(broken / "scripted_model.pt")
    proc = run_cli(
        ["predict", "--scripted_model_path", str(broken), "--predict_input_path", "input"]
        + ["--predict_output_path", "bad_out"],
        workdir,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-4000:]
    assert "has no scripted_model.pt" in proc.stderr and str(broken) in proc.stderr
    with pytest.raises(ExportError, match="scripted_model.pt"):
        recforge.load_predictor(str(broken))
    with pytest.raises(ExportError, match="not found"):
        recforge.load_predictor(str(tmp_path / "nowhere"))


def test_unknown_output_or_reserved_column(workdir):
    err = fails(workdir, "--output_columns", "prob")
    assert "['prob']" in err and "['logits', 'probs', 'y']" in err
    err = fails(workdir, "--reserved_columns", "id,request_id")
    assert "column 'request_id' needed by reserved column" in err


def test_python_predictor_input_errors(workdir):
    predictor = recforge.load_predictor(os.path.join(workdir, "export"))
    frame = make_table(5, tags_as_lists=False).to_pandas()
    with pytest.raises(DataError, match="column 'item' needed by feature 'item'"):
        predictor.predict(frame.drop(columns=["item"]))
    with pytest.raises(PredictError, match="outputs"):
        predictor.predict(frame, output_columns=["score"])
    with pytest.raises(PredictError, match="pandas DataFrame"):
        predictor.predict([1, 2, 3])


def export_bf16(workdir: str, dtype: str = "bfloat16", check: bool = True):
    edit = f'{{"export_config.mlp_dtype": "{dtype}"}}'
    args = ["export", "--config", "model/pipeline.config", "--export_dir", "export_bf16"]
    return run_cli([*args, "--edit_config_json", edit], workdir, check=check)


def test_bfloat16_mlp_export_predicts_close_to_float32(workdir):
    export_bf16(workdir)
    directory = os.path.join(workdir, "export_bf16")
    with open(os.path.join(directory, "model_info.json")) as f:
        assert json.load(f)["mlp_dtype"] == "bfloat16"
    weights = torch.jit.load(os.path.join(directory, "scripted_model.pt")).state_dict()
    mlp_weights = {k: v.dtype for k, v in weights.items() if ".mlp." in k}
    assert mlp_weights and set(mlp_weights.values()) == {torch.bfloat16}
    assert any(v.dtype == torch.float32 for v in weights.values())  # tables stay float32
    table = input_table(workdir)
    full = recforge.load_predictor(os.path.join(workdir, "export")).predict(table)["probs"]
    half = recforge.load_predictor(directory).predict(table)["probs"]
    difference = np.abs(full - half)
    assert half.dtype == np.float32
    assert 0 < difference.max() < 0.02


def test_unknown_mlp_dtype_names_the_field(workdir):
    proc = export_bf16(workdir, dtype="fp8", check=False)
    assert proc.returncode == 2
    assert "export_config.mlp_dtype" in proc.stderr and "float32, bfloat16" in proc.stderr
