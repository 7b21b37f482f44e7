"""Reference: FuxiCTR 2.3.10's DeepFM on Frappe (run in ``benchmarks/.venv-fuxictr``).

``benchmarks/.venv-fuxictr/bin/python benchmarks/ref_fuxictr.py --out RESULT.json --data DIR``
(``benchmarks/setup_fuxictr.sh`` creates that virtualenv).

The PyPI release of FuxiCTR 2.3.10 ships the library (``fuxictr``: ``BaseModel`` with its
training step, regulariser and gradient clipping, the embedding, FM and MLP layers, the npz data
loader) but not the model zoo's ``DeepFM`` class, which lives only in the FuxiCTR repository
(``model_zoo/DeepFM/DeepFM_torch/src/DeepFM.py``). :class:`DeepFM` below builds the same model
from the library's layers: ``FeatureEmbedding`` (N(0, 1e-4) tables) -> ``FactorizationMachine``
(FM products + a width-1 logistic-regression part with bias) plus ``MLP_Block`` over the
flattened embeddings, summed, sigmoid; ``BaseModel.reset_parameters`` (Xavier-normal linear
layers, zero biases).

Settings: FuxiCTR's published Frappe DeepFM (BARS ``DeepFM_frappe_x1``): emb 10, MLP
[400, 400, 400] ReLU, batch norm, dropout 0.2, ``embedding_regularizer`` 0.05 (FuxiCTR's L2,
``0.05 / 2 * ||W||^2`` over every embedding table, the LR weights included, added to each
batch's mean loss), no net regulariser, Adam 1e-3, batch 4096, shuffled training rows. Each
Frappe field is a categorical feature with its own 5,382-row table indexed by the global id
(as in ``ref_deepctr.py``; FuxiCTR's own preprocessing would build per-field vocabularies).

Differences from ``BaseModel.fit``, on purpose: the epochs run through ``BaseModel.train_epoch``
(FuxiCTR's own step: forward, BCE + regulariser, backward, clip to norm 10, Adam) with no
in-epoch validation, and the test set is scored after every epoch; ``fit`` would validate on a
validation set, cut the learning rate on a plateau, stop early and reload the best checkpoint,
none of which this benchmark (train on ``frappe_validation.csv``, test on ``frappe_test.csv``)
should do with its test set. Data goes through FuxiCTR's ``NpzDataLoader`` (row-wise dataset +
``BatchCollator``) from npz files this script writes, as FuxiCTR's own runs would read them.

Epoch timings cover ``train_epoch`` only; inference is ``BaseModel.predict`` over the test
loader (collation included), timed by ``ref_common.time_inference``. The result JSON adds
``epoch_auc`` (test AUC after each epoch) to what the harness reads.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import OrderedDict

import numpy as np
from fuxictr.features import FeatureMap
from fuxictr.pytorch.dataloaders.npz_dataloader import NpzDataLoader
from fuxictr.pytorch.layers import FactorizationMachine, FeatureEmbedding, MLP_Block
from fuxictr.pytorch.models import BaseModel
from fuxictr.pytorch.torch_utils import seed_everything
from ref_common import FRAPPE_BUCKETS, FRAPPE_FIELDS, auc, load_frappe, time_inference, write_result


class DeepFM(BaseModel):
    """FuxiCTR's DeepFM (model zoo definition), built from the ``fuxictr`` package's layers."""

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int,
        hidden_units: list,
        net_dropout: float,
        batch_norm: bool,
        learning_rate: float,
        **kwargs,
    ) -> None:
        super().__init__(feature_map, model_id="DeepFM", **kwargs)
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        self.fm = FactorizationMachine(feature_map)
        self.mlp = MLP_Block(
            input_dim=feature_map.sum_emb_out_dim(),
            output_dim=1,
            hidden_units=hidden_units,
            hidden_activations="ReLU",
            output_activation=None,
            dropout_rates=net_dropout,
            batch_norm=batch_norm,
        )
        self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs):
        """``{"y_pred": sigmoid(FM + LR + MLP)}`` of a batch dict, ``[B, 1]``."""
        x = self.get_inputs(inputs)
        emb = self.embedding_layer(x)  # [B, fields, dim]
        logit = self.fm(x, emb) + self.mlp(emb.flatten(start_dim=1))
        return {"y_pred": self.output_activation(logit)}


def frappe_feature_map(embedding_dim: int, data_dir: str) -> FeatureMap:
    """A FeatureMap of the 10 Frappe fields (categorical, 5,382 ids each) and ``label``."""
    feature_map = FeatureMap("frappe", data_dir)
    feature_map.features = OrderedDict(
        (f, {"source": "", "type": "categorical", "vocab_size": FRAPPE_BUCKETS})
        for f in FRAPPE_FIELDS
    )
    feature_map.labels = ["label"]
    feature_map.num_fields = len(FRAPPE_FIELDS)
    feature_map.total_features = FRAPPE_BUCKETS * len(FRAPPE_FIELDS)
    feature_map.default_emb_dim = embedding_dim
    feature_map.set_column_index()
    return feature_map


def write_npz(path: str, ids: np.ndarray, labels: np.ndarray) -> str:
    """Writes one array per field and ``label``, the layout FuxiCTR's npz loader reads."""
    columns = {f: ids[:, i] for i, f in enumerate(FRAPPE_FIELDS)}
    np.savez(path, label=labels, **columns)
    return path


def main() -> None:
    """Trains, scores the test set after each epoch, times inference, writes the result JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--num_workers", type=int, default=1, help="loader worker processes (FuxiCTR's default 1)"
    )
    args = parser.parse_args()
    seed_everything(seed=args.seed)
    train_ids, train_y = load_frappe(f"{args.data}/frappe_validation.csv")
    test_ids, test_y = load_frappe(f"{args.data}/frappe_test.csv")
    with tempfile.TemporaryDirectory(prefix="fuxictr-frappe-") as tmp:
        feature_map = frappe_feature_map(10, tmp)
        loader_args = {"batch_size": args.batch_size, "num_workers": args.num_workers}
        train_file = write_npz(f"{tmp}/train.npz", train_ids, train_y)
        test_file = write_npz(f"{tmp}/test.npz", test_ids, test_y)
        train_gen = NpzDataLoader(feature_map, train_file, shuffle=True, **loader_args)
        test_gen = NpzDataLoader(feature_map, test_file, shuffle=False, **loader_args)
        model = DeepFM(
            feature_map,
            embedding_dim=10,
            hidden_units=[400, 400, 400],
            net_dropout=0.2,
            batch_norm=True,
            learning_rate=1e-3,
            embedding_regularizer=0.05,
            net_regularizer=0,
            optimizer="adam",
            loss="binary_crossentropy",
            metrics=["AUC", "logloss"],
            verbose=0,
            model_root=tmp,
        )
        # what BaseModel.fit sets before its epochs (max_gradient_norm: fit's default); the
        # evaluation interval is past the run so that train_epoch never validates
        model._max_gradient_norm = 10.0
        model._total_steps = 0
        model._stop_training = False
        model._eval_steps = sys.maxsize
        epoch_sps, epoch_auc = [], []
        for epoch in range(args.epochs):
            model._epoch_index = epoch
            start = time.perf_counter()
            model.train_epoch(train_gen)
            epoch_sps.append(len(train_y) / (time.perf_counter() - start))
            epoch_auc.append(auc(test_y, model.predict(test_gen)))
            print(
                f"epoch {epoch + 1}: {epoch_sps[-1]:.0f} samples/s, test AUC {epoch_auc[-1]:.4f}",
                flush=True,
            )
        scores = []

        def infer() -> None:
            scores[:] = [model.predict(test_gen)]

        seconds = time_inference(infer)
    test_auc = auc(test_y, scores[0].reshape(-1))
    print(f"test AUC {test_auc:.4f}, inference {len(test_y) / seconds:.0f} samples/s")
    write_result(
        args.out,
        epoch_sps=epoch_sps,
        infer_sps=len(test_y) / seconds,
        auc=test_auc,
        epoch_auc=epoch_auc,
    )


if __name__ == "__main__":
    main()
