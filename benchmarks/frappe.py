"""DeepFM on Frappe, end to end through the ``recforge`` CLI.

Each repeat runs, in child processes from the repository root:

1. ``python -m recforge train --config C --model_dir TMP --edit_config_json JSON``, the JSON
   setting ``data_config.seed`` per repeat: CSV -> features -> training (5 epochs) -> evaluation
   on the test CSV;
2. ``python -m recforge evaluate --config C --model_dir TMP`` on the checkpoint it wrote.

Reported per config: training samples/s (median over epochs 2..N of samples/seconds from
``train_stats.json``, data loading included; epoch 1 is warm-up), test AUC from
``eval_result.json`` (mean ± std over repeats), the peak memory of the train child (RSS of its
largest process from ``wait4``, and sampled PSS of its whole process tree, DataLoader workers
included), the wall time of the whole ``evaluate`` command (start-up included) and the eval
loop's samples/s as ``recforge`` logs it (start-up excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Optional

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "frappe"
DATA_FILES = ("frappe_validation.csv", "frappe_test.csv")
DEFAULT_CONFIGS = ("examples/deepfm_frappe.config", "tests/configs/frappe_deepfm.config")
RESULTS_FILE = Path(__file__).resolve().parent / "results" / "frappe.md"
# the cumulative eval throughput recforge logs every eval_config.log_step_count_steps steps
EVAL_LOG_RE = re.compile(r"eval step \d+ \| (\d+) samples/s")


@dataclass
class Child:
    """A finished child process."""

    wall_s: float
    max_rss_mb: float
    peak_pss_mb: Optional[float]
    other_cores: float
    log: str


@dataclass
class Repeat:
    """The measurements of one train + evaluate repeat."""

    seed: int
    epoch_sps: list[float]
    auc: float
    train_wall_s: float
    train_rss_mb: float
    train_pss_mb: Optional[float]
    other_cores: float
    eval_wall_s: float
    eval_loop_sps: Optional[float]


def _tree_pss_kb(pid: int) -> int:
    """Sum of the proportional set sizes (KiB) of ``pid`` and all its descendants."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            pass  # the process ended meanwhile, or /proc lacks these files
    return total


class PssSampler(threading.Thread):
    """Samples the PSS of a process tree once a second and keeps the peak (KiB)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_kb, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        """Samples until ``done`` is set."""
        while not self.done.wait(1.0):
            self.peak_kb = max(self.peak_kb, _tree_pss_kb(self.pid))


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (all but idle and iowait), or steal."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def wait_quiet(limit: float, timeout_s: float) -> bool:
    """Waits (up to ``timeout_s``) for a 2 s window in which the machine uses < ``limit`` cores."""
    deadline = time.monotonic() + timeout_s
    while True:
        busy = _busy_cpu_s()
        time.sleep(2.0)
        if (_busy_cpu_s() - busy) / 2.0 < limit:
            return True
        if time.monotonic() > deadline:
            return False


def run_child(args: list[str], log_path: Path) -> Child:
    """Runs ``python -m recforge ARGS`` from the repo root; returns wall time, peak RSS, log.

    The RSS is ``ru_maxrss`` of ``wait4`` for this child: the largest resident set of the child
    or of any descendant it reaped (e.g. a DataLoader worker), not their sum. The PSS is the
    peak, sampled every second, of the summed proportional set sizes of the whole process tree
    (shared pages counted once), so it includes DataLoader workers; None where /proc lacks it.
    ``other_cores`` is the CPU that other processes (and hypervisor steal) took meanwhile, in
    cores on average: on a small shared machine anything above ~0.2 skews the timings.
    """
    cmd = [sys.executable, "-m", "recforge", *args]
    with open(log_path, "w") as log:
        start, busy = time.perf_counter(), _busy_cpu_s()
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        sampler = PssSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        busy = _busy_cpu_s() - busy
        sampler.done.set()
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = log_path.read_text()
    if proc.returncode != 0:
        tail = "\n".join(text.splitlines()[-30:])
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{tail}")
    pss = sampler.peak_kb / 1024 if sampler.peak_kb else None
    other = max(busy - usage.ru_utime - usage.ru_stime, 0.0) / wall
    return Child(wall, usage.ru_maxrss / 1024, pss, other, text)  # ru_maxrss: KiB on Linux


def run_repeat(config: str, seed: int, epochs: Optional[int], work: Path) -> Repeat:
    """Trains and evaluates ``config`` once with ``data_config.seed = seed`` in ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    model_dir = work / "model"
    edits: dict[str, object] = {"data_config.seed": seed, "eval_config.log_step_count_steps": 1}
    if epochs is not None:
        edits["train_config.num_epochs"] = epochs
    common = ["--config", config, "--model_dir", str(model_dir), "--edit_config_json"]
    train = run_child(["train", *common, json.dumps(edits)], work / "train.log")
    stats = json.loads((model_dir / "train_stats.json").read_text())
    auc = float(json.loads((model_dir / "eval_result.json").read_text())["auc"])
    epoch_sps = [e["samples"] / e["seconds"] for e in stats["epochs"][1:]]
    evaluate = run_child(["evaluate", *common, json.dumps(edits)], work / "evaluate.log")
    logged = EVAL_LOG_RE.findall(evaluate.log)
    return Repeat(
        seed=seed,
        epoch_sps=epoch_sps,
        auc=auc,
        train_wall_s=train.wall_s,
        train_rss_mb=train.max_rss_mb,
        train_pss_mb=train.peak_pss_mb,
        other_cores=max(train.other_cores, evaluate.other_cores),
        eval_wall_s=evaluate.wall_s,
        eval_loop_sps=float(logged[-1]) if logged else None,
    )


def summary_row(config: str, repeats: list[Repeat]) -> str:
    """One markdown table row for ``config``."""
    sps = statistics.median(s for r in repeats for s in r.epoch_sps)
    aucs = [r.auc for r in repeats]
    auc_std = statistics.stdev(aucs) if len(aucs) > 1 else 0.0
    loop = [r.eval_loop_sps for r in repeats if r.eval_loop_sps is not None]
    loop_text = f"{statistics.median(loop):,.0f}" if loop else "n/a"
    pss = [r.train_pss_mb for r in repeats if r.train_pss_mb is not None]
    cells = [
        "recforge (eager, CPU)",
        f"`{config}`",
        f"{sps:,.0f}",
        f"{statistics.mean(aucs):.4f} ± {auc_std:.4f} (n={len(aucs)})",
        f"{max(r.train_rss_mb for r in repeats):,.0f}",
        f"{max(pss):,.0f}" if pss else "n/a",
        f"{statistics.mean(r.train_wall_s for r in repeats):.1f}",
        f"{statistics.mean(r.eval_wall_s for r in repeats):.1f}",
        loop_text,
        f"{max(r.other_cores for r in repeats):.2f}",
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| implementation | config | train samples/s (median, epochs 2..N) | test AUC (mean ± std) "
    "| peak RSS MB (train, largest process) | peak PSS MB (train, process tree) "
    "| train command wall s | evaluate command wall s (includes start-up) "
    "| eval loop samples/s (from log) | CPU taken by others (cores, max) |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def machine() -> str:
    """A one-line description of this machine and the installed versions."""
    versions = []
    for pkg in ("torch", "torchrec", "fbgemm-gpu-cpu", "fbgemm-gpu"):
        try:
            versions.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            pass
    cpu = platform.machine()
    try:
        names = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, " + ", ".join(
        versions
    )


def source_state() -> str:
    """The git commit of the repository and how many files under recforge/ differ from it."""
    try:
        git = ["git", "-C", str(REPO_ROOT)]
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True)
        dirty = subprocess.run([*git, "status", "--porcelain", "recforge"], capture_output=True)
        changed = len(dirty.stdout.decode().splitlines())
        return f"commit {head.stdout.decode().strip()}, {changed} uncommitted changes in recforge/"
    except OSError:
        return "unknown (no git)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``frappe`` subcommand's options."""
    parser.add_argument("--repeats", type=int, default=3, help="runs per config (seeds differ)")
    parser.add_argument(
        "--epochs", type=int, default=None, help="override train_config.num_epochs (>= 2)"
    )
    parser.add_argument(
        "--config",
        action="append",
        default=None,
        help="config relative to the repo root; repeatable (default: both of "
        + ", ".join(DEFAULT_CONFIGS)
        + ")",
    )
    parser.add_argument("--seed0", type=int, default=1, help="seed of the first repeat")
    parser.add_argument(
        "--max_others",
        type=float,
        default=0.2,
        help="a run counts as disturbed when other processes took more CPU cores than this",
    )
    parser.add_argument(
        "--retries", type=int, default=2, help="reruns of a disturbed run before keeping it"
    )
    parser.add_argument(
        "--wait_s", type=float, default=120, help="longest wait for a quiet machine per run"
    )


def main(args: argparse.Namespace) -> int:
    """Runs the benchmark, prints the table and writes ``benchmarks/results/frappe.md``."""
    missing = [f for f in DATA_FILES if not (DATA_DIR / f).is_file()]
    if missing:
        raise SystemExit(
            f"frappe benchmark not run: {', '.join(missing)} not found in {DATA_DIR} "
            "(the shared real-data folder ../shared/data next to the repository)"
        )
    if args.repeats < 1 or (args.epochs is not None and args.epochs < 2):
        raise SystemExit("--repeats must be >= 1 and --epochs >= 2 (epoch 1 is not timed)")
    configs = args.config or list(DEFAULT_CONFIGS)
    load_before, source = os.getloadavg(), source_state()
    rows, runs, busiest, discarded = [], [], 0.0, 0
    with tempfile.TemporaryDirectory(prefix="recforge-bench-") as tmp:
        for config in configs:
            repeats = []
            for i in range(args.repeats):
                work = Path(tmp) / f"{len(rows)}" / f"seed{args.seed0 + i}"
                for attempt in range(args.retries + 1):
                    if not wait_quiet(args.max_others, args.wait_s):
                        print("machine still busy, running anyway", file=sys.stderr)
                    r = run_repeat(config, args.seed0 + i, args.epochs, work / f"try{attempt}")
                    if r.other_cores <= args.max_others or attempt == args.retries:
                        break
                    discarded += 1
                    print(
                        f"seed {r.seed}: others took {r.other_cores:.2f} cores, retrying",
                        file=sys.stderr,
                    )
                runs.append(
                    f"- `{config}` seed {r.seed}: samples/s of epochs 2..N "
                    f"{[round(s) for s in r.epoch_sps]}, AUC {r.auc:.4f}, "
                    f"RSS {r.train_rss_mb:.0f} MB, PSS {r.train_pss_mb or 0:.0f} MB, "
                    f"train {r.train_wall_s:.1f} s, evaluate {r.eval_wall_s:.1f} s, "
                    f"others took up to {r.other_cores:.2f} cores"
                )
                print(runs[-1], file=sys.stderr, flush=True)
                busiest = max(busiest, r.other_cores)
                repeats.append(r)
            rows.append(summary_row(config, repeats))
    load_after = os.getloadavg()
    argv = " ".join(sys.argv[1:])
    discarded_note = (
        [
            f"- discarded and reran {discarded} run(s) in which other processes took > "
            f"{args.max_others} cores"
        ]
        if discarded
        else []
    )
    warning = (
        [
            f"- WARNING: other processes took up to {busiest:.2f} cores during a run; "
            "the timings are skewed low, rerun on a quiet machine"
        ]
        if busiest > args.max_others
        else []
    )
    report = "\n".join(
        [
            "# Frappe DeepFM benchmark",
            "",
            f"- command: `python -m benchmarks {argv}`",
            f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
            f"- machine: {machine()}",
            f"- source at start: {source}",
            f"- load average (1 min) before / after: {load_before[0]:.2f} / {load_after[0]:.2f}",
            *discarded_note,
            *warning,
            "",
            HEADER,
            *rows,
            "",
            "Per run:",
            "",
            *runs,
            "",
        ]
    )
    print(report)
    RESULTS_FILE.parent.mkdir(exist_ok=True)
    RESULTS_FILE.write_text(report)
    print(f"written to {RESULTS_FILE.relative_to(REPO_ROOT)}", file=sys.stderr)
    return 0
