"""PPO on LunarLander-v3 (discrete) with rl-baselines3-zoo's settings (``algo=ppo_lunarlander``):
the zoo's budget of 1M env steps, seeds 0-2; the floor, set before the run, is a mean return
of 200 (gymnasium's reward_threshold for the env) over the last 20 training episodes.

    OMP_NUM_THREADS=1 nice -n 10 python bench/rl_lunarlander.py --out runs/bench/lunarlander \\
        --record docs/rl/lunarlander

Diagnostics off (telemetry_every=0, pipeline.pg_grad_every=0) so steps/s is the training's.
Resumable (see bench/rl_returns.py).
"""

from rl_returns import main

if __name__ == "__main__":
    main(__doc__.splitlines()[0], {"LunarLander-v3": 200.0},
         ["algo=ppo_lunarlander", "telemetry_every=0", "pipeline.pg_grad_every=0"],
         {"LunarLander-v3": "rl-zoo PPO LunarLander-v2: 242.1 ± 31.8"})
