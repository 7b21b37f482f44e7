"""``recforge demo``: planted-signal demo data -> DeepFM -> evaluation, in one command."""

from __future__ import annotations

import os

from google.protobuf import text_format

from recforge.demo.configs import load_example_config
from recforge.demo.simulate import generate_demo_data
from recforge.train import train_and_evaluate
from recforge.utils import dist as dist_util

#: the example config the demo trains
DEMO_EXAMPLE = "deepfm_demo"


def prepare_demo(output_dir: str, num_rows: int = 60000) -> str:
    """Writes the demo data and the demo config that reads it.

    Args:
        output_dir: gets ``data/`` (parquet files) and ``deepfm_demo.config``
            (``examples/deepfm_demo.config`` reading ``data/`` and training into ``model/``).
        num_rows: training rows to generate (the eval set gets a quarter as many).

    Returns:
        The config file written.

    """
    data_dir = os.path.join(output_dir, "data")
    config_path = os.path.join(output_dir, f"{DEMO_EXAMPLE}.config")
    generate_demo_data(data_dir, num_rows=num_rows)
    config = load_example_config(
        DEMO_EXAMPLE, data_dir=data_dir, model_dir=os.path.join(output_dir, "model")
    )
    header = f"# examples/{DEMO_EXAMPLE}.config reading {data_dir}, written by recforge demo\n"
    tmp_path = f"{config_path}.tmp-{os.getpid()}"
    with open(tmp_path, "w", encoding="utf-8") as f:
        f.write(header + text_format.MessageToString(config, as_utf8=True))
    os.replace(tmp_path, config_path)
    return config_path


def run_demo(output_dir: str = "experiments/demo", num_rows: int = 60000) -> dict[str, float]:
    """Generates the demo data set, trains DeepFM on it and evaluates it.

    Args:
        output_dir: gets ``data/`` (parquet files), ``deepfm_demo.config`` and ``model/``.
        num_rows: training rows to generate (the eval set gets a quarter as many).

    Returns:
        The eval metrics (AUC well above 0.5 when the model learned the planted signal).

    """
    config_path = os.path.join(output_dir, f"{DEMO_EXAMPLE}.config")
    dist_util.init_process_group()
    if dist_util.rank() == 0:
        prepare_demo(output_dir, num_rows)
    dist_util.barrier()
    # a demo run again starts afresh: the earlier one moves to model.old-<time>
    metrics = train_and_evaluate(
        config_path, model_dir=os.path.join(output_dir, "model"), overwrite=True
    )
    if dist_util.rank() == 0:
        print(
            f"demo DeepFM eval AUC: {metrics.get('auc', float('nan')):.4f} (0.5: no signal learned)"
        )
    return metrics
