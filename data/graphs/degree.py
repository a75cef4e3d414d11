"""Degree buckets, per-bucket accuracy, degree-group loss variance and power-law fitting.

The GNN study asks whether an optimizer treats hubs and tail nodes alike, so accuracy
is reported per degree bucket under the three schemes used in the literature, and the
spread of mean loss across degree groups is reported as a single bias number.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

SCHEMES = ("le5_gt5", "bottom20_top20", "log2")

Buckets = list[tuple[str, Tensor]]


def degree_buckets(degree: Tensor, mask: Tensor | None = None) -> dict[str, Buckets]:
    """Boolean node masks per bucket, for every scheme, restricted to ``mask``.

    - ``le5_gt5``: degree <= 5 vs > 5 (Tail-GNN's tail/head split).
    - ``bottom20_top20``: the 20 % lowest- and 20 % highest-degree nodes among the masked
      nodes (DegFairGNN), exactly ``n // 5`` nodes each; ties are broken by node index so
      the groups have fixed sizes even when many nodes share a degree.
    - ``log2``: bins [1,2), [2,4), [4,8), ... up to the largest degree of the whole graph,
      plus ``deg=0`` if any node is isolated; the bins depend on ``degree`` only, not on
      ``mask``, so train/val/test tables line up row by row (empty bins are kept).
    """
    degree = degree.long()
    mask = torch.ones_like(degree, dtype=torch.bool) if mask is None else mask.bool()
    return {
        "le5_gt5": [("deg<=5", mask & (degree <= 5)), ("deg>5", mask & (degree > 5))],
        "bottom20_top20": _bottom_top20(degree, mask),
        "log2": _log2_bins(degree, mask),
    }


def _bottom_top20(degree: Tensor, mask: Tensor) -> Buckets:
    nodes = mask.nonzero().flatten()
    count = len(nodes) // 5
    ranked = nodes[torch.sort(degree[nodes], stable=True).indices]
    bottom = torch.zeros_like(mask)
    top = torch.zeros_like(mask)
    bottom[ranked[:count]] = True
    top[ranked[len(ranked) - count :]] = True
    return [("bottom20%", bottom), ("top20%", top)]


def _log2_bins(degree: Tensor, mask: Tensor) -> Buckets:
    buckets = [("deg=0", mask & (degree == 0))] if bool((degree == 0).any()) else []
    max_degree = int(degree.max()) if degree.numel() else 0
    for power in range(max_degree.bit_length()):
        lo, hi = 2**power, 2 ** (power + 1)
        buckets.append((f"deg[{lo},{hi})", mask & (degree >= lo) & (degree < hi)))
    return buckets


def accuracy_by_degree(
    pred: Tensor, y: Tensor, degree: Tensor, mask: Tensor | None = None
) -> dict[str, list[dict]]:
    """Accuracy and node count per degree bucket; ``acc`` is None for an empty bucket.

    ``pred`` may be class labels (N,) or logits/probabilities (N, C).
    """
    labels = pred.argmax(dim=-1) if pred.dim() == 2 else pred
    correct = labels == y
    return {
        scheme: [_bucket_accuracy(label, members, correct) for label, members in buckets]
        for scheme, buckets in degree_buckets(degree, mask).items()
    }


def _bucket_accuracy(label: str, members: Tensor, correct: Tensor) -> dict:
    n = int(members.sum())
    acc = float(correct[members].float().mean()) if n else None
    return {"bucket": label, "acc": acc, "n": n}


def degree_group_loss_variance(
    loss_per_node: Tensor, degree: Tensor, mask: Tensor | None = None, scheme: str = "log2"
) -> float:
    """Variance across degree groups of the mean per-node loss (RawlsGCN's bias measure).

    Population variance (divide by the number of non-empty groups, like ``np.var``):
    the groups are the whole population of interest, not a sample of groups, and a
    single group then gives 0 rather than NaN. Empty groups are left out.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r} is not allowed; scheme must be one of {SCHEMES}")
    buckets = degree_buckets(degree, mask)[scheme]
    means = [loss_per_node[members].mean() for _, members in buckets if bool(members.any())]
    if not means:
        raise ValueError("degree_group_loss_variance: mask selects no nodes")
    return float(torch.stack(means).double().var(correction=0))


def fit_power_law_exponent(degrees, k_min: int) -> float:
    """Discrete power-law MLE of the tail exponent for degrees >= k_min.

    Clauset, Shalizi & Newman (2009), eq. 3.7: alpha = 1 + n / sum(ln(k / (k_min - 1/2))),
    accurate to about 1 % for k_min >= 6. Pick k_min above the bend of the degree law
    (for the DC-SBM, around the average degree), where the tail is a clean power law.
    """
    if k_min < 1:
        raise ValueError(f"k_min={k_min!r} is not allowed; k_min must be an integer >= 1")
    k = np.asarray(degrees.cpu() if isinstance(degrees, Tensor) else degrees, dtype=np.float64)
    tail = k[k >= k_min]
    if tail.size == 0:
        raise ValueError(f"fit_power_law_exponent: no degree is >= k_min={k_min}")
    return 1.0 + tail.size / float(np.log(tail / (k_min - 0.5)).sum())


__all__ = [
    "SCHEMES",
    "accuracy_by_degree",
    "degree_buckets",
    "degree_group_loss_variance",
    "fit_power_law_exponent",
]
