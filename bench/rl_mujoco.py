"""PPO on MuJoCo with CleanRL's ppo_continuous_action.py settings (``algo=ppo_continuous``):
1M env steps, seeds 0-2, against floors set before the run from CleanRL's published returns
(docs/benchmark/ppo_continuous_action.md, 3 seeds, gymnasium v4 envs): the floor is the
published mean minus two standard deviations.

    OMP_NUM_THREADS=1 nice -n 10 python bench/rl_mujoco.py --out runs/bench/mujoco \\
        --record docs/rl/mujoco

HalfCheetah-v4 and Hopper-v4 (gymnasium 1.4 provides v4 and v5; CleanRL's figures are v4).
Diagnostics off (telemetry_every=0, pipeline.pg_grad_every=0) so steps/s is the training's;
greedy evaluation every 50 updates (about 100k steps). Hours of CPU: resumable (see
bench/rl_returns.py).
"""

from rl_returns import main

CLEANRL = {"HalfCheetah-v4": (1442.6, 46.0), "Hopper-v4": (2382.9, 271.7)}
FLOORS = {env: round(mean - 2 * std, 1) for env, (mean, std) in CLEANRL.items()}
REFERENCE = {env: f"CleanRL {mean} ± {std}" for env, (mean, std) in CLEANRL.items()}

if __name__ == "__main__":
    main(__doc__.splitlines()[0], FLOORS,
         ["algo=ppo_continuous", "telemetry_every=0", "pipeline.pg_grad_every=0",
          "pipeline.eval_every=50"], REFERENCE)
