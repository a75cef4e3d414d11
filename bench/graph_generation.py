"""Time and peak memory of the DC-SBM generator at 10^4, 10^5 and 10^6 nodes.

Each size runs in a fresh interpreter, so its peak RSS (getrusage) is its own and not
the maximum of everything before it. The baseline (torch + PyG imported, nothing
generated) is printed too, so the generator's share is visible.

    OMP_NUM_THREADS=1 .venv/bin/python bench/graph_generation.py
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = ((10_000, 3), (100_000, 3), (1_000_000, 1))


def peak_rss_mb() -> float:
    """Peak resident set size of this process (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(num_nodes: int, repeats: int) -> dict:
    """Generate ``repeats`` graphs (seeds 0..repeats-1) and report times and peak RSS."""
    sys.path.insert(0, str(REPO))
    from data.graphs import dcsbm

    baseline = peak_rss_mb()
    times = []
    for seed in range(repeats):
        start = time.perf_counter()
        graph = dcsbm(num_nodes=num_nodes, seed=seed)
        times.append(time.perf_counter() - start)
        del graph
    return {
        "num_nodes": num_nodes,
        "times_s": times,
        "baseline_rss_mb": baseline,
        "peak_rss_mb": peak_rss_mb(),
    }


def run_in_child(num_nodes: int, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--nodes", str(num_nodes), "--repeats", str(repeats)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, help="measure one size in this process")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    if args.nodes:
        print(json.dumps(measure(args.nodes, args.repeats)))
        return
    print(f"{'nodes':>10} {'runs':>4} {'median s':>9} {'peak RSS MB':>12} {'baseline MB':>12}")
    for num_nodes, repeats in SIZES:
        r = run_in_child(num_nodes, repeats)
        print(
            f"{num_nodes:>10} {repeats:>4} {statistics.median(r['times_s']):>9.2f} "
            f"{r['peak_rss_mb']:>12.0f} {r['baseline_rss_mb']:>12.0f}"
        )


if __name__ == "__main__":
    main()
