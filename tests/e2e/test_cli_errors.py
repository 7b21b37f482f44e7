"""Bad input gets one clear line naming what is wrong, exit status 2, no stack trace."""

import os
import pathlib
import re
import shutil

import pytest

from tests.helpers.cli_util import run_cli
from tests.helpers.tiny_run import (
    CONFIG,
    CSV,
)


def fail(tmp_path, config=CONFIG, csv=CSV, command="train", extra=()):
    (tmp_path / "train.csv").write_text(csv)
    (tmp_path / "bad.config").write_text(config)
    proc = run_cli([command, "--config", "bad.config", *extra], str(tmp_path), check=False)
    assert proc.returncode == 2, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    return proc.stderr


def test_the_valid_config_trains(tmp_path):
    (tmp_path / "train.csv").write_text(CSV)
    (tmp_path / "ok.config").write_text(CONFIG)
    run_cli(["train", "--config", "ok.config"], str(tmp_path))
    assert os.path.isfile(tmp_path / "model" / "eval_result.json")


def test_syntax_error_names_file_line_and_column(tmp_path):
    broken = CONFIG.replace("model_config {", "model_config", 1)
    err = fail(tmp_path, broken)
    assert "bad.config:13:" in err and "feature_groups" in err


def test_unknown_field_suggests_the_closest_name(tmp_path):
    err = fail(tmp_path, CONFIG.replace("batch_size: 2", "batch_szie: 2"))
    assert "batch_szie" in err and "did you mean 'batch_size'" in err and "bad.config:9:" in err


def test_group_naming_an_undefined_feature(tmp_path):
    err = fail(tmp_path, CONFIG.replace('["user", "price"]', '["usr", "price"]'))
    assert "'usr' is not defined" in err and "did you mean 'user'" in err


def test_missing_label_column(tmp_path):
    err = fail(tmp_path, CONFIG.replace('label_fields: "label"', 'label_fields: "click"'))
    assert "'click'" in err and "train.csv" in err and "label" in err


def test_non_numeric_value_in_raw_feature_column(tmp_path):
    err = fail(tmp_path, csv=CSV.replace("0,4,1.5", "0,4,abc"))
    assert "feature 'price' (column 'price')" in err and "'abc'" in err


def test_id_out_of_range(tmp_path):
    err = fail(tmp_path, csv=CSV.replace("1,5,1.0", "1,50,1.0"))
    assert "feature 'user'" in err and "50" in err and "num_buckets" in err


def test_empty_input_glob(tmp_path):
    err = fail(
        tmp_path, CONFIG.replace('train_input_path: "train.csv"', 'train_input_path: "x/*.csv"')
    )
    assert "x/*.csv" in err and "matched no files" in err


def test_unknown_model_in_plugin_free_config(tmp_path):
    err = fail(tmp_path, CONFIG.replace("multi_tower {", "multi_towr {"))
    assert "multi_towr" in err and "multi_tower" in err


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    """A directory holding ``ok.config``, its data and the model it trained."""
    root = tmp_path_factory.mktemp("trained")
    (root / "train.csv").write_text(CSV)
    (root / "ok.config").write_text(CONFIG)
    run_cli(["train", "--config", "ok.config"], str(root))
    return root


@pytest.mark.parametrize("damage", ["truncate", "remove_state", "flip_byte", "crafted_metadata"])
def test_corrupt_checkpoint_is_reported(tmp_path, trained_dir, damage):
    shutil.copytree(trained_dir, tmp_path, dirs_exist_ok=True)
    (checkpoint,) = [p for p in (tmp_path / "model").iterdir() if p.name.startswith("model.ckpt")]
    shards = sorted(checkpoint.glob("*.distcp"))
    if damage == "truncate":
        for shard in shards:
            shard.write_bytes(shard.read_bytes()[:10])
    elif damage == "flip_byte":  # in every shard: evaluate reads the model's, not all
        for shard in shards:
            data = bytearray(shard.read_bytes())
            data[len(data) // 2] ^= 0x01
            shard.write_bytes(bytes(data))
    elif damage == "crafted_metadata":
        # a pickle that would run a shell command; the checksum manifest is removed with it
        (checkpoint / ".metadata").write_bytes(b"cos\nsystem\n(S'touch payload_ran'\ntR.")
        (checkpoint / "checksums.json").unlink()
    else:
        (checkpoint / "train_state.json").unlink()
    proc = run_cli(
        ["evaluate", "--config", "ok.config", "--checkpoint", str(checkpoint)],
        str(tmp_path),
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-4000:]
    assert str(checkpoint) in proc.stderr
    if damage == "flip_byte":
        named = re.search(r"recforge: error: (\S+): checksum mismatch", proc.stderr)
        assert named and pathlib.Path(named.group(1)) in shards, proc.stderr
    if damage == "crafted_metadata":
        assert "refused to load: it references 'os.system'" in proc.stderr
        assert not (tmp_path / "payload_ran").exists()
