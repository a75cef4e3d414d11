"""The rl study's diagnostic: is Adam's update direction less noisy than SGD's at the same
policies?

One reference run per seed (the algorithm's own update, Adam at its tuned lr, the
pipeline's clip per actor/critic group) leaves policy snapshots at fixed fractions of its
env-step budget. At each snapshot every optimizer is measured on the same data: Adam's
second moment is rebuilt from the policy gradients of ``warm`` rollouts (the same rollouts
for every optimizer), then the policy gradient g of ``rollouts`` further independent
rollouts (fresh env seeds) gives the directions u = g (SGD) and u = g / (sqrt(v_hat) + eps)
(Adam), whose noise-to-signal ratio, noise scale and noise/step correlation
``pipelines.rl.diagnostics.direction_noise`` computes.

The gradient is of the algorithm's policy loss at the snapshot: ``-(A * log pi).mean()``
with its advantages (PPO: GAE, normalised over the batch, which is the clipped surrogate's
gradient at ratio 1; REINFORCE: the return, minus V with a baseline, normalised only where
``algo.norm_adv``).
"""

from __future__ import annotations

import copy

import torch

from pipelines.harness.optimizers import build_optimizer
from pipelines.rl import algos
from pipelines.rl import envs as rl_envs
from pipelines.rl.agent import Agent
from pipelines.rl.collector import Collector
from pipelines.rl.diagnostics import adam_preconditioner, direction_noise

WARM_SEED, MEASURE_SEED = 10_000_000, 20_000_000  # rollout env seeds, never training's


def env_seeds(offset: int, seed: int, rollouts: int, num_envs: int) -> list[int]:
    """Rollout seeds whose sub-envs (seed + i) never repeat within or across rollouts."""
    base = offset + 100_000 * seed
    return [base + k * num_envs for k in range(rollouts)]


def pieces(cfg):
    """(algorithm module, its hyperparameters, a fresh agent builder) for a composed
    `adamlab train pipeline=rl` config."""
    module, hp = algos.resolve(cfg.algo)
    obs_space, action_space, _ = rl_envs.spaces(cfg.env.id, {}, [])

    def agent(seed: int) -> Agent:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return Agent(obs_space, action_space, hp.hidden,
                         critic=getattr(hp, "baseline", True))
    return module, hp, agent


def grouped_optimizer(agent: Agent, optim_cfg: dict, max_norm: float | None):
    """The library optimizer with the actor and the critic in two groups, each clipped by
    its own norm (``clip.scope=group``) when the algorithm clips."""
    hp = dict(optim_cfg)
    if agent.critic is not None:
        hp["module_lr"] = {"actor": hp["lr"], "critic": hp["lr"]}
    clip = ({"kind": "global_norm", "at": "grad", "max_norm": max_norm, "scope": "group"}
            if max_norm else None)
    return build_optimizer(agent, hp, clip)


def reference_snapshots(cfg, seed: int, optim_cfg: dict, total: int,
                        fractions: list[float]) -> tuple[list[dict], list[float]]:
    """Train one reference run; the agent's weights when ``fraction * total`` env steps
    were spent (0 is the initial policy), and the returns of its finished episodes."""
    module, hp, make_agent = pieces(cfg)
    agent = make_agent(seed)
    opt = grouped_optimizer(agent, optim_cfg, cfg.algo.get("max_grad_norm"))
    base_lr = [g["lr"] for g in opt.param_groups]
    collector = Collector(rl_envs.make(cfg.env.id, cfg.env.num_envs), hp.gamma, seed)
    generator = torch.Generator().manual_seed(seed)

    def step(loss):
        opt.zero_grad()
        loss.backward()
        opt.step()

    marks, snapshots = sorted(fractions), []
    while len(snapshots) < len(marks):
        while len(snapshots) < len(marks) and collector.env_steps >= marks[len(snapshots)] * total:
            snapshots.append(copy.deepcopy(agent.state_dict()))
        if len(snapshots) == len(marks):
            break
        progress = collector.env_steps / total
        if getattr(hp, "anneal_lr", False):
            for g, lr in zip(opt.param_groups, base_lr):
                g["lr"] = lr * (1.0 - progress)
        rollout = module.collect(collector, agent, hp, generator)
        module.update(agent, module.prepare(agent, rollout, hp), hp, step, progress, generator)
    collector.envs.close()
    return snapshots, [ret for _, ret, _ in collector.episodes]


def policy_gradient(agent: Agent, batch, hp) -> torch.Tensor:
    """The flat gradient of the algorithm's policy loss at the agent's weights."""
    advantages = batch.advantages
    if getattr(hp, "norm_adv", False) and len(batch) > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    logprob = agent.logprob(agent.dist(batch.obs), batch.actions)
    loss = -(advantages * logprob).mean()
    grads = torch.autograd.grad(loss, agent.policy_parameters())
    return torch.cat([g.flatten() for g in grads])


def rollout_gradients(cfg, agent: Agent, num_envs: int, seeds: list[int]) -> torch.Tensor:
    """``[len(seeds), d]``: the policy gradient of one fresh rollout per env seed, each of
    ``num_envs`` independent env streams."""
    module, hp, _ = pieces(cfg)
    collector = Collector(rl_envs.make(cfg.env.id, num_envs), hp.gamma, seeds[0])
    out = []
    for seed in seeds:
        collector.reset(seed)
        rollout = module.collect(collector, agent, hp, torch.Generator().manual_seed(seed))
        out.append(policy_gradient(agent, module.prepare(agent, rollout, hp), hp))
    collector.envs.close()
    return torch.stack(out).double()


def measure(cfg, state: dict, seed: int, warm: int, rollouts: int, num_envs: int,
            beta2: float, eps: float, lr: float) -> dict[str, float]:
    """The diagnostic at one snapshot ``state``: Adam's v_hat from ``warm`` rollouts at the
    training batch size (``env.num_envs``), then ``rollouts`` rollouts of ``num_envs``."""
    _, _, make_agent = pieces(cfg)
    agent = make_agent(seed)
    agent.load_state_dict(state)
    n = cfg.env.num_envs  # sub-env i of a rollout seeded s plays from seed s + i
    warm_grads = rollout_gradients(cfg, agent, n, env_seeds(WARM_SEED, seed, warm, n))
    precondition = adam_preconditioner(warm_grads, beta2, eps)
    grads = rollout_gradients(cfg, agent, num_envs,
                              env_seeds(MEASURE_SEED, seed, rollouts, num_envs))
    return direction_noise(grads, num_envs, precondition, lr)


def diagnose(overrides: list[str], seed: int, optim_cfg: dict, total: int,
             fractions: list[float], warm: int, rollouts: int, num_envs: int,
             beta2: float) -> tuple[list[dict], list[float]]:
    """One reference seed: its snapshots, each measured (``measure``); and the reference
    run's episode returns. Top level, so that a study's worker processes can run it."""
    from pipelines.studies.problems.training import compose_train

    cfg = compose_train(overrides)
    snapshots, returns = reference_snapshots(cfg, seed, optim_cfg, total, fractions)
    out = [measure(cfg, state, seed, warm, rollouts, num_envs, beta2, optim_cfg["eps"],
                   optim_cfg["lr"]) for state in snapshots]
    return out, returns
