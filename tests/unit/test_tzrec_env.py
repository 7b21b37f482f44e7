"""TorchEasyRec's environment switches: a switched-on one stops the commands it would change."""

import pytest

from recforge import cli, tzrec_commands
from recforge.errors import RecforgeError
from recforge.utils.tzrec_env import SWITCHES, check_environment, environment_problem

#: a value that switches each variable on in TorchEasyRec
ON = {
    "USE_RTP": "1",
    "USE_FARM_HASH_TO_BUCKETIZE": "true",
    "ONLINE_DENSE_EXPORT": "1",
    "INPUT_TILE": "3",
    "INPUT_TILE_3_ONLINE": "1",
    "USE_DISTRIBUTED_EMBEDDING": "1",
    "ENABLE_AOT": "2",
    "UNIFIED_AOT": "1",
    "ENABLE_TRT": "1",
    "QUANT_EMB": "INT8",
    "QUANT_EC_EMB": "FP16",
    "DIST_QUANT": "int8",
}
OFF = [
    ("USE_RTP", "0"),
    ("USE_FARM_HASH_TO_BUCKETIZE", "false"),
    ("INPUT_TILE", "1"),
    ("ENABLE_AOT", "0"),
    ("QUANT_EMB", "0"),
    ("QUANT_EMB", "FP32"),
    ("QUANT_EC_EMB", ""),
    ("DIST_QUANT", "NONE"),
]


def test_every_switch_has_a_value_that_turns_it_on():
    assert sorted(ON) == sorted(s.name for s in SWITCHES)


@pytest.mark.parametrize("switch", SWITCHES, ids=[s.name for s in SWITCHES])
def test_a_switch_that_is_on_is_refused_where_it_would_change_the_command(switch):
    command = "export" if switch.commands is None else sorted(switch.commands)[0]
    problem = environment_problem(command, {switch.name: ON[switch.name]})
    assert problem is not None
    assert problem.startswith(f"environment variable {switch.name}: expected {switch.off}")
    assert problem.endswith(f"found {ON[switch.name]!r}")
    with pytest.raises(RecforgeError, match=switch.name):
        check_environment(command, {switch.name: ON[switch.name]})


@pytest.mark.parametrize(("name", "value"), OFF)
def test_values_that_leave_a_switch_off_pass(name, value):
    assert environment_problem("export", {name: value}) is None


def test_export_switches_leave_training_alone_and_feature_switches_stop_everything():
    assert environment_problem("train", {"INPUT_TILE": "3", "QUANT_EMB": "INT8"}) is None
    assert environment_problem("export", {"INPUT_TILE": "3"}) is not None
    assert environment_problem("export", {"ONLINE_DENSE_EXPORT": "1"}) is None
    for command in ("train", "evaluate", "predict", "create-fg-json", "mock-data"):
        assert "USE_RTP" in environment_problem(command, {"USE_RTP": "1"})


def test_the_cli_stops_with_one_line_before_reading_the_config(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("USE_RTP", "1")
    with pytest.raises(SystemExit) as raised:
        cli.main(["train", "--config", str(tmp_path / "missing.config")])
    assert raised.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("recforge: error: environment variable USE_RTP: expected unset or 0")


def test_torcheasyrec_commands_stop_too(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("QUANT_EMB", "INT8")
    argv = ["--pipeline_config_path", str(tmp_path / "missing.config"), "--export_dir", "e"]
    with pytest.raises(SystemExit) as raised:
        tzrec_commands.main("export", argv)
    assert raised.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("recforge: error: environment variable QUANT_EMB: expected")
