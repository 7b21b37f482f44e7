"""Reference: a framework-free PyTorch loop over data preloaded as tensors.

``python benchmarks/ref_hand.py {frappe,criteo} --out RESULT.json [options]`` trains
:class:`ref_models.HandDeepFM` with the benchmark's hyperparameters, in file order (as the
recforge benchmark configs read it: no shuffling), then scores the test set in batches under
``torch.no_grad()``. It writes per-epoch training samples/s, inference samples/s and test AUC.

* ``frappe``: emb 10, MLP [400, 400, 400], dropout (default 0.2), Adam 1e-3 for everything
  (tables get dense gradients: 53,820 rows), ``--fused_adam`` for ``Adam(fused=True)``.
* ``criteo``: emb 16, MLP [256, 128, 64], Adagrad for the tables (``--sparse``:
  ``nn.EmbeddingBag(sparse=True)`` and sparse Adagrad; otherwise ``nn.Embedding`` with a dense
  gradient of every table each step), fused Adam for the MLP.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from ref_common import FRAPPE_BUCKETS, auc, load_frappe, time_inference, write_result
from ref_models import HandDeepFM


def load_criteo(data_dir: str, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids [N, 26], dense [N, 13], labels [N])`` of the criteo-synth parquet files."""
    import pyarrow.parquet as pq

    files = sorted(Path(data_dir).glob(f"{split}_*.parquet"))
    table = pq.read_table(files)
    cats = [n for n in table.column_names if n.startswith("C")]
    dense = [n for n in table.column_names if n.startswith("I")]
    ids = np.stack([table.column(n).to_numpy() for n in cats], axis=1).astype(np.int64)
    values = np.stack([table.column(n).to_numpy() for n in dense], axis=1).astype(np.float32)
    return ids, values, table.column("label").to_numpy().astype(np.float32)


def main() -> None:
    """Trains, evaluates and writes the result JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("task", choices=["frappe", "criteo"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--data", required=True, help="frappe or criteo-synth data folder")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=4096)
    parser.add_argument("--dropout", type=float, default=None)
    parser.add_argument("--fused_adam", action="store_true")
    parser.add_argument(
        "--recforge_dropout", action="store_true", help="recforge's dropout kernel (CPU-fast)"
    )
    parser.add_argument("--sparse", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max_steps", type=int, default=0, help="per epoch (0: all)")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_flush_denormal(True)
    dropout_class = torch.nn.Dropout
    if args.recforge_dropout:
        from recforge.modules.dropout import Dropout as dropout_class
    if args.task == "frappe":
        train_ids, train_y = load_frappe(f"{args.data}/frappe_validation.csv")
        test_ids, test_y = load_frappe(f"{args.data}/frappe_test.csv")
        train_dense = test_dense = None
        model = HandDeepFM(
            [FRAPPE_BUCKETS] * train_ids.shape[1],
            emb_dim=10,
            wide_dim=1,
            num_dense=0,
            hidden=[400, 400, 400],
            dropout=0.2 if args.dropout is None else args.dropout,
            dropout_class=dropout_class,
        )
        optimizers = [torch.optim.Adam(model.parameters(), lr=1e-3, fused=args.fused_adam)]
    else:
        meta = json.loads((Path(args.data) / "meta.json").read_text())
        train_ids, train_dense, train_y = load_criteo(args.data, "train")
        test_ids, test_dense, test_y = load_criteo(args.data, "test")
        model = HandDeepFM(
            meta["vocab_sizes"],
            emb_dim=16,
            wide_dim=4,
            num_dense=train_dense.shape[1],
            hidden=[256, 128, 64],
            dropout=args.dropout or 0.0,
            sparse=args.sparse,
        )
        optimizers = [
            torch.optim.Adagrad(model.embedding_parameters(), lr=meta["adagrad_lr"]),
            torch.optim.Adam(model.dense_parameters(), lr=1e-3, fused=True),
        ]
    to = torch.from_numpy
    train_ids, train_y = to(train_ids), to(train_y)
    test_ids = to(test_ids)
    train_dense = to(train_dense) if train_dense is not None else None
    test_dense = to(test_dense) if test_dense is not None else None
    n, bs = len(train_y), args.batch_size
    loss_fn = torch.nn.BCEWithLogitsLoss()
    epoch_sps = []
    for _ in range(args.epochs):
        model.train()
        start, seen = time.perf_counter(), 0
        for step, i in enumerate(range(0, n, bs)):
            if args.max_steps and step >= args.max_steps:
                break
            dense = train_dense[i : i + bs] if train_dense is not None else None
            loss = loss_fn(model(train_ids[i : i + bs], dense), train_y[i : i + bs])
            loss.backward()
            for opt in optimizers:
                opt.step()
                opt.zero_grad(set_to_none=True)
            seen += len(train_y[i : i + bs])
        epoch_sps.append(seen / (time.perf_counter() - start))
        print(f"epoch {len(epoch_sps)}: {epoch_sps[-1]:.0f} samples/s", flush=True)
    model.eval()
    scores: list[torch.Tensor] = []

    def infer() -> None:
        scores.clear()
        with torch.no_grad():
            for i in range(0, len(test_ids), bs):
                dense = test_dense[i : i + bs] if test_dense is not None else None
                scores.append(torch.sigmoid(model(test_ids[i : i + bs], dense)))

    seconds = time_inference(infer)
    test_auc = auc(test_y, torch.cat(scores).numpy())
    print(f"test AUC {test_auc:.4f}, inference {len(test_ids) / seconds:.0f} samples/s")
    write_result(args.out, epoch_sps=epoch_sps, infer_sps=len(test_ids) / seconds, auc=test_auc)


if __name__ == "__main__":
    main()
