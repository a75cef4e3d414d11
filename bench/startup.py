"""Start-up time of the `adamlab` command: medians of N whole processes (issue 16, item 3).

    python bench/startup.py                      # 5 runs of each command, this checkout
    python bench/startup.py --runs 7 --baseline 543eba7   # and the same commands at a commit

Commands: ``adamlab --help``, ``adamlab study --list`` and ``adamlab train experiment=quick
trainer.max_epochs=1`` (W&B offline, the default loggers). Each is timed as a whole process
(wall clock and CPU seconds of the process and its children, from ``wait4``); the commands
alternate with the baseline's, so both see the same load. The baseline runs from ``git
archive <rev>`` with this venv. Prints a table and the machine's load (``os.getloadavg``):
on a shared machine CPU seconds are the steadier figure, wall time the one a user feels.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {
    "--help": ["--help"],
    "study --list": ["study", "--list"],
    "train quick, 1 epoch": ["train", "experiment=quick", "trainer.max_epochs=1"],
}


def timed(argv: list[str], cwd: Path, env: dict) -> tuple[float, float, int]:
    """(wall s, CPU s of the process and its children, exit status)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    return wall, usage.ru_utime + usage.ru_stime, os.waitstatus_to_exitcode(status)


def checkout(rev: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", help="a git revision to time next to this checkout")
    parser.add_argument("--only", choices=list(COMMANDS), action="append")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this checkout": ROOT}
        if args.baseline:
            trees[args.baseline] = checkout(args.baseline, Path(tmp) / "baseline")
        env = {**os.environ, "WANDB_MODE": "offline", "ADAMLAB_RUNS": str(Path(tmp) / "runs"),
               "HYDRA_FULL_ERROR": "0"}
        results: dict = {}
        load = [os.getloadavg()[0]]
        for _ in range(args.runs):
            for name in args.only or COMMANDS:
                for tree, path in trees.items():
                    # the checkout's own packages first (the editable install points here)
                    run_env = {**env, "PYTHONPATH": str(path)}
                    code = ("import sys; sys.argv[0] = 'adamlab'; "
                            f"from pipelines.cli import main; main({COMMANDS[name]!r})")
                    wall, cpu, status = timed([sys.executable, "-c", code], path, run_env)
                    results.setdefault((name, tree), []).append((wall, cpu, status))
            load.append(os.getloadavg()[0])
    print(f"load average (1 min) during the runs: {min(load):.1f} to {max(load):.1f} "
          f"on {os.cpu_count()} CPUs; medians of {args.runs}")
    print(f"{'command':<22} {'tree':<14} {'wall s':>8} {'CPU s':>8}  exit")
    for (name, tree), rows in results.items():
        wall = statistics.median(r[0] for r in rows)
        cpu = statistics.median(r[1] for r in rows)
        statuses = sorted({r[2] for r in rows})
        print(f"{name:<22} {tree:<14} {wall:8.2f} {cpu:8.2f}  {statuses}")


if __name__ == "__main__":
    main()
