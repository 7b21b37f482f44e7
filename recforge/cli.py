"""The ``recforge`` command: ``recforge {train,evaluate,export,predict,evaluate-retrieval,demo}``.

Also ``python -m recforge``.

Under torchrun: ``torchrun --nproc-per-node=2 -m recforge train --config ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from collections.abc import Iterator
from typing import Optional


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


def _common(parser: argparse.ArgumentParser) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="recforge", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--traceback", action="store_true", help="show the full stack trace of input errors"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train (and evaluate) the model a config describes")
    _common(train)
    reuse = train.add_mutually_exclusive_group()
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
    train.add_argument(
        "--fine_tune_checkpoint",
        default=None,
        help="warm start from this checkpoint (or the newest in this directory): restores the"
        " tensors that fit, warns about the rest",
    )
    train.add_argument(
        "--ignore_restore_optimizer",
        action="store_true",
        help="restore weights only (with --continue_train or a warm start): optimizer state"
        " starts fresh",
    )

    evaluate = sub.add_parser("evaluate", help="evaluate a checkpoint on the eval data")
    _common(evaluate)
    evaluate.add_argument(
        "--checkpoint",
        "--checkpoint_path",
        dest="checkpoint",
        default=None,
        help="checkpoint directory (default: newest in model_dir)",
    )
    evaluate.add_argument("--eval_input_path", default=None, help="overrides eval_input_path")
    evaluate.add_argument(
        "--eval_result_filename",
        default=None,
        help="file in model_dir that receives the metrics (default: eval_result.json)",
    )

    export = sub.add_parser(
        "export", help="export a checkpoint as a TorchScript model directory for serving"
    )
    _common(export)
    export.add_argument(
        "--checkpoint",
        "--checkpoint_path",
        dest="checkpoint",
        default=None,
        help="checkpoint directory (default: export_config.exporter_type, latest or best)",
    )
    export.add_argument("--export_dir", required=True, help="directory to write the export to")

    predict = sub.add_parser("predict", help="score parquet/csv input with an exported model")
    predict.add_argument(
        "--scripted_model_path",
        required=True,
        help="the export directory (or its scripted_model.pt)",
    )
    predict.add_argument(
        "--predict_input_path", required=True, help="parquet/csv files, globs, comma-separated"
    )
    predict.add_argument(
        "--predict_output_path",
        required=True,
        help="a .parquet file, or a directory that receives part-*.parquet files",
    )
    predict.add_argument(
        "--reserved_columns", default="", help="input columns copied to the output, e.g. id,label"
    )
    predict.add_argument(
        "--output_columns", default="", help="model outputs to write, e.g. probs (default: all)"
    )
    predict.add_argument(
        "--num_workers", type=int, default=None, help="input-parsing workers (default: config)"
    )
    predict.add_argument(
        "--batch_size", type=int, default=None, help="rows per batch (default: config)"
    )

    retrieval = sub.add_parser(
        "evaluate-retrieval",
        help="full-corpus recall@K / hit-rate@K of a match model (DSSM) over the item table",
    )
    _common(retrieval)
    retrieval.add_argument(
        "--checkpoint",
        "--checkpoint_path",
        dest="checkpoint",
        default=None,
        help="checkpoint directory (default: newest in model_dir)",
    )
    retrieval.add_argument("--eval_input_path", default=None, help="overrides eval_input_path")
    retrieval.add_argument(
        "--train_input_path",
        default=None,
        help="training interactions (popularity baseline, --exclude_train); default: config",
    )
    retrieval.add_argument(
        "--item_table_path",
        default=None,
        help="item table (default: data_config.negative_sampler.input_path)",
    )
    retrieval.add_argument(
        "--item_id_field", default=None, help="item id column (default: the sampler's)"
    )
    retrieval.add_argument(
        "--user_id_field",
        default=None,
        help="user id column (default: first input column of the user tower)",
    )
    retrieval.add_argument("--top_k", default="10,50,100", help="cut-offs K, comma-separated")
    retrieval.add_argument(
        "--exclude_train",
        action="store_true",
        help="never retrieve items the user interacted with in the training data",
    )
    retrieval.add_argument(
        "--backend", default="torch", choices=["torch", "faiss"], help="exact search backend"
    )

    mock = sub.add_parser(
        "mock-data", help="write sample parquet data in the format a config reads (smoke tests)"
    )
    mock.add_argument(
        "--config", "--pipeline_config_path", dest="config", required=True, help="pipeline config"
    )
    mock.add_argument("--output_dir", required=True, help="folder receiving part-*.parquet")
    mock.add_argument("--num_rows", type=int, default=10000, help="sample rows")
    mock.add_argument("--num_files", type=int, default=1, help="parquet files to split them into")
    mock.add_argument("--seed", type=int, default=0, help="random seed (same seed, same data)")
    mock.add_argument(
        "--edit_config_json",
        default=None,
        help="config overrides applied before generating (e.g. smaller tables), as for train",
    )

    from recforge.tools import feature_selection

    feature_selection.add_arguments(
        sub.add_parser("feature-selection", help="rank features by learned variational dropout")
    )

    demo = sub.add_parser("demo", help="generate planted-signal demo data, train DeepFM, evaluate")
    demo.add_argument("--output_dir", default="experiments/demo", help="where data and model go")
    demo.add_argument("--num_rows", type=int, default=60000, help="training rows to generate")
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

    Bad input exits with status 2 and one line (see ``user_facing_errors``).

    Returns:
        The subcommand's summary (metrics, export or predict summary).

    """
    from recforge.errors import user_facing_errors
    from recforge.utils.logging_util import setup_cli_logging

    setup_cli_logging()

    with user_facing_errors(args.traceback), _config_errors_located(getattr(args, "config", None)):
        if args.command == "train":
            from recforge.train import train_and_evaluate

            metrics = train_and_evaluate(
                args.config,
                continue_train=args.continue_train,
                edits=_edits(args.edit_config_json),
                plugins=args.plugin,
                model_dir=args.model_dir,
                fine_tune_checkpoint=args.fine_tune_checkpoint,
                ignore_restore_optimizer=args.ignore_restore_optimizer,
                overwrite=args.overwrite,
            )
        elif args.command == "evaluate":
            from recforge.evaluate import evaluate

            metrics = evaluate(
                args.config,
                checkpoint_path=args.checkpoint,
                eval_input_path=args.eval_input_path,
                edits=_edits(args.edit_config_json),
                plugins=args.plugin,
                model_dir=args.model_dir,
                eval_result_filename=args.eval_result_filename,
            )
        elif args.command == "export":
            from recforge.export import export_model

            metrics = export_model(
                args.config,
                args.export_dir,
                checkpoint_path=args.checkpoint,
                edits=_edits(args.edit_config_json),
                plugins=args.plugin,
                model_dir=args.model_dir,
            )
        elif args.command == "predict":
            from recforge.predict import predict

            metrics = predict(
                args.scripted_model_path,
                args.predict_input_path,
                args.predict_output_path,
                reserved_columns=args.reserved_columns,
                output_columns=args.output_columns,
                num_workers=args.num_workers,
                batch_size=args.batch_size,
            )
        elif args.command == "evaluate-retrieval":
            from recforge.retrieval import evaluate_retrieval

            metrics = evaluate_retrieval(
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
                edits=_edits(args.edit_config_json),
                plugins=args.plugin,
                model_dir=args.model_dir,
            )
        elif args.command == "mock-data":
            from recforge.config import edit_config, load_pipeline_config
            from recforge.datasets.mock_data import generate_mock_data

            user_edits = _edits(args.edit_config_json)
            source = edit_config(load_pipeline_config(args.config), user_edits)
            metrics = generate_mock_data(
                source, args.output_dir, args.num_rows, args.num_files, args.seed
            )
            edits = json.dumps({**user_edits, **metrics["edit_config_json"]})
            hint = f"recforge train --config {args.config} --edit_config_json '{edits}'"
            print(f"train on it: {hint}", file=sys.stderr)
        elif args.command == "feature-selection":
            from recforge.tools import feature_selection

            metrics = feature_selection.main(args)
        else:
            from recforge.demo.run import run_demo

            metrics = run_demo(args.output_dir, args.num_rows)
    return metrics


def report(result: dict) -> None:
    """Prints a command's summary as JSON (on rank 0) and leaves the process group."""
    from recforge.utils import dist as dist_util

    if dist_util.rank() == 0 and result:
        print(json.dumps(result, indent=1))
    dist_util.destroy_process_group()


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of the ``recforge`` command.

    Exits 2 on bad input, ``128 + signal`` when SIGTERM/SIGINT stopped training after a
    checkpoint (see ``user_facing_errors``).
    """
    args = build_parser().parse_args(argv)
    quiet_library_warnings()
    report(run_command(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
