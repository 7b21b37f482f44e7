"""A feature set with a sequence, rows with a planted sequence effect, configs over groups."""

import numpy as np
import pyarrow as pa
from google.protobuf import text_format

from recforge.protos import pipeline_pb2

SEQ_GROUP = """
  feature_groups {
    group_name: "all" feature_names: ["user", "item"]
    sequence_groups { group_name: "click" feature_names: ["item", "click__item"] }
    sequence_encoders { din_encoder { attn_mlp { hidden_units: [16] } } }
    %s
  }
"""


def config_of(groups: str) -> pipeline_pb2.EasyRecConfig:
    return text_format.Parse(
        f"{FEATURES} model_config {{ {groups} {TOWER} }}", pipeline_pb2.EasyRecConfig()
    )


def rows(n: int, seed: int) -> pa.RecordBatch:
    """label = whether the candidate item is in the click sequence."""
    rng = np.random.default_rng(seed)
    items = rng.integers(0, 10, n)
    clicks, labels = [], []
    for item in items:
        sequence = list(rng.choice(10, size=rng.integers(1, 5), replace=False))
        if rng.random() < 0.5 and item not in sequence:
            sequence[-1] = item
        clicks.append(";".join(map(str, sequence)))
        labels.append(float(item in sequence))
    return pa.record_batch(
        {
            "item": pa.array(items),
            "user": pa.array(rng.integers(0, 10, n)),
            "click__item": pa.array(clicks),
            "label": pa.array(labels),
        }
    )


FEATURES = """
data_config { fg_mode: FG_DAG label_fields: "label" }
feature_configs {
  id_feature { feature_name: "item" num_buckets: 10 embedding_dim: 8 embedding_name: "item_emb" }
}
feature_configs { id_feature { feature_name: "user" num_buckets: 10 embedding_dim: 4 } }
feature_configs {
  sequence_feature {
    sequence_name: "click" sequence_length: 4 sequence_delim: ";"
    features {
      id_feature {
        feature_name: "item" num_buckets: 10 embedding_dim: 8 embedding_name: "item_emb"
      }
    }
  }
}
"""


TOWER = "multi_tower { towers { input: 'all' mlp { hidden_units: [32, 16] } } }"
