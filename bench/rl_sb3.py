"""PPO on CartPole-v1: wall time to solve, adamlab against Stable-Baselines3, same run.

    pip install stable-baselines3   # the bench's only extra (pyproject: .[bench])
    OMP_NUM_THREADS=1 python bench/rl_sb3.py --seeds 0 1 2 3 4

Both use rl-baselines3-zoo's CartPole settings: 8 envs, n_steps 32, batch 256, 20 epochs,
gae_lambda 0.8, gamma 0.98, lr 1e-3 and clip 0.2 both annealed linearly to 0, Adam with
eps 1e-5, global grad norm 0.5, separate 64-64 tanh actor and critic. "Solved": the mean
return of the last 20 finished episodes reaches 475; each run stops there (budget 100k env
steps). Wall time counts training only (from the first env step), seeds alternate
between the two, one torch thread; medians are printed with their ratio. The CPU time of
the same span (``time.process_time``) is reported next to it: on a shared machine it moves
far less with the load than the wall time does.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir

from pipelines.train import CONFIGS, run

THRESHOLD, WINDOW, BUDGET = 475.0, 20, 100_000


class StopWhenSolved(L.Callback):
    """Ends fit at the first batch after the collector's window mean reaches the threshold."""

    def on_train_start(self, trainer, pl_module):
        self.started, self.solved_at = (time.perf_counter(), time.process_time()), None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.solved_at is None and pl_module.collector.steps_to_threshold is not None:
            self.solved_at = (time.perf_counter() - self.started[0],
                              time.process_time() - self.started[1])
            trainer.should_stop = True


def adamlab_ppo(seed: int, out: Path) -> dict:
    overrides = ["pipeline=rl", "algo=ppo", "env.id=CartPole-v1", "optim.eps=1e-5",
                 f"pipeline.total_timesteps={BUDGET}", "pipeline.steps_per_epoch=256",
                 "pipeline.eval_every=0", "pipeline.eval_episodes=1",
                 "pipeline.pg_grad_every=0", "telemetry_every=0", "checkpoint_every=100",
                 "logger=csv",
                 "trainer.enable_progress_bar=false", f"seed={seed}"]
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    stop = StopWhenSolved()
    metrics = run(cfg, out / f"adamlab_seed{seed}", extra_callbacks=[stop])
    wall, cpu = stop.solved_at or (None, None)
    return {"steps": metrics["steps_to_threshold"], "wall_s": wall, "cpu_s": cpu}


def sb3_ppo(seed: int) -> dict:
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    class Solved(BaseCallback):
        def _on_training_start(self):
            self.started, self.solved = (time.perf_counter(), time.process_time()), None

        def _on_step(self) -> bool:
            returns = [info["r"] for info in list(self.model.ep_info_buffer)[-WINDOW:]]
            if len(returns) == WINDOW and sum(returns) / WINDOW >= THRESHOLD:
                self.solved = (self.num_timesteps, time.perf_counter() - self.started[0],
                               time.process_time() - self.started[1])
                return False
            return True

    def linear(start):
        return lambda remaining: remaining * start

    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=256, n_epochs=20, gamma=0.98,
                gae_lambda=0.8, learning_rate=linear(1e-3), clip_range=linear(0.2),
                ent_coef=0.0, max_grad_norm=0.5, policy_kwargs={"optimizer_kwargs":
                                                                {"eps": 1e-5}},
                seed=seed, device="cpu", verbose=0)
    callback = Solved()
    model.learn(BUDGET, callback=callback)
    steps, wall, cpu = callback.solved or (None, None, None)
    return {"steps": steps, "wall_s": wall, "cpu_s": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--record", type=Path, default=None, help="write the JSON here too")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    out = Path(tempfile.mkdtemp(prefix="rl_sb3_"))
    rows = []
    for seed in args.seeds:
        ours, theirs = adamlab_ppo(seed, out), sb3_ppo(seed)
        rows.append({"seed": seed, "adamlab": ours, "sb3": theirs})
        print(f"seed {seed}: adamlab {ours['steps']} steps {ours['wall_s']} s "
              f"(cpu {ours['cpu_s']}) | sb3 {theirs['steps']} steps {theirs['wall_s']} s "
              f"(cpu {theirs['cpu_s']})", flush=True)

    def median(lib, key):
        values = [r[lib][key] for r in rows if r[lib][key] is not None]
        return statistics.median(values) if values else None

    summary = {lib: {"solved": sum(r[lib]["steps"] is not None for r in rows),
                     "median_steps": median(lib, "steps"),
                     "median_wall_s": median(lib, "wall_s"),
                     "median_cpu_s": median(lib, "cpu_s")} for lib in ("adamlab", "sb3")}
    for kind in ("wall", "cpu"):
        ours, theirs = (summary[lib][f"median_{kind}_s"] for lib in ("adamlab", "sb3"))
        if ours and theirs:
            summary[f"{kind}_ratio_adamlab_over_sb3"] = round(ours / theirs, 3)
    record = {"runs": rows, "summary": summary, "load_before": load_before,
              "load_after": os.getloadavg()}
    print(json.dumps(record, indent=1))
    if args.record:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "offline")
    main()
