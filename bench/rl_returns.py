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
    if not summary.is_file():
        resume = run_dir / "checkpoints" / "last.ckpt"
        with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
            cfg = compose(config_name="train", overrides=[
                "pipeline=rl", f"env.id={env_id}", f"seed={seed}", "logger=csv",
                "trainer.enable_progress_bar=false", f"pipeline.threshold={floor}",
                *overrides, *([f"resume={resume}"] if resume.is_file() else [])])
        run(cfg, run_dir)
    record = json.loads(summary.read_text())
    metrics = record["metrics"]
    final = evaluate.evaluate(str(run_dir), [f"episodes={eval_episodes}"])
    return {"env": env_id, "seed": seed, "final_return": metrics["mean_return_last20"],
            "eval_return": metrics["eval_return"], "greedy_return": final["mean_return"],
            "greedy_std": final["std_return"],
            "steps_to_floor": metrics["steps_to_threshold"], "env_steps": metrics["env_steps"],
            "sps": median_sps(run_dir), "wall_time_s": record["wall_time_s"],
            "git_sha": record.get("git_sha")}


def median_sps(run_dir: Path) -> float | None:
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        values = [float(r["charts/SPS"]) for r in csv.DictReader(f) if r.get("charts/SPS")]
    return round(statistics.median(values), 1) if values else None


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
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    torch.set_num_threads(1)
    rows = []
    for env_id in args.envs:
        for seed in args.seeds:
            started = time.perf_counter()
            rows.append(train(env_id, seed, args.out, [*overrides, *args.overrides],
                              floors[env_id], args.eval_episodes))
            print(json.dumps(rows[-1]), f"({time.perf_counter() - started:.0f} s)", flush=True)
    report = table(rows, {e: floors[e] for e in args.envs}, reference)
    print(report)
    if args.record:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.with_suffix(".json").write_text(json.dumps(
            {"overrides": [*overrides, *args.overrides], "floors": floors, "runs": rows},
            indent=1))
        args.record.with_suffix(".md").write_text(report + "\n")
