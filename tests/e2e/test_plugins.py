"""User models defined outside recforge register through a plugin module."""

import textwrap

from tests.helpers.cli_util import read_json, run_cli

PLUGIN = '''
import torch

from recforge.models.rank_model import RankModel


class LogisticRegression(RankModel):
    """All groups concatenated into one linear layer (losses and metrics: the framework's)."""

    def __init__(
        self,
        model_config,
        features,
        labels,
        sample_weights=(),
        *,
        embedding_device=None,
        negative_sampler=None,
    ):
        super().__init__(
            model_config,
            features,
            labels,
            sample_weights,
            embedding_device=embedding_device,
            negative_sampler=negative_sampler,
        )
        group = self.init_embedding_group()
        width = sum(group.group_total_dim(name) for name in group.group_names())
        self.scale = float(self._model_config.params["scale"])
        self.head = self.output_head(width)

    def predict(self, batch):
        grouped = self.build_input(batch)
        logits = self.head(torch.cat(list(grouped.values()), dim=1)) * self.scale
        return self._output_to_prediction(logits)
'''

CONFIG = """train_input_path: "train.csv"
eval_input_path: "train.csv"
model_dir: "model"
train_config {
  sparse_optimizer { sgd_optimizer { lr: 0.1 } }
  dense_optimizer { adam_optimizer { lr: 0.01 } }
  num_epochs: 1
}
data_config { batch_size: 2 dataset_type: CsvDataset with_header: true label_fields: "label" }
feature_configs { id_feature { feature_name: "user" num_buckets: 10 embedding_dim: 4 } }
model_config {
  feature_groups { group_name: "all" feature_names: ["user"] }
  custom_model {
    class_name: "LogisticRegression"
    params { fields { key: "scale" value { number_value: 2 } } }
  }
  metrics { auc {} }
}
"""


def setup(tmp_path, config=CONFIG):
    (tmp_path / "my_models.py").write_text(textwrap.dedent(PLUGIN))
    (tmp_path / "train.csv").write_text("label,user\n1,3\n0,4\n1,5\n0,6\n")
    (tmp_path / "plugin.config").write_text(config)


def test_plugin_model_trains_through_the_cli(tmp_path):
    setup(tmp_path)
    run_cli(["train", "--config", "plugin.config", "--plugin", "my_models"], str(tmp_path))
    assert "auc" in read_json(tmp_path / "model" / "eval_result.json")


def test_plugin_named_in_the_config(tmp_path):
    setup(tmp_path, 'plugins: "my_models"\n' + CONFIG)
    run_cli(["train", "--config", "plugin.config"], str(tmp_path))


def test_unknown_custom_class_lists_registered_models(tmp_path):
    setup(tmp_path)
    proc = run_cli(["train", "--config", "plugin.config"], str(tmp_path), check=False)
    assert proc.returncode == 2
    assert "LogisticRegression" in proc.stderr and "DeepFM" in proc.stderr


def test_missing_plugin_module_is_named(tmp_path):
    setup(tmp_path)
    args = ["train", "--config", "plugin.config", "--plugin", "no_such_module"]
    proc = run_cli(args, str(tmp_path), check=False)
    assert proc.returncode == 2 and "no_such_module" in proc.stderr
