"""A/B of the trainer's OpenMP settings: ``python -m benchmarks.omp_ab CONFIG [ROUNDS]``.

Alternates ``recforge train --config CONFIG`` (4 epochs) under ``OMP_NUM_THREADS=1``,
``OMP_NUM_THREADS=2`` (torch's active waiting) and ``OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE``,
each after waiting up to 90 s for a quiet 2 s window, and prints the per-epoch samples/s, the
test AUC and the CPU other processes took. The numbers in benchmarks/README.md ("Fast
defaults") came from this script (quiet rounds) and from the same loop run without the waits
while the machine was busy.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import run_command, wait_quiet

VARIANTS = {
    "1 thread": {"OMP_NUM_THREADS": "1"},
    "2 threads, active": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "ACTIVE"},
    "2 threads, passive": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"},
}


def main() -> None:
    """Runs the rounds and prints one line per run."""
    config = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    edits = json.dumps({"train_config.num_epochs": 4})
    with tempfile.TemporaryDirectory(prefix="recforge-omp-") as tmp:
        for r in range(rounds):
            for name, env in VARIANTS.items():
                quiet = wait_quiet(0.2, 90)
                work = Path(tmp) / f"{r}-{len(name)}"
                work.mkdir()
                cmd = [sys.executable, "-m", "recforge", "train", "--config", config]
                cmd += ["--model_dir", work / "model", "--edit_config_json", edits]
                child = run_command(cmd, work / "log", dict(os.environ, **env))
                sps = re.findall(r"\((\d+) samples/s\)", child.log)
                auc = re.findall(r"auc ([0-9.]+)", child.log)[-1:]
                print(
                    f"{name}: {'quiet' if quiet else 'BUSY'}, others {child.other_cores:.2f}"
                    f" cores, samples/s per epoch {sps}, AUC {auc}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
