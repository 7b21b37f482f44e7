"""Models with only sparse or only dense features script and match eager predictions."""

import pytest
import torch

from recforge.datasets.data_parser import DataParser
from recforge.models.model import BaseModel
from tests.helpers.export_util import make_table

ONE_KIND_MODELS = {
    # no dense feature: the exported batch gets an empty [B, 0] dense tensor
    "sparse_only": """
      data_config { fg_mode: FG_DAG }
      feature_configs { id_feature { feature_name: "user" num_buckets: 50 embedding_dim: 8 } }
      feature_configs { id_feature { feature_name: "item" hash_bucket_size: 100 embedding_dim: 8 } }
      model_config {
        feature_groups { group_name: "wide" feature_names: ["user", "item"] group_type: WIDE }
        feature_groups { group_name: "deep" feature_names: ["user", "item"] }
        deepfm { deep { hidden_units: [8] } }
      }""",
    # no sparse feature: no embedding tables at all
    "dense_only": """
      data_config { fg_mode: FG_DAG }
      feature_configs { raw_feature { feature_name: "price" } }
      model_config {
        feature_groups { group_name: "all" feature_names: ["price"] }
        multi_tower { towers { input: "all" mlp { hidden_units: [4] } } }
      }""",
}


@pytest.mark.parametrize("case", sorted(ONE_KIND_MODELS))
def test_models_with_one_kind_of_feature_script(case):
    from google.protobuf import text_format

    from recforge.export.scripting import ScriptWrapper, script_model
    from recforge.features import create_pipeline_features
    from recforge.protos import pipeline_pb2

    config = text_format.Parse(ONE_KIND_MODELS[case], pipeline_pb2.EasyRecConfig())
    features = create_pipeline_features(config)
    model_class = BaseModel.create_class(
        {"sparse_only": "DeepFM", "dense_only": "MultiTower"}[case]
    )
    model = model_class(config.model_config, features, ["label"]).eval()
    parser = DataParser(features)
    parsed = parser.parse(make_table(7, labels=()).to_batches()[0])
    assert sorted(ScriptWrapper(model).input_names()) == sorted(parsed)
    scripted = script_model(model)
    with torch.no_grad():
        eager = model.predict(parser.to_batch(parsed))
        torch.testing.assert_close(scripted(parsed), eager)
