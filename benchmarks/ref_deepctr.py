"""Reference: DeepCTR-Torch 0.3.0's DeepFM on Frappe (run in ``benchmarks/.venv-deepctr``).

``benchmarks/.venv-deepctr/bin/python benchmarks/ref_deepctr.py --out RESULT.json --data DIR``
(``benchmarks/setup_deepctr.sh`` creates that virtualenv). DeepFM with one sparse feature per
Frappe field (vocabulary 5382), emb 10, DNN [400, 400, 400], dropout 0.2, Adam 1e-3,
batch 4096, ``model.fit`` for the requested epochs (its default ``shuffle=True``), then
``model.predict`` on the test set. Epoch timings come from a callback (``on_epoch_begin`` /
``on_epoch_end``), so they cover what ``fit`` does per epoch and nothing else.
"""

from __future__ import annotations

import argparse
import time

import requests

# deepctr_torch checks PyPI for a newer release when imported (in a thread); this machine has
# no network, so fail that request at once instead of waiting on it
requests.get = lambda *a, **k: (_ for _ in ()).throw(requests.ConnectionError("offline"))

import torch  # noqa: E402
from deepctr_torch.callbacks import Callback  # noqa: E402
from deepctr_torch.inputs import SparseFeat, get_feature_names  # noqa: E402
from deepctr_torch.models import DeepFM  # noqa: E402
from ref_common import FRAPPE_BUCKETS, FRAPPE_FIELDS, auc, load_frappe, time_inference, write_result  # noqa: E402  # noqa: E402


class EpochTimer(Callback):
    """Records samples/s of every epoch."""

    def __init__(self, samples: int) -> None:
        super().__init__()
        self.samples, self.sps, self._start = samples, [], 0.0

    def on_epoch_begin(self, epoch, logs=None):
        """Starts the clock."""
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        """Stops it."""
        self.sps.append(self.samples / (time.perf_counter() - self._start))
        print(f"epoch {len(self.sps)}: {self.sps[-1]:.0f} samples/s", flush=True)


def main() -> None:
    """Trains, evaluates and writes the result JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    train_ids, train_y = load_frappe(f"{args.data}/frappe_validation.csv")
    test_ids, test_y = load_frappe(f"{args.data}/frappe_test.csv")
    columns = [
        SparseFeat(f, vocabulary_size=FRAPPE_BUCKETS, embedding_dim=10) for f in FRAPPE_FIELDS
    ]
    names = get_feature_names(columns)
    train_x = {f: train_ids[:, i] for i, f in enumerate(FRAPPE_FIELDS)}
    test_x = {f: test_ids[:, i] for i, f in enumerate(FRAPPE_FIELDS)}
    assert names == list(FRAPPE_FIELDS)
    model = DeepFM(
        columns,
        columns,
        dnn_hidden_units=(400, 400, 400),
        dnn_dropout=0.2,
        task="binary",
        seed=args.seed,
        device="cpu",
    )
    model.compile(torch.optim.Adam(model.parameters(), lr=1e-3), "binary_crossentropy")
    timer = EpochTimer(len(train_y))
    model.fit(
        train_x,
        train_y,
        batch_size=args.batch_size,
        epochs=args.epochs,
        verbose=0,
        callbacks=[timer],
    )
    scores = []

    def infer() -> None:
        scores[:] = [model.predict(test_x, batch_size=args.batch_size)]

    seconds = time_inference(infer)
    test_auc = auc(test_y, scores[0].reshape(-1))
    print(f"test AUC {test_auc:.4f}, inference {len(test_y) / seconds:.0f} samples/s")
    write_result(args.out, epoch_sps=timer.sps, infer_sps=len(test_y) / seconds, auc=test_auc)


if __name__ == "__main__":
    main()
