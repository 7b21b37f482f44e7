"""Test configs of match (retrieval) models: ``{class name: model_config body}``.

The features are models.FEATURES (user, item, tags, price): the user tower reads
``user`` and ``price``, the item tower ``item`` and ``tags``; in-batch negatives, so that the
models train on test data without an item table.
"""

_GROUPS = """
      feature_groups { group_name: "user" feature_names: ["user", "price"] }
      feature_groups { group_name: "item" feature_names: ["item", "tags"] }
"""

_TOWERS = """
        user_tower { input: "user" mlp { hidden_units: [16] } }
        item_tower { input: "item" mlp { hidden_units: [16] } }
        output_dim: 8 temperature: 0.5 in_batch_negative: true
"""

MATCH_MODEL_CONFIGS: dict = {
    "DSSM": f"""
      {_GROUPS}
      dssm {{ {_TOWERS} similarity: INNER_PRODUCT }}
      metrics {{ recall_at_k {{ top_k: 2 }} }}
      losses {{ softmax_cross_entropy {{}} }}
    """,
    "DSSMV2": f"""
      {_GROUPS}
      dssm_v2 {{ {_TOWERS} similarity: COSINE l2_normalize: true }}
      metrics {{ recall_at_k {{ top_k: 2 }} }}
    """,
    "DAT": """
      feature_groups { group_name: "user" feature_names: ["user", "price"] }
      feature_groups { group_name: "item" feature_names: ["item", "tags"] }
      feature_groups { group_name: "user_augment" feature_names: ["user"] }
      feature_groups { group_name: "item_augment" feature_names: ["item"] }
      dat {
        user_tower { input: "user" augment_input: "user_augment" mlp { hidden_units: [16] } }
        item_tower { input: "item" augment_input: "item_augment" mlp { hidden_units: [16] } }
        output_dim: 8 temperature: 0.5 in_batch_negative: true similarity: COSINE
        amm_u_weight: 0.5 amm_i_weight: 0.25
      }
      metrics { recall_at_k { top_k: 2 } }
    """,
    "MIND": """
      feature_groups { group_name: "user" feature_names: ["user", "price"] }
      feature_groups { group_name: "item" feature_names: ["item", "tags"] }
      feature_groups { group_name: "hist" feature_names: ["tag_seq"] group_type: SEQUENCE }
      mind {
        user_tower {
          input: "user" history_input: "hist"
          user_mlp { hidden_units: [16, 8] }
          hist_seq_mlp { hidden_units: [8] bias: false }
          capsule_config { max_k: 3 max_seq_len: 4 high_dim: 8 num_iters: 2 }
          concat_mlp { hidden_units: [16] }
        }
        item_tower { input: "item" mlp { hidden_units: [16] } }
        output_dim: 8 temperature: 0.5 in_batch_negative: true simi_pow: 10
      }
      metrics { recall_at_k { top_k: 2 } }
    """,
    "HSTUMatch": """
      feature_groups { group_name: "hist" feature_names: ["tag_seq"] group_type: JAGGED_SEQUENCE }
      feature_groups { group_name: "item" feature_names: ["item", "tags"] }
      hstu_match {
        user_tower {
          input: "hist" max_seq_len: 4
          hstu {
            stu { embedding_dim: 8 num_heads: 2 hidden_dim: 4 attention_dim: 4 }
            attn_num_layers: 1 positional_encoder { num_position_buckets: 8 }
          }
        }
        item_tower { input: "item" mlp { hidden_units: [16] } }
        output_dim: 8 temperature: 0.5 in_batch_negative: true
      }
      metrics { recall_at_k { top_k: 2 } }
    """,
}
