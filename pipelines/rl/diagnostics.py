"""Diagnostics shared by the algorithms: explained variance, the policy-gradient variance
across minibatches of one rollout (logged during training), and the update direction's
noise-to-signal ratio over independent rollouts at a fixed policy (the rl study's test of
"Adam reduces variance implicitly": ``direction_noise``)."""

from __future__ import annotations

import math

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

    ``pg_minibatch_grad_variance``: mean over minibatches of ||g_i - mean_j g_j||^2 (the
    trace of the covariance of minibatch gradients within one rollout, before any optimizer:
    it scales as 1 / minibatch size and never sees Adam's preconditioner);
    ``pg_minibatch_grad_cosine``: mean cosine of g_i to the full-batch gradient (about
    1 / sqrt(minibatches) for pure noise); ``pg_grad_norm``: the full-batch gradient's norm.
    ``.grad`` is not touched.
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
    return {"pg_minibatch_grad_variance": float(variance),
            "pg_minibatch_grad_cosine": float(cosine),
            "pg_grad_norm": float(full.norm())}


# ---- the update direction's noise at a fixed policy (the study's diagnostic) ----------------

def adam_preconditioner(grads: torch.Tensor, beta2: float = 0.999, eps: float = 1e-5
                        ) -> torch.Tensor:
    """1 / (sqrt(v_hat) + eps): Adam's second moment rebuilt from the gradients ``grads``
    ``[W, d]`` (in order, as Adam would see them: EMA with ``beta2``, bias-corrected)."""
    v = torch.zeros(grads.shape[1], dtype=grads.dtype)
    for g in grads:
        v.mul_(beta2).add_(g * g, alpha=1 - beta2)
    v_hat = v / (1 - beta2 ** len(grads))
    return 1.0 / (v_hat.sqrt() + eps)


def noise_to_signal(u: torch.Tensor) -> tuple[float, float, float]:
    """(tr Cov(u), ||E u||^2, their ratio) from ``u`` ``[R, d]``, R independent draws of the
    update direction: ``||E u||^2`` unbiased (``||mean u||^2 - tr Cov / R``); the ratio is
    inf where that is not positive (no signal measurable above the noise)."""
    r = u.shape[0]
    mean = u.mean(0)
    trace = float((u - mean).pow(2).sum() / (r - 1))
    signal = float(mean.pow(2).sum()) - trace / r
    return trace, signal, (trace / signal if signal > 0 else float("inf"))


def direction_noise(grads: torch.Tensor, batch: int, precondition: torch.Tensor,
                    lr: float = 1.0) -> dict[str, float]:
    """The diagnostic at one policy, from ``grads`` ``[R, d]``: the policy gradient of R
    independent rollouts of ``batch`` independent env streams each, and Adam's
    ``precondition`` (``adam_preconditioner`` of other rollouts at the same policy).

    - ``nsr_sgd``, ``nsr_adam``: tr Cov(u) / ||E u||^2 of SGD's direction u = g and of Adam's
      u = g / (sqrt(v_hat) + eps) (v_hat held at its rebuilt value). Both scale as 1/batch;
      ``nsr_ratio`` = nsr_adam / nsr_sgd does not.
    - ``noise_scale``: the gradient noise scale tr Sigma / ||G||^2 (McCandlish et al. 2018,
      B_simple) with Sigma the covariance of one env stream's gradient: batch * nsr_sgd,
      batch-size free; ``noise_scale_adam`` the same of Adam's direction.
    - ``signal_sgd``, ``signal_adam``: the signal fraction ||E u||^2 / E ||u||^2 =
      1 / (1 + nsr), finite even where no signal is measurable (<= 0 there).
    - ``noise_step_corr``: Spearman correlation over parameters between the gradient noise
      variance Sigma_ii and Adam's effective step lr / (sqrt(v_hat_i) + eps) (negative:
      smaller steps where the gradient is noisier).
    """
    from scipy.stats import spearmanr

    trace_sgd, signal_sgd, sgd = noise_to_signal(grads)
    trace_adam, signal_adam, adam = noise_to_signal(grads * precondition)
    variance = grads.var(0) * batch
    corr = spearmanr(variance.numpy(), (lr * precondition).numpy()).statistic
    return {"nsr_sgd": sgd, "nsr_adam": adam,
            "nsr_ratio": adam / sgd if math.isfinite(adam) and math.isfinite(sgd) and sgd > 0
            else float("nan"),
            "noise_scale": batch * sgd, "noise_scale_adam": batch * adam,
            "signal_sgd": signal_sgd / (signal_sgd + trace_sgd),
            "signal_adam": signal_adam / (signal_adam + trace_adam),
            "noise_step_corr": float(corr)}
