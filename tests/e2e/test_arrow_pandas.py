"""Training converts arrow data without importing pandas (recforge/utils/arrow_pandas.py)."""

import subprocess
import sys

from tests.helpers.cli_util import REPO_ROOT

# a fresh interpreter: the converters training uses, then the pandas-facing pyarrow calls
PROBE = """
import sys
import numpy as np
from recforge.utils.arrow_pandas import defer_pandas_in_pyarrow
print("DEFERRED", defer_pandas_in_pyarrow())
import pyarrow as pa
column = pa.array(np.arange(5, dtype=np.int64))
assert column.to_numpy().sum() == 10
assert pa.array([1.5, None]).to_numpy(zero_copy_only=False)[0] == 1.5
print("AFTER_CONVERSIONS", "pandas" in sys.modules)
frame = pa.table({"a": [1, 2]}).to_pandas()
print("TO_PANDAS", type(frame).__name__, int(frame["a"].sum()))
print("FROM_PANDAS", pa.Table.from_pandas(frame).num_rows)
"""


def test_pyarrow_conversions_leave_pandas_unimported_until_asked_for() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert lines["DEFERRED"] == "True"
    assert lines["AFTER_CONVERSIONS"] == "False"
    assert lines["TO_PANDAS"] == "DataFrame 3"
    assert lines["FROM_PANDAS"] == "2"
