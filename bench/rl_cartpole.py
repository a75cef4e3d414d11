"""CartPole-v1 acceptance runs: steps to a mean return of 475 (last 20 episodes) per seed.

    python bench/rl_cartpole.py --algo ppo --seeds 0 1 2 3 4 --timesteps 100000
    python bench/rl_cartpole.py --algo a2c_sb3 --timesteps 500000
    python bench/rl_cartpole.py --algo reinforce --timesteps 500000

Every run goes through the real harness (``pipelines.train.run``, CSV logger only) with the
pipeline's defaults (Adam eps 1e-5 included); extra arguments are Hydra overrides.
``--stop`` ends each run when it reaches 475 (steps_to_threshold is all the table needs).
Prints one line per seed and a JSON record at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir

from pipelines.train import CONFIGS, run

ALGOS = sorted(p.stem for p in (Path(CONFIGS) / "algo").glob("*.yaml"))


class StopWhenSolved(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.collector.steps_to_threshold is not None:
            trainer.should_stop = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", default="ppo", choices=ALGOS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--stop", action="store_true", help="stop each run once solved")
    parser.add_argument("--out", type=Path, default=None, help="run dirs (default: a temp dir)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. optim.lr=7e-4")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = args.out or Path(tempfile.mkdtemp(prefix="rl_bench_"))
    overrides = ["pipeline=rl", f"algo={args.algo}", f"env.id={args.env}",
                 f"pipeline.total_timesteps={args.timesteps}", "logger=csv",
                 "trainer.enable_progress_bar=false", "pipeline.eval_every=0",
                 *args.overrides]
    records = []
    for seed in args.seeds:
        with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
            cfg = compose(config_name="train", overrides=[*overrides, f"seed={seed}"])
        started = time.perf_counter()
        metrics = run(cfg, out / f"{args.algo}_seed{seed}",
                      extra_callbacks=[StopWhenSolved()] if args.stop else [])
        records.append({"seed": seed, "wall_time_s": round(time.perf_counter() - started, 1),
                        **metrics})
        print(f"seed {seed}: steps_to_threshold={metrics['steps_to_threshold']} "
              f"eval_return={metrics['eval_return']} "  # None when --stop ended it early
              f"mean_return_last20={metrics['mean_return_last20']} "
              f"wall={records[-1]['wall_time_s']}s", flush=True)
    reached = sum(r["steps_to_threshold"] is not None for r in records)
    print(json.dumps({"algo": args.algo, "env": args.env, "timesteps": args.timesteps,
                      "overrides": args.overrides, "reached": f"{reached}/{len(records)}",
                      "runs": records}, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "offline")
    main()
