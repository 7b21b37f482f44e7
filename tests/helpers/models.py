"""Test configs of the rank models over one tiny feature set, a batch for it, a builder."""

from typing import Optional

import torch
from google.protobuf import text_format
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from recforge.datasets.batch import Batch
from recforge.features import create_features
from recforge.models.model import BaseModel
from recforge.protos import pipeline_pb2

FEATURES = """
data_config { fg_mode: FG_DAG }
feature_configs { id_feature { feature_name: "user" num_buckets: 50 embedding_dim: 8 } }
feature_configs { id_feature { feature_name: "item" hash_bucket_size: 100 embedding_dim: 8 } }
feature_configs {
  id_feature { feature_name: "tags" num_buckets: 20 embedding_dim: 8 trainable: false }
}
feature_configs { raw_feature { feature_name: "price" } }
feature_configs {
  sequence_id_feature {
    feature_name: "tag_seq" expression: "tags" num_buckets: 20 embedding_dim: 8
    sequence_length: 3 sequence_delim: "|"
  }
}
"""

# every registered model needs an entry: the test below fails for a model without one
MODEL_CONFIGS = {
    "DeepFM": """
      feature_groups { group_name: "wide" feature_names: ["user", "item", "tags"] group_type: WIDE }
      feature_groups { group_name: "deep" feature_names: ["user", "item", "tags", "price"] }
      feature_groups { group_name: "fm" feature_names: ["user", "item", "tags"] }
      deepfm { deep { hidden_units: [16, 8] dropout_ratio: 0.1 } final { hidden_units: [4] } }
    """,
    "MultiTower": """
      feature_groups { group_name: "user" feature_names: ["user", "price"] }
      feature_groups { group_name: "item" feature_names: ["item", "tags"] }
      multi_tower {
        towers { input: "user" mlp { hidden_units: [16] use_bn: true } }
        towers { input: "item" mlp { hidden_units: [16] } }
        final { hidden_units: [8] }
      }
    """,
    "WideAndDeep": """
      feature_groups { group_name: "wide" feature_names: ["user", "item", "tags"] group_type: WIDE }
      feature_groups { group_name: "deep" feature_names: ["user", "item", "tags", "price"] }
      wide_and_deep { deep { hidden_units: [16, 8] } final { hidden_units: [4] } }
    """,
    "DCNV1": """
      feature_groups { group_name: "all" feature_names: ["user", "item", "tags", "price"] }
      dcn_v1 { cross { cross_num: 2 } deep { hidden_units: [16] } final { hidden_units: [8] } }
    """,
    "DCNV2": """
      feature_groups { group_name: "all" feature_names: ["user", "item", "tags", "price"] }
      dcn_v2 {
        backbone { hidden_units: [16] }
        cross { cross_num: 2 low_rank: 4 num_experts: 3 }
        deep { hidden_units: [16] }
        final { hidden_units: [8] }
      }
    """,
    "xDeepFM": """
      feature_groups { group_name: "wide" feature_names: ["user", "item", "tags"] group_type: WIDE }
      feature_groups { group_name: "deep" feature_names: ["user", "item", "tags", "price"] }
      feature_groups { group_name: "cin" feature_names: ["user", "item", "tags"] }
      xdeepfm {
        cin { cin_layer_size: [4, 3] }
        deep { hidden_units: [16] }
        final { hidden_units: [8] }
      }
    """,
    "DLRM": """
      feature_groups { group_name: "sparse" feature_names: ["user", "item", "tags"] }
      feature_groups { group_name: "dense" feature_names: ["price"] }
      dlrm { dense_mlp { hidden_units: [8] } final { hidden_units: [8] } }
    """,
    "MultiTowerDIN": """
      feature_groups { group_name: "user" feature_names: ["user", "price", "tags"] }
      feature_groups { group_name: "seq" feature_names: ["item", "tag_seq"] group_type: SEQUENCE }
      multi_tower_din {
        towers { input: "user" mlp { hidden_units: [16] } }
        din_towers { input: "seq" attn_mlp { hidden_units: [8] } }
        final { hidden_units: [8] }
      }
    """,
    "MaskNet": """
      feature_groups { group_name: "all" feature_names: ["user", "item", "tags", "price"] }
      mask_net {
        mask_net_module {
          n_mask_blocks: 2
          mask_block { reduction_ratio: 2 hidden_dim: 8 }
          top_mlp { hidden_units: [8] }
        }
      }
    """,
    "WuKong": """
      feature_groups { group_name: "sparse" feature_names: ["user", "item", "tags"] }
      feature_groups { group_name: "dense" feature_names: ["price"] }
      wukong {
        dense_mlp { hidden_units: [8] }
        wukong_layers {
          lcb_feature_num: 2 fmb_feature_num: 2 compressed_feature_num: 2
          feature_num_mlp { hidden_units: [8] }
        }
        wukong_layers {
          lcb_feature_num: 3 fmb_feature_num: 2 feature_num_mlp { hidden_units: [8] }
        }
        final { hidden_units: [8] }
      }
    """,
    "RocketLaunching": """
      feature_groups { group_name: "all" feature_names: ["user", "item", "tags", "price"] }
      rocket_launching {
        share_mlp { hidden_units: [16] }
        booster_mlp { hidden_units: [16, 8] }
        light_mlp { hidden_units: [8] }
        feature_based_distillation: true
      }
    """,
}

# models whose eval outputs carry a suffix: RocketLaunching serves its light net's outputs
OUTPUT_SUFFIX = {"RocketLaunching": "_light"}
# losses a model adds in training besides each label loss (which carries the output suffix)
EXTRA_TRAIN_LOSSES = {
    "RocketLaunching": {"binary_cross_entropy_booster", "hint_l2_loss", "similarity_0_1"}
}

# other shapes of the same models: (class name, model_config body)
MODEL_VARIANTS = {
    "dcn_v2_stacked_full_rank": (
        "DCNV2",
        """
      feature_groups { group_name: "all" feature_names: ["user", "item", "tags", "price"] }
      dcn_v2 { cross { cross_num: 1 low_rank: 25 } final { hidden_units: [8] } }
    """,
    ),
    "dcn_v1_without_final": (
        "DCNV1",
        """
      feature_groups { group_name: "all" feature_names: ["user", "item", "tags", "price"] }
      dcn_v1 { cross {} deep { hidden_units: [8] } }
    """,
    ),
    "xdeepfm_cin_on_wide": (
        "xDeepFM",
        """
      feature_groups { group_name: "wide" feature_names: ["user", "item", "tags"] group_type: WIDE }
      feature_groups { group_name: "deep" feature_names: ["user", "item", "tags", "price"] }
      xdeepfm { cin { cin_layer_size: [4] } deep { hidden_units: [16] } wide_embedding_dim: 6 }
    """,
    ),
    "dlrm_single_group_without_sparse_arch": (
        "DLRM",
        """
      feature_groups { group_name: "ids" feature_names: ["user", "item", "tags"] }
      dlrm { final { hidden_units: [8] } arch_with_sparse: false }
    """,
    ),
    "mask_net_serial_aggregation_dim": (
        "MaskNet",
        """
      feature_groups { group_name: "all" feature_names: ["user", "item", "tags", "price"] }
      mask_net {
        mask_net_module {
          n_mask_blocks: 3
          mask_block { aggregation_dim: 5 hidden_dim: 6 }
          use_parallel: false
        }
      }
    """,
    ),
    "rocket_launching_euclid_without_share_mlp": (
        "RocketLaunching",
        """
      feature_groups { group_name: "all" feature_names: ["user", "item", "tags", "price"] }
      rocket_launching {
        booster_mlp { hidden_units: [16, 8] dropout_ratio: 0.1 }
        light_mlp { hidden_units: [8, 4] }
        feature_based_distillation: true
        feature_distillation_function: EUCLID
      }
    """,
    ),
    "wukong_single_group_projected_residual": (
        "WuKong",
        """
      feature_groups { group_name: "ids" feature_names: ["user", "item", "tags"] }
      wukong {
        wukong_layers {
          lcb_feature_num: 1 fmb_feature_num: 1 feature_num_mlp { hidden_units: [4] }
        }
        final { hidden_units: [8] }
      }
    """,
    ),
}


def make_config(model_name: str, body: Optional[str] = None) -> pipeline_pb2.EasyRecConfig:
    text = FEATURES + "model_config {" + (body or MODEL_CONFIGS[model_name])
    text += " metrics { auc {} } losses { binary_cross_entropy {} } }"
    return text_format.Parse(text, pipeline_pb2.EasyRecConfig())


def make_batch(batch_size: int = 6) -> Batch:
    g = torch.Generator().manual_seed(0)
    tag_lengths = torch.randint(0, 3, (batch_size,), generator=g, dtype=torch.int32)
    values = [
        torch.randint(0, 50, (batch_size,), generator=g),
        torch.randint(0, 100, (batch_size,), generator=g),
        torch.randint(0, 20, (int(tag_lengths.sum()),), generator=g),
    ]
    values.append(values[-1])  # tag_seq: the tags as a sequence
    lengths = torch.cat([torch.ones(2 * batch_size, dtype=torch.int32), tag_lengths, tag_lengths])
    sparse = KeyedJaggedTensor(
        keys=["user", "item", "tags", "tag_seq"], values=torch.cat(values), lengths=lengths
    )
    dense = KeyedTensor.from_tensor_list(["price"], [torch.rand(batch_size, 1, generator=g)])
    labels = {"label": (torch.arange(batch_size) % 2).float()}
    return Batch(sparse, dense, labels=labels)


def build(model_name: str, body: Optional[str] = None) -> BaseModel:
    config = make_config(model_name, body)
    features = create_features(config.feature_configs)
    return BaseModel.create_class(model_name)(config.model_config, features, ["label"])
