"""Writes the tiny data set every robustness case shares (``data/train.{parquet,csv}``).

Run from the repository root: ``python tests/robustness/make_data.py``. The files are committed;
this script documents how they were made. Case-specific bad files live in the case folders.
"""

import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    rng = np.random.default_rng(0)
    n = 40
    table = pa.table(
        {
            "label": pa.array(rng.integers(0, 2, n), pa.int64()),
            "user": pa.array(rng.integers(0, 10, n), pa.int64()),
            "item": pa.array([f"i{x}" for x in rng.integers(0, 5, n)]),
            "price": pa.array(rng.random(n).round(3), pa.float64()),
        }
    )
    os.makedirs(os.path.join(HERE, "data"), exist_ok=True)
    pq.write_table(table, os.path.join(HERE, "data", "train.parquet"))
    pacsv.write_csv(
        table,
        os.path.join(HERE, "data", "train.csv"),
        pacsv.WriteOptions(quoting_style="none"),
    )


if __name__ == "__main__":
    main()
