"""PPO on CartPole-v1: the pipeline (real harness) vs a plain-PyTorch loop, same run.

Both use the zoo hyperparameters (8 envs x 32 steps, 20 full-batch epochs, GAE 0.8,
gamma 0.98, lr 1e-3 and clip 0.2 annealed to 0, grad-norm clip 0.5, Adam eps 1e-5), the same
SAME_STEP vector envs with truncation bootstrapping and the same network. The plain loop is
CleanRL-style: preallocated buffers, torch.optim.Adam, clip_grad_norm_. Reported per seed:
env steps/s of training, env steps and training seconds to a mean return of 475 over the
last 20 episodes, and the process wall time; then the pipeline/plain ratios.

    OMP_NUM_THREADS=1 python bench/rl_ppo_speed.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from pipelines.rl import envs as rl_envs
from pipelines.rl.agent import Agent
from pipelines.train import CONFIGS, run

N_ENVS, N_STEPS, EPOCHS, GAMMA, LAM = 8, 32, 20, 0.98, 0.8
LR, CLIP, VF, MAX_NORM = 1e-3, 0.2, 0.5, 0.5
THRESHOLD = 475.0


def plain_ppo(seed: int, total: int) -> dict:
    started = time.perf_counter()
    envs = rl_envs.make("CartPole-v1", N_ENVS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        agent = Agent(envs.single_observation_space, envs.single_action_space)
    opt = torch.optim.Adam(agent.parameters(), lr=LR, eps=1e-5)
    gen = torch.Generator().manual_seed(seed)
    obs_buf = torch.zeros(N_STEPS, N_ENVS, 4)
    act_buf = torch.zeros(N_STEPS, N_ENVS, dtype=torch.long)
    logp_buf, val_buf, rew_buf, done_buf = (torch.zeros(N_STEPS, N_ENVS) for _ in range(4))
    obs, _ = envs.reset(seed=seed)
    ep_return, recent = np.zeros(N_ENVS), deque(maxlen=20)
    steps, reached, reached_s = 0, None, None
    num_updates = math.ceil(total / (N_ENVS * N_STEPS))
    train_start = time.perf_counter()
    for update in range(num_updates):
        frac = 1.0 - update / num_updates
        opt.param_groups[0]["lr"] = LR * frac
        clip = CLIP * frac
        for t in range(N_STEPS):
            obs_t = torch.as_tensor(obs, dtype=torch.float32)
            action, logp, value = agent.act(obs_t, gen)
            obs, reward, term, trunc, info = envs.step(action.numpy())
            steps += N_ENVS
            reward_t = torch.as_tensor(reward, dtype=torch.float32)
            cut = trunc & ~term
            if cut.any():
                final = torch.as_tensor(rl_envs.final_observations(info, cut), dtype=torch.float32)
                with torch.no_grad():
                    reward_t[torch.as_tensor(cut)] += GAMMA * agent.value(final)
            obs_buf[t], act_buf[t], logp_buf[t], val_buf[t] = obs_t, action, logp, value
            rew_buf[t], done_buf[t] = reward_t, torch.as_tensor(term | trunc, dtype=torch.float32)
            ep_return += reward
            for i in np.flatnonzero(term | trunc):
                recent.append(ep_return[i])
                ep_return[i] = 0.0
                if reached is None and len(recent) == 20 and np.mean(recent) >= THRESHOLD:
                    reached, reached_s = steps, time.perf_counter() - train_start
        with torch.no_grad():
            next_value = agent.value(torch.as_tensor(obs, dtype=torch.float32))
        adv, running = torch.zeros_like(rew_buf), torch.zeros(N_ENVS)
        for t in reversed(range(N_STEPS)):
            nonterminal = 1.0 - done_buf[t]
            delta = rew_buf[t] + GAMMA * next_value * nonterminal - val_buf[t]
            running = delta + GAMMA * LAM * nonterminal * running
            adv[t], next_value = running, val_buf[t]
        b_obs, b_act, b_logp = obs_buf.flatten(0, 1), act_buf.flatten(), logp_buf.flatten()
        b_adv, b_ret = adv.flatten(), (adv + val_buf).flatten()
        for _ in range(EPOCHS):
            idx = torch.randperm(len(b_adv), generator=gen)  # one full-batch minibatch
            logp, _, value = agent.evaluate(b_obs[idx], b_act[idx])
            ratio = (logp - b_logp[idx]).exp()
            a = b_adv[idx]
            a = (a - a.mean()) / (a.std() + 1e-8)
            pg_loss = -torch.min(a * ratio, a * ratio.clamp(1 - clip, 1 + clip)).mean()
            loss = pg_loss + VF * F.mse_loss(value, b_ret[idx])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(agent.parameters(), MAX_NORM)
            opt.step()
    train_s = time.perf_counter() - train_start
    envs.close()
    return {"sps": steps / train_s, "steps_to_475": reached, "train_s_to_475": reached_s,
            "train_s": train_s, "wall_s": time.perf_counter() - started}


def pipeline_ppo(seed: int, total: int, out: Path, diagnostics: bool) -> dict:
    extra = [] if diagnostics else ["pipeline.pg_grad_every=0", "pipeline.eval_every=0"]
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "pipeline=rl", "algo=ppo", "env.id=CartPole-v1", "optim=adam", "optim.eps=1e-5",
            "logger=csv", "trainer.enable_progress_bar=false", f"seed={seed}",
            f"pipeline.total_timesteps={total}", "pipeline.threshold=475", *extra])
    started = time.perf_counter()
    run_dir = out / f"seed{seed}_{'diag' if diagnostics else 'bare'}"
    metrics = run(cfg, run_dir)
    wall = time.perf_counter() - started
    history = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["rl"]["history"]
    # rows are filed under the env steps before their update; its SPS counts the update too
    steps = history["global_step"].numpy() + N_ENVS * N_STEPS
    sps = history["charts/SPS"].numpy()
    train_s = steps[-1] / sps[-1]
    reached = metrics["steps_to_threshold"]
    reached_s = None
    if reached is not None:  # at the sps logged by the update that crossed the threshold
        reached_s = reached / sps[np.argmax(steps >= reached)]
    return {"sps": sps[-1], "steps_to_475": reached, "train_s_to_475": reached_s,
            "train_s": train_s, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--timesteps", type=int, default=100_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(tempfile.mkdtemp(prefix="rl_speed_"))
    rows = []
    for seed in args.seeds:
        for name, job in (("plain", lambda s: plain_ppo(s, args.timesteps)),
                          ("pipeline", lambda s: pipeline_ppo(s, args.timesteps, out, False)),
                          ("pipeline+diagnostics",
                           lambda s: pipeline_ppo(s, args.timesteps, out, True))):
            result = {"impl": name, "seed": seed, **job(seed)}
            rows.append(result)
            print(json.dumps({k: round(v, 2) if isinstance(v, float) else v
                              for k, v in result.items()}), flush=True)
    summary = {}
    for name in ("plain", "pipeline", "pipeline+diagnostics"):
        mine = [r for r in rows if r["impl"] == name]
        summary[name] = {key: float(np.mean([r[key] for r in mine]))
                         for key in ("sps", "train_s", "wall_s")}
        summary[name]["steps_to_475"] = [r["steps_to_475"] for r in mine]
    for name in ("pipeline", "pipeline+diagnostics"):  # per seed, since the load drifts
        ratios = [p["sps"] / r["sps"] for p, r in zip(
            [r for r in rows if r["impl"] == "plain"], [r for r in rows if r["impl"] == name],
            strict=True)]
        summary[f"{name}: time per env step / plain"] = {
            "per_seed": [round(x, 3) for x in ratios], "median": float(np.median(ratios))}
    print(json.dumps(summary, indent=1))

if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "offline")
    main()
