"""The demo data's signal is learnable: one-hot logistic regression through the data pipeline."""

from __future__ import annotations

import torch

from recforge.datasets import RecDataset, generate_demo_data
from recforge.demo.configs import load_example_config
from recforge.features import create_pipeline_features
from tests.helpers.demo_data import auc


def test_logistic_regression_learns_the_signal(tmp_path):
    """One-hot logistic regression through the real data pipeline beats 0.75 eval AUC."""
    paths = generate_demo_data(str(tmp_path), num_rows=60000)
    config = load_example_config("deepfm_demo")
    features = create_pipeline_features(config)
    train = RecDataset(config.data_config, features, paths["train"], "train")
    evaluation = RecDataset(config.data_config, features, paths["eval"], "eval")
    sparse = [f for f in features if f.is_sparse]
    dense_dim = sum(f.value_dim for f in features if not f.is_sparse)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small ops: threading only adds overhead
    try:
        torch.manual_seed(0)
        tables = torch.nn.ModuleDict(
            {f.name: torch.nn.EmbeddingBag(f.num_embeddings, 1, mode=f.pooling) for f in sparse}
        )
        for table in tables.values():
            torch.nn.init.zeros_(table.weight)
        linear = torch.nn.Linear(dense_dim, 1)
        params = list(tables.parameters()) + list(linear.parameters())
        optimizer = torch.optim.Adam(params, lr=0.02)

        def forward(batch):
            logit = linear(batch.dense_features.values())[:, 0]
            for name, jagged in batch.sparse_features.to_dict().items():
                offsets = torch.cumsum(jagged.lengths(), 0)[:-1].long()
                offsets = torch.cat([torch.zeros(1, dtype=torch.long), offsets])
                logit = logit + tables[name](jagged.values(), offsets)[:, 0]
            return logit

        for epoch in range(2):
            train.set_epoch(epoch)
            for batch in train:
                loss = torch.nn.functional.binary_cross_entropy_with_logits(
                    forward(batch), batch.labels["label"]
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            scores, labels = [], []
            for batch in evaluation:
                scores.append(forward(batch))
                labels.append(batch.labels["label"])
    finally:
        torch.set_num_threads(threads)
    result = auc(torch.cat(labels).numpy(), torch.cat(scores).numpy())
    print(f"\nlogistic regression eval AUC {result:.4f}")
    assert result >= 0.75
