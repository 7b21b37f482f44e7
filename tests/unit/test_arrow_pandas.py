"""``not_importable`` hides modules for a block only (recforge/utils/arrow_pandas.py)."""

import sys

import pytest

from recforge.utils.arrow_pandas import defer_pandas_in_pyarrow, not_importable


def test_blocked_module_cannot_be_imported_inside_the_block_only(monkeypatch) -> None:
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    finders = list(sys.meta_path)
    with not_importable("colorsys"):
        with pytest.raises(ImportError):
            import colorsys  # noqa: F401
        import json  # noqa: F401  (other modules import as usual)
    assert sys.meta_path == finders
    import colorsys

    assert colorsys.rgb_to_hsv(1.0, 0.0, 0.0)[2] == 1.0


def test_finder_is_removed_when_the_block_raises() -> None:
    finders = list(sys.meta_path)
    with pytest.raises(RuntimeError):
        with not_importable("colorsys"):
            raise RuntimeError("boom")
    assert sys.meta_path == finders


def test_nothing_to_defer_once_pandas_is_imported() -> None:
    pytest.importorskip("pandas")
    assert defer_pandas_in_pyarrow() is False
