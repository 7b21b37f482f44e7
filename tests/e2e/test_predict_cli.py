"""Batch prediction: ``recforge predict`` and ``recforge.load_predictor`` on an exported DeepFM."""

import errno
import json
import logging
import os
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch

import recforge
from recforge.datasets import DataError
from recforge.errors import ExportError, PredictError
from recforge.export import export_model
from recforge.predict import predict as run_predict
from tests.helpers.cli_util import run_cli
from tests.helpers.export_util import make_table, model_config, train_and_export

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


def export_bf16(
    workdir: str,
    dtype: str = "bfloat16",
    check: bool = True,
    field: str = "mlp_dtype",
    export_dir: str = "export_bf16",
):
    edit = f'{{"export_config.{field}": "{dtype}"}}'
    args = ["export", "--config", "model/pipeline.config", "--export_dir", export_dir]
    return run_cli([*args, "--edit_config_json", edit], workdir, check=check)


# TorchEasyRec's export_config.mixed_precision "BF16" asks for the same export
@pytest.mark.parametrize(
    ("field", "value"), [("mlp_dtype", "bfloat16"), ("mixed_precision", "BF16")]
)
def test_bfloat16_mlp_export_predicts_close_to_float32(workdir, field, value):
    export_dir = f"export_{field}"
    export_bf16(workdir, value, field=field, export_dir=export_dir)
    directory = os.path.join(workdir, export_dir)
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


# ---- safety: the input is never written, stale and partial files, full disks, logging --------
def in_process_cli(capsys, *args: str) -> tuple:
    """Runs ``recforge ARGS`` in this process: ``(exit status, stderr)``.

    Needs the ``plain_logging`` fixture (the command sets up logging for its process).
    """
    from recforge.cli import main

    capsys.readouterr()
    try:
        status = main(list(args))
    except SystemExit as e:
        status = e.code
    return status, capsys.readouterr().err


def one_error_line(stderr: str) -> str:
    """The single ``recforge: error:`` line (asserting there is one and no traceback)."""
    assert "Traceback" not in stderr, stderr[-4000:]
    lines = [line for line in stderr.splitlines() if line.startswith("recforge: error:")]
    assert len(lines) == 1 and stderr.rstrip().endswith(lines[0]), stderr[-4000:]
    return lines[0]


@pytest.fixture
def plain_logging():
    """A process whose ``recforge`` logger is untouched; restores the logging state after."""
    from recforge.utils.logging_util import QUIET_LOGGERS

    loggers = [logging.getLogger(name) for name in {"", "recforge", *QUIET_LOGGERS}]
    saved = [(lg, lg.level, list(lg.handlers), lg.propagate) for lg in loggers]
    package = logging.getLogger("recforge")
    package.handlers = []
    package.setLevel(logging.NOTSET)
    package.propagate = True
    # an earlier in-process CLI run (which owns its process and quiets root) may have run
    logging.getLogger().setLevel(logging.WARNING)
    yield
    for lg, level, handlers, propagate in saved:
        lg.setLevel(level)
        lg.handlers = handlers
        lg.propagate = propagate


def files_of(directory) -> dict:
    return {
        name: open(os.path.join(directory, name), "rb").read()  # noqa: SIM115
        for name in sorted(os.listdir(directory))
    }


@pytest.mark.parametrize(
    "inputs,output,relation",
    [
        ("data/x.parquet", "data/x.parquet", "the input file"),
        ("data", "data/out", "inside the input directory"),
        ("data/x.parquet", "data", "holding the input file"),
        ("data/*.parquet", "data/scores.parquet", "read as input"),
    ],
)
def test_an_output_overlapping_the_input_is_refused(workdir, tmp_path, inputs, output, relation):
    os.makedirs(tmp_path / "data")
    shutil.copy(os.path.join(workdir, "input", "part_2.parquet"), tmp_path / "data" / "x.parquet")
    before = files_of(tmp_path / "data")
    export = os.path.join(workdir, "export")
    with pytest.raises(PredictError) as error:
        run_predict(export, str(tmp_path / inputs), str(tmp_path / output), num_workers=0)
    message = str(error.value)
    assert "\n" not in message and relation in message
    assert str(tmp_path / inputs) in message and str(tmp_path / output) in message
    assert files_of(tmp_path / "data") == before  # nothing written, nothing removed


@pytest.mark.parametrize("num_workers", [1, 2])
def test_a_killed_runs_tmp_parts_are_removed(workdir, tmp_path, num_workers):
    out = tmp_path / "out"
    os.makedirs(out)
    for name in ("part-00000.parquet.tmp", "part-00003.parquet.tmp"):  # a killed 4-worker run
        (out / name).write_bytes(b"half a parquet file")
    (out / "notes.txt").write_text("the user's")
    run_predict(
        os.path.join(workdir, "export"),
        os.path.join(workdir, "input", "part_2.parquet"),
        str(out),
        reserved_columns="id",
        num_workers=num_workers,
        batch_size=16,
    )
    parts = [f"part-{i:05d}.parquet" for i in range(num_workers)]
    assert sorted(os.listdir(out)) == ["notes.txt", *parts]
    ids = pa.concat_tables(pq.read_table(out / p) for p in parts).column("id").to_pylist()
    assert sorted(ids) == sorted(
        pq.read_table(os.path.join(workdir, "input", "part_2.parquet"))["id"].to_pylist()
    )


@pytest.mark.parametrize("output", ["out", "scores.parquet"])
def test_zero_input_rows_write_an_empty_output_with_the_columns(
    workdir, predicted, tmp_path, output
):
    empty = tmp_path / "empty.parquet"
    pq.write_table(make_table(0, tags_as_lists=False), empty)
    target = tmp_path / output
    if output == "out":  # an earlier run's two parts are replaced by one empty part
        shutil.copytree(os.path.join(workdir, "out"), target)
    else:
        shutil.copy(os.path.join(workdir, "out", "part-00000.parquet"), target)
    result = run_predict(
        os.path.join(workdir, "export"),
        str(empty),
        str(target),
        reserved_columns="id,label",
        output_columns="probs",
        num_workers=2,
    )
    assert result["rows"] == 0
    path = target / "part-00000.parquet" if output == "out" else target
    assert result["files"] == [str(path)]
    if output == "out":
        assert os.listdir(target) == ["part-00000.parquet"]
    table = pq.read_table(path)
    assert table.num_rows == 0
    assert table.schema == predicted["part-00000.parquet"].schema  # as a run with rows writes


def test_num_workers_below_zero_is_one_line(workdir, capsys, plain_logging, monkeypatch):
    monkeypatch.chdir(workdir)
    status, stderr = in_process_cli(
        capsys,
        *["predict", "--scripted_model_path", "export", "--predict_input_path", "input"],
        *["--predict_output_path", "negative_out", "--num_workers", "-1"],
    )
    assert status == 2
    line = one_error_line(stderr)
    assert "--num_workers" in line and "found -1" in line
    assert not os.path.exists("negative_out")


@pytest.mark.parametrize(
    "text,where,expected",
    [
        ('{"outputs": [{"name": "probs",', ":1:", "found invalid JSON"),
        ('{"outputs": {"probs": 1}}', ": ", "expected 'outputs' to be a non-empty list"),
    ],
)
def test_a_bad_model_info_json_is_one_line(
    workdir, tmp_path, capsys, plain_logging, monkeypatch, text, where, expected
):
    broken = tmp_path / "export"
    shutil.copytree(os.path.join(workdir, "export"), broken)
    (broken / "model_info.json").write_text(text)
    monkeypatch.chdir(workdir)
    status, stderr = in_process_cli(
        capsys,
        *["predict", "--scripted_model_path", str(broken), "--predict_input_path", "input"],
        *["--predict_output_path", str(tmp_path / "out")],
    )
    assert status == 2
    line = one_error_line(stderr)
    assert f"recforge: error: {broken / 'model_info.json'}{where}" in line
    assert expected in line and "re-run recforge export" in line
    with pytest.raises(ExportError, match="model_info.json"):
        recforge.load_predictor(str(broken))


@pytest.mark.parametrize("method,failing_call", [("write_batch", 1), ("close", 2)])
def test_a_full_disk_stops_predict_with_one_line_and_keeps_the_earlier_output(
    workdir, predicted, tmp_path, capsys, plain_logging, monkeypatch, method, failing_call
):
    out = tmp_path / "out"
    shutil.copytree(os.path.join(workdir, "out"), out)  # a good earlier run (2 parts)
    before = files_of(out)
    real = getattr(pq.ParquetWriter, method)
    calls = []

    def full_disk(self, *args, **kwargs):
        calls.append(method)
        if len(calls) == failing_call:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, method, full_disk)
    monkeypatch.chdir(workdir)
    status, stderr = in_process_cli(
        capsys,
        *["predict", "--scripted_model_path", "export", "--predict_input_path", "input"],
        *["--predict_output_path", str(out), "--num_workers", "2", "--batch_size", "32"],
    )
    assert status == 2
    line = one_error_line(stderr)
    assert f"{out}{os.sep}part-0000" in line and "no space left on device" in line
    assert files_of(out) == before  # no part replaced, no .tmp left


def test_export_keeps_the_users_old_and_tmp_dirs_and_survives_a_full_disk(
    workdir, tmp_path, capsys, plain_logging, monkeypatch
):
    target = tmp_path / "exp"
    shutil.copytree(os.path.join(workdir, "export"), target)  # an earlier export
    for mine in ("exp.old", "exp.tmp"):
        os.makedirs(tmp_path / mine)
        (tmp_path / mine / "keep.txt").write_text("the user's")
    config = os.path.join(workdir, "model", "pipeline.config")
    monkeypatch.chdir(workdir)
    export_model(config, str(target))
    assert sorted(os.listdir(tmp_path)) == ["exp", "exp.old", "exp.tmp"]
    for mine in ("exp.old", "exp.tmp"):
        assert (tmp_path / mine / "keep.txt").read_text() == "the user's"
    exported = files_of(target)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("recforge.export.files.save_scripted", full_disk)
    status, stderr = in_process_cli(
        capsys, "export", "--config", config, "--export_dir", str(target)
    )
    assert status == 2
    line = one_error_line(stderr)
    assert f"{target}: no space left on device" in line
    assert files_of(target) == exported  # the earlier export stays, no temp dir left beside
    assert sorted(os.listdir(tmp_path)) == ["exp", "exp.old", "exp.tmp"]


def test_recforge_configures_only_its_own_logger(workdir, tmp_path, capsys, plain_logging):
    from recforge.utils.logging_util import QUIET_LOGGERS

    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    app_handlers, root.handlers = root.handlers, []  # a script that configured nothing
    empty = tmp_path / "empty.parquet"
    pq.write_table(make_table(0, tags_as_lists=False), empty)
    export = os.path.join(workdir, "export")
    run_predict(export, str(empty), str(tmp_path / "out"), num_workers=0)  # logs a warning
    assert root.handlers == [] and {n: logging.getLogger(n).level for n in levels} == levels
    package = logging.getLogger("recforge")
    assert [h.get_name() for h in package.handlers] == ["recforge-stderr"]
    assert "holds no rows" in capsys.readouterr().err  # recforge's lines still show

    class Records(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    seen = Records()
    root.handlers = [seen]
    logging.getLogger("user.app").warning("the user's warning")
    assert seen.messages == ["the user's warning"]

    # an application that configured logging gets recforge's records through its handlers
    package.handlers = []
    package.propagate = True
    run_predict(export, str(empty), str(tmp_path / "out2"), num_workers=0)
    assert package.handlers == [] and root.handlers == [seen]
    assert any("holds no rows" in m for m in seen.messages)
    root.handlers = app_handlers

    # the command line still prints recforge's INFO lines
    status, stderr = in_process_cli(
        capsys,
        *["predict", "--scripted_model_path", export, "--predict_input_path", str(empty)],
        *["--predict_output_path", str(tmp_path / "out3")],
    )
    assert status == 0 and "INFO recforge.predict: predicted 0 rows" in stderr
