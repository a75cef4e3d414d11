"""Final returns of RL presets over seeds, through the real harness, against written floors.

The engine behind ``bench/rl_mujoco.py`` and ``bench/rl_lunarlander.py``. Every (env, seed)
is one ``adamlab train pipeline=rl`` run in ``--out/<env>_seed<seed>``; a run that has a
summary.json is not run again, and one that was killed resumes from its last checkpoint, so
a long benchmark can be stopped and restarted. The record (JSON and a markdown table) says,
per run: the mean return of the last 20 training episodes (stochastic policy, as CleanRL's
``charts/episodic_return``), the greedy evaluation the run itself reported (10 episodes),
``adamlab eval`` of the final policy over ``--eval-episodes`` greedy episodes (frozen
normalisation; what rl-zoo's benchmark reports), the env steps at which the mean of the last
20 training episodes first reached the floor, and the steps/s.

``--report-only`` trains nothing: it records what the run dirs hold, finished or not. A run
stopped before its budget is listed as incomplete with the env steps it reached, its last
training returns and steps/s, and its learning curve (``<record>_curves.csv``: every logged
update's global step, training return, mean of the last 20 episodes, greedy evaluation), so
a benchmark cut short still leaves its curve.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from pipelines import evaluate
from pipelines.train import CONFIGS, run


def train(env_id: str, seed: int, out: Path, overrides: list[str], floor: float,
          eval_episodes: int) -> dict:
    run_dir = out / f"{env_id}_seed{seed}"
    summary = run_dir / "summary.json"
    if not finished(run_dir):
        resume = run_dir / "checkpoints" / "last.ckpt"
        with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
            cfg = compose(config_name="train", overrides=[
                "pipeline=rl", f"env.id={env_id}", f"seed={seed}", "logger=csv",
                "trainer.enable_progress_bar=false", f"pipeline.threshold={floor}",
                *overrides, *([f"resume={resume}"] if resume.is_file() else [])])
        run(cfg, run_dir)
    record = json.loads(summary.read_text())
    if record.get("status") != "ok":
        raise SystemExit(f"{run_dir}: {record.get('error')} (run this again to resume it)")
    metrics = record["metrics"]
    final = evaluate.evaluate(str(run_dir), [f"episodes={eval_episodes}"])
    return {"env": env_id, "seed": seed, "final_return": metrics["mean_return_last20"],
            "eval_return": metrics["eval_return"], "greedy_return": final["mean_return"],
            "greedy_std": final["std_return"],
            "steps_to_floor": metrics["steps_to_threshold"], "env_steps": metrics["env_steps"],
            "sps": median_sps(run_dir), "wall_time_s": record["wall_time_s"],
            "git_sha": record.get("git_sha")}


def finished(run_dir: Path) -> bool:
    """Its summary says ok (a run stopped by a signal writes one with status failed)."""
    summary = run_dir / "summary.json"
    return summary.is_file() and json.loads(summary.read_text()).get("status") == "ok"


def median_sps(run_dir: Path) -> float | None:
    values = [float(r["charts/SPS"]) for r in rows_of(run_dir) if r.get("charts/SPS")]
    return round(statistics.median(values), 1) if values else None


def rows_of(run_dir: Path) -> list[dict]:
    path = run_dir / "csv" / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


CURVE = ("global_step", "charts/episodic_return", "charts/mean_return_last20",
         "eval/episodic_return", "charts/SPS")


def curve(run_dir: Path) -> list[dict]:
    """One entry per logged update: the CURVE columns that row has."""
    return [{key: float(r[key]) for key in CURVE if r.get(key)} for r in rows_of(run_dir)
            if r.get("global_step")]


def partial(env_id: str, seed: int, out: Path, budget: int) -> dict | None:
    """What an unfinished run reached (None: it never logged an update)."""
    points = curve(out / f"{env_id}_seed{seed}")
    if not points:
        return None
    last = points[-1]
    evals = [p["eval/episodic_return"] for p in points if "eval/episodic_return" in p]
    return {"env": env_id, "seed": seed, "complete": False, "budget": budget,
            "env_steps_logged": int(last["global_step"]),
            "final_return": last.get("charts/mean_return_last20"),
            "last_eval_return": evals[-1] if evals else None,
            "sps": median_sps(out / f"{env_id}_seed{seed}")}


def table(rows: list[dict], floors: dict[str, float], reference: dict[str, str]) -> str:
    lines = ["| env | seed | training return (last 20 episodes) | greedy eval (run, 10) | "
             "greedy eval (final, N) | steps to floor (training) | steps/s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['env']} | {r['seed']} | {r['final_return']:.1f} | "
                     f"{r['eval_return']:.1f} | {r['greedy_return']:.1f} ± {r['greedy_std']:.1f} "
                     f"| {r['steps_to_floor'] or 'never'} | {r['sps']} |")
    lines += ["", "| env | training return, mean ± std over seeds | greedy eval (final) | floor | "
              "met (training / greedy) | reference |", "|---|---|---|---|---|---|"]
    for env_id, floor in floors.items():
        mine = [r for r in rows if r["env"] == env_id]
        if not mine:
            continue
        cells = []
        for key in ("final_return", "greedy_return"):
            values = [r[key] for r in mine]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append((statistics.mean(values), std))
        met = " / ".join("yes" if mean >= floor else "no" for mean, _ in cells)
        lines.append(f"| {env_id} | {cells[0][0]:.1f} ± {cells[0][1]:.1f} ({len(mine)} seeds) | "
                     f"{cells[1][0]:.1f} ± {cells[1][1]:.1f} | {floor:g} | {met} | "
                     f"{reference.get(env_id, '')} |")
    return "\n".join(lines)


def main(description: str, floors: dict[str, float], overrides: list[str],
         reference: dict[str, str]) -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--envs", nargs="+", default=list(floors))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, required=True, help="run dirs (kept, resumable)")
    parser.add_argument("--record", type=Path, default=None, help="write JSON + .md here")
    parser.add_argument("--eval-episodes", type=int, default=100,
                        help="greedy episodes of the final policy (adamlab eval)")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: record the run dirs as they are (unfinished "
                        "runs as incomplete, with their curves)")
    parser.add_argument("--budget", type=int, default=1_000_000,
                        help="env steps of a complete run (for the incomplete table)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    torch.set_num_threads(1)
    rows, unfinished = [], []
    for env_id in args.envs:
        for seed in args.seeds:
            started = time.perf_counter()
            if args.report_only and not finished(args.out / f"{env_id}_seed{seed}"):
                unfinished.append(partial(env_id, seed, args.out, args.budget)
                                  or {"env": env_id, "seed": seed, "complete": False,
                                      "env_steps_logged": 0})
                continue
            rows.append(train(env_id, seed, args.out, [*overrides, *args.overrides],
                              floors[env_id], args.eval_episodes))
            print(json.dumps(rows[-1]), f"({time.perf_counter() - started:.0f} s)", flush=True)
    report = table(rows, {e: floors[e] for e in args.envs}, reference) if rows else \
        "No run finished its budget."
    if unfinished:
        report += "\n\n" + incomplete_table(unfinished)
    print(report)
    if args.record:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.with_suffix(".json").write_text(json.dumps(
            {"overrides": [*overrides, *args.overrides], "floors": floors, "runs": rows,
             "incomplete": unfinished}, indent=1))
        args.record.with_suffix(".md").write_text(report + "\n")
        with open(args.record.with_name(args.record.name + "_curves.csv"), "w",
                  newline="") as f:
            writer = csv.DictWriter(f, ["env", "seed", *CURVE])
            writer.writeheader()
            for r in [*rows, *unfinished]:
                for point in curve(args.out / f"{r['env']}_seed{r['seed']}"):
                    writer.writerow({"env": r["env"], "seed": r["seed"], **point})


def incomplete_table(runs: list[dict]) -> str:
    lines = ["Incomplete (stopped before the budget; not a result against the floor):", "",
             "| env | seed | global step of the last logged update | "
             "training return (last 20 episodes) | last greedy eval | steps/s |",
             "|---|---|---|---|---|---|"]
    for r in runs:
        ret, ev = r.get("final_return"), r.get("last_eval_return")
        lines.append(f"| {r['env']} | {r['seed']} | {r['env_steps_logged']:,} | "
                     f"{'-' if ret is None else f'{ret:.1f}'} | "
                     f"{'-' if ev is None else f'{ev:.1f}'} | {r.get('sps', '-')} |")
    return "\n".join(lines)
