"""recforge inference on the test set, from the checkpoint a benchmark's ``train`` wrote.

``python benchmarks/recforge_infer.py --model_dir DIR --test FILE --out RESULT.json``:

* **exported**: ``recforge.export.export_model`` (TorchScript), then
  ``recforge.load_predictor(...).predict(table)`` over the test file read into memory as one
  pyarrow table: parsing with recforge's ``DataParser`` and the scripted model, in batches of
  ``--batch_size``. Comparable with DeepCTR-Torch's ``model.predict`` over in-memory arrays.
* **exported, bfloat16 MLPs**: the same with ``export_config.mlp_dtype: "bfloat16"``;
* **eager**: the restored eager model's ``predict`` on batches parsed beforehand
  (comparable with the hand-written loop's inference over preloaded tensors).

Each is the median of 3 passes after a warm-up pass.
"""

from __future__ import annotations

import argparse
import os
import sys

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref_common import auc, time_inference, write_result  # noqa: E402


def main() -> None:
    """Exports, times both paths and writes the result JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--test", required=True, help="test file (csv or parquet)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch_size", type=int, default=4096)
    args = parser.parse_args()
    from recforge import load_predictor
    from recforge.datasets.data_parser import DataParser
    from recforge.export import export_model, restore_model, select_checkpoint
    from recforge.utils.pipeline import build_features, prepare_config

    config_path = os.path.join(args.model_dir, "pipeline.config")
    export_dir = os.path.join(args.model_dir, "export")
    export_model(config_path, export_dir)
    if args.test.endswith(".parquet"):
        table = pq.read_table(args.test)
    else:
        table = pacsv.read_csv(args.test)
    labels = table.column(list(prepare_config(config_path).data_config.label_fields)[0])

    def exported(directory: str) -> tuple[float, float]:
        predictor = load_predictor(directory, batch_size=args.batch_size)
        out: dict = {}
        seconds = time_inference(lambda: out.update(predictor.predict(table, ["probs"])))
        return table.num_rows / seconds, auc(labels.to_numpy(), out["probs"].reshape(-1))

    exported_sps, exported_auc = exported(export_dir)
    bf16_dir = export_dir + "_bf16"
    export_model(config_path, bf16_dir, edits={"export_config.mlp_dtype": "bfloat16"})
    bf16_sps, bf16_auc = exported(bf16_dir)

    config = prepare_config(config_path)
    model, _ = restore_model(config, select_checkpoint(config))
    parser_ = DataParser(build_features(config))
    batches = [
        parser_.to_batch(parser_.parse(rb))
        for rb in table.to_batches(max_chunksize=args.batch_size)
    ]

    def eager() -> None:
        with torch.no_grad():
            for batch in batches:
                model.predict(batch)

    eager_sps = table.num_rows / time_inference(eager)
    print(
        f"exported (parsing included): {exported_sps:.0f} samples/s (AUC {exported_auc:.4f}); "
        f"with bfloat16 MLPs: {bf16_sps:.0f} samples/s (AUC {bf16_auc:.4f}); "
        f"eager on parsed batches: {eager_sps:.0f} samples/s"
    )
    write_result(
        args.out,
        exported_sps=exported_sps,
        eager_sps=eager_sps,
        auc=exported_auc,
        exported_bf16_sps=bf16_sps,
        bf16_auc=bf16_auc,
    )


if __name__ == "__main__":
    main()
