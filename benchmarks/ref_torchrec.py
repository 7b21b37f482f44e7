"""Reference: torchrec ``EmbeddingBagCollection`` + ``DistributedModelParallel`` (1 rank).

``python benchmarks/ref_torchrec.py {frappe,criteo} --out RESULT.json --data DIR`` trains the
same DeepFM as ``ref_hand.py`` with torchrec's own building blocks and no recforge: one EBC
holding a deep and a wide table per field, sharded by DMP's planner, the optimizer applied in
backward (``apply_optimizer_in_backward``), batches pre-built as ``KeyedJaggedTensor`` before
training (data preloaded), outputs regrouped with ``KeyedTensor.regroup``.

* ``criteo``: fbgemm's fused CPU kernel with plain Adagrad for the tables (table-wise), fused
  Adam for the MLP.
* ``frappe``: fbgemm's fused CPU kernel implements neither Adam nor widths that are not a
  multiple of 4 (emb 10), so the tables use DMP's data-parallel dense kernel trained by
  ``Adam(fused=True)``, as recforge does for this config.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from ref_common import FRAPPE_BUCKETS, FRAPPE_FIELDS, auc, load_frappe, time_inference, write_result
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor


class TorchrecDeepFM(nn.Module):
    """DeepFM on one EBC: deep tables ``f`` (``emb_dim``) and wide tables ``w_f``."""

    def __init__(self, names, rows, emb_dim, wide_dim, num_dense, hidden, dropout, device):
        super().__init__()
        tables = []
        for name, n in zip(names, rows):
            tables.append(EmbeddingBagConfig(n, emb_dim, f"t_{name}", feature_names=[name]))
            tables.append(
                EmbeddingBagConfig(n, wide_dim, f"tw_{name}", feature_names=[f"w_{name}"])
            )
        self.ebc = EmbeddingBagCollection(tables=tables, device=device)
        self.deep_keys = list(names)
        self.wide_keys = [f"w_{n}" for n in names]
        self.num_fields, self.emb_dim = len(names), emb_dim
        layers: list[nn.Module] = []
        width = len(names) * emb_dim + num_dense
        for units in hidden:
            layers += [nn.Linear(width, units), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = units
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(width, 1)
        nn.init.zeros_(self.head.weight)

    def forward(self, kjt: KeyedJaggedTensor, dense: torch.Tensor) -> torch.Tensor:
        """Logits ``[B]``."""
        deep, wide = KeyedTensor.regroup([self.ebc(kjt)], [self.deep_keys, self.wide_keys])
        emb = deep.view(deep.shape[0], self.num_fields, self.emb_dim)
        summed = emb.sum(dim=1)
        fm = 0.5 * (summed * summed - (emb * emb).sum(dim=1)).sum(dim=1)
        deep_in = torch.cat([deep, dense], dim=1) if dense.shape[1] else deep
        return self.head(self.mlp(deep_in)).squeeze(1) + wide.sum(dim=1) + fm


class Train(nn.Module):
    """Model + loss, so that DMP wraps one module."""

    def __init__(self, model: TorchrecDeepFM) -> None:
        super().__init__()
        self.model = model
        self.loss = nn.BCEWithLogitsLoss()

    def forward(self, kjt, dense, labels):
        """Returns ``(loss, logits)``."""
        logits = self.model(kjt, dense)
        return self.loss(logits, labels), logits.detach()


def make_kjts(names, ids: torch.Tensor, bs: int) -> list[KeyedJaggedTensor]:
    """One KJT per batch: keys ``names + w_names``, one id per row and key."""
    keys = list(names) + [f"w_{n}" for n in names]
    out = []
    for i in range(0, len(ids), bs):
        part = ids[i : i + bs]
        values = part.t().contiguous().view(-1)
        out.append(
            KeyedJaggedTensor.from_lengths_sync(
                keys=keys,
                values=torch.cat([values, values]),
                lengths=torch.ones(len(keys) * len(part), dtype=torch.int32),
            )
        )
    return out


def main() -> None:
    """Trains, evaluates and writes the result JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("task", choices=["frappe", "criteo"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=4096)
    parser.add_argument("--dropout", type=float, default=None)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_flush_denormal(True)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29533"))
    dist.init_process_group("gloo", rank=0, world_size=1)
    device = torch.device("cpu")
    if args.task == "frappe":
        from_np = torch.from_numpy
        tr_ids, tr_y = (from_np(a) for a in load_frappe(f"{args.data}/frappe_validation.csv"))
        te_ids, te_y = (from_np(a) for a in load_frappe(f"{args.data}/frappe_test.csv"))
        tr_dense = torch.zeros(len(tr_ids), 0)
        te_dense = torch.zeros(len(te_ids), 0)
        names, rows = list(FRAPPE_FIELDS), [FRAPPE_BUCKETS] * len(FRAPPE_FIELDS)
        emb_dim, wide_dim, hidden = 10, 1, [400, 400, 400]
        dropout = 0.2 if args.dropout is None else args.dropout
        fused, sparse_lr = False, 1e-3
    else:
        from ref_hand import load_criteo

        meta = json.loads((Path(args.data) / "meta.json").read_text())
        tr = [torch.from_numpy(a) for a in load_criteo(args.data, "train")]
        te = [torch.from_numpy(a) for a in load_criteo(args.data, "test")]
        (tr_ids, tr_dense, tr_y), (te_ids, te_dense, te_y) = tr, te
        names = [f"C{i + 1}" for i in range(tr_ids.shape[1])]
        rows, emb_dim, wide_dim, hidden = meta["vocab_sizes"], 16, 4, [256, 128, 64]
        dropout, fused, sparse_lr = args.dropout or 0.0, True, meta["adagrad_lr"]
    model = Train(
        TorchrecDeepFM(names, rows, emb_dim, wide_dim, tr_dense.shape[1], hidden, dropout, "meta")
    )
    constraints = {}
    for table in model.model.ebc.embedding_bag_configs():
        if fused:
            constraints[table.name] = ParameterConstraints(
                sharding_types=["table_wise"], compute_kernels=["fused"]
            )
        else:
            constraints[table.name] = ParameterConstraints(
                sharding_types=["data_parallel"], compute_kernels=["dense"]
            )
    if fused:
        apply_optimizer_in_backward(
            torch.optim.Adagrad, model.model.ebc.parameters(), {"lr": sparse_lr}
        )
    planner = EmbeddingShardingPlanner(
        topology=Topology(world_size=1, compute_device="cpu"), constraints=constraints
    )
    plan = planner.collective_plan(model, None, dist.GroupMember.WORLD)
    dmp = DistributedModelParallel(model, device=device, plan=plan)
    dense_params = dict(in_backward_optimizer_filter(dmp.named_parameters()))
    optimizer = torch.optim.Adam(list(dense_params.values()), lr=1e-3, fused=True)
    bs = args.batch_size
    tr_kjts, te_kjts = make_kjts(names, tr_ids, bs), make_kjts(names, te_ids, bs)
    epoch_sps = []
    for _ in range(args.epochs):
        dmp.train()
        start = time.perf_counter()
        for b, kjt in enumerate(tr_kjts):
            i = b * bs
            loss, _ = dmp(kjt, tr_dense[i : i + bs], tr_y[i : i + bs])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        epoch_sps.append(len(tr_y) / (time.perf_counter() - start))
        print(f"epoch {len(epoch_sps)}: {epoch_sps[-1]:.0f} samples/s", flush=True)
    dmp.eval()
    scores: list[torch.Tensor] = []

    def infer() -> None:
        scores.clear()
        with torch.no_grad():
            for b, kjt in enumerate(te_kjts):
                i = b * bs
                _, logits = dmp(kjt, te_dense[i : i + bs], te_y[i : i + bs])
                scores.append(torch.sigmoid(logits))

    seconds = time_inference(infer)
    test_auc = auc(te_y.numpy(), torch.cat(scores).numpy())
    print(f"test AUC {test_auc:.4f}, inference {len(te_y) / seconds:.0f} samples/s")
    write_result(args.out, epoch_sps=epoch_sps, infer_sps=len(te_y) / seconds, auc=test_auc)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
