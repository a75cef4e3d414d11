"""RL acceptance runs on CPU, one seed each (minutes): `pytest -m slow tests/test_rl_learning.py`.

The multi-seed figures come from bench/rl_cartpole.py; these guard that the defaults keep
learning: CartPole-v1 to a mean return of 475 over the last 20 episodes (PPO within 100k env
steps, A2C and REINFORCE with baseline within 500k) and Pendulum-v1 from about -1200 to
>= -400 within 200k.
"""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from pipelines.train import CONFIGS, run

pytestmark = pytest.mark.slow


def train(tmp_path, *overrides) -> dict:
    torch.set_num_threads(1)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "pipeline=rl", "optim=adam", "optim.eps=1e-5", "logger=csv",
            "trainer.enable_progress_bar=false", "pipeline.eval_every=0", *overrides])
    return run(cfg, tmp_path)


@pytest.mark.parametrize("algo, budget", [("ppo", 100_000), ("a2c", 500_000),
                                          ("reinforce", 500_000)])
def test_cartpole_reaches_475(tmp_path, algo, budget):
    metrics = train(tmp_path, f"algo={algo}", f"pipeline.total_timesteps={budget}")
    assert metrics["steps_to_threshold"] is not None, metrics
    assert metrics["eval_return"] >= 475


def test_pendulum_ppo_improves_to_minus_400(tmp_path):
    metrics = train(tmp_path, "algo=ppo_pendulum", "env.id=Pendulum-v1", "env.num_envs=4",
                    "pipeline.total_timesteps=200000", "pipeline.threshold=-400")
    assert metrics["steps_to_threshold"] is not None, metrics
    assert metrics["mean_return_last20"] >= -400
