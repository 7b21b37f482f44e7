"""DAT learns planted user interests: full-corpus recall far above chance after brief training."""

from recforge.retrieval import evaluate_retrieval
from recforge.train import train_and_evaluate
from tests.helpers.planted import planted_tables, write_planted_run

DAT_CONFIG = """
  feature_groups { group_name: "user" feature_names: ["user_id"] }
  feature_groups { group_name: "item" feature_names: ["item_id"] }
  feature_groups { group_name: "user_augment" feature_names: ["user_aug"] }
  feature_groups { group_name: "item_augment" feature_names: ["item_aug"] }
  dat {
    user_tower { input: "user" augment_input: "user_augment" mlp { hidden_units: [16] } }
    item_tower { input: "item" augment_input: "item_augment" mlp { hidden_units: [16] } }
    output_dim: 8 similarity: COSINE temperature: 0.1
  }
  metrics { recall_at_k { top_k: 5 } }
"""

# the augmented vectors: id embeddings of their own (no embedding_name: their own tables)
AUGMENT_FEATURES = """
  feature_configs { id_feature { feature_name: "user_aug" expression: "user:user_id"
                                 num_buckets: 24 embedding_dim: 8 } }
  feature_configs { id_feature { feature_name: "item_aug" expression: "item:item_id"
                                 num_buckets: 32 embedding_dim: 8 } }
"""


def test_dat_recalls_planted_interests_far_above_chance(tmp_path):
    # 24 users, each interested in one of 4 clusters of 8 items
    rows, items = planted_tables(24, 4, 8, (1, 1), rows_per_user=16, hist_len=4, seed=0)
    config = write_planted_run(
        str(tmp_path), DAT_CONFIG, rows, items, num_steps=120, extra_features=AUGMENT_FEATURES
    )
    train_and_evaluate(config)
    metrics = evaluate_retrieval(str(tmp_path / "model" / "pipeline.config"), top_k=[8])
    assert metrics["num_items"] == 32 and metrics["num_users"] == 24
    # chance: 8 of 32 items; a user's 8 relevant items are its cluster
    assert metrics["recall@8"] > 0.6, metrics
    assert metrics["recall@8"] > metrics["popularity_recall@8"] + 0.3, metrics
