"""Degree-bias metrics of node classification, as the papers that define them compute them.

The GNN study asks whether an optimizer treats hubs and low-degree nodes alike, so the
groups and numbers follow the degree-fairness literature rather than ad-hoc cuts:

- **Tail-GNN** (Liu et al., KDD 2021, sec. 5.1): tail nodes have degree <= 5, head nodes
  degree > 5 (``TAIL_GNN_DEGREE``).
- **DegFairGNN** (Liu, Nguyen & Fang, AAAI 2023, sec. 5.1 and their ``utils.
  evaluate_fairness``): on the *test* nodes, the thresholds are the 20th and 80th
  percentiles of the (generalised) degree, ``numpy.percentile`` with linear interpolation;
  tail = degree <= the 20th percentile, head = degree > the 80th, so ties at a threshold
  are kept whole (a node at the 20th percentile is tail, one at the 80th is not head).
  The K-hop generalised degree is ``[A^K 1]_v`` (their ``get_str_info``: row sums of A^K,
  A the adjacency without self loops), computed for K = 1 (the degree) and K = 2. Per
  group: accuracy and macro-F1 (scikit-learn's ``f1_score(average='macro')``, the labels
  present in that group's truth or predictions); across groups, over the classes c:
  ΔSP = mean_c |P(ŷ=c | tail) - P(ŷ=c | head)| and ΔEO = mean_c |P(ŷ=c | y=c, tail) -
  P(ŷ=c | y=c, head)|, a class missing from either group's labels contributing 0 to ΔEO
  (as their code does). Fractions here, not the paper's percent.
- **RawlsGCN** (Kang et al., WWW 2022, sec. 5.1; their ``Evaluator._get_bias``): the
  bias is the sample variance (``statistics.variance``, n - 1) over the distinct degree
  values among the evaluated nodes of the mean cross-entropy of the nodes with that degree.

``log2`` bins ([1,2), [2,4), ... plus degree 0 on its own) are kept for tables and
figures: their edges depend on the whole graph only, so every split lists the same rows.
"""

from __future__ import annotations

import statistics

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch import Tensor

TAIL_GNN_DEGREE = 5
DEGFAIR_PERCENT = 20
SCHEMES = ("le5_gt5", "degfair20", "log2")

Buckets = list[tuple[str, Tensor]]


def hop_degree(edge_index: Tensor, num_nodes: int, hops: int = 1) -> Tensor:
    """DegFairGNN's K-hop generalised degree ``[A^K 1]``: the number of walks of length K
    from each node, A the symmetric 0/1 adjacency without self loops (duplicate edges count
    once). K = 1 is the degree; K = 2 sums the neighbours' degrees."""
    if hops < 1:
        raise ValueError(f"hops={hops!r} is not allowed; hops must be an integer >= 1")
    source, target = edge_index
    keep = source != target
    pairs = torch.unique(source[keep] * num_nodes + target[keep])
    source, target = pairs // num_nodes, pairs % num_nodes
    walks = torch.ones(num_nodes, dtype=torch.long)
    for _ in range(hops):
        walks = torch.zeros(num_nodes, dtype=torch.long).index_add_(0, source, walks[target])
    return walks


def _mask(degree: Tensor, mask: Tensor | None) -> Tensor:
    return torch.ones_like(degree, dtype=torch.bool) if mask is None else mask.bool()


def tail_gnn_groups(degree: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(tail, head) masks: degree <= 5 and degree > 5 among the masked nodes (Tail-GNN)."""
    mask = _mask(degree, mask)
    return mask & (degree <= TAIL_GNN_DEGREE), mask & (degree > TAIL_GNN_DEGREE)


def degfair_thresholds(degree: Tensor, mask: Tensor | None = None,
                       percent: float = DEGFAIR_PERCENT) -> tuple[float, float]:
    """The ``percent`` and ``100 - percent`` percentiles of the masked nodes' degrees
    (numpy's default linear interpolation, as DegFairGNN's code)."""
    values = degree[_mask(degree, mask)].double().cpu().numpy()
    if values.size == 0:
        raise ValueError("degfair_thresholds: mask selects no nodes")
    low, high = np.percentile(values, [percent, 100 - percent])
    return float(low), float(high)


def degfair_groups(degree: Tensor, mask: Tensor | None = None,
                   percent: float = DEGFAIR_PERCENT) -> tuple[Tensor, Tensor]:
    """(tail, head) masks: degree <= the lower percentile, degree > the upper one, among the
    masked nodes (DegFairGNN; ties at a threshold stay together)."""
    mask = _mask(degree, mask)
    low, high = degfair_thresholds(degree, mask, percent)
    return mask & (degree.double() <= low), mask & (degree.double() > high)


def degree_buckets(degree: Tensor, mask: Tensor | None = None) -> dict[str, Buckets]:
    """Boolean node masks per bucket, for every scheme, restricted to ``mask``: ``le5_gt5``
    (Tail-GNN), ``degfair20`` (DegFairGNN's percentile groups of the masked nodes' degree)
    and ``log2`` (bins up to the graph's largest degree, empty bins kept)."""
    degree = degree.long()
    mask = _mask(degree, mask)
    tail, head = tail_gnn_groups(degree, mask)
    low, high = degfair_thresholds(degree, mask) if mask.any() else (0.0, 0.0)
    fair_tail, fair_head = degfair_groups(degree, mask) if mask.any() else (mask, mask)
    return {
        "le5_gt5": [("deg<=5", tail), ("deg>5", head)],
        "degfair20": [(f"deg<={low:g}", fair_tail), (f"deg>{high:g}", fair_head)],
        "log2": _log2_bins(degree, mask),
    }


def _log2_bins(degree: Tensor, mask: Tensor) -> Buckets:
    buckets = [("deg=0", mask & (degree == 0))] if bool((degree == 0).any()) else []
    max_degree = int(degree.max()) if degree.numel() else 0
    for power in range(max_degree.bit_length()):
        lo, hi = 2**power, 2 ** (power + 1)
        buckets.append((f"deg[{lo},{hi})", mask & (degree >= lo) & (degree < hi)))
    return buckets


def _labels(pred: Tensor) -> Tensor:
    """Class labels from labels (N,) or logits/probabilities (N, C)."""
    return pred.argmax(dim=-1) if pred.dim() == 2 else pred


def accuracy_by_degree(
    pred: Tensor, y: Tensor, degree: Tensor, mask: Tensor | None = None
) -> dict[str, list[dict]]:
    """Accuracy and node count per degree bucket; ``acc`` is None for an empty bucket."""
    correct = _labels(pred) == y
    return {
        scheme: [_bucket_accuracy(label, members, correct) for label, members in buckets]
        for scheme, buckets in degree_buckets(degree, mask).items()
    }


def _bucket_accuracy(label: str, members: Tensor, correct: Tensor) -> dict:
    n = int(members.sum())
    acc = float(correct[members].float().mean()) if n else None
    return {"bucket": label, "acc": acc, "n": n}


def group_fairness(pred: Tensor, y: Tensor, tail: Tensor, head: Tensor,
                   num_classes: int) -> dict:
    """Head and tail accuracy and macro-F1, their gaps (head - tail), ΔSP and ΔEO over the
    classes 0..num_classes-1 (DegFairGNN's definitions, module docstring). A metric of an
    empty group is None."""
    labels = _labels(pred).cpu()
    y, tail, head = y.cpu(), tail.cpu().bool(), head.cpu().bool()
    out = {"n_tail": int(tail.sum()), "n_head": int(head.sum())}
    for name, members in (("tail", tail), ("head", head)):
        truth, guess = y[members].numpy(), labels[members].numpy()
        out[f"{name}_acc"] = float((truth == guess).mean()) if truth.size else None
        out[f"{name}_macro_f1"] = (float(f1_score(truth, guess, average="macro",
                                                  zero_division=0)) if truth.size else None)
    for metric in ("acc", "macro_f1"):
        h, t = out[f"head_{metric}"], out[f"tail_{metric}"]
        out[f"{metric}_gap"] = h - t if h is not None and t is not None else None
    if not (out["n_tail"] and out["n_head"]):
        return {**out, "delta_sp": None, "delta_eo": None}
    sp, eo = [], []
    for c in range(num_classes):
        sp.append(abs(float((labels[tail] == c).double().mean())
                      - float((labels[head] == c).double().mean())))
        in_tail, in_head = tail & (y == c), head & (y == c)
        if not (in_tail.any() and in_head.any()):
            eo.append(0.0)
            continue
        eo.append(abs(float((labels[in_tail] == c).double().mean())
                      - float((labels[in_head] == c).double().mean())))
    return {**out, "delta_sp": float(np.mean(sp)), "delta_eo": float(np.mean(eo))}


def rawls_loss_variance(loss_per_node: Tensor, degree: Tensor,
                        mask: Tensor | None = None) -> float:
    """RawlsGCN's bias: the sample variance over the distinct degrees of the masked nodes of
    the mean per-node loss at that degree; NaN with fewer than two distinct degrees."""
    mask = _mask(degree, mask)
    if not mask.any():
        raise ValueError("rawls_loss_variance: mask selects no nodes")
    degree, loss = degree[mask].long().cpu(), loss_per_node[mask].double().cpu()
    values, group = torch.unique(degree, return_inverse=True)
    if len(values) < 2:
        return float("nan")
    sums = torch.zeros(len(values), dtype=torch.float64).index_add_(0, group, loss)
    means = sums / torch.bincount(group, minlength=len(values))
    return float(statistics.variance(means.tolist()))


def degree_report(pred: Tensor, y: Tensor, loss_per_node: Tensor, edge_index: Tensor,
                  mask: Tensor, num_classes: int) -> dict:
    """Everything the GNN pipeline's summary and the gnn study read, for the masked nodes:
    Tail-GNN's groups, DegFairGNN's 1-hop and 2-hop percentile groups (with their
    thresholds) and RawlsGCN's loss variance."""
    n = len(y)
    degree = hop_degree(edge_index, n, 1)
    out = {"tailgnn": group_fairness(pred, y, *tail_gnn_groups(degree, mask), num_classes)}
    for hops in (1, 2):
        k = hop_degree(edge_index, n, hops)
        low, high = degfair_thresholds(k, mask)
        out[f"degfair_{hops}hop"] = {"tail_max_degree": low, "head_min_degree_exclusive": high,
                                     **group_fairness(pred, y, *degfair_groups(k, mask),
                                                      num_classes)}
    out["rawls_loss_variance"] = rawls_loss_variance(loss_per_node, degree, mask)
    return out


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
    "DEGFAIR_PERCENT",
    "SCHEMES",
    "TAIL_GNN_DEGREE",
    "accuracy_by_degree",
    "degfair_groups",
    "degfair_thresholds",
    "degree_buckets",
    "degree_report",
    "fit_power_law_exponent",
    "group_fairness",
    "hop_degree",
    "rawls_loss_variance",
    "tail_gnn_groups",
]
