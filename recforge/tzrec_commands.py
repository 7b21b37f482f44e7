"""TorchEasyRec's module commands, run by the ``recforge`` CLI.

``python -m recforge.train_eval``, ``recforge.eval``, ``recforge.export`` and
``recforge.predict`` take the flags of TorchEasyRec's ``tzrec.train_eval`` ... ``tzrec.predict``.
:func:`plan_command` turns such a command line into ``recforge`` subcommand argument lists
(``recforge train ...``), which :func:`execute` runs through :func:`recforge.cli.run_command`:
both spellings share one pipeline. ``FLAGS`` says what recforge does with each flag.

Where we differ from TorchEasyRec: an unknown flag exits 2 with the usage (TorchEasyRec
ignores unknown flags), and a flag recforge cannot honour exits 2 "not supported yet" unless
ignoring it cannot change any output, in which case a warning says it is ignored.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from recforge.errors import RecforgeError
from recforge.utils import storage
from recforge.utils.allocator import prefer_system_arrow_pool

COMMANDS = ("train_eval", "eval", "export", "predict")

HONOURED = "honoured"
WARNED = "ignored with a warning"
REFUSED = "not supported yet"
PARTLY = "partly"

# TorchEasyRec flag -> (how recforge treats it, what it does). Every flag the parser of a
# command accepts is here or in RECFORGE_FLAGS (tests check both ways).
FLAGS: dict[str, dict[str, tuple[str, str]]] = {
    "train_eval": {
        "--pipeline_config_path": (HONOURED, "recforge train --config"),
        "--model_dir": (HONOURED, "--model_dir"),
        "--train_input_path": (HONOURED, "config edit train_input_path (before the JSON edits)"),
        "--eval_input_path": (HONOURED, "config edit eval_input_path (before the JSON edits)"),
        "--continue_train": (HONOURED, "--continue_train"),
        "--fine_tune_checkpoint": (
            HONOURED,
            "--fine_tune_checkpoint: restores the weights and optimizer state that fit",
        ),
        "--edit_config_json": (HONOURED, "--edit_config_json"),
        "--ignore_restore_optimizer": (HONOURED, "--ignore_restore_optimizer"),
    },
    "eval": {
        "--pipeline_config_path": (HONOURED, "recforge evaluate --config"),
        "--checkpoint_path": (HONOURED, "--checkpoint (default: the newest in model_dir)"),
        "--eval_input_path": (HONOURED, "--eval_input_path"),
        "--eval_result_filename": (
            HONOURED,
            "--eval_result_filename: the metrics go to that file in model_dir (default"
            " eval_result.json; TorchEasyRec's default eval_result.txt)",
        ),
    },
    "export": {
        "--pipeline_config_path": (HONOURED, "recforge export --config"),
        "--checkpoint_path": (HONOURED, "--checkpoint (default: export_config.exporter_type)"),
        "--export_dir": (HONOURED, "--export_dir (an earlier export there is replaced)"),
        "--asset_files": (HONOURED, "comma-separated files copied into the export (and towers)"),
        "--additional_export_config": (REFUSED, "recforge writes no model_acc.json"),
        "--item_input_path": (WARNED, "recforge's export reads no data, so nothing to redirect"),
    },
    "predict": {
        "--scripted_model_path": (HONOURED, "recforge predict --scripted_model_path"),
        "--pipeline_config_path": (
            HONOURED,
            "without a scripted model: export the checkpoint to a temporary directory, then"
            " predict with it",
        ),
        "--checkpoint_path": (
            HONOURED,
            "with --pipeline_config_path (default: the newest checkpoint in model_dir)",
        ),
        "--predict_input_path": (HONOURED, "--predict_input_path"),
        "--predict_output_path": (HONOURED, "--predict_output_path"),
        "--reserved_columns": (HONOURED, "--reserved_columns"),
        "--output_columns": (HONOURED, "--output_columns"),
        "--batch_size": (HONOURED, "--batch_size"),
        "--predict_threads": (HONOURED, "--num_workers (the input-parsing workers)"),
        "--is_profiling": (WARNED, "no profiler trace is written; predictions are the same"),
        "--debug_level": (PARTLY, "0 (the default) only: level > 0 adds a __features__ column"),
        "--dataset_type": (
            PARTLY,
            "accepted when it is the type recforge reads the input as (by file extension, else"
            " the config's data_config.dataset_type)",
        ),
        "--writer_type": (
            PARTLY,
            "ParquetWriter or CsvWriter (default: the input's type, as in TorchEasyRec; a"
            " .parquet/.csv output path chooses its own); OdpsWriter is not supported yet",
        ),
        "--edit_config_json": (
            PARTLY,
            "with --pipeline_config_path (edits the config before the export); not supported"
            " yet with --scripted_model_path",
        ),
        "--predict_steps": (REFUSED, "recforge predicts every input row"),
    },
}

# recforge's own flags on these commands
RECFORGE_FLAGS: dict[str, tuple[str, ...]] = {
    "train_eval": ("--plugin", "--traceback"),
    "eval": ("--model_dir", "--edit_config_json", "--plugin", "--traceback"),
    "export": ("--model_dir", "--edit_config_json", "--plugin", "--traceback"),
    "predict": ("--plugin", "--traceback"),
}

WRITER_TYPES = ("ParquetWriter", "CsvWriter", "OdpsWriter")
DATASET_TYPES = ("OdpsDataset", "ParquetDataset", "CsvDataset")
# the export and the parquet predictions of ``recforge.predict`` live here until done
WORK_DIR_SUFFIX = ".work.tmp"


# the flags of each command that take a path or an fsspec URL (checked before any work)
PATH_FLAGS: dict[str, tuple[str, ...]] = {
    "train_eval": (
        "--pipeline_config_path",
        "--model_dir",
        "--train_input_path",
        "--eval_input_path",
        "--fine_tune_checkpoint",
    ),
    "eval": ("--pipeline_config_path", "--model_dir", "--checkpoint_path", "--eval_input_path"),
    "export": (
        "--pipeline_config_path",
        "--model_dir",
        "--checkpoint_path",
        "--export_dir",
        "--asset_files",
    ),
    "predict": (
        "--scripted_model_path",
        "--pipeline_config_path",
        "--checkpoint_path",
        "--predict_input_path",
        "--predict_output_path",
    ),
}


class FlagError(RecforgeError):
    """A flag recforge cannot honour (yet) or a contradictory combination of flags."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"{flag}: {message}")


@dataclass
class Plan:
    """What a TorchEasyRec command line runs in recforge.

    Attributes:
        steps: ``recforge`` CLI argument lists, run in order; the last one's summary is the
            command's.
        warnings: flags accepted but ignored (ignoring them changes no output).
        asset_files: files to copy into ``export_dir`` after the export.
        export_dir: the export directory (for ``asset_files``).
        csv_source: parquet predictions to rewrite as CSV at ``csv_output``.
        csv_output: the CSV file, or directory of ``part-*.csv`` files.
        work_dir: a directory the steps write temporaries to, removed afterwards.

    """

    steps: list[list[str]]
    warnings: list[str] = field(default_factory=list)
    asset_files: list[str] = field(default_factory=list)
    export_dir: Optional[str] = None
    csv_source: Optional[str] = None
    csv_output: Optional[str] = None
    work_dir: Optional[str] = None


def _help(command: str, flag: str) -> str:
    kind, text = FLAGS[command][flag]
    return text if kind == HONOURED else f"[{kind}] {text}"


def _add_recforge_flags(parser: argparse.ArgumentParser, command: str) -> None:
    extras = RECFORGE_FLAGS[command]
    if "--model_dir" in extras:
        parser.add_argument("--model_dir", default=None, help="overrides model_dir of the config")
    if "--edit_config_json" in extras:
        parser.add_argument(
            "--edit_config_json", default=None, help="config overrides as a JSON object"
        )
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        help="python module to import first (user models/features); repeatable",
    )
    parser.add_argument(
        "--traceback", action="store_true", help="show the full stack trace of input errors"
    )


def build_parser(command: str) -> argparse.ArgumentParser:
    """The parser of ``python -m recforge.<command>`` (TorchEasyRec's flag names)."""
    parser = argparse.ArgumentParser(
        prog=f"python -m recforge.{command}",
        description=f"TorchEasyRec's tzrec.{command} command, run by recforge.",
        allow_abbrev=False,
    )

    def add(flag: str, **kwargs: Any) -> None:
        parser.add_argument(flag, help=_help(command, flag), **kwargs)

    if command == "train_eval":
        add("--pipeline_config_path", required=True)
        add("--model_dir")
        add("--train_input_path")
        add("--eval_input_path")
        add("--continue_train", action="store_true")
        add("--fine_tune_checkpoint")
        add("--edit_config_json")
        add("--ignore_restore_optimizer", action="store_true")
    elif command == "eval":
        add("--pipeline_config_path", required=True)
        add("--checkpoint_path")
        add("--eval_input_path")
        add("--eval_result_filename")
    elif command == "export":
        add("--pipeline_config_path", required=True)
        add("--checkpoint_path")
        add("--export_dir", required=True)
        add("--asset_files")
        add("--additional_export_config")
        add("--item_input_path")
    elif command == "predict":
        add("--scripted_model_path")
        add("--pipeline_config_path")
        add("--checkpoint_path")
        add("--predict_input_path", required=True)
        add("--predict_output_path", required=True)
        add("--reserved_columns")
        add("--output_columns")
        add("--batch_size", type=int)
        add("--predict_threads", type=int)
        add("--is_profiling", action="store_true")
        add("--debug_level", type=int, default=0)
        add("--dataset_type", choices=DATASET_TYPES)
        add("--writer_type", choices=WRITER_TYPES)
        add("--edit_config_json")
        add("--predict_steps", type=int)
    else:
        raise ValueError(f"unknown command {command!r}; known: {', '.join(COMMANDS)}")
    _add_recforge_flags(parser, command)
    return parser


def parse_args(command: str, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parses a command line; a missing, unknown or malformed flag exits 2 with the usage."""
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if command == "predict" and not (args.scripted_model_path or args.pipeline_config_path):
        parser.error("one of --scripted_model_path or --pipeline_config_path is required")
    return args


def _edits(text: Optional[str], flag: str = "--edit_config_json") -> dict[str, Any]:
    if not text:
        return {}
    try:
        edits = json.loads(text)
    except json.JSONDecodeError as e:
        raise FlagError(flag, f"expected a JSON object, found invalid JSON ({e})") from None
    if not isinstance(edits, dict):
        raise FlagError(
            flag, f'expected a JSON object like {{"train_config.num_epochs": 2}}, found {text}'
        )
    return edits


def _config_flags(args: argparse.Namespace, edits: dict[str, Any]) -> list[str]:
    """``--model_dir``, ``--edit_config_json`` and ``--plugin`` arguments of a step."""
    flags = []
    if getattr(args, "model_dir", None):
        flags += ["--model_dir", args.model_dir]
    if edits:
        flags += ["--edit_config_json", json.dumps(edits)]
    for plugin in args.plugin:
        flags += ["--plugin", plugin]
    return flags


def _plan_train_eval(args: argparse.Namespace) -> Plan:
    plan = Plan(steps=[])
    # TorchEasyRec sets the input paths first, then applies the JSON edits
    edits: dict[str, Any] = {}
    if args.train_input_path:
        edits["train_input_path"] = args.train_input_path
    if args.eval_input_path:
        edits["eval_input_path"] = args.eval_input_path
    edits.update(_edits(args.edit_config_json))
    step = ["train", "--config", args.pipeline_config_path]
    if args.continue_train:
        step.append("--continue_train")
    if args.fine_tune_checkpoint:
        step += ["--fine_tune_checkpoint", args.fine_tune_checkpoint]
    if args.ignore_restore_optimizer:
        step.append("--ignore_restore_optimizer")
    plan.steps.append(step + _config_flags(args, edits))
    return plan


def _plan_eval(args: argparse.Namespace) -> Plan:
    step = ["evaluate", "--config", args.pipeline_config_path]
    if args.checkpoint_path:
        step += ["--checkpoint", args.checkpoint_path]
    if args.eval_input_path:
        step += ["--eval_input_path", args.eval_input_path]
    if args.eval_result_filename:
        step += ["--eval_result_filename", args.eval_result_filename]
    return Plan(steps=[step + _config_flags(args, _edits(args.edit_config_json))])


def _asset_files(text: Optional[str]) -> list[str]:
    from recforge.utils.layout import EXPORT_FILES

    files = [f.strip() for f in (text or "").split(",") if f.strip()]
    names = [os.path.basename(f) for f in files]
    for path, name in zip(files, names):
        if not storage.isfile(path):
            raise FlagError("--asset_files", f"file '{path}' not found")
        if name in EXPORT_FILES:
            raise FlagError("--asset_files", f"'{path}' would replace the export's own {name}")
        if names.count(name) > 1:
            raise FlagError("--asset_files", f"two files are named '{name}'")
    return files


def _plan_export(args: argparse.Namespace) -> Plan:
    if args.additional_export_config:
        raise FlagError(
            "--additional_export_config",
            "not supported yet (recforge's export writes no model_acc.json); drop the flag",
        )
    step = ["export", "--config", args.pipeline_config_path, "--export_dir", args.export_dir]
    if args.checkpoint_path:
        step += ["--checkpoint", args.checkpoint_path]
    plan = Plan(steps=[step + _config_flags(args, _edits(args.edit_config_json))])
    plan.asset_files = _asset_files(args.asset_files)
    plan.export_dir = args.export_dir
    if args.item_input_path:
        plan.warnings.append(
            "--item_input_path ignored: recforge's export reads no data (it checks the"
            " scripted towers on generated inputs)"
        )
    return plan


def _input_dataset_type(args: argparse.Namespace, edits: dict[str, Any]) -> str:
    """The ``DatasetType`` name recforge's predict will read ``--predict_input_path`` as."""
    from recforge.config import edit_config, load_pipeline_config
    from recforge.predict import data_config_for
    from recforge.predictor import resolve_export_dir
    from recforge.protos import data_pb2
    from recforge.utils.layout import EXPORT_CONFIG_FILE, MODEL_FILE

    if args.scripted_model_path and storage.is_remote(args.scripted_model_path):
        directory = args.scripted_model_path.rstrip("/")
        if directory.endswith("/" + MODEL_FILE):
            directory = directory[: -len(MODEL_FILE) - 1]
        # only the config: recforge predict downloads the whole export itself
        config = load_pipeline_config(
            storage.fetch(storage.join(directory, EXPORT_CONFIG_FILE), "export")
        )
    elif args.scripted_model_path:
        path = os.path.join(resolve_export_dir(args.scripted_model_path), EXPORT_CONFIG_FILE)
        config = load_pipeline_config(path)
    else:
        config = edit_config(load_pipeline_config(args.pipeline_config_path), edits)
    data_config = data_config_for(config.data_config, args.predict_input_path)
    return data_pb2.DatasetType.Name(data_config.dataset_type)


def _writer_type(args: argparse.Namespace, edits: dict[str, Any]) -> str:
    if args.writer_type == "OdpsWriter":
        raise FlagError("--writer_type", "OdpsWriter is not supported yet; use ParquetWriter")
    output = args.predict_output_path.rstrip("/")
    for suffix, writer in ((".parquet", "ParquetWriter"), (".csv", "CsvWriter")):
        if output.endswith(suffix):
            if args.writer_type not in (None, writer):
                raise FlagError(
                    "--writer_type",
                    f"{args.writer_type} cannot write the {suffix} file '{output}'; name the"
                    f" output without {suffix} (a directory) or use {writer}",
                )
            return writer
    if args.writer_type:
        return args.writer_type
    # TorchEasyRec writes what it reads: CsvDataset -> CsvWriter, ...
    return _input_dataset_type(args, edits).replace("Dataset", "Writer")


def _plan_predict(args: argparse.Namespace) -> Plan:
    if args.scripted_model_path and args.pipeline_config_path:
        # TorchEasyRec silently prefers the checkpoint; we ask the user to choose
        raise FlagError(
            "--scripted_model_path",
            "give either --scripted_model_path or --pipeline_config_path (with"
            " --checkpoint_path), not both",
        )
    if args.predict_steps is not None:
        raise FlagError("--predict_steps", "not supported yet (recforge predicts every input row)")
    if args.debug_level:
        raise FlagError(
            "--debug_level",
            "not supported yet (the __features__ debug column); drop the flag or use 0",
        )
    plan = Plan(steps=[])
    if args.is_profiling:
        plan.warnings.append("--is_profiling ignored: recforge writes no profiler trace")
    output = args.predict_output_path.rstrip("/") or args.predict_output_path
    # beside a local output (same disk, so the renames stay cheap); a URL's is local
    remote = storage.is_remote(output)
    work_dir = storage.local_temp_dir("predict") if remote else output + WORK_DIR_SUFFIX
    edits: dict[str, Any] = {}
    if args.pipeline_config_path:
        if args.dataset_type:
            edits["data_config.dataset_type"] = args.dataset_type
        edits.update(_edits(args.edit_config_json))
        model_path = os.path.join(work_dir, "export")
        export = ["export", "--config", args.pipeline_config_path, "--export_dir", model_path]
        if args.checkpoint_path:
            export += ["--checkpoint", args.checkpoint_path]
        # TorchEasyRec predicts the newest checkpoint whatever export_config says
        export_edits = {**edits, "export_config.exporter_type": "latest"}
        plan.steps.append(export + _config_flags(args, export_edits))
        plan.work_dir = work_dir
    else:
        model_path = args.scripted_model_path
        for flag, given in (
            ("--checkpoint_path", args.checkpoint_path),
            ("--edit_config_json", args.edit_config_json),
            ("--plugin", args.plugin),
        ):
            if given:
                raise FlagError(
                    flag,
                    "not supported yet with --scripted_model_path (the export fixes the model"
                    " and its config); use --pipeline_config_path instead",
                )
    if args.dataset_type:
        reads = _input_dataset_type(args, edits)
        if reads != args.dataset_type:
            raise FlagError(
                "--dataset_type",
                f"recforge reads '{args.predict_input_path}' as {reads} (by the file"
                " extension, else the config's data_config.dataset_type); reading it as"
                f" {args.dataset_type} is not supported yet",
            )
    writer = _writer_type(args, edits)
    if writer not in ("ParquetWriter", "CsvWriter"):  # the input is read as OdpsDataset
        raise FlagError("--writer_type", f"{writer} is not supported yet; use ParquetWriter")
    predictions = output
    if writer == "CsvWriter":
        single = output.endswith(".csv")
        predictions = os.path.join(work_dir, "predictions" + (".parquet" if single else ""))
        plan.csv_source, plan.csv_output, plan.work_dir = predictions, output, work_dir
    step = ["predict", "--scripted_model_path", model_path]
    step += ["--predict_input_path", args.predict_input_path]
    step += ["--predict_output_path", predictions]
    for flag, value in (
        ("--reserved_columns", args.reserved_columns),
        ("--output_columns", args.output_columns),
        ("--num_workers", args.predict_threads),
        ("--batch_size", args.batch_size),
    ):
        if value is not None:
            step += [flag, str(value)]
    plan.steps.append(step)
    if remote and not plan.work_dir:
        os.rmdir(work_dir)  # nothing to stage locally: recforge predict publishes the URL
    return plan


def plan_args(command: str, args: argparse.Namespace) -> Plan:
    """The recforge steps of parsed TorchEasyRec flags.

    Raises:
        FlagError: a flag recforge cannot honour, or contradictory flags.
        ConfigError: a path flag's URL of an unknown scheme, or one whose package is missing.
        ExportError, ConfigError, DataError: ``recforge.predict`` reads the model's config
            and lists the input files to choose the writer / check ``--dataset_type``.

    """
    storage.check_paths({flag: getattr(args, flag[2:], None) for flag in PATH_FLAGS[command]})
    planner = {
        "train_eval": _plan_train_eval,
        "eval": _plan_eval,
        "export": _plan_export,
        "predict": _plan_predict,
    }[command]
    return planner(args)


def plan_command(command: str, argv: Sequence[str]) -> Plan:
    """The recforge steps of a TorchEasyRec command line (see :func:`plan_args`)."""
    return plan_args(command, parse_args(command, argv))


def copy_assets(files: Sequence[str], export_dir: str) -> list[str]:
    """Copies files into an export directory and its tower exports (``user/``, ``item/``).

    Each copy is written as ``*.tmp`` and renamed. Returns the copies' paths.
    """
    from recforge.utils.layout import MODEL_INFO_FILE, tower_export_dirs

    local = [storage.fetch(path, "asset") for path in files]
    if storage.is_remote(export_dir):  # each file uploaded beside its place, then moved
        towers = [
            storage.join(export_dir, name)
            for name in sorted(storage.listdir(export_dir))
            if storage.isfile(storage.join(export_dir, name, MODEL_INFO_FILE))
        ]
        copies = []
        for target in [export_dir, *towers]:
            for path, copy in zip(files, local):
                final = storage.join(target, os.path.basename(path))
                storage.publish_file(copy, final)
                copies.append(final)
        return copies
    targets = [export_dir, *tower_export_dirs(export_dir)]
    copies = []
    for target in targets:
        for path, copy in zip(files, local):
            final = os.path.join(target, os.path.basename(path))
            shutil.copyfile(copy, final + ".tmp")
            os.replace(final + ".tmp", final)
            copies.append(final)
    return copies


def _write_csv(source: str, output: str) -> list[str]:
    """CSV of the parquet predictions ``source`` at ``output`` (a path or URL); its files.

    A URL's files are written locally and published one by one; in directory mode the
    ``part-*.csv`` objects of an earlier run that this one did not write are deleted, as
    :func:`recforge.datasets.csv_output.parquet_to_csv` deletes local ones.
    """
    from recforge.datasets.csv_output import parquet_to_csv

    if not storage.is_remote(output):
        return parquet_to_csv(source, output)
    single = not os.path.isdir(source)
    with storage.written_locally(output, "predict", directory=not single) as local:
        written = parquet_to_csv(source, local)
    urls = [storage.urls_in(path) for path in written]
    if not single:
        for name in storage.listdir(output):
            url = storage.join(output, name)
            if name.startswith("part-") and name.endswith(".csv") and url not in urls:
                storage.remove(url)
    return urls


def execute(plan: Plan, show_traceback: bool = False) -> dict[str, Any]:
    """Runs a plan's steps through the ``recforge`` CLI, then its copies and conversions.

    Returns:
        The last step's summary (with ``assets`` and the CSV ``files`` where they apply).

    """
    prefer_system_arrow_pool()
    from recforge import cli
    from recforge.errors import user_facing_errors

    parser = cli.build_parser()
    prefix = ["--traceback"] if show_traceback else []
    if plan.work_dir:
        shutil.rmtree(plan.work_dir, ignore_errors=True)  # left by a killed run
    try:
        result: dict[str, Any] = {}
        for step in plan.steps:
            result = cli.run_command(parser.parse_args(prefix + step))
        with user_facing_errors(show_traceback, storage.urls_in):
            if plan.asset_files and plan.export_dir:
                result["assets"] = copy_assets(plan.asset_files, plan.export_dir)
            if plan.csv_output and plan.csv_source:
                result["files"] = _write_csv(plan.csv_source, plan.csv_output)
    finally:
        if plan.work_dir:
            shutil.rmtree(plan.work_dir, ignore_errors=True)
    return result


def main(command: str, argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m recforge.<command>`` (``torchrun -m`` too).

    A missing or unknown flag exits 2 with the usage; a flag recforge cannot honour exits 2
    with one line; input errors exit 2 with one line (``--traceback`` shows the stack).
    """
    prefer_system_arrow_pool()
    from recforge import cli
    from recforge.errors import user_facing_errors
    from recforge.utils.logging_util import setup_cli_logging

    args = parse_args(command, argv)
    cli.quiet_library_warnings()
    setup_cli_logging()
    with user_facing_errors(args.traceback, storage.urls_in):
        try:
            plan = plan_args(command, args)
        except FlagError as e:  # a flag's mistake: the usual line, returned rather than exited
            print(f"recforge: error: {e}", file=sys.stderr)
            return 2
    if int(os.environ.get("RANK", "0")) == 0:
        import logging

        for warning in plan.warnings:
            logging.getLogger(__name__).warning("%s", warning)
    cli.report(execute(plan, args.traceback))
    return 0
