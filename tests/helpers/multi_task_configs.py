"""Test configs of multi-task models: ``{class name: model_config body}`` (see models.py).

The features are models.FEATURES (user, item, tags, price); the tasks read the labels
``label`` (ctr) and ``label_cvr`` (cvr).
"""

_GROUP = 'feature_groups { group_name: "all" feature_names: ["user", "item", "tags", "price"] }'

_CTR = """
      task_towers {
        tower_name: "ctr" label_name: "label" mlp { hidden_units: [8] }
        metrics { auc {} } losses { binary_cross_entropy {} }
      }"""
_CVR = """
      task_towers {
        tower_name: "cvr" label_name: "label_cvr" mlp { hidden_units: [8] } weight: 2.0
        metrics { auc {} } metrics { normalized_entropy {} } losses { binary_focal_loss {} }
      }"""

MULTI_TASK_MODEL_CONFIGS: dict = {
    "SimpleMultiTask": f"""
      {_GROUP}
      simple_multi_task {{ {_CTR} {_CVR} }}
    """,
    "MMoE": f"""
      {_GROUP}
      mmoe {{
        expert_mlp {{ hidden_units: [16, 8] }} gate_mlp {{ hidden_units: [4] }} num_expert: 3
        {_CTR} {_CVR}
      }}
    """,
    "PLE": f"""
      {_GROUP}
      ple {{
        extraction_networks {{
          network_name: "layer1" expert_num_per_task: 2 share_num: 2
          task_expert_net {{ hidden_units: [16] }} share_expert_net {{ hidden_units: [16] }}
        }}
        extraction_networks {{
          network_name: "layer2" expert_num_per_task: 1 share_num: 1
          task_expert_net {{ hidden_units: [8] }}
        }}
        {_CTR} {_CVR}
      }}
    """,
    "DBMTL": f"""
      {_GROUP}
      dbmtl {{
        bottom_mlp {{ hidden_units: [16] }}
        expert_mlp {{ hidden_units: [8] }} num_expert: 2
        task_towers {{
          tower_name: "ctr" label_name: "label" mlp {{ hidden_units: [8] }}
          metrics {{ auc {{}} }} losses {{ binary_cross_entropy {{}} }}
        }}
        task_towers {{
          tower_name: "cvr" label_name: "label_cvr" mlp {{ hidden_units: [8] }}
          relation_tower_names: "ctr" relation_mlp {{ hidden_units: [8] }}
          metrics {{ auc {{}} }} losses {{ binary_cross_entropy {{}} }}
        }}
      }}
    """,
    "PEPNet": f"""
      {_GROUP}
      feature_groups {{ group_name: "domain" feature_names: ["tags"] }}
      feature_groups {{ group_name: "uia" feature_names: ["user", "item"] }}
      pepnet {{
        epnet_hidden_unit: 8 ppnet_hidden_units: [16, 8] ppnet_dropout_ratio: [0.1]
        {_CTR} {_CVR}
      }}
    """,
    "DC2VR": f"""
      {_GROUP}
      dc2vr {{
        bottom_mlp {{ hidden_units: [16] }}
        expert_mlp {{ hidden_units: [8] }} num_expert: 2
        task_towers {{
          tower_name: "ctr" label_name: "label" mlp {{ hidden_units: [8] }}
          metrics {{ auc {{}} }} losses {{ binary_cross_entropy {{}} }}
        }}
        task_towers {{
          tower_name: "cvr" label_name: "label_cvr" mlp {{ hidden_units: [8] }}
          intervention_tower_names: "ctr" low_rank_dim: 2 dropout_ratio: 0.1
          metrics {{ auc {{}} }} metrics {{ normalized_entropy {{}} }}
          losses {{ binary_focal_loss {{}} }}
        }}
      }}
    """,
    "DlrmHSTU": """
      feature_groups { group_name: "uih" feature_names: ["tag_seq"] group_type: JAGGED_SEQUENCE }
      feature_groups { group_name: "candidate" feature_names: ["item"] }
      feature_groups { group_name: "contextual" feature_names: ["user", "tags"] }
      dlrm_hstu {
        hstu {
          stu { embedding_dim: 8 num_heads: 2 hidden_dim: 4 attention_dim: 4 }
          attn_num_layers: 1
          input_preprocessor { contextual_preprocessor {
            content_encoder { slice_content_encoder {} }
            content_mlp { simple_mlp { hidden_dim: 8 } }
          } }
        }
        fusion_mtl_tower {
          mlp { hidden_units: [8] }
          task_configs {
            task_name: "ctr" label_name: "label"
            metrics { auc {} } losses { binary_cross_entropy {} }
          }
          task_configs {
            task_name: "cvr" label_name: "label_cvr" weight: 2.0
            metrics { auc {} } metrics { normalized_entropy {} }
            losses { binary_focal_loss {} }
          }
        }
        max_seq_len: 8 item_embedding_hidden_dim: 8
      }
    """,
}

# one unnamed channel: ultra_hstu with dlrm_hstu's settings
MULTI_TASK_MODEL_CONFIGS["UltraHSTU"] = MULTI_TASK_MODEL_CONFIGS["DlrmHSTU"].replace(
    "dlrm_hstu {", "ultra_hstu {"
)
