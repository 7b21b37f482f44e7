"""``recforge create-fg-json``: TorchEasyRec's ``fg.json`` of a config's features.

Also ``python -m recforge.tools.create_fg_json`` with the flags of TorchEasyRec's
``tzrec.tools.create_fg_json``: ``--pipeline_config_path``, ``--fg_output_dir`` (receives
``fg.json``, or ``--fg_resource_name``, and the assets), ``--reserves`` (columns the FG passes
through), ``--remove_bucketizer``. Its ODPS upload flags are not supported (exit 2);
``--debug`` (read a batch to check the config) is ignored with a warning.

The files the features read are copied into ``assets/`` beside the ``fg.json``, which names
them relative to its directory (see :mod:`recforge.export.assets`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from typing import Any, Optional

from recforge.utils.layout import FG_JSON_FILE

logger = logging.getLogger(__name__)

#: TorchEasyRec flags of the tool that upload to ODPS / MaxCompute
ODPS_FLAGS = ("odps_project_name", "odps_schema_name", "force_update_resource")


def parse_reserves(text: Optional[str]) -> Optional[list[str]]:
    """``"label, request_id"`` -> ``["label", "request_id"]`` (None when not given)."""
    if text is None:
        return None
    return [c.strip() for c in text.strip().split(",") if c.strip()]


def create_fg_json_file(
    config_path: str,
    fg_output_path: str = FG_JSON_FILE,
    reserves: Optional[Sequence[str]] = None,
    remove_bucketizer: bool = False,
    edits: Optional[dict[str, str]] = None,
) -> dict[str, Any]:
    """Writes TorchEasyRec's ``fg.json`` of a config's features (and copies their assets).

    Args:
        config_path: the pipeline config.
        fg_output_path: the file to write (replaced atomically); assets go to ``assets/``
            beside it.
        reserves: input columns the FG passes through unchanged (``reserves`` in fg.json).
        remove_bucketizer: leave out hash / vocabulary / boundaries bucketizers.
        edits: ``{"dotted.field": "value"}`` config overrides.

    Returns:
        ``{"fg_json": path, "features": entries written, "assets": copied files}``.

    Raises:
        ConfigError: an invalid feature config, or an asset file that does not exist.
        FeatureError: a feature kind without an fg.json writer (named).

    """
    from recforge.config import edit_config, load_pipeline_config
    from recforge.export.assets import copy_assets
    from recforge.features.fg_json import create_fg_json
    from recforge.utils import storage
    from recforge.utils.pipeline import build_features

    config = load_pipeline_config(storage.fetch(config_path, "config"))
    if edits:
        edit_config(config, edits)
    build_features(config)  # the same checks as training
    directory = os.path.dirname(os.path.abspath(fg_output_path))
    os.makedirs(directory, exist_ok=True)
    exported, assets = copy_assets(config, directory)
    fg_json = create_fg_json(exported, remove_bucketizers=remove_bucketizer)
    if reserves is not None:
        fg_json["reserves"] = list(reserves)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(fg_output_path)}.", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(fg_json, f, indent=4)
        os.replace(tmp, fg_output_path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    logger.info("wrote %s (%d entries)", fg_output_path, len(fg_json["features"]))
    return {"fg_json": fg_output_path, "features": len(fg_json["features"]), "assets": assets}


def build_parser() -> argparse.ArgumentParser:
    """The parser of TorchEasyRec's ``create_fg_json`` flags."""
    parser = argparse.ArgumentParser(
        prog="python -m recforge.tools.create_fg_json", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--pipeline_config_path", required=True, help="pipeline config")
    parser.add_argument(
        "--fg_output_dir", required=True, help="directory receiving fg.json and its assets"
    )
    parser.add_argument("--reserves", default=None, help="reserved columns, e.g. label,request_id")
    parser.add_argument(
        "--fg_resource_name", default=None, help=f"file name of the output (default {FG_JSON_FILE})"
    )
    parser.add_argument(
        "--remove_bucketizer", action="store_true", help="leave out the bucketizers"
    )
    parser.add_argument("--debug", action="store_true", help="ignored (with a warning)")
    parser.add_argument("--odps_project_name", default=None, help="not supported")
    parser.add_argument("--odps_schema_name", default=None, help="not supported")
    parser.add_argument("--force_update_resource", action="store_true", help="not supported")
    parser.add_argument("--traceback", action="store_true", help="show stack traces of errors")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the tool with TorchEasyRec's flags; bad input exits 2 with one line."""
    from recforge.errors import RecforgeError, user_facing_errors
    from recforge.utils import storage
    from recforge.utils.logging_util import setup_cli_logging

    args = build_parser().parse_args(argv)
    setup_cli_logging()
    with user_facing_errors(args.traceback, storage.urls_in):
        storage.check_paths(
            {
                "--pipeline_config_path": args.pipeline_config_path,
                "--fg_output_dir": args.fg_output_dir,
            }
        )
        for flag in ODPS_FLAGS:
            if getattr(args, flag):
                raise RecforgeError(
                    f"--{flag}: not supported yet (recforge does not upload fg.json to ODPS);"
                    " leave it out and upload the files of --fg_output_dir yourself"
                )
        if args.debug:
            logger.warning("--debug is ignored: recforge checks the feature configs anyway")
        name = args.fg_resource_name or FG_JSON_FILE
        with storage.written_locally(args.fg_output_dir, "fg_json", directory=True) as output:
            result = create_fg_json_file(
                args.pipeline_config_path,
                os.path.join(output, name),
                reserves=parse_reserves(args.reserves),
                remove_bucketizer=args.remove_bucketizer,
            )
    print(json.dumps(storage.urls_of(result), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
