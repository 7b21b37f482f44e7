"""The package's identity: ``recforge --version`` and where the proto modules come from."""

from __future__ import annotations

import pytest

from recforge import cli, protos


def test_version_flag_prints_the_distribution_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"recforge {cli.package_version()}"


def test_protos_compile_only_inside_a_checkout() -> None:
    # the tests run from a checkout; an installed wheel has no pyproject.toml beside the package
    assert protos._in_source_checkout()


def test_compile_into_a_staging_folder_leaves_the_checkout_alone(tmp_path) -> None:
    compiled = protos.compile_protos(out_dir=tmp_path)
    generated = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*_pb2.py"))
    assert len(generated) == len(compiled) > 0
    assert "recforge/protos/pipeline_pb2.py" in generated
    assert (tmp_path / "recforge/protos/models/__init__.py").exists()
