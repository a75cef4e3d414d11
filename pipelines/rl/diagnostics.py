"""Diagnostics shared by the algorithms: explained variance and the policy-gradient variance
across minibatches, the quantity behind "Adam reduces variance implicitly"."""

from __future__ import annotations

import torch

from data.rollouts import Batch
from pipelines.rl.agent import Agent


def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns): 1 is a perfect critic, <= 0 a useless one."""
    var = returns.var()
    return float("nan") if var == 0 else float(1 - (returns - values).var() / var)


def pg_gradient_stats(agent: Agent, batch: Batch, minibatches: int,
                      generator: torch.Generator) -> dict[str, float]:
    """Gradients of the vanilla policy-gradient loss ``-(A * log pi(a|s)).mean()`` w.r.t. the
    policy parameters, on the full batch and on ``minibatches`` random disjoint minibatches,
    at the parameters that collected the batch. ``A`` is normalised over the batch, so the
    numbers compare across algorithms and training phases whatever the reward scale.

    ``pg_grad_variance``: mean over minibatches of ||g_i - mean_j g_j||^2 (the trace of the
    minibatch-gradient covariance); ``pg_grad_cosine``: mean cosine of g_i to the full-batch
    gradient; ``pg_grad_norm``: the full-batch gradient's norm. ``.grad`` is not touched.
    """
    params = agent.policy_parameters()
    advantages = (batch.advantages - batch.advantages.mean()) / (batch.advantages.std() + 1e-8)

    def gradient(idx: torch.Tensor) -> torch.Tensor:
        logprob = agent.logprob(agent.dist(batch.obs[idx]), batch.actions[idx])
        loss = -(advantages[idx] * logprob).mean()
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])

    order = torch.randperm(len(batch), generator=generator, device=generator.device)
    full = gradient(order)
    grads = torch.stack([gradient(idx) for idx in order.chunk(minibatches)])
    variance = (grads - grads.mean(0)).pow(2).sum(1).mean()
    cosine = torch.nn.functional.cosine_similarity(grads, full[None], dim=1).mean()
    return {"pg_grad_variance": float(variance), "pg_grad_cosine": float(cosine),
            "pg_grad_norm": float(full.norm())}
