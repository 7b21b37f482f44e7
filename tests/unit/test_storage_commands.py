"""Every command's path flags take URLs: a bad scheme is one line naming the flag, before any
work; ``memory://`` inputs are read and outputs published (fsspec's in-process store)."""

import argparse
import asyncio
import json
import os
import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recforge import cli, tzrec_commands
from recforge.config import ConfigError
from recforge.tools import create_fg_json
from recforge.utils import layout, storage
from tests.helpers.paths import ROBUSTNESS_DIR

CONFIG = os.path.join(ROBUSTNESS_DIR, "base.config")  # three features

BAD = "bogus9://bucket/x"

# the flags each subcommand requires (any value: the URL check comes first)
REQUIRED = {
    "train": ["--config", "c.config"],
    "init": ["--data", "d.parquet"],
    "schema": [],
    "validate": ["--config", "c.config"],
    "inspect-batch": ["--config", "c.config"],
    "evaluate": ["--config", "c.config"],
    "export": ["--config", "c.config", "--export_dir", "e"],
    "predict": ["--scripted_model_path", "s", "--predict_input_path", "i"]
    + ["--predict_output_path", "o"],
    "evaluate-retrieval": ["--config", "c.config"],
    "serve": ["--export_dir", "e"],
    "build-index": ["--export_dir", "e", "--item_input_path", "i"],
    "mock-data": ["--config", "c.config", "--output_dir", "o"],
    "feature-selection": ["--config", "c.config", "--output_dir", "o"],
    "create-fg-json": ["--config", "c.config"],
    "demo": [],
}
# path flags that stay local-only on purpose: demo writes a whole local experiment
LOCAL_ONLY = {("demo", "output_dir")}
PATH_WORDS = ("path", "dir", "output", "data", "config", "checkpoint")
NOT_PATHS = {"edit_config_json", "output_columns"}


@pytest.fixture
def store():
    """A fresh ``memory://`` directory."""
    root = f"memory://recforge-cmd-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


@pytest.fixture(autouse=True)
def staging(monkeypatch, tmp_path):
    monkeypatch.setattr(storage, "_STAGES", {})
    monkeypatch.setattr(storage, "_FETCHED", {})
    monkeypatch.setenv(storage.STAGE_ROOT_ENV, str(tmp_path / "staging"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "staging"


def _put(url: str, data: bytes) -> None:
    with fsspec.open(url, "wb") as f:
        f.write(data)


def _cat(url: str) -> bytes:
    with fsspec.open(url, "rb") as f:
        return f.read()


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_path_flag_of_every_subcommand_is_declared():
    for name, parser in _subparsers().items():
        declared = {p.dest for p in cli.SUBCOMMANDS[name].paths}
        for action in parser._actions:
            flag = action.option_strings[0] if action.option_strings else ""
            if any(w in action.dest for w in PATH_WORDS) and action.dest not in NOT_PATHS:
                if (name, action.dest) not in LOCAL_ONLY:
                    assert action.dest in declared, f"recforge {name} {flag} is not a PathFlag"


CASES = [(name, path.flag) for name, command in cli.SUBCOMMANDS.items() for path in command.paths]


@pytest.mark.parametrize(("name", "flag"), CASES, ids=[f"{n}{f}" for n, f in CASES])
def test_a_bad_scheme_is_one_line_naming_the_flag(name, flag, capsys, tmp_path):
    argv = list(REQUIRED[name])
    if flag in argv:
        argv[argv.index(flag) + 1] = BAD
    else:
        argv += [flag, BAD]
    with pytest.raises(SystemExit) as raised:
        cli.main([name, *argv])
    assert raised.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"recforge: error: {flag}: expected a local path or a URL of s3://")
    assert "unknown scheme 'bogus9://'" in err[0]
    assert os.listdir(tmp_path) == ["staging"] or os.listdir(tmp_path) == []


TZREC = [(c, f) for c, flags in tzrec_commands.PATH_FLAGS.items() for f in flags]
TZREC_REQUIRED = {
    "train_eval": ["--pipeline_config_path", "c.config"],
    "eval": ["--pipeline_config_path", "c.config"],
    "export": ["--pipeline_config_path", "c.config", "--export_dir", "e"],
    "predict": ["--scripted_model_path", "s", "--predict_input_path", "i"]
    + ["--predict_output_path", "o.parquet"],
}


@pytest.mark.parametrize(("command", "flag"), TZREC, ids=[f"{c}{f}" for c, f in TZREC])
def test_tzrec_module_commands_name_the_flag_of_a_bad_scheme(command, flag, capsys):
    argv = list(TZREC_REQUIRED[command])
    if flag in argv:
        argv[argv.index(flag) + 1] = BAD
    else:
        argv += [flag, BAD]
    if command == "predict" and flag in ("--pipeline_config_path", "--checkpoint_path"):
        argv = argv[2:]  # --pipeline_config_path instead of --scripted_model_path
        if flag == "--checkpoint_path":
            argv += ["--pipeline_config_path", "c.config"]
    with pytest.raises(SystemExit) as raised:
        tzrec_commands.main(command, argv)
    assert raised.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and err[0].startswith(f"recforge: error: {flag}: expected a local")


def test_create_fg_json_module_names_its_flag(capsys):
    with pytest.raises(SystemExit):
        create_fg_json.main(["--pipeline_config_path", "c.config", "--fg_output_dir", BAD])
    assert capsys.readouterr().err.startswith("recforge: error: --fg_output_dir: expected")


def _config_in(store: str) -> str:
    url = f"{store}/cfg/base.config"
    with open(CONFIG, "rb") as f:
        _put(url, f.read())
    return url


def test_mock_data_reads_a_remote_config_and_publishes_its_files(store, staging, capsys):
    config = _config_in(store)
    cli.main(["mock-data", "--config", config, "--output_dir", f"{store}/data", "--num_rows", "8"])
    result = json.loads(capsys.readouterr().out)
    fs = fsspec.filesystem("memory")
    parts = [p for p in fs.find(f"{store}/data") if p.endswith(".parquet")]
    assert parts and pq.read_table(fs.open(parts[0])).num_rows == 8
    assert all(f.startswith(f"{store}/data/") for f in result["files"])
    assert result["edit_config_json"]["train_input_path"].startswith(f"{store}/data")
    assert not [p for p in fs.find(store) if ".tmp-" in p]
    # the output's local copy is gone (the config's goes at exit, as every fetched input's)
    assert [n for n in os.listdir(staging) if "mock-data" in n] == []


def test_create_fg_json_writes_fg_json_to_a_url(store, capsys):
    config = _config_in(store)
    cli.main(["create-fg-json", "--config", config, "--fg_output_path", f"{store}/fg/fg.json"])
    result = json.loads(capsys.readouterr().out)
    assert result["fg_json"] == f"{store}/fg/fg.json"
    assert json.loads(_cat(f"{store}/fg/fg.json"))["features"]
    create_fg_json.main(
        [
            "--pipeline_config_path",
            config,
            "--fg_output_dir",
            f"{store}/tz",
            "--fg_resource_name",
            "x.json",
        ]
    )
    assert json.loads(_cat(f"{store}/tz/x.json"))["features"]


def test_init_reads_remote_data_writes_a_remote_config_and_keeps_an_existing_one(store, capsys):
    with fsspec.open(f"{store}/d/t.parquet", "wb") as f:
        pq.write_table(pa.table({"label": [0, 1] * 20, "item_id": list(range(40))}), f)
    out = f"{store}/conf/pipeline.config"
    cli.main(["init", "--data", f"{store}/d/t.parquet", "--output", out])
    first = _cat(out)
    assert b"feature_configs" in first
    with pytest.raises(SystemExit):
        cli.main(["init", "--data", f"{store}/d/t.parquet", "--output", out])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"recforge: error: {out}: expected a new file")  # the URL, not a copy
    assert _cat(out) == first


def test_schema_output_to_a_url(store):
    cli.main(["schema", "--output", f"{store}/schema.json"])
    assert json.loads(_cat(f"{store}/schema.json"))["$schema"]


def test_a_failed_command_publishes_nothing(store, staging):
    def fail(path: str) -> None:
        with open(path, "w") as f:
            f.write("half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        with storage.written_locally(f"{store}/out/file.txt", "test") as local:
            fail(local)
    assert not fsspec.filesystem("memory").exists(f"{store}/out/file.txt")
    assert os.listdir(staging) == []


def test_feature_selection_refuses_to_overwrite_a_remote_config(store, capsys):
    config = _config_in(store)
    with pytest.raises(SystemExit):
        cli.main(["feature-selection", "--config", config, "--output_dir", f"{store}/cfg"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "would overwrite the input config" in err and f"{store}/cfg" in err
    assert _cat(config) == open(CONFIG, "rb").read()


def test_tzrec_assets_and_csv_are_published_to_urls(store, tmp_path):
    for name in layout.EXPORT_FILES:
        _put(f"{store}/export/{name}", b"x")
        _put(f"{store}/export/item/{name}", b"x")
    (tmp_path / "vocab.txt").write_text("a\n")
    copies = tzrec_commands.copy_assets([str(tmp_path / "vocab.txt")], f"{store}/export")
    assert copies == [f"{store}/export/vocab.txt", f"{store}/export/item/vocab.txt"]
    assert _cat(f"{store}/export/item/vocab.txt") == b"a\n"

    parts = tmp_path / "pred"
    parts.mkdir()
    pq.write_table(pa.table({"probs": [0.5, 0.25]}), parts / "part-00000.parquet")
    _put(f"{store}/csv/part-00009.csv", b"stale")
    written = tzrec_commands._write_csv(str(parts), f"{store}/csv")
    assert written == [f"{store}/csv/part-00000.csv"]
    assert _cat(written[0]).decode().splitlines()[1:] == ["0.5", "0.25"]
    assert storage.listdir(f"{store}/csv") == ["part-00000.csv"]


def test_serve_reload_downloads_a_remote_export_anew(store, monkeypatch):
    from recforge.serving import model as served

    class FakePredictor:
        def __init__(self, directory: str, batch_size: int) -> None:
            with open(os.path.join(directory, layout.MODEL_INFO_FILE)) as f:
                self.model_info = json.load(f)

    monkeypatch.setattr(served, "Predictor", FakePredictor)
    monkeypatch.setattr(served, "column_needers", lambda info: {})
    for name in layout.EXPORT_FILES:
        _put(f"{store}/export/{name}", json.dumps({"version": 1}).encode())
    first = served.fetch_export(f"{store}/export")
    model = served.ServedModel(first, 8, source=f"{store}/export")
    assert model.predictor.model_info == {"version": 1}
    _put(f"{store}/export/{layout.MODEL_INFO_FILE}", json.dumps({"version": 2}).encode())
    described = asyncio.run(model.reload())
    assert model.predictor.model_info == {"version": 2}
    assert described["export_dir"] == f"{store}/export"
    assert model.export_dir != first and not os.path.exists(first)


def test_a_remote_model_dir_refuses_torchrun_ranks_on_several_hosts(store, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(ConfigError) as raised:
        storage.stage_model_dir(f"{store}/run", layout.CHECKPOINT_PREFIX, layout.TRAIN_STATE_FILE)
    assert str(raised.value).startswith("model_dir: expected every torchrun rank on one host")
    assert "found 4 ranks of which 2 on this host" in str(raised.value)
    assert not fsspec.filesystem("memory").exists(f"{store}/run")


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_tzrec_predict_plans_a_remote_export_and_output(store, suffix, tmp_path):
    with open(CONFIG, "rb") as f:
        _put(f"{store}/export/{layout.EXPORT_CONFIG_FILE}", f.read())
    _put(f"{store}/in/part-0.{suffix}", b"")
    argv = ["--scripted_model_path", f"{store}/export/{layout.MODEL_FILE}"]
    argv += ["--predict_input_path", f"{store}/in/part-0.{suffix}"]
    plan = tzrec_commands.plan_command("predict", [*argv, "--predict_output_path", f"{store}/out"])
    step = plan.steps[-1]
    assert step[step.index("--scripted_model_path") + 1] == f"{store}/export/{layout.MODEL_FILE}"
    if suffix == "parquet":  # recforge predict writes the URL itself
        assert step[step.index("--predict_output_path") + 1] == f"{store}/out"
        assert plan.work_dir is None
    else:  # parquet in a local work dir, then CSV published to the URL
        assert plan.csv_output == f"{store}/out"
        assert plan.work_dir.startswith(str(tmp_path / "staging"))
        assert step[step.index("--predict_output_path") + 1].startswith(plan.work_dir)
