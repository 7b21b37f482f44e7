"""The smallest training run: a four-row CSV and a MultiTower config reading it."""

CSV = "label,user,price\n1,3,2.5\n0,4,1.5\n1,5,1.0\n0,6,0.5\n"


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
feature_configs { raw_feature { feature_name: "price" } }
model_config {
  feature_groups { group_name: "all" feature_names: ["user", "price"] }
  multi_tower { towers { input: "all" mlp { hidden_units: [4] } } final { hidden_units: [4] } }
  metrics { auc {} }
}
"""
