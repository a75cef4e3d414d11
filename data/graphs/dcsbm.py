"""Degree-corrected stochastic block model: power-law degrees, homophily, Gaussian features.

The default GNN data set. Hubs and tail nodes get very different numbers of gradient
contributions per step, which is the regime the GNN study is about, so the degree law
must really be heavy-tailed and the knobs (tail exponent, homophily, feature signal)
must be independent of each other.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch_geometric.data import Data

_MAX_TOP_UP_ROUNDS = 32


def dcsbm(
    num_nodes: int = 10_000,
    num_classes: int = 5,
    avg_degree: float = 10.0,
    exponent: float = 2.5,
    homophily: float = 0.8,
    feature_dim: int = 64,
    snr: float = 1.0,
    split: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
) -> Data:
    """Sample an undirected DC-SBM graph for node classification.

    Degrees: node propensities are Pareto with density ~ theta^-exponent; edges are drawn
    Chung-Lu style (each endpoint with probability proportional to its propensity, within
    the chosen class pair), so the degree law has the same tail exponent. Self loops and
    duplicate edges are dropped and replaced by fresh draws until the graph has
    ``round(num_nodes * avg_degree / 2)`` distinct edges (a dense tiny graph may stop
    short after a bounded number of rounds).

    Homophily: a fraction ``homophily`` of the edges (edge homophily, exact up to rounding)
    joins two nodes of the same class; for the others the second endpoint is drawn from
    the other classes. The two kinds are topped up separately, so dropping duplicates
    (more frequent inside the denser same-class blocks) does not bias the fraction.

    Features: ``x = mu[y] + noise`` with unit-variance Gaussian noise and random class
    means of expected squared norm ``snr``, so ``snr`` (not ``feature_dim``) sets how
    separable the classes are from features alone; ``snr=0`` makes features useless.

    Splits: ``split`` = (train, val, test) fractions, applied within each class so every
    mask keeps the class proportions. ``data.degree`` holds the node degrees (long).
    """
    split = check_dcsbm_args(
        num_nodes, num_classes, avg_degree, exponent, homophily, feature_dim, snr, split
    )
    rng = np.random.default_rng(seed)
    propensity = (1.0 - rng.random(num_nodes)) ** (-1.0 / (exponent - 1.0))
    y = rng.permutation(np.arange(num_nodes) % num_classes)
    sampler = _EdgeSampler(propensity, y, num_classes)
    num_edges = round(num_nodes * avg_degree / 2)
    num_same = round(homophily * num_edges)
    same_class = _distinct_edges(sampler, num_same, True, rng)
    other_class = _distinct_edges(sampler, num_edges - num_same, False, rng)
    edge_index = _symmetric_edge_index(np.concatenate([same_class, other_class]), num_nodes)
    masks = _stratified_masks(y, num_classes, split, rng)
    x = _class_features(y, num_classes, feature_dim, snr, rng)
    degree = np.bincount(edge_index[0], minlength=num_nodes)
    return Data(
        x=torch.from_numpy(x),
        y=torch.from_numpy(y.astype(np.int64)),
        edge_index=torch.from_numpy(edge_index),
        degree=torch.from_numpy(degree.astype(np.int64)),
        train_mask=torch.from_numpy(masks[0]),
        val_mask=torch.from_numpy(masks[1]),
        test_mask=torch.from_numpy(masks[2]),
    )


def check_dcsbm_args(
    num_nodes, num_classes, avg_degree, exponent, homophily, feature_dim, snr, split
) -> tuple[float, float, float]:
    """Reject bad arguments before any sampling, naming the argument and what is allowed."""
    _require(num_classes >= 2, "num_classes", num_classes, "an integer >= 2")
    _require(num_nodes >= num_classes, "num_nodes", num_nodes, f">= num_classes ({num_classes})")
    _require(
        0 < avg_degree <= num_nodes - 1,
        "avg_degree",
        avg_degree,
        f"in (0, num_nodes - 1] = (0, {num_nodes - 1}]",
    )
    _require(exponent > 2, "exponent", exponent, "> 2 (the mean degree must be finite)")
    _require(0 <= homophily <= 1, "homophily", homophily, "in [0, 1]")
    _require(feature_dim >= 1, "feature_dim", feature_dim, "an integer >= 1")
    _require(snr >= 0, "snr", snr, ">= 0")
    fractions = tuple(float(s) for s in split)
    _require(
        len(fractions) == 3 and min(fractions) >= 0 and abs(sum(fractions) - 1) < 1e-6,
        "split",
        split,
        "three non-negative fractions (train, val, test) summing to 1",
    )
    return fractions


def _require(ok: bool, name: str, value, allowed: str) -> None:
    if not ok:
        raise ValueError(f"dcsbm: {name}={value!r} is not allowed; {name} must be {allowed}")


class _EdgeSampler:
    """Draws edge endpoints by inverse-CDF search over propensities grouped by class.

    Nodes are laid out class by class, so 'any node', 'a node of class c' and 'a node
    not of class c' are all intervals (or an interval with a hole) of one cumulative sum.
    """

    def __init__(self, propensity: np.ndarray, y: np.ndarray, num_classes: int):
        self.y = y
        self.order = np.argsort(y, kind="stable")
        self.cum = np.cumsum(propensity[self.order])
        self.class_mass = np.bincount(y, weights=propensity, minlength=num_classes)
        self.class_start = np.cumsum(self.class_mass) - self.class_mass

    def _pick(self, target: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.cum, target, side="right")
        return self.order[np.minimum(pos, len(self.cum) - 1)]

    def sample(self, count: int, same: bool, rng) -> tuple[np.ndarray, np.ndarray]:
        """First endpoint from all nodes, second from its own class or from the others."""
        src = self._pick(rng.random(count) * self.cum[-1])
        cls = self.y[src]
        mass, start = self.class_mass[cls], self.class_start[cls]
        u = rng.random(count)
        if same:
            return src, self._pick(start + u * mass)
        outside = u * (self.cum[-1] - mass)
        return src, self._pick(np.where(outside >= start, outside + mass, outside))


def _distinct_edges(sampler: _EdgeSampler, num_edges: int, same: bool, rng) -> np.ndarray:
    """Keys lo * n + hi of num_edges distinct non-loop undirected edges (bounded rounds)."""
    n = len(sampler.y)
    keys = np.empty(0, dtype=np.int64)
    for _ in range(_MAX_TOP_UP_ROUNDS):
        missing = num_edges - len(keys)
        if missing <= 0:
            break
        src, dst = sampler.sample(missing, same, rng)
        loop_free = src != dst
        lo = np.minimum(src, dst)[loop_free].astype(np.int64)
        hi = np.maximum(src, dst)[loop_free].astype(np.int64)
        keys = _sorted_unique(np.concatenate([keys, lo * n + hi]))
    return keys


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    """np.unique by sorting: numpy 2's hash-based unique is ~10x slower on 10^7 int64."""
    keys = np.sort(keys)
    first = np.ones(len(keys), dtype=bool)
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    return keys[first]


def _symmetric_edge_index(keys: np.ndarray, n: int) -> np.ndarray:
    """Both directions of every edge, sorted by (row, col) as PyG's coalesce would leave it."""
    lo, hi = keys // n, keys % n
    both = np.sort(np.concatenate([keys, hi * n + lo]))
    return np.stack([both // n, both % n])


def _stratified_masks(y, num_classes, split, rng) -> tuple[np.ndarray, ...]:
    """Train/val/test masks that cut every class at the same fractions."""
    n = len(y)
    shuffled = rng.permutation(n)
    by_class = shuffled[np.argsort(y[shuffled], kind="stable")]
    counts = np.bincount(y, minlength=num_classes)
    rank = np.arange(n) - (np.cumsum(counts) - counts)[y[by_class]]
    cut_train = np.round(split[0] * counts).astype(np.int64)
    cut_val = np.round((split[0] + split[1]) * counts).astype(np.int64)
    cls = y[by_class]
    in_train = rank < cut_train[cls]
    in_val = ~in_train & (rank < cut_val[cls])
    masks = []
    for member in (in_train, in_val, ~in_train & ~in_val):
        mask = np.zeros(n, dtype=bool)
        mask[by_class[member]] = True
        masks.append(mask)
    return tuple(masks)


def _class_features(y, num_classes, feature_dim, snr, rng) -> np.ndarray:
    """Gaussian class means with E||mu||^2 = snr plus unit noise, float32."""
    means = rng.standard_normal((num_classes, feature_dim)) * np.sqrt(snr / feature_dim)
    x = rng.standard_normal((len(y), feature_dim), dtype=np.float32)
    x += means.astype(np.float32)[y]
    return x
