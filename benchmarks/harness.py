"""What every benchmark shares: child processes measured for time and memory on a shared
machine (waiting for a quiet window, rerunning disturbed runs), and the report header lines.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
#: Extra environment of every child (recforge and references alike), e.g.
#: ``{"OMP_WAIT_POLICY": "PASSIVE"}`` from ``--omp_wait_policy passive``.
CHILD_ENV: dict = {}
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
    peak_anon_mb: Optional[float] = None
    peak_file_mb: Optional[float] = None


@dataclass
class Run:
    """One measured run of one implementation (a recforge config or a reference)."""

    name: str
    seed: int
    epoch_sps: list[float]  # epochs 2..N
    auc: float
    rss_mb: float
    pss_mb: Optional[float]
    wall_s: float
    other_cores: float
    infer_sps: Optional[float] = None
    extra: dict = field(default_factory=dict)
    anon_mb: Optional[float] = None  # peak RssAnon of the training process
    file_mb: Optional[float] = None  # peak RssFile (file-mapped pages, e.g. file-backed tables)


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


def _rss_split_kb(pid: int) -> tuple[int, int]:
    """``(RssAnon, RssFile)`` of ``pid`` in KiB (anonymous vs file-mapped resident pages)."""
    found = {"RssAnon:": 0, "RssFile:": 0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition("\t")
            if name in found:
                found[name] = int(value.split()[0])
    except (OSError, ValueError, IndexError):
        pass  # the process ended meanwhile, or /proc lacks these lines
    return found["RssAnon:"], found["RssFile:"]


class PssSampler(threading.Thread):
    """Samples the PSS of a process tree once a second and keeps the peak (KiB), and the peaks
    of the root process's anonymous and file-mapped resident sets (KiB)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_kb, self.done = pid, 0, threading.Event()
        self.peak_anon_kb, self.peak_file_kb = 0, 0

    def run(self) -> None:
        """Samples until ``done`` is set."""
        while not self.done.wait(1.0):
            self.peak_kb = max(self.peak_kb, _tree_pss_kb(self.pid))
            anon, mapped = _rss_split_kb(self.pid)
            self.peak_anon_kb = max(self.peak_anon_kb, anon)
            self.peak_file_kb = max(self.peak_file_kb, mapped)


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


def run_command(cmd: Sequence[str], log_path: Path, env: Optional[dict] = None) -> Child:
    """Runs ``cmd`` from the repo root; returns wall time, peak RSS and PSS, others' CPU, log.

    The RSS is ``ru_maxrss`` of ``wait4`` for this child: the largest resident set of the child
    or of any descendant it reaped (e.g. a DataLoader worker), not their sum. The PSS is the
    peak, sampled every second, of the summed proportional set sizes of the whole process tree
    (shared pages counted once), so it includes DataLoader workers; None where /proc lacks it.
    ``other_cores`` is the CPU that other processes (and hypervisor steal) took meanwhile, in
    cores on average: on a small shared machine anything above ~0.2 skews the timings.
    """
    cmd = [str(c) for c in cmd]
    env = {**(os.environ if env is None else env), **CHILD_ENV}
    with open(log_path, "w") as log:
        start, busy = time.perf_counter(), _busy_cpu_s()
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
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
    split = (sampler.peak_anon_kb / 1024 or None, sampler.peak_file_kb / 1024 or None)
    return Child(wall, usage.ru_maxrss / 1024, pss, other, text, *split)  # ru_maxrss: KiB


def run_reference(name: str, seed: int, cmd: Sequence[str], work: Path) -> Run:
    """Runs a reference script that writes ``--out`` JSON (epoch_sps, infer_sps, auc)."""
    work.mkdir(parents=True, exist_ok=True)
    out = work / "result.json"
    env = dict(os.environ, MASTER_PORT=str(29500 + os.getpid() % 2000))
    child = run_command([*cmd, "--out", out, "--seed", seed], work / "log.txt", env)
    result = json.loads(out.read_text())
    return Run(
        name=name,
        seed=seed,
        epoch_sps=result["epoch_sps"][1:],
        auc=float(result["auc"]),
        rss_mb=child.max_rss_mb,
        pss_mb=child.peak_pss_mb,
        wall_s=child.wall_s,
        other_cores=child.other_cores,
        infer_sps=result.get("infer_sps"),
    )


def run_recforge(
    name: str,
    config: str,
    seed: int,
    edits: dict,
    work: Path,
    test_file: Optional[str] = None,
    launcher: Sequence[str] = (),
) -> Run:
    """``recforge train`` (via ``launcher``, e.g. torchrun), then optionally inference.

    Training samples/s come from ``train_stats.json`` (epochs 2..N), the AUC from
    ``eval_result.json``, and the eval loop's rate (from files, parsing included) from the log.
    With ``test_file``, ``recforge_infer.py`` exports the checkpoint and times inference.
    """
    work.mkdir(parents=True, exist_ok=True)
    model_dir = work / "model"
    edits = {"data_config.seed": seed, "eval_config.log_step_count_steps": 1, **edits}
    module = list(launcher) or [sys.executable, "-m"]
    cmd = [*module, "recforge", "train", "--config", config, "--model_dir", model_dir]
    train = run_command([*cmd, "--edit_config_json", json.dumps(edits)], work / "train.log")
    stats = json.loads((model_dir / "train_stats.json").read_text())
    result = json.loads((model_dir / "eval_result.json").read_text())
    # a model that evaluates one named output (RocketLaunching: auc_light) has one auc_* metric
    aucs = [k for k in result if k.startswith("auc_")]
    auc = float(result["auc"] if "auc" in result or len(aucs) != 1 else result[aucs[0]])
    logged = EVAL_LOG_RE.findall(train.log)
    run = Run(
        name=name,
        seed=seed,
        epoch_sps=[e["samples"] / e["seconds"] for e in stats["epochs"][1:]],
        auc=auc,
        rss_mb=train.max_rss_mb,
        pss_mb=train.peak_pss_mb,
        wall_s=train.wall_s,
        other_cores=train.other_cores,
        extra={"eval_loop_sps": float(logged[-1]) if logged else None},
        anon_mb=train.peak_anon_mb,
        file_mb=train.peak_file_mb,
    )
    if test_file:
        out = work / "infer.json"
        infer_cmd = [sys.executable, BENCH_DIR / "recforge_infer.py", "--model_dir", model_dir]
        child = run_command([*infer_cmd, "--test", test_file, "--out", out], work / "infer.log")
        result = json.loads(out.read_text())
        run.infer_sps = result["exported_sps"]
        run.extra["eager_sps"] = result["eager_sps"]
        run.extra["bf16_sps"] = result["exported_bf16_sps"]
        run.extra["bf16_auc"] = result["bf16_auc"]
        run.other_cores = max(run.other_cores, child.other_cores)
    return run


def measured(
    attempt: Callable[[Path], Run], work: Path, max_others: float, retries: int, wait_s: float
) -> tuple[Run, int]:
    """Runs ``attempt`` after waiting for a quiet machine; reruns it while it was disturbed.

    Returns the kept run and how many disturbed runs were discarded.
    """
    discarded = 0
    for i in range(retries + 1):
        if not wait_quiet(max_others, wait_s):
            print("machine still busy, running anyway", file=sys.stderr)
        run = attempt(work / f"try{i}")
        if run.other_cores <= max_others or i == retries:
            return run, discarded
        discarded += 1
        print(
            f"{run.name} seed {run.seed}: others took {run.other_cores:.2f} cores, retrying",
            file=sys.stderr,
        )
    raise AssertionError("unreachable")


def parse_refs(text: str, known: Sequence[str]) -> list[str]:
    """The references named by ``--refs`` (``none``: no reference); exits on an unknown one."""
    refs = [] if text == "none" else [r.strip() for r in text.split(",") if r.strip()]
    unknown = [r for r in refs if r not in known]
    if unknown:
        raise SystemExit(f"unknown reference(s) {unknown}; known: {sorted(known)}")
    return refs


@dataclass
class Results:
    """The kept runs of one benchmark invocation, per implementation, and its report."""

    max_others: float
    load: tuple = field(default_factory=os.getloadavg)
    groups: dict[str, list[Run]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    discarded: int = 0
    busiest: float = 0.0

    def add(self, key: str, label: str, kept: tuple[Run, int]) -> None:
        """Records the run that :func:`measured` kept (and its discarded count) under ``key``."""
        run, discarded = kept
        self.labels[key] = label
        self.groups.setdefault(key, []).append(run)
        self.discarded += discarded
        self.busiest = max(self.busiest, run.other_cores)
        self.lines.append(run_line(run))
        print(self.lines[-1], file=sys.stderr, flush=True)

    def write_report(self, title: str, notes: list[str], table: list[str], out: str) -> int:
        """Prints the report (header, ``notes``, ``table``, one line per run), writes it to
        ``out`` and returns the exit status 0."""
        header = report_header(title, self.max_others, self.discarded, self.busiest, self.load)
        report = "\n".join([*header, *notes, "", *table, "", "Per run:", "", *self.lines, ""])
        print(report)
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report)
        print(f"written to {path}", file=sys.stderr)
        return 0


def middle(values: Iterable[Any]) -> Optional[Any]:
    """The middle of the sorted values (the upper one of an even count), None for none."""
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else None


def median_sps(runs: list[Run]) -> float:
    """Median samples/s over epochs 2..N of all runs."""
    return statistics.median(s for r in runs for s in r.epoch_sps)


def auc_text(runs: list[Run]) -> str:
    """``mean ± std (n=N)`` of the runs' AUC."""
    aucs = [r.auc for r in runs]
    std = statistics.stdev(aucs) if len(aucs) > 1 else 0.0
    return f"{statistics.mean(aucs):.4f} ± {std:.4f} (n={len(aucs)})"


def fmt(value: Optional[float], digits: int = 0) -> str:
    """A number with thousands separators, or ``n/a``."""
    return "n/a" if value is None else f"{value:,.{digits}f}"


def run_line(run: Run) -> str:
    """One line per run for the report."""
    extra = "".join(
        f", {k} {fmt(v, 4 if k.endswith('auc') else 0)}"
        for k, v in run.extra.items()
        if v is not None
    )
    return (
        f"- {run.name} seed {run.seed}: samples/s of epochs 2..N "
        f"{[round(s) for s in run.epoch_sps]}, AUC {run.auc:.4f}, inference "
        f"{fmt(run.infer_sps)}{extra}, RSS {run.rss_mb:.0f} MB, PSS {run.pss_mb or 0:.0f} MB, "
        f"wall {run.wall_s:.1f} s, others took up to {run.other_cores:.2f} cores"
    )


def add_quiet_arguments(parser) -> None:
    """Options of the quiet-machine mechanism (and of the children's OpenMP setting)."""
    parser.add_argument(
        "--omp_wait_policy",
        choices=["default", "passive", "active"],
        default="default",
        help="OMP_WAIT_POLICY of every child, recforge and references alike (default: leave "
        "the environment as it is); passive survives a busy machine, see README",
    )
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


def apply_child_env(args) -> None:
    """Sets :data:`CHILD_ENV` from ``--omp_wait_policy``."""
    CHILD_ENV.clear()
    if args.omp_wait_policy != "default":
        CHILD_ENV["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()


def report_header(title: str, max_others: float, discarded: int, busiest: float, load) -> list:
    """The lines every report starts with (command, date, machine, source, disturbance)."""
    lines = [
        f"# {title}",
        "",
        f"- command: `python -m benchmarks {' '.join(sys.argv[1:])}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- machine: {machine()}",
        f"- source: {source_state()}",
        f"- load average (1 min) before / after: {load[0]:.2f} / {os.getloadavg()[0]:.2f}",
        "- OpenMP: "
        + (", ".join(f"{k}={v}" for k, v in CHILD_ENV.items()) or "the environment's settings")
        + " for every implementation",
    ]
    if discarded:
        lines.append(
            f"- discarded and reran {discarded} run(s) in which other processes took > "
            f"{max_others} cores"
        )
    if busiest > max_others:
        lines.append(
            f"- WARNING: other processes took up to {busiest:.2f} cores during a kept run; "
            "its timings are skewed low, rerun on a quiet machine"
        )
    else:
        lines.append(f"- every kept run was undisturbed (others took <= {busiest:.2f} cores)")
    return lines


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
