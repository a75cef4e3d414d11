"""Evaluation episodes (greedy or sampled) and a video of one, for a ``Policy``.

Observations are normalised with the policy's training statistics, frozen: evaluation never
updates them. Episode returns are the env's own (raw) rewards.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipelines.rl import envs as rl_envs
from pipelines.rl.policy import Policy

VIDEO_FORMATS = ("gif", "mp4")


def evaluate(policy: Policy, episodes: int, seed: int, deterministic: bool = True) -> np.ndarray:
    """Returns of ``episodes`` episodes, one per env of a vector env seeded with ``seed``
    (fixed seeds: successive evaluations differ only by the policy). Sampled actions
    (``deterministic=False``) come from a generator seeded with ``seed`` too."""
    env = policy.env
    envs = rl_envs.make(env.id, episodes, "sync", env.kwargs, env.wrappers)
    generator = torch.Generator(device=next(policy.agent.parameters()).device).manual_seed(seed)
    try:
        obs, _ = envs.reset(seed=seed)
        returns = np.zeros(episodes)
        running = np.ones(episodes, dtype=bool)
        while running.any():
            obs, reward, terminated, truncated, _ = envs.step(
                policy.act(obs, deterministic, generator))
            returns += reward * running
            running &= ~(terminated | truncated)
    finally:
        envs.close()
    return returns


def record_episode(policy: Policy, seed: int, path: Path, deterministic: bool = True) -> Path:
    """One episode as a video, GIF (Pillow) or MP4 (imageio-ffmpeg) by ``path``'s suffix.
    Any failure to render or encode raises: a video that was asked for is never skipped."""
    path = Path(path)
    fmt = path.suffix.lstrip(".")
    if fmt not in VIDEO_FORMATS:
        raise ValueError(f"video format {fmt!r}: expected one of {', '.join(VIDEO_FORMATS)}")
    env = policy.make_env(render_mode="rgb_array")
    generator = torch.Generator(device=next(policy.agent.parameters()).device).manual_seed(seed)
    try:
        obs, _ = env.reset(seed=seed)
        frames, done = [_frame(env)], False
        while not done:
            action = policy.act(obs[None], deterministic, generator)[0]
            obs, _, terminated, truncated, _ = env.step(action)
            frames.append(_frame(env))
            done = terminated or truncated
        fps = env.metadata.get("render_fps") or 30
    finally:
        env.close()
    if fmt == "gif":
        from PIL import Image

        images = [Image.fromarray(frame) for frame in frames]
        images[0].save(path, save_all=True, append_images=images[1:],
                       duration=round(1000 / fps), loop=0)
    else:
        import imageio.v2 as imageio

        imageio.mimwrite(path, frames, fps=fps, macro_block_size=1)
    return path


def _frame(env) -> np.ndarray:
    frame = env.render()
    if not isinstance(frame, np.ndarray) or frame.ndim != 3:
        raise RuntimeError(f"{env.spec.id} rendered {type(frame).__name__}, not an RGB frame")
    return frame
