"""TorchEasyRec's module commands: ``python -m recforge.train_eval|eval|export|predict``."""

import json
import os

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from recforge import cli, tzrec_commands
from recforge.datasets.csv_output import parquet_to_csv
from recforge.errors import PredictError
from recforge.tzrec_commands import FLAGS, RECFORGE_FLAGS, FlagError, plan_command


def recforge_args(step):
    """The step parsed by the ``recforge`` CLI (fails the test if it does not parse)."""
    return cli.build_parser().parse_args(step)


def only_step(command, argv):
    plan = plan_command(command, argv)
    assert len(plan.steps) == 1
    return plan, recforge_args(plan.steps[0])


@pytest.mark.parametrize("command", tzrec_commands.COMMANDS)
def test_every_flag_is_in_the_table(command):
    parser = tzrec_commands.build_parser(command)
    flags = {o for a in parser._actions for o in a.option_strings} - {"-h", "--help"}
    assert flags == set(FLAGS[command]) | set(RECFORGE_FLAGS[command])


def test_train_eval_maps_every_flag():
    argv = ["--pipeline_config_path", "a.config", "--model_dir", "m"]
    argv += ["--train_input_path", "t.parquet", "--eval_input_path", "e.parquet"]
    argv += ["--continue_train", "--fine_tune_checkpoint", "old/model.ckpt-9"]
    argv += ["--edit_config_json", '{"eval_input_path": "e2.parquet", "data_config.batch_size": 8}']
    argv += ["--plugin", "my_models"]
    plan, args = only_step("train_eval", argv)
    assert args.command == "train" and args.config == "a.config" and args.model_dir == "m"
    assert args.continue_train and args.fine_tune_checkpoint == "old/model.ckpt-9"
    assert args.plugin == ["my_models"]
    # the JSON edits come after the path flags, so they win (as in TorchEasyRec)
    assert json.loads(args.edit_config_json) == {
        "train_input_path": "t.parquet",
        "eval_input_path": "e2.parquet",
        "data_config.batch_size": 8,
    }
    assert not plan.warnings


def test_train_eval_minimal_and_ignore_restore_optimizer():
    plan, args = only_step("train_eval", ["--pipeline_config_path", "a.config"])
    assert plan.steps == [["train", "--config", "a.config"]] and not plan.warnings
    assert not args.continue_train and args.edit_config_json is None
    plan = plan_command(
        "train_eval",
        [
            "--pipeline_config_path",
            "a",
            "--fine_tune_checkpoint",
            "c",
            "--ignore_restore_optimizer",
        ],
    )
    assert plan.steps == [
        ["train", "--config", "a", "--fine_tune_checkpoint", "c", "--ignore_restore_optimizer"]
    ]
    assert not plan.warnings
    plan, args = only_step(
        "train_eval",
        ["--pipeline_config_path", "a", "--continue_train", "--ignore_restore_optimizer"],
    )
    assert args.continue_train and args.ignore_restore_optimizer


def test_eval_maps_every_flag():
    argv = ["--pipeline_config_path", "m/pipeline.config", "--checkpoint_path", "m/model.ckpt-3"]
    argv += ["--eval_input_path", "test.parquet", "--eval_result_filename", "eval_result.txt"]
    argv += ["--model_dir", "m2", "--edit_config_json", '{"eval_config.num_steps": 2}']
    _, args = only_step("eval", argv)
    assert (args.command, args.config, args.checkpoint) == (
        "evaluate",
        "m/pipeline.config",
        "m/model.ckpt-3",
    )
    assert args.eval_input_path == "test.parquet"
    assert args.eval_result_filename == "eval_result.txt"
    assert args.model_dir == "m2"
    assert json.loads(args.edit_config_json) == {"eval_config.num_steps": 2}


def test_export_maps_every_flag(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("a\n")
    argv = ["--pipeline_config_path", "p.config", "--export_dir", "exp"]
    argv += ["--checkpoint_path", "m/model.ckpt-3", "--asset_files", f" {vocab} "]
    argv += ["--item_input_path", "items.parquet"]
    plan, args = only_step("export", argv)
    assert (args.command, args.config, args.export_dir, args.checkpoint) == (
        "export",
        "p.config",
        "exp",
        "m/model.ckpt-3",
    )
    assert plan.asset_files == [str(vocab)] and plan.export_dir == "exp"
    assert len(plan.warnings) == 1 and "--item_input_path ignored" in plan.warnings[0]


def test_export_refusals(tmp_path):
    base = ["--pipeline_config_path", "p.config", "--export_dir", "exp"]
    with pytest.raises(FlagError, match="--additional_export_config: not supported yet"):
        plan_command("export", base + ["--additional_export_config", '{"a": "b"}'])
    with pytest.raises(FlagError, match="--asset_files: file 'nope.txt' not found"):
        plan_command("export", base + ["--asset_files", "nope.txt"])
    clash = tmp_path / "pipeline.config"
    clash.write_text("")
    with pytest.raises(FlagError, match="would replace the export's own pipeline.config"):
        plan_command("export", base + ["--asset_files", str(clash)])


@pytest.fixture
def fake_export(tmp_path):
    """An export directory whose config says CsvDataset, and inputs of three extensions."""
    export = tmp_path / "exp"
    export.mkdir()
    for name in ("scripted_model.pt", "model_info.json"):
        (export / name).write_text("")
    (export / "pipeline.config").write_text("data_config { dataset_type: CsvDataset }\n")
    for name in ("in.parquet", "in.csv", "in.data"):
        (tmp_path / name).write_text("")
    return tmp_path


def predict_argv(root, inputs="in.parquet", output="out", *extra):
    argv = ["--scripted_model_path", str(root / "exp"), "--predict_input_path", str(root / inputs)]
    return argv + ["--predict_output_path", str(root / output), *extra]


def test_predict_from_a_scripted_model_maps_every_flag(fake_export):
    extra = ["--reserved_columns", "id,label", "--output_columns", "probs"]
    extra += ["--batch_size", "32", "--predict_threads", "3", "--is_profiling"]
    extra += ["--debug_level", "0", "--dataset_type", "ParquetDataset"]
    extra += ["--writer_type", "ParquetWriter"]
    plan, args = only_step("predict", predict_argv(fake_export, "in.parquet", "out", *extra))
    assert args.command == "predict"
    assert args.scripted_model_path == str(fake_export / "exp")
    assert args.predict_input_path == str(fake_export / "in.parquet")
    assert args.predict_output_path == str(fake_export / "out")
    assert (args.reserved_columns, args.output_columns) == ("id,label", "probs")
    assert (args.batch_size, args.num_workers) == (32, 3)
    assert plan.csv_output is None and plan.work_dir is None
    assert len(plan.warnings) == 1 and "--is_profiling ignored" in plan.warnings[0]


def test_predict_writer_follows_the_input_type_as_in_torcheasyrec(fake_export):
    # parquet input -> parquet output
    plan = plan_command("predict", predict_argv(fake_export, "in.parquet"))
    assert plan.csv_output is None
    # csv input -> CsvWriter: parquet predictions in the work dir, then rewritten as CSV
    out = str(fake_export / "out")
    plan = plan_command("predict", predict_argv(fake_export, "in.csv"))
    assert plan.csv_output == out and plan.work_dir == out + ".work.tmp"
    assert recforge_args(plan.steps[0]).predict_output_path == plan.csv_source
    assert plan.csv_source == os.path.join(out + ".work.tmp", "predictions")
    # an unknown extension is read as the export's data_config.dataset_type says: CSV
    assert plan_command("predict", predict_argv(fake_export, "in.data")).csv_output == out
    # an output path ending in .parquet / .csv chooses its writer
    plan = plan_command("predict", predict_argv(fake_export, "in.csv", "p.parquet"))
    assert plan.csv_output is None
    plan = plan_command("predict", predict_argv(fake_export, "in.parquet", "p.csv"))
    assert plan.csv_source.endswith("predictions.parquet")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--predict_steps", "2"], "--predict_steps: not supported yet"),
        (["--debug_level", "1"], "--debug_level: not supported yet"),
        (["--writer_type", "OdpsWriter"], "OdpsWriter is not supported yet"),
        (["--writer_type", "CsvWriter"], "CsvWriter cannot write the .parquet file"),
        (["--dataset_type", "CsvDataset"], "reads .* as ParquetDataset"),
        (["--checkpoint_path", "m/model.ckpt-1"], "--checkpoint_path: not supported yet with"),
        (["--edit_config_json", "{}"], "--edit_config_json: not supported yet with"),
        (["--pipeline_config_path", "p.config"], "either --scripted_model_path or"),
    ],
)
def test_predict_refusals(fake_export, extra, message):
    with pytest.raises(FlagError, match=message):
        plan_command("predict", predict_argv(fake_export, "in.parquet", "o.parquet", *extra))


def test_predict_from_a_checkpoint_exports_first(fake_export):
    config = fake_export / "p.config"
    config.write_text('model_dir: "m"\n')
    argv = ["--pipeline_config_path", str(config), "--checkpoint_path", "m/model.ckpt-4"]
    argv += ["--predict_input_path", str(fake_export / "in.data"), "--dataset_type", "CsvDataset"]
    argv += [
        "--predict_output_path",
        "scores.csv",
        "--edit_config_json",
        '{"data_config.batch_size": 16}',
    ]
    argv += ["--plugin", "my_models"]
    plan = plan_command("predict", argv)
    export, predict = (recforge_args(step) for step in plan.steps)
    work = "scores.csv.work.tmp"
    assert (export.command, export.config, export.checkpoint) == (
        "export",
        str(config),
        "m/model.ckpt-4",
    )
    assert export.export_dir == predict.scripted_model_path == os.path.join(work, "export")
    assert export.plugin == ["my_models"]
    assert json.loads(export.edit_config_json) == {
        "data_config.dataset_type": "CsvDataset",
        "data_config.batch_size": 16,
        "export_config.exporter_type": "latest",  # TorchEasyRec predicts the newest checkpoint
    }
    assert plan.work_dir == work and plan.csv_output == "scores.csv"
    assert predict.predict_output_path == os.path.join(work, "predictions.parquet")


def test_bad_flags_exit_2_with_usage(capsys):
    for command, argv in [
        ("train_eval", ["--pipeline_config_path", "a", "--no_such_flag"]),
        ("eval", []),
        ("export", ["--pipeline_config_path", "a"]),
        ("predict", ["--predict_input_path", "x", "--predict_output_path", "y"]),
        ("predict", ["--predict_input_path", "x", "--predict_output_path", "y", "--batch_size=b"]),
    ]:
        with pytest.raises(SystemExit) as e:
            tzrec_commands.main(command, argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"usage: python -m recforge.{command}"), err
        assert f"python -m recforge.{command}: error: " in err


def test_unsupported_flag_exits_2_with_one_line(capsys):
    argv = ["--pipeline_config_path", "a", "--edit_config_json", "[1]"]
    assert tzrec_commands.main("train_eval", argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("recforge: error: --edit_config_json: expected a JSON object")
    assert err.count("\n") == 1
    argv = ["--pipeline_config_path", "a", "--export_dir", "e", "--additional_export_config", "{}"]
    assert tzrec_commands.main("export", argv) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_predict_input_errors_while_planning_exit_2_with_one_line(tmp_path, capsys):
    argv = ["--scripted_model_path", str(tmp_path / "nope"), "--predict_input_path", "x.csv"]
    with pytest.raises(SystemExit) as e:
        tzrec_commands.main("predict", argv + ["--predict_output_path", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("recforge: error: export directory") and err.count("\n") == 1


def test_parquet_parts_become_csv_parts(tmp_path):
    source, out = tmp_path / "pq", tmp_path / "csv"
    source.mkdir()
    out.mkdir()
    (out / "part-00007.csv").write_text("stale")
    (out / "notes.txt").write_text("kept")
    tables = [
        pa.table({"id": [1, 2], "probs": [0.25, 0.5]}),
        pa.table({"id": [3], "probs": [0.75]}),
    ]
    for i, table in enumerate(tables):
        pq.write_table(table, source / f"part-{i:05d}.parquet")
    files = parquet_to_csv(str(source), str(out))
    assert [os.path.basename(f) for f in files] == ["part-00000.csv", "part-00001.csv"]
    assert sorted(os.listdir(out)) == ["notes.txt", "part-00000.csv", "part-00001.csv"]
    for table, path in zip(tables, files):
        assert pacsv.read_csv(path).equals(table)
    single = parquet_to_csv(str(source / "part-00000.parquet"), str(tmp_path / "one.csv"))
    assert single == [str(tmp_path / "one.csv")]
    assert pacsv.read_csv(single[0]).equals(tables[0])


def test_csv_refuses_list_columns_and_writes_nothing(tmp_path):
    vectors = pa.FixedSizeListArray.from_arrays(pa.array([0.1, 0.2, 0.3, 0.4]), 2)
    pq.write_table(pa.table({"id": [1, 2], "user_emb": vectors}), tmp_path / "p.parquet")
    with pytest.raises(PredictError, match="CsvWriter cannot write column 'user_emb'"):
        parquet_to_csv(str(tmp_path / "p.parquet"), str(tmp_path / "p.csv"))
    assert sorted(os.listdir(tmp_path)) == ["p.parquet"]


def test_assets_go_into_the_export_and_its_towers(tmp_path):
    export = tmp_path / "exp"
    (export / "user").mkdir(parents=True)
    (export / "user" / "model_info.json").write_text("{}")
    (export / "notes").mkdir()
    asset = tmp_path / "vocab.txt"
    asset.write_text("a\nb\n")
    copies = tzrec_commands.copy_assets([str(asset)], str(export))
    assert copies == [str(export / "vocab.txt"), str(export / "user" / "vocab.txt")]
    assert (export / "user" / "vocab.txt").read_text() == "a\nb\n"
    assert not (export / "notes" / "vocab.txt").exists()
