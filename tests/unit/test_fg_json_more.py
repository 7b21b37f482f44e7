"""fg.json of the derived FG kinds (overlap, tokenize + text_normalizer, kv_dot_product,
bool_mask, combine, custom) and their sequence variants, checked against entries worked out
by hand from TorchEasyRec 1.3.16's ``fg_json()`` of each feature class; what still cannot be
written is an error naming its field path."""

import logging
import os

import pytest
from google.protobuf import text_format

from recforge.export.assets import copy_assets
from recforge.export.files import write_feature_files
from recforge.features import FeatureError
from recforge.features.fg_json import FG_JSON_WRITERS, create_fg_json, remove_bucketizer
from recforge.protos import feature_pb2, pipeline_pb2
from recforge.utils.layout import ASSETS_DIR, FG_JSON_FILE


def parse_config(text: str) -> pipeline_pb2.EasyRecConfig:
    return text_format.Parse(text, pipeline_pb2.EasyRecConfig())


CONFIG = r"""
feature_configs { overlap_feature { feature_name: "ov" query: "user:q" title: "item:t"
  method: "query_common_ratio" boundaries: [0.25, 0.5] } }
feature_configs { overlap_feature { feature_name: "ov2" query: "user:q" title: "item:t"
  method: "is_contain" separator: " " normalizer: "method=log10" stub_type: true } }
feature_configs { tokenize_feature { feature_name: "token_g" expression: "item:token_g"
  vocab_file: "data/test/tokenizer.json" } }
feature_configs { tokenize_feature { feature_name: "tok_norm" expression: "item:title"
  vocab_file: "t.model" tokenizer_type: "sentencepiece" asset_dir: "/a"
  text_normalizer { max_length: 64 stop_char_file: "stop.txt"
    norm_options: [TEXT_UPPER2LOWER, TEXT_SBC2DBC, TEXT_REMOVE_SPACE] } } }
feature_configs { tokenize_feature { feature_name: "tok_seq" expression: "item:title"
  vocab_file: "tokenizer.json" tokens_as_sequence: true sequence_length: 8 } }
feature_configs { kv_dot_product { feature_name: "kv" query: "user:q" document: "item:d"
  separator: "|" } }
feature_configs { bool_mask_feature { feature_name: "bm" expression: ["user:clicks", "item:mask"]
  separator: "," hash_bucket_size: 100 } }
feature_configs { bool_mask_feature { feature_name: "bm2" expression: ["user:c", "item:m"]
  vocab_list: ["x", "y"] value_dim: 1 fg_value_type: "int64" } }
feature_configs { combine_feature { feature_name: "cb" expression: "user:event" num_buckets: 10
  value_map { key: "click" value: 1 } value_map { key: "buy" value: 2 } } }
feature_configs { combine_feature { feature_name: "cb2" expression: "user:event" combiner: "MEAN"
  separator: "|" normalizer: "method=log10" } }
feature_configs { custom_feature { feature_name: "cu" operator_name: "EditDistance"
  operator_lib_file: "pyfg/lib/libedit_distance.so" expression: ["user:query", "item:title"]
  operator_params { fields { key: "encoding" value { string_value: "utf-8" } } } } }
feature_configs { custom_feature { feature_name: "cu2" operator_name: "RegexReplace"
  expression: ["item:title"] vocab_list: ["a", "b"] value_dim: 1 } }
feature_configs { custom_feature { feature_name: "cu3" operator_name: "RegexReplace"
  expression: ["item:title"] hash_bucket_size: 50 separator: "," } }
feature_configs { sequence_overlap_feature { feature_name: "sov" query: "user:q" title: "item:ts"
  method: "is_contain" sequence_length: 4 } }
feature_configs { sequence_bool_mask_feature { feature_name: "sbm"
  expression: ["user:ids", "user:mask"] num_buckets: 20 sequence_length: 5 } }
feature_configs { sequence_custom_feature { feature_name: "scu" operator_name: "SeqExpr"
  operator_lib_file: "pyfg/lib/libseq_expr.so" expression: ["user:cur_time", "item:clk_time_seq"]
  num_buckets: 10 sequence_length: 3
  operator_params { fields { key: "formula" value { string_value: "cur_time-clk_time_seq" } } }
} }
feature_configs { sequence_tokenize_feature { feature_name: "stok" expression: "user:titles"
  vocab_file: "tokenizer.json" sequence_length: 6
  text_normalizer { norm_options: [TEXT_FILTER] } } }
feature_configs { sequence_kv_dot_product { feature_name: "skv" query: "user:q"
  document: "item:d" sequence_delim: "|" sequence_length: 2 } }
feature_configs { sequence_combine_feature { feature_name: "scb" expression: "user:event"
  boundaries: [1, 2] sequence_length: 7 } }
feature_configs { sequence_feature { sequence_name: "click" sequence_length: 5
  features { tokenize_feature { feature_name: "title" expression: "item:title"
    vocab_file: "tokenizer.json" text_normalizer { max_length: 10 } } }
  features { combine_feature { feature_name: "evt" expression: "user:event"
    sequence_fields: ["event"] num_buckets: 4 } }
  features { overlap_feature { feature_name: "ov" query: "user:q" title: "item:t"
    method: "query_common_ratio" } }
  features { bool_mask_feature { feature_name: "bm" expression: ["item:iid", "item:valid"]
    hash_bucket_size: 7 } }
  features { custom_feature { feature_name: "cu" operator_name: "SeqExpr"
    expression: ["user:ulng", "item:ilng"] sequence_fields: ["ilng"] boundaries: [0.5] } } } }
"""

TOK = {"tokenizer_type": "bpe", "output_type": "word_id"}
NORM = {"feature_type": "text_normalizer", "is_gbk_input": False, "is_gbk_output": False,
        "stub_type": True}  # fmt: skip
SEQ = {"sequence_delim": ";"}
CUSTOM = {"feature_type": "custom_feature", "is_op_thread_safe": False}

# worked out by hand from TorchEasyRec 1.3.16's feature classes' fg_json(); token_g is the
# tokenize_feature entry of tzrec/features/feature_test.py's test_create_fg_json
EXPECTED = [
    {"feature_type": "overlap_feature", "feature_name": "ov", "query": "user:q",
     "title": "item:t", "method": "query_common_ratio", "value_type": "float",
     "separator": "\x1d", "boundaries": [0.25, 0.5]},
    {"feature_type": "overlap_feature", "feature_name": "ov2", "query": "user:q",
     "title": "item:t", "method": "is_contain", "value_type": "float", "separator": " ",
     "normalizer": "method=log10", "stub_type": True},
    {"feature_name": "token_g", "feature_type": "tokenize_feature", "expression": "item:token_g",
     "output_type": "word_id", "tokenizer_type": "bpe", "vocab_file": "data/test/tokenizer.json",
     "default_value": ""},
    {**NORM, "feature_name": "tok_norm__text_norm", "expression": "item:title",
     "max_length": 64, "stop_char_file": "/a/stop.txt", "parameter": 4 + 8,
     "remove_space": True},
    {"feature_type": "tokenize_feature", "feature_name": "tok_norm", "default_value": "",
     "vocab_file": "/a/t.model", "expression": "feature:tok_norm__text_norm",
     "tokenizer_type": "sentencepiece", "output_type": "word_id"},
    {"feature_type": "tokenize_feature", "feature_name": "tok_seq", "default_value": "0",
     "vocab_file": "tokenizer.json", "expression": "item:title", **TOK},
    {"feature_type": "kv_dot_product", "feature_name": "kv", "default_value": "0",
     "query": "user:q", "document": "item:d", "separator": "|"},
    {"feature_type": "bool_mask_feature", "feature_name": "bm", "default_value": "",
     "expression": ["user:clicks", "item:mask"], "separator": ",", "hash_bucket_size": 100,
     "value_dim": 0},
    {"feature_type": "bool_mask_feature", "feature_name": "bm2", "default_value": "",
     "expression": ["user:c", "item:m"], "vocab_list": ["", "<OOV>", "x", "y"],
     "default_bucketize_value": 1, "value_dim": 1, "value_type": "int64"},
    {"feature_type": "combine_feature", "feature_name": "cb", "default_value": "",
     "expression": "user:event", "value_type": "int64", "need_prefix": False,
     "combiner": "sum", "value_map": {"click": 1.0, "buy": 2.0}, "num_buckets": 10,
     "value_dim": 1},
    {"feature_type": "combine_feature", "feature_name": "cb2", "default_value": "",
     "expression": "user:event", "value_type": "float", "need_prefix": False,
     "combiner": "mean", "separator": "|", "normalizer": "method=log10"},
    {**CUSTOM, "feature_name": "cu", "default_value": "0", "operator_name": "EditDistance",
     "operator_lib_file": "pyfg/lib/libedit_distance.so",
     "expression": ["user:query", "item:title"], "value_type": "float", "encoding": "utf-8",
     "value_dim": 1},
    # recforge's custom vocabulary is the whole table, unknown values at row 0 (see the writer)
    {**CUSTOM, "feature_name": "cu2", "default_value": "0", "operator_name": "RegexReplace",
     "operator_lib_file": "", "expression": ["item:title"], "value_type": "string",
     "vocab_list": ["a", "b"], "default_bucketize_value": 0, "value_dim": 1},
    {**CUSTOM, "feature_name": "cu3", "default_value": "0", "operator_name": "RegexReplace",
     "operator_lib_file": "", "expression": ["item:title"], "value_type": "string",
     "separator": ",", "hash_bucket_size": 50, "value_dim": 1},
    {"feature_type": "sequence_overlap_feature", "feature_name": "sov", "query": "user:q",
     "title": "item:ts", "method": "is_contain", "value_type": "float", "separator": "\x1d",
     "default_value": "0", **SEQ, "sequence_length": 4},
    # bool_mask and custom write their own sequence keys: no sequence_ prefix
    {"feature_type": "bool_mask_feature", "feature_name": "sbm", "default_value": "0",
     "expression": ["user:ids", "user:mask"], "num_buckets": 20, "value_dim": 0, **SEQ,
     "sequence_length": 5},
    {**CUSTOM, "feature_name": "scu", "default_value": "0", "operator_name": "SeqExpr",
     "operator_lib_file": "pyfg/lib/libseq_expr.so",
     "expression": ["user:cur_time", "item:clk_time_seq"], "value_type": "int64",
     "formula": "cur_time-clk_time_seq", "num_buckets": 10, "value_dim": 1,
     "is_sequence": True, **SEQ, "sequence_length": 3},
    {**NORM, "feature_type": "sequence_text_normalizer", "feature_name": "stok__text_norm",
     "expression": "user:titles", "parameter": 32, "default_value": "0", **SEQ,
     "sequence_length": 6},
    {"feature_type": "sequence_tokenize_feature", "feature_name": "stok", "default_value": "0",
     "vocab_file": "tokenizer.json", "expression": "feature:stok__text_norm", **TOK, **SEQ,
     "sequence_length": 6},
    {"feature_type": "sequence_kv_dot_product", "feature_name": "skv", "default_value": "0",
     "query": "user:q", "document": "item:d", "sequence_delim": "|", "sequence_length": 2},
    {"feature_type": "sequence_combine_feature", "feature_name": "scb", "default_value": "0",
     "expression": "user:event", "value_type": "float", "need_prefix": False,
     "combiner": "sum", "boundaries": [1.0, 2.0], "value_dim": 1, **SEQ,
     "sequence_length": 7},
    {"sequence_name": "click", "sequence_length": 5, "sequence_delim": ";",
     "sequence_pk": "user:click", "features": [
        {**NORM, "feature_name": "title__text_norm", "expression": "item:title",
         "max_length": 10, "default_value": "0"},
        {"feature_type": "tokenize_feature", "feature_name": "title", "default_value": "0",
         "vocab_file": "tokenizer.json", "expression": "feature:title__text_norm", **TOK,
         "sequence_fields": ["title__text_norm"]},
        {"feature_type": "combine_feature", "feature_name": "evt", "default_value": "0",
         "expression": "user:event", "value_type": "int64", "need_prefix": False,
         "combiner": "sum", "num_buckets": 4, "value_dim": 1, "sequence_fields": ["event"]},
        {"feature_type": "overlap_feature", "feature_name": "ov", "query": "user:q",
         "title": "item:t", "method": "query_common_ratio", "value_type": "float",
         "separator": "\x1d", "default_value": "0"},
        {"feature_type": "bool_mask_feature", "feature_name": "bm", "default_value": "0",
         "expression": ["item:iid", "item:valid"], "hash_bucket_size": 7, "value_dim": 0},
        {**CUSTOM, "feature_name": "cu", "default_value": "0", "operator_name": "SeqExpr",
         "operator_lib_file": "", "expression": ["user:ulng", "item:ilng"],
         "value_type": "float", "boundaries": [0.5], "value_dim": 1,
         "sequence_fields": ["ilng"], "is_sequence": True}]},
]  # fmt: skip


def test_every_feature_kind_has_a_writer():
    kinds = {
        f.name.removeprefix("sequence_")
        for f in feature_pb2.FeatureConfig.DESCRIPTOR.oneofs_by_name["feature"].fields
    }
    assert kinds - {"feature"} == set(FG_JSON_WRITERS)


def test_fg_json_of_the_derived_kinds_is_torcheasyrecs():
    got = create_fg_json(parse_config(CONFIG))["features"]
    assert len(got) == len(EXPECTED)
    for entry, expected in zip(got, EXPECTED):
        assert entry == expected


def test_remove_bucketizer_keeps_the_tokenizer_file():
    got = create_fg_json(parse_config(CONFIG), remove_bucketizers=True)["features"]
    assert got[2]["vocab_file"] == "data/test/tokenizer.json"
    assert "hash_bucket_size" not in got[7] and "num_buckets" not in got[9]
    assert "hash_bucket_size" not in remove_bucketizer(dict(EXPECTED[-1]))["features"][4]


def test_tokenizer_and_stop_char_files_are_the_exports_copies(tmp_path):
    (tmp_path / "tok.json").write_text("{}")
    (tmp_path / "stop.txt").write_text("!\n")
    config = parse_config(
        f"""feature_configs {{ tokenize_feature {{ feature_name: "t" expression: "item:t"
        vocab_file: "tok.json" asset_dir: "{tmp_path}"
        text_normalizer {{ stop_char_file: "stop.txt" }} }} }}"""
    )
    exported, copied = copy_assets(config, str(tmp_path / "export"))
    norm, tok = create_fg_json(exported)["features"]
    assert tok["vocab_file"] in copied and tok["vocab_file"].startswith(f"{ASSETS_DIR}/tok_")
    assert norm["stop_char_file"] in copied
    assert norm["stop_char_file"].startswith(f"{ASSETS_DIR}/stop_")
    assert os.path.isfile(tmp_path / "export" / tok["vocab_file"])


BAD = [
    ('tokenize_feature { feature_name: "t" expression: "item:t" }', r"feature_configs\[0\]"
     r".tokenize_feature: .*no fg.json entry for this tokenize_feature: vocab_file: expected"),
    ('tokenize_feature { feature_name: "t" vocab_file: "v" tokenizer_type: "wordpiece" }',
     r"feature_configs\[0\].tokenize_feature: .*tokenizer_type: expected one of .*wordpiece"),
    ('sequence_tokenize_feature { feature_name: "t" vocab_file: "v" tokens_as_sequence: true }',
     r"feature_configs\[0\].sequence_tokenize_feature: .*tokens_as_sequence"),
    ('sequence_feature { sequence_name: "s" features { raw_feature { feature_name: "r" } }'
     ' features { tokenize_feature { feature_name: "t" } } }',
     r"feature_configs\[0\].sequence_feature.features\[1\].tokenize_feature: .*vocab_file"),
]  # fmt: skip


@pytest.mark.parametrize("text,message", BAD)
def test_what_cannot_be_written_is_named(text, message):
    with pytest.raises(FeatureError, match=message):
        create_fg_json(parse_config(f"feature_configs {{ {text} }}"))


def test_an_export_without_fg_json_says_which_feature(tmp_path, caplog):
    config = parse_config(f"feature_configs {{ {BAD[0][0]} }}")
    with caplog.at_level(logging.WARNING):
        write_feature_files(str(tmp_path), config)
    assert not os.path.exists(tmp_path / FG_JSON_FILE)
    assert "feature_configs[0].tokenize_feature" in caplog.text
