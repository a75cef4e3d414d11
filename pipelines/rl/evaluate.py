"""Deterministic evaluation (greedy / mean action) and an optional video of one episode."""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from pipelines.rl import envs as rl_envs
from pipelines.rl.agent import Agent


def _env_action(agent: Agent, obs: np.ndarray, space: gym.Space) -> np.ndarray:
    device = next(agent.parameters()).device
    action = agent.greedy(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
    return np.clip(action, space.low, space.high) if agent.continuous else action


def evaluate(agent: Agent, env_id: str, env_kwargs: dict, episodes: int, seed: int) -> np.ndarray:
    """Returns of ``episodes`` greedy episodes, one per env of a vector env seeded with
    ``seed`` (fixed seeds: successive evaluations differ only by the policy)."""
    envs = rl_envs.make(env_id, episodes, "sync", env_kwargs)
    obs, _ = envs.reset(seed=seed)
    returns = np.zeros(episodes)
    running = np.ones(episodes, dtype=bool)
    while running.any():
        obs, reward, terminated, truncated, _ = envs.step(
            _env_action(agent, obs, envs.single_action_space))
        returns += reward * running
        running &= ~(terminated | truncated)
    envs.close()
    return returns


def record_episode(agent: Agent, env_id: str, env_kwargs: dict, seed: int,
                   path: Path) -> Path | None:
    """One greedy episode as an animated GIF (Pillow, which matplotlib already requires).
    Returns None with a warning when the env cannot render rgb_array frames."""
    try:
        env = gym.make(env_id, render_mode="rgb_array", **env_kwargs)
        obs, _ = env.reset(seed=seed)
        frames, done = [env.render()], False
        while not done:
            action = _env_action(agent, obs[None], env.action_space)[0]
            obs, _, terminated, truncated, _ = env.step(action)
            frames.append(env.render())
            done = terminated or truncated
        env.close()
        from PIL import Image
    except Exception as error:  # rendering backends (pygame, ...) are optional
        warnings.warn(f"no evaluation video for {env_id}: {error}", stacklevel=2)
        return None
    images = [Image.fromarray(frame) for frame in frames]
    fps = env.metadata.get("render_fps") or 30
    images[0].save(path, save_all=True, append_images=images[1:], duration=1000 // fps, loop=0)
    return path
