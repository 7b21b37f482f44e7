"""A config over every kind of feature generation (ids with vocabularies, bucketized and
normalised raw values, combo, lookup, match, expression and sequence features), read from
``user:`` / ``item:`` columns, with a MultiTower model over all of them."""

_HEAD = """
feature_configs { id_feature { feature_name: "user_id" expression: "user:user_id"
  hash_bucket_size: 100 embedding_dim: 4 } }
feature_configs { id_feature { feature_name: "city" expression: "user:city"
  vocab_list: ["bj", "sh", "gz"] embedding_dim: 4 } }
feature_configs { id_feature { feature_name: "brand" expression: "item:brand"
  vocab_dict { key: "nike" value: 2 } vocab_dict { key: "adidas" value: 3 } default_value: "none"
  embedding_dim: 4 } }
feature_configs { raw_feature { feature_name: "age" expression: "user:age"
  boundaries: [18, 30, 50] embedding_dim: 4 } }
feature_configs { raw_feature { feature_name: "price" expression: "item:price"
  normalizer: "method=log10,threshold=1e-10,default=-10" } }
"""
_EMB = """
feature_configs { raw_feature { feature_name: "emb" expression: "item:emb" value_dim: 2
  separator: "," } }
"""
_MIDDLE = """
feature_configs { combo_feature { feature_name: "city_brand" expression: ["user:city", "item:brand"]
  hash_bucket_size: 50 embedding_dim: 4 } }
feature_configs { lookup_feature { feature_name: "brand_clicks" map: "user:kv_clicks"
  key: "item:brand" } }
feature_configs { match_feature { feature_name: "cate_score" nested_map: "user:kkv"
  pkey: "item:cate" skey: "item:brand" } }
feature_configs { expr_feature { feature_name: "age_gap" variables: ["user:age", "item:min_age"]
  expression: "abs(age - min_age) / 10" } }
"""
_HIST = """
feature_configs { sequence_id_feature { feature_name: "hist" expression: "user:hist"
  sequence_length: 4 hash_bucket_size: 20 embedding_dim: 4 } }
"""
_TAIL = """
feature_configs { sequence_feature { sequence_name: "click_seq" sequence_length: 5
  features { id_feature { feature_name: "brand" expression: "item:brand" hash_bucket_size: 30
    embedding_dim: 4 } }
  features { raw_feature { feature_name: "price" expression: "item:price" boundaries: [1, 10]
    embedding_dim: 4 } } } }
"""


def mixed_features(fg_mode: str, extended: bool = False) -> str:
    """``data_config`` (label ``clk``, batch size 16) and the feature configs.

    Args:
        fg_mode: ``FG_DAG`` or ``FG_NONE``.
        extended: add the multi-value raw feature ``emb`` and the sequence id feature ``hist``.

    """
    head = f'data_config {{ fg_mode: {fg_mode} label_fields: "clk" batch_size: 16 }}\n'
    if not extended:
        return head + _HEAD + _MIDDLE + _TAIL
    return head + _HEAD + _EMB + _MIDDLE + _HIST + _TAIL


def mixed_model(extended: bool = False) -> str:
    """The ``model_config``: one MultiTower tower over every feature of :func:`mixed_features`."""
    names = ["user_id", "city", "brand", "age", "price", "city_brand", "brand_clicks"]
    names += ["cate_score", "age_gap", "click_seq__brand", "click_seq__price"]
    if extended:
        names[5:5] = ["emb"]
        names[-2:-2] = ["hist"]
    quoted = ", ".join(f'"{n}"' for n in names)
    return f"""
model_config {{
  feature_groups {{ group_name: "all" feature_names: [{quoted}] }}
  multi_tower {{
    towers {{ input: "all" mlp {{ hidden_units: [8] }} }} final {{ hidden_units: [4] }}
  }}
  metrics {{ auc {{}} }} losses {{ binary_cross_entropy {{}} }}
}}
"""


def mixed_config(fg_mode: str, extended: bool = False) -> str:
    """:func:`mixed_features` followed by :func:`mixed_model`."""
    return mixed_features(fg_mode, extended) + mixed_model(extended)
