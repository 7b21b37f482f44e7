"""JAGGED_SEQUENCE feature groups: sequences embedded row after row, never padded."""

import pyarrow as pa
import torch
from google.protobuf import text_format

from recforge.datasets.data_parser import DataParser
from recforge.features import FG_DAG, create_features
from recforge.modules.embedding import EmbeddingGroup
from recforge.protos import model_pb2, pipeline_pb2

FEATURES = """
feature_configs {
  sequence_feature {
    sequence_name: "uih" sequence_length: 4 sequence_delim: "|"
    features { id_feature { feature_name: "video_id" num_buckets: 50 embedding_dim: 8
                            embedding_name: "video_emb" } }
    features { raw_feature { feature_name: "action_timestamp" } }
  }
}
feature_configs {
  sequence_feature {
    sequence_name: "cand" sequence_length: 2 sequence_delim: "|"
    features { id_feature { feature_name: "video_id" num_buckets: 50 embedding_dim: 8
                            embedding_name: "video_emb" } }
  }
}
"""

ROWS = pa.record_batch(
    {
        # row 0 is cut to its first 4 events; row 1 is empty; row 2 has one
        "uih__video_id": pa.array(["1|2|3|4|5", "", "7"]),
        "uih__action_timestamp": pa.array(["10|20|30|40|50", "", "70"]),
        "cand__video_id": pa.array(["9", "8", "6"]),
    }
)


def _group(name: str, *features: str, kind: int = model_pb2.JAGGED_SEQUENCE):
    return model_pb2.FeatureGroupConfig(group_name=name, feature_names=features, group_type=kind)


def _features():
    config = text_format.Parse(FEATURES, pipeline_pb2.EasyRecConfig())
    return create_features(config.feature_configs, fg_mode=FG_DAG)


def test_jagged_groups_are_values_and_lengths():
    features = _features()
    group = EmbeddingGroup(
        features,
        [
            _group("uih", "uih__video_id"),
            _group("uih_timestamp", "uih__action_timestamp"),
            _group("candidate", "cand__video_id"),
            _group("padded", "uih__video_id", kind=model_pb2.SEQUENCE),
        ],
    )
    batch = DataParser(features).parse_batch(ROWS)
    out = group(batch.sparse_features, batch.dense_features)
    assert out["uih.sequence_length"].tolist() == [4, 0, 1]
    assert out["uih.sequence"].shape == (5, 8)
    assert out["uih_timestamp.sequence"].squeeze(1).tolist() == [10, 20, 30, 40, 70]
    assert out["uih_timestamp.sequence_length"].tolist() == [4, 0, 1]
    assert out["candidate.sequence"].shape == (3, 8)
    assert group.is_jagged_group("uih") and not group.is_jagged_group("padded")
    assert group.sequence_dim("uih") == 8
    # the same rows as the padded group, without the padding (video_emb is one shared table)
    padded = out["padded.sequence"]
    assert padded.shape == (3, 4, 8)
    torch.testing.assert_close(out["uih.sequence"][:4], padded[0])
    torch.testing.assert_close(out["uih.sequence"][4], padded[2, 0])
    torch.testing.assert_close(
        out["candidate.sequence"][0], group.sequence_ecs["dim_8"].embeddings["video_emb"].weight[9]
    )
