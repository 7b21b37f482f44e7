"""The ``recforge`` command: ``recforge {train,evaluate,export,predict,...}`` (:data:`SUBCOMMANDS`).

Also ``python -m recforge``.

Under torchrun: ``torchrun --nproc-per-node=2 -m recforge train --config ...``.

Each subcommand is one entry of :data:`SUBCOMMANDS`: its help line, the parent parsers whose
flags it shares with others (:func:`_config_flags`, :func:`_checkpoint_flag`, ...), a function
adding its own flags and a handler that runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

from recforge.utils.allocator import prefer_system_arrow_pool


def _edits(text: Optional[str]) -> dict[str, str]:
    if not text:
        return {}
    try:
        edits = json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"--edit_config_json is not valid JSON: {e}") from e
    if not isinstance(edits, dict):
        raise SystemExit(
            '--edit_config_json must be a JSON object like {"train_config.num_epochs": 2}'
        )
    return {k: str(v) for k, v in edits.items()}


def _top_k(text: str) -> list[int]:
    try:
        return [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise SystemExit(f"--top_k must be comma-separated integers, found '{text}'") from None


# ---- flags shared by several subcommands (argparse parent parsers) ----------------------------
def _config_flags() -> argparse.ArgumentParser:
    """``--config``, ``--model_dir``, ``--edit_config_json``, ``--plugin``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--config",
        "--pipeline_config_path",
        dest="config",
        required=True,
        help="pipeline config (.config text proto, .json or .yaml)",
    )
    parser.add_argument("--model_dir", default=None, help="overrides model_dir of the config")
    parser.add_argument(
        "--edit_config_json",
        default=None,
        help="config overrides, e.g. '{\"train_config.num_epochs\": 2}'",
    )
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        help="python module to import first (user models/features); repeatable",
    )
    return parser


def _checkpoint_flag(default: str = "newest in model_dir") -> argparse.ArgumentParser:
    """``--checkpoint`` (TorchEasyRec's ``--checkpoint_path``); ``default`` says which one."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--checkpoint",
        "--checkpoint_path",
        dest="checkpoint",
        default=None,
        help=f"checkpoint directory (default: {default})",
    )
    return parser


def _eval_input_flag() -> argparse.ArgumentParser:
    """``--eval_input_path``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--eval_input_path", default=None, help="overrides eval_input_path")
    return parser


def _config_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`_config_flags` every pipeline function takes."""
    return {
        "edits": _edits(args.edit_config_json),
        "plugins": args.plugin,
        "model_dir": args.model_dir,
    }


# ---- the subcommands: flags and handlers ------------------------------------------------------
def _train_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train_input_path", default=None, help="overrides train_input_path")
    reuse = parser.add_mutually_exclusive_group()
    reuse.add_argument(
        "--continue_train",
        action="store_true",
        help="resume from the newest checkpoint in model_dir",
    )
    reuse.add_argument(
        "--overwrite",
        action="store_true",
        help="move an earlier run in model_dir to <model_dir>.old-<time> and train anew",
    )
    parser.add_argument(
        "--fine_tune_checkpoint",
        default=None,
        help="warm start from this checkpoint (or the newest in this directory): restores the"
        " tensors that fit, warns about the rest",
    )
    parser.add_argument(
        "--ignore_restore_optimizer",
        action="store_true",
        help="restore weights only (with --continue_train or a warm start): optimizer state"
        " starts fresh",
    )


def _train(args: argparse.Namespace) -> dict:
    from recforge.train import train_and_evaluate

    kwargs = _config_kwargs(args)
    # as TorchEasyRec's train_eval: the path flags set the config before the JSON edits
    paths = {
        name: getattr(args, name)
        for name in ("train_input_path", "eval_input_path")
        if getattr(args, name)
    }
    kwargs["edits"] = {**paths, **kwargs["edits"]}
    return train_and_evaluate(
        args.config,
        continue_train=args.continue_train,
        fine_tune_checkpoint=args.fine_tune_checkpoint,
        ignore_restore_optimizer=args.ignore_restore_optimizer,
        overwrite=args.overwrite,
        **kwargs,
    )


def _no_flags(parser: argparse.ArgumentParser) -> None:
    """For subcommands that take only shared flags."""


def _validate(args: argparse.Namespace) -> dict:
    from recforge.validate import validate

    return validate(args.config, **_config_kwargs(args))


def _inspect_batch_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mode", default="train", choices=["train", "eval"], help="which input to read"
    )
    parser.add_argument("--num_rows", type=int, default=5, help="rows shown per feature")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text lines")


def _inspect_batch(args: argparse.Namespace) -> dict:
    from recforge.tools.inspect_batch import format_batch, inspect_batch

    described = inspect_batch(
        args.config, mode=args.mode, num_rows=args.num_rows, **_config_kwargs(args)
    )
    if args.json:
        return described
    print("\n".join(format_batch(described)))
    return {}


def _init_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="parquet/csv files, globs, a directory")
    parser.add_argument("--output", default="pipeline.config", help="config file to write")
    parser.add_argument("--label", default=None, help="label column (default: label, click, ...)")
    parser.add_argument(
        "--sample_rows", type=int, default=100_000, help="rows read for the statistics"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing --output")
    parser.add_argument(
        "--id_columns", default="", help="name patterns of id columns, e.g. 'C*,*_id'"
    )
    parser.add_argument(
        "--raw_columns", default="", help="name patterns of numeric (raw) columns, e.g. 'I*'"
    )


def _init(args: argparse.Namespace) -> dict:
    from recforge.tools.init_config import write_starter_config

    return write_starter_config(
        args.data,
        args.output,
        label=args.label,
        sample_rows=args.sample_rows,
        force=args.force,
        id_columns=args.id_columns,
        raw_columns=args.raw_columns,
    )


def _schema_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        dest="fmt",
        default="json-schema",
        choices=["json-schema", "markdown"],
        help="a JSON Schema for editors (JSON/YAML configs), or a Markdown field reference",
    )
    parser.add_argument("--output", default=None, help="file to write (default: stdout)")


def _schema(args: argparse.Namespace) -> dict:
    from recforge.tools.schema import write_schema

    text = write_schema(args.fmt, args.output)
    if args.output:
        return {"output": args.output, "format": args.fmt}
    sys.stdout.write(text)
    return {}


def _evaluate_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--eval_result_filename",
        default=None,
        help="file in model_dir that receives the metrics (default: eval_result.json)",
    )


def _evaluate(args: argparse.Namespace) -> dict:
    from recforge.evaluate import evaluate

    return evaluate(
        args.config,
        checkpoint_path=args.checkpoint,
        eval_input_path=args.eval_input_path,
        eval_result_filename=args.eval_result_filename,
        **_config_kwargs(args),
    )


def _export_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--export_dir", required=True, help="directory to write the export to")


def _export(args: argparse.Namespace) -> dict:
    from recforge.export import export_model

    return export_model(
        args.config, args.export_dir, checkpoint_path=args.checkpoint, **_config_kwargs(args)
    )


def _predict_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scripted_model_path",
        required=True,
        help="the export directory (or its scripted_model.pt)",
    )
    parser.add_argument(
        "--predict_input_path", required=True, help="parquet/csv files, globs, comma-separated"
    )
    parser.add_argument(
        "--predict_output_path",
        required=True,
        help="a .parquet file, or a directory that receives part-*.parquet files",
    )
    parser.add_argument(
        "--reserved_columns", default="", help="input columns copied to the output, e.g. id,label"
    )
    parser.add_argument(
        "--output_columns", default="", help="model outputs to write, e.g. probs (default: all)"
    )
    parser.add_argument(
        "--num_workers", type=int, default=None, help="input-parsing workers (default: config)"
    )
    parser.add_argument(
        "--batch_size", type=int, default=None, help="rows per batch (default: config)"
    )
    parser.add_argument(
        "--raw_input",
        action="store_true",
        help="the input holds raw columns although the model was trained on FG output"
        " (fg_mode FG_NONE / FG_BUCKETIZE): compute the features from them (FG_DAG)",
    )


def _predict(args: argparse.Namespace) -> dict:
    from recforge.predict import predict

    return predict(
        args.scripted_model_path,
        args.predict_input_path,
        args.predict_output_path,
        reserved_columns=args.reserved_columns,
        output_columns=args.output_columns,
        num_workers=args.num_workers,
        batch_size=args.batch_size,
        raw_input=args.raw_input,
    )


def _retrieval_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--train_input_path",
        default=None,
        help="training interactions (popularity baseline, --exclude_train); default: config",
    )
    parser.add_argument(
        "--item_table_path",
        default=None,
        help="item table (default: data_config.negative_sampler.input_path)",
    )
    parser.add_argument(
        "--item_id_field", default=None, help="item id column (default: the sampler's)"
    )
    parser.add_argument(
        "--user_id_field",
        default=None,
        help="user id column (default: first input column of the user tower)",
    )
    parser.add_argument("--top_k", default="10,50,100", help="cut-offs K, comma-separated")
    parser.add_argument(
        "--exclude_train",
        action="store_true",
        help="never retrieve items the user interacted with in the training data",
    )
    parser.add_argument(
        "--backend", default="torch", choices=["torch", "faiss"], help="exact search backend"
    )


def _retrieval(args: argparse.Namespace) -> dict:
    from recforge.retrieval import evaluate_retrieval

    return evaluate_retrieval(
        args.config,
        checkpoint_path=args.checkpoint,
        eval_input_path=args.eval_input_path,
        item_table_path=args.item_table_path,
        user_id_field=args.user_id_field,
        item_id_field=args.item_id_field,
        top_k=_top_k(args.top_k),
        exclude_train=args.exclude_train,
        train_input_path=args.train_input_path,
        backend=args.backend,
        **_config_kwargs(args),
    )


def _mock_data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "--pipeline_config_path", dest="config", required=True, help="pipeline config"
    )
    parser.add_argument("--output_dir", required=True, help="folder receiving part-*.parquet")
    parser.add_argument("--num_rows", type=int, default=10000, help="sample rows")
    parser.add_argument("--num_files", type=int, default=1, help="parquet files to split them into")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same data)")
    parser.add_argument(
        "--edit_config_json",
        default=None,
        help="config overrides applied before generating (e.g. smaller tables), as for train",
    )


def _mock_data(args: argparse.Namespace) -> dict:
    from recforge.config import edit_config, load_pipeline_config
    from recforge.datasets.mock_data import generate_mock_data
    from recforge.utils import storage

    user_edits = _edits(args.edit_config_json)
    source = edit_config(load_pipeline_config(storage.fetch(args.config, "config")), user_edits)
    result = generate_mock_data(source, args.output_dir, args.num_rows, args.num_files, args.seed)
    result = storage.urls_of(result)  # the paths the data will have once published
    edits = json.dumps({**user_edits, **result["edit_config_json"]})
    hint = f"recforge train --config {args.config} --edit_config_json '{edits}'"
    print(f"train on it: {hint}", file=sys.stderr)
    return result


def _create_fg_json_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "--pipeline_config_path", dest="config", required=True, help="pipeline config"
    )
    parser.add_argument(
        "--fg_output_path", default="fg.json", help="file to write (assets go to assets/ beside it)"
    )
    parser.add_argument("--reserves", default=None, help="columns the FG passes through, e.g. id")
    parser.add_argument("--remove_bucketizer", action="store_true", help="leave out bucketizers")
    parser.add_argument("--edit_config_json", default=None, help="config overrides, as for train")


def _create_fg_json(args: argparse.Namespace) -> dict:
    from recforge.tools.create_fg_json import create_fg_json_file, parse_reserves

    return create_fg_json_file(
        args.config,
        args.fg_output_path,
        reserves=parse_reserves(args.reserves),
        remove_bucketizer=args.remove_bucketizer,
        edits=_edits(args.edit_config_json),
    )


def _serve_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--export_dir", required=True, help="the directory recforge export wrote")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument(
        "--max_batch_size", type=int, default=1024, help="most rows per model call and request"
    )
    parser.add_argument(
        "--max_wait_ms",
        type=float,
        default=5.0,
        help="how long a request may wait for others to share its model call",
    )
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    parser.add_argument(
        "--num_threads",
        type=int,
        default=None,
        help="torch threads per worker (default: usable CPUs / workers, less 1)",
    )


def _serve(args: argparse.Namespace) -> dict:
    from recforge.serving.server import serve

    return serve(
        args.export_dir,
        host=args.host,
        port=args.port,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        workers=args.workers,
        num_threads=args.num_threads,
    )


def _build_index_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--export_dir", required=True, help="the export of a match model (recforge export)"
    )
    parser.add_argument(
        "--item_input_path", required=True, help="item table: parquet/csv files, globs"
    )
    parser.add_argument(
        "--item_id_field", default=None, help="item id column (default: the sampler's)"
    )
    parser.add_argument(
        "--index_type", default="flat", choices=["flat", "ivf", "hnsw"], help="flat is exact"
    )
    parser.add_argument(
        "--metric", default="ip", choices=["ip", "l2"], help="inner product or squared L2"
    )
    parser.add_argument(
        "--nlist",
        "--ivf_nlist",
        type=int,
        default=None,
        help="ivf: cells (default 1000, at most items/39)",
    )
    parser.add_argument(
        "--nprobe",
        "--ivf_nprobe",
        type=int,
        default=None,
        help="ivf: cells searched (default nlist/4)",
    )
    parser.add_argument("--m", "--hnsw_M", type=int, default=32, help="hnsw: links per node")
    parser.add_argument(
        "--ef_construction",
        "--hnsw_efConstruction",
        type=int,
        default=200,
        help="hnsw: build candidates",
    )
    parser.add_argument("--ef_search", type=int, default=64, help="hnsw: search candidates")
    parser.add_argument("--batch_size", type=int, default=4096, help="item rows per batch")


def _build_index(args: argparse.Namespace) -> dict:
    from recforge.index.build import build_index
    from recforge.index.faiss_backend import IndexParams

    params = IndexParams(
        index_type=args.index_type,
        metric=args.metric,
        nlist=args.nlist,
        nprobe=args.nprobe,
        m=args.m,
        ef_construction=args.ef_construction,
        ef_search=args.ef_search,
    )
    return build_index(
        args.export_dir,
        args.item_input_path,
        item_id_field=args.item_id_field,
        params=params,
        batch_size=args.batch_size,
    )


def _demo_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output_dir", default="experiments/demo", help="where data and model go")
    parser.add_argument("--num_rows", type=int, default=60000, help="training rows to generate")


def _demo(args: argparse.Namespace) -> dict:
    from recforge.demo.run import run_demo

    return run_demo(args.output_dir, args.num_rows)


def _feature_selection_flags(parser: argparse.ArgumentParser) -> None:
    from recforge.tools import feature_selection

    feature_selection.add_arguments(parser)


def _feature_selection(args: argparse.Namespace) -> dict:
    from recforge.tools import feature_selection

    return feature_selection.main(args)


READ, WRITE_FILE, WRITE_DIR = "read", "write file", "write directory"


@dataclass(frozen=True)
class PathFlag:
    """A flag that takes a local path or an fsspec URL (``s3://...``).

    Every such flag's URL is checked before the command starts (one line naming the flag,
    :func:`recforge.utils.storage.check_paths`). A READ path is read through
    :mod:`recforge.utils.storage` by the command itself; for a WRITE_FILE / WRITE_DIR path
    the command is handed a local path, whose files are published to the URL when it
    succeeds (:func:`recforge.utils.storage.written_locally`).

    Attributes:
        dest: the argparse attribute.
        flag: the flag as the user spells it (named in errors).
        role: READ, WRITE_FILE or WRITE_DIR.

    """

    dest: str
    flag: str
    role: str = READ


def _paths(*flags: str, role: str = READ) -> tuple[PathFlag, ...]:
    """:class:`PathFlag` of each ``--flag`` (its dest is the name without dashes)."""
    return tuple(PathFlag(flag.lstrip("-"), flag, role) for flag in flags)


_CONFIG_PATHS = _paths("--config", "--model_dir")


@dataclass(frozen=True)
class Subcommand:
    """One ``recforge`` subcommand.

    Attributes:
        help: its line in ``recforge --help``.
        add_flags: adds its own flags to its parser.
        run: runs it on the parsed flags; returns its summary.
        parents: builders of the shared flags it takes (listed first in its help).
        paths: its flags that take a path or URL (see :class:`PathFlag`).

    """

    help: str
    add_flags: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], dict]
    parents: tuple[Callable[[], argparse.ArgumentParser], ...] = field(default=())
    paths: tuple[PathFlag, ...] = field(default=())


SUBCOMMANDS: dict[str, Subcommand] = {
    "train": Subcommand(
        "train (and evaluate) the model a config describes",
        _train_flags,
        _train,
        (_config_flags, _eval_input_flag),
        paths=_CONFIG_PATHS
        + _paths("--train_input_path", "--eval_input_path", "--fine_tune_checkpoint"),
    ),
    "init": Subcommand(
        "write a starter DeepFM config from a parquet/csv table's columns and statistics",
        _init_flags,
        _init,
        (),
        paths=_paths("--data") + _paths("--output", role=WRITE_FILE),
    ),
    "schema": Subcommand(
        "print the config schema: JSON Schema for editors, or a Markdown field reference",
        _schema_flags,
        _schema,
        (),
        paths=_paths("--output", role=WRITE_FILE),
    ),
    "validate": Subcommand(
        "check a config short of training: build the model, read the first batch, one forward",
        _no_flags,
        _validate,
        (_config_flags,),
        paths=_CONFIG_PATHS,
    ),
    "inspect-batch": Subcommand(
        "print the first parsed batch of the input, feature by feature",
        _inspect_batch_flags,
        _inspect_batch,
        (_config_flags,),
        paths=_CONFIG_PATHS,
    ),
    "evaluate": Subcommand(
        "evaluate a checkpoint on the eval data",
        _evaluate_flags,
        _evaluate,
        (_config_flags, _checkpoint_flag, _eval_input_flag),
        paths=_CONFIG_PATHS + _paths("--checkpoint", "--eval_input_path"),
    ),
    "export": Subcommand(
        "export a checkpoint as a TorchScript model directory for serving",
        _export_flags,
        _export,
        (_config_flags, lambda: _checkpoint_flag("export_config.exporter_type, latest or best")),
        paths=_CONFIG_PATHS + _paths("--checkpoint", "--export_dir"),
    ),
    "predict": Subcommand(
        "score parquet/csv input with an exported model",
        _predict_flags,
        _predict,
        (),
        paths=_paths("--scripted_model_path", "--predict_input_path", "--predict_output_path"),
    ),
    "evaluate-retrieval": Subcommand(
        "full-corpus recall@K / hit-rate@K of a match model (DSSM) over the item table",
        _retrieval_flags,
        _retrieval,
        (_config_flags, _checkpoint_flag, _eval_input_flag),
        paths=_CONFIG_PATHS
        + _paths("--checkpoint", "--eval_input_path", "--train_input_path", "--item_table_path"),
    ),
    "serve": Subcommand(
        "serve an export over HTTP JSON (POST /predict, dynamic batching; needs recforge[serve])",
        _serve_flags,
        _serve,
        (),
        paths=_paths("--export_dir"),
    ),
    "build-index": Subcommand(
        "write a faiss index of a match-model export's items (needs recforge[faiss])",
        _build_index_flags,
        _build_index,
        (),
        paths=_paths("--export_dir", "--item_input_path"),
    ),
    "mock-data": Subcommand(
        "write sample parquet data in the format a config reads (smoke tests)",
        _mock_data_flags,
        _mock_data,
        (),
        paths=_paths("--config") + _paths("--output_dir", role=WRITE_DIR),
    ),
    "feature-selection": Subcommand(
        "rank features by learned variational dropout; write a pruned config",
        _feature_selection_flags,
        _feature_selection,
        (),
        paths=_CONFIG_PATHS + _paths("--checkpoint") + _paths("--output_dir", role=WRITE_DIR),
    ),
    "demo": Subcommand(
        "generate planted-signal demo data, train DeepFM, evaluate", _demo_flags, _demo
    ),
    "create-fg-json": Subcommand(
        "write TorchEasyRec's fg.json of a config's features",
        _create_fg_json_flags,
        _create_fg_json,
        (),
        paths=_paths("--config") + _paths("--fg_output_path", role=WRITE_FILE),
    ),
}


def package_version() -> str:
    """The installed distribution's version (``pyproject.toml`` in a source checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("recforge")
    except PackageNotFoundError:  # run from a checkout that was never pip-installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="recforge", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--traceback", action="store_true", help="show the full stack trace of input errors"
    )
    parser.add_argument("--version", action="version", version=f"recforge {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in SUBCOMMANDS.items():
        parents = [build() for build in command.parents]
        command.add_flags(sub.add_parser(name, help=command.help, parents=parents))
    return parser


def quiet_library_warnings() -> None:
    """Hides deprecation notices from inside torch/torchrec: a user cannot act on them."""
    for module in ("torchrec", "torch", "fbgemm_gpu"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=UserWarning, module=module)


@contextlib.contextmanager
def _config_errors_located(config_path: Optional[str]) -> Iterator[None]:
    """Adds the config file and line to config errors raised after validation."""
    from recforge.config import ConfigError
    from recforge.config.validation import locate_config_error

    try:
        yield
    except ConfigError as e:
        located = locate_config_error(e, config_path)
        if located is e:
            raise
        raise located from e


def run_command(args: argparse.Namespace) -> dict:
    """Runs the subcommand that ``args`` (from :func:`build_parser`) names.

    Bad input exits with status 2 and one line (see ``user_facing_errors``); so do a path
    flag's URL of an unknown scheme and a TorchEasyRec environment switch that recforge does
    not implement (:mod:`recforge.utils.tzrec_env`), before any work. Outputs given as URLs
    are written locally and published when the command succeeds (:class:`PathFlag`).

    Returns:
        The subcommand's summary (metrics, export or predict summary).

    """
    from recforge.errors import user_facing_errors
    from recforge.utils.logging_util import setup_cli_logging

    setup_cli_logging()

    from recforge.utils import storage
    from recforge.utils.tzrec_env import check_environment

    command = SUBCOMMANDS[args.command]
    with (
        user_facing_errors(args.traceback, storage.urls_in),
        _config_errors_located(getattr(args, "config", None)),
    ):
        check_environment(args.command)
        storage.check_paths({p.flag: getattr(args, p.dest, None) for p in command.paths})
        with contextlib.ExitStack() as outputs:
            for path in command.paths:
                value = getattr(args, path.dest, None)
                if path.role != READ and value:
                    local = storage.written_locally(value, args.command, path.role == WRITE_DIR)
                    setattr(args, path.dest, outputs.enter_context(local))
            result = command.run(args)
        return storage.urls_of(result)


def report(result: dict) -> None:
    """Prints a command's summary as JSON (on rank 0) and leaves the process group."""
    from recforge.utils import dist as dist_util

    if dist_util.rank() == 0 and result:
        print(json.dumps(result, indent=1))
    dist_util.leave_job()


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of the ``recforge`` command.

    Exits 2 on bad input, ``128 + signal`` when SIGTERM/SIGINT stopped training after a
    checkpoint (see ``user_facing_errors``).
    """
    prefer_system_arrow_pool()
    args = build_parser().parse_args(argv)
    quiet_library_warnings()
    report(run_command(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
