"""Reference: RecBole 1.2.1's SASRec on MovieLens 100K (run in ``benchmarks/.venv-recbole``).

``benchmarks/.venv-recbole/bin/python benchmarks/ref_recbole.py --out RESULT.json --data DIR``
(``benchmarks/setup_recbole.sh`` creates that virtualenv; ``DIR`` holds ``ml-100k/`` in
RecBole's atomic format). SASRec with RecBole's default hyper-parameters (2 layers, 2 heads,
hidden 64, inner 256, dropout 0.5, max length 50, CE loss over all items, Adam 1e-3, batch
2048, up to 300 epochs, early stopping after 10 epochs without a better valid MRR@10). The
split is RecBole's leave-one-out (``LS: valid_and_test``, time order): a user's last item is
the test target, the one before it the validation target; full-sort evaluation ranks all
items (for sequential models RecBole masks no history item). Epoch timings wrap
``Trainer._train_epoch``, so they cover training and nothing else; a sample is one
(prefix, next item) pair of RecBole's sequence augmentation.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.model.sequential_recommender import SASRec
from recbole.trainer import Trainer
from recbole.utils import init_logger, init_seed


class TimedTrainer(Trainer):
    """RecBole's trainer, recording the seconds of every training epoch.

    With ``progress_path``, after every epoch it rewrites that JSON file with the epochs so
    far (seconds, valid HR@10 / NDCG@10 / MRR@10) and, each time RecBole saves a new best
    checkpoint (a better valid MRR@10), that model's test HR@10 / NDCG@10: a run stopped
    before its early stopping fires still reports the test figure of its best epoch so far.
    Scoring the test users in between changes nothing RecBole trains or selects (no random
    draw, the model back in training mode at the next epoch).
    """

    def __init__(self, config, model, test_data=None, progress_path: str = "") -> None:
        super().__init__(config, model)
        self.epoch_seconds: list[float] = []
        self._test_data = test_data
        self._progress_path = progress_path
        self.progress: dict = {"epochs": [], "best": None}

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        """Times RecBole's epoch."""
        start = time.perf_counter()
        loss = super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)
        self.epoch_seconds.append(time.perf_counter() - start)
        return loss

    def _valid_epoch(self, valid_data, show_progress=False):
        """RecBole's validation, recorded in the progress file."""
        score, result = super()._valid_epoch(valid_data, show_progress)
        self.progress["epochs"].append(
            {
                "epoch": len(self.epoch_seconds),
                "train_s": self.epoch_seconds[-1] if self.epoch_seconds else None,
                "valid": {k: float(result[k]) for k in ("hit@10", "ndcg@10", "mrr@10")},
            }
        )
        self._write_progress()
        return score, result

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """RecBole's save of a new best model, then that model's test metrics."""
        super()._save_checkpoint(epoch, verbose=verbose, **kwargs)
        if self._test_data is not None and epoch >= 0:
            test = self.evaluate(self._test_data, load_best_model=False, show_progress=False)
            self.progress["best"] = {
                "epoch": epoch + 1,
                "test": {k: float(test[k]) for k in ("hit@10", "ndcg@10")},
                "valid": self.progress["epochs"][-1]["valid"] if self.progress["epochs"] else None,
            }
            self._write_progress()

    def _write_progress(self) -> None:
        if self._progress_path:
            tmp = self._progress_path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.progress, f, indent=1)
            os.replace(tmp, self._progress_path)


def main() -> None:
    """Trains, evaluates on the test targets and writes the result JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--data", required=True, help="the folder holding ml-100k/")
    parser.add_argument("--epochs", type=int, default=300, help="RecBole's default: 300")
    parser.add_argument("--seed", type=int, default=2020, help="RecBole's default: 2020")
    args = parser.parse_args()
    os.makedirs("recbole_saved", exist_ok=True)
    config = Config(
        model="SASRec",
        dataset="ml-100k",
        config_dict={
            "data_path": args.data,
            "use_gpu": False,
            "seed": args.seed,
            "epochs": args.epochs,
            "checkpoint_dir": "recbole_saved",
            "show_progress": False,
            "train_neg_sample_args": None,  # CE loss: the softmax is over all items
            "eval_args": {
                "split": {"LS": "valid_and_test"},
                "order": "TO",
                "group_by": "user",
                "mode": "full",
            },
        },
    )
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = SASRec(config, train_data._dataset).to(config["device"])
    trainer = TimedTrainer(config, model, test_data, args.out + ".progress.json")
    best_valid, _ = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    # torch >= 2.6 loads weights only by default; RecBole's checkpoint also holds its config
    checkpoint = torch.load(trainer.saved_model_file, map_location="cpu", weights_only=False)
    model.load_state_dict(checkpoint["state_dict"])
    test = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    samples = len(train_data.dataset)
    sps = [samples / s for s in trainer.epoch_seconds]
    result = {
        "hit@10": float(test["hit@10"]),
        "ndcg@10": float(test["ndcg@10"]),
        "valid_mrr@10": float(best_valid),
        "best_epoch": int(checkpoint["epoch"]) + 1,  # RecBole saves the 0-based epoch
        "epochs_run": len(trainer.epoch_seconds),
        "train_samples": samples,
        "epoch_sps": sps,
        "train_s": float(sum(trainer.epoch_seconds)),
        "num_test_users": len(test_data.dataset),
        "num_items": int(dataset.item_num - 1),  # RecBole's id 0 is padding
    }
    print(json.dumps({k: v for k, v in result.items() if k != "epoch_sps"}))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
