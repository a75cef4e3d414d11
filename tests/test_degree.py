"""Degree-bias metrics (data/graphs/degree.py) against hand-computed small graphs, ties at
the percentile thresholds included, and against the papers' own evaluation code written
out here (DegFairGNN's ``utils.evaluate_fairness``, RawlsGCN's ``Evaluator._get_bias``)."""

import statistics

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score

from data.graphs import dcsbm
from data.graphs.degree import (
    accuracy_by_degree,
    degfair_groups,
    degfair_thresholds,
    degree_buckets,
    degree_report,
    group_fairness,
    hop_degree,
    rawls_loss_variance,
    tail_gnn_groups,
)


def undirected(pairs):
    src = [a for a, b in pairs] + [b for a, b in pairs]
    dst = [b for a, b in pairs] + [a for a, b in pairs]
    return torch.tensor([src, dst])


# a star 0-{1..6}, a triangle through 1-2, a pair 7-8, node 9 isolated
STAR = undirected([(0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (0, 6), (1, 2), (7, 8)])
STAR_DEGREE = [6, 2, 2, 1, 1, 1, 1, 1, 1, 0]
# 2-hop: the sum of the neighbours' degrees
STAR_DEGREE2 = [8, 8, 8, 6, 6, 6, 6, 1, 1, 0]


def members(mask):
    return mask.nonzero().flatten().tolist()


def test_hop_degree_counts_walks_by_hand():
    assert hop_degree(STAR, 10, 1).tolist() == STAR_DEGREE
    assert hop_degree(STAR, 10, 2).tolist() == STAR_DEGREE2
    # self loops and duplicate edges do not count (A is 0/1 without its diagonal)
    noisy = torch.cat([STAR, torch.tensor([[3, 3, 0], [3, 3, 1]])], dim=1)
    assert hop_degree(noisy, 10, 2).tolist() == STAR_DEGREE2
    # [A^3 1] = A [A^2 1]: node 7's only neighbour 8 has a 2-hop count of 1
    assert hop_degree(STAR, 10, 3)[7] == 1
    with pytest.raises(ValueError, match="hops"):
        hop_degree(STAR, 10, 0)


def test_tail_gnn_split_at_five():
    degree = torch.tensor([0, 1, 5, 6, 40])
    tail, head = tail_gnn_groups(degree)
    assert members(tail) == [0, 1, 2] and members(head) == [3, 4]
    tail, head = tail_gnn_groups(degree, torch.tensor([1, 0, 1, 0, 1], dtype=torch.bool))
    assert members(tail) == [0, 2] and members(head) == [4]


def test_degfair_thresholds_interpolate_like_numpy():
    degree = torch.tensor([1, 2, 3, 4, 5])
    # positions 0.8 and 3.2 of the sorted degrees: 1.8 and 4.2
    assert degfair_thresholds(degree) == pytest.approx((1.8, 4.2))
    tail, head = degfair_groups(degree)
    assert members(tail) == [0] and members(head) == [4]


def test_degfair_groups_keep_ties_whole():
    degree = torch.tensor(STAR_DEGREE)
    # sorted 0,1,1,1,1,1,1,2,2,6: the 20th percentile is 1 and the 80th is 2
    assert degfair_thresholds(degree) == (1.0, 2.0)
    tail, head = degfair_groups(degree)
    assert members(tail) == [3, 4, 5, 6, 7, 8, 9]  # every degree-1 node, not 20 % by index
    assert members(head) == [0]  # the two degree-2 nodes sit at the 80th: not head
    # thresholds come from the masked (test) nodes only
    mask = torch.zeros(10, dtype=torch.bool)
    mask[[0, 1, 3, 5, 7, 9]] = True  # degrees 6, 2, 1, 1, 1, 0
    assert degfair_thresholds(degree, mask) == (1.0, 2.0)
    tail, head = degfair_groups(degree, mask)
    assert members(tail) == [3, 5, 7, 9] and members(head) == [0]
    # on the 2-hop degree (8, 8, 8, 6 x4, 1, 1, 0): thresholds 1 and 8
    tail, head = degfair_groups(torch.tensor(STAR_DEGREE2))
    assert members(tail) == [7, 8, 9] and members(head) == []
    with pytest.raises(ValueError, match="no nodes"):
        degfair_thresholds(degree, torch.zeros(10, dtype=torch.bool))


def test_degree_buckets_schemes_by_hand():
    degree = torch.tensor([0, 1, 2, 3, 5, 6, 8, 16])
    b = degree_buckets(degree)
    assert [(label, members(m)) for label, m in b["le5_gt5"]] == [
        ("deg<=5", [0, 1, 2, 3, 4]), ("deg>5", [5, 6, 7])]
    # percentiles of 0,1,2,3,5,6,8,16 at positions 1.4 and 5.6: 1.4 and 7.2
    assert [(label, members(m)) for label, m in b["degfair20"]] == [
        ("deg<=1.4", [0, 1]), ("deg>7.2", [6, 7])]
    assert [(label, members(m)) for label, m in b["log2"]] == [
        ("deg=0", [0]), ("deg[1,2)", [1]), ("deg[2,4)", [2, 3]), ("deg[4,8)", [4, 5]),
        ("deg[8,16)", [6]), ("deg[16,32)", [7])]
    # log2 bins depend on the whole graph, so a split lists every bin (empty ones too)
    mask = torch.tensor([0, 0, 1, 1, 1, 1, 1, 0], dtype=torch.bool)
    labels = [label for label, _ in degree_buckets(degree, mask)["log2"]]
    assert labels == [label for label, _ in b["log2"]]


def test_accuracy_by_degree_by_hand():
    degree = torch.tensor([1, 1, 2, 3, 6, 7, 9, 12, 20, 40])
    y = torch.zeros(10, dtype=torch.long)
    pred = torch.tensor([0, 1, 0, 0, 0, 1, 1, 0, 0, 0])
    mask = torch.ones(10, dtype=torch.bool)
    mask[9] = False
    result = accuracy_by_degree(pred, y, degree, mask)
    assert result["le5_gt5"] == [
        {"bucket": "deg<=5", "acc": pytest.approx(3 / 4), "n": 4},
        {"bucket": "deg>5", "acc": pytest.approx(3 / 5), "n": 5},
    ]
    # 9 masked degrees: percentiles at positions 1.6 and 6.4 -> 1.6 and 10.2
    tail, head = result["degfair20"]
    assert (tail["n"], tail["acc"]) == (2, 0.5) and (head["n"], head["acc"]) == (2, 1.0)
    log2 = {r["bucket"]: (r["acc"], r["n"]) for r in result["log2"]}
    assert log2["deg[1,2)"] == (0.5, 2) and log2["deg[32,64)"] == (None, 0)
    assert accuracy_by_degree(F.one_hot(pred, 2).float(), y, degree, mask) == result


def test_group_fairness_by_hand():
    # tail: y 0,0,1,2 predicted 0,1,1,1; head: y 0,1,1 predicted 0,1,2
    y = torch.tensor([0, 0, 1, 2, 0, 1, 1])
    pred = torch.tensor([0, 1, 1, 1, 0, 1, 2])
    tail = torch.tensor([1, 1, 1, 1, 0, 0, 0], dtype=torch.bool)
    out = group_fairness(pred, y, tail, ~tail, num_classes=3)
    assert out["n_tail"] == 4 and out["n_head"] == 3
    assert out["tail_acc"] == 0.5 and out["head_acc"] == pytest.approx(2 / 3)
    assert out["acc_gap"] == pytest.approx(1 / 6)
    # per-class F1, tail: 2/3, 1/2, 0; head: 1, 2/3, 0
    assert out["tail_macro_f1"] == pytest.approx(7 / 18)
    assert out["head_macro_f1"] == pytest.approx(5 / 9)
    assert out["macro_f1_gap"] == pytest.approx(5 / 9 - 7 / 18)
    # P(pred=c): tail 1/4, 3/4, 0; head 1/3 each -> (1/12 + 5/12 + 4/12) / 3
    assert out["delta_sp"] == pytest.approx(5 / 18)
    # P(pred=c | y=c): class 0 1/2 vs 1, class 1 1 vs 1/2, class 2 absent from head: 0
    assert out["delta_eo"] == pytest.approx(1 / 3)
    empty = group_fairness(pred, y, tail, torch.zeros(7, dtype=torch.bool), 3)
    assert empty["head_acc"] is None and empty["acc_gap"] is None
    assert empty["delta_sp"] is None and empty["tail_acc"] == 0.5


def test_rawls_loss_variance_by_hand():
    degree = torch.tensor([1, 1, 2, 3, 3, 3])
    loss = torch.tensor([1.0, 3.0, 4.0, 6.0, 0.0, 3.0])
    # means 2, 4, 3 over the distinct degrees: sample variance 1
    assert rawls_loss_variance(loss, degree) == pytest.approx(1.0)
    mask = torch.tensor([1, 0, 1, 1, 0, 0], dtype=torch.bool)  # means 1, 4, 6
    assert rawls_loss_variance(loss, degree, mask) == pytest.approx(statistics.variance(
        [1.0, 4.0, 6.0]))
    assert np.isnan(rawls_loss_variance(loss, torch.ones(6, dtype=torch.long)))  # one group
    with pytest.raises(ValueError, match="no nodes"):
        rawls_loss_variance(loss, degree, torch.zeros(6, dtype=torch.bool))


# ------------------------------------------------------------- the papers' own code


def degfair_reference(pred, labels, groups, idx_test):
    """DegFairGNN's utils.evaluate_fairness (20 % split), in their numpy, as fractions."""
    data_groups, pred, labels = groups[idx_test], pred[idx_test], labels[idx_test]
    p = np.percentile(data_groups, [20, 80])
    g = np.full(len(data_groups), -1.0)
    g = np.where(data_groups <= p[0], 0.0, g)
    g = np.where(data_groups > p[1], 1.0, g)
    s0, s1 = np.where(g == 0)[0], np.where(g == 1)[0]
    sp, eo = [], []
    for i in range(labels.max() + 1):
        sp.append(abs((pred[s0] == i).sum() / len(s0) - (pred[s1] == i).sum() / len(s1)))
        y0, y1 = np.where(labels[s0] == i)[0], np.where(labels[s1] == i)[0]
        if len(y0) == 0 or len(y1) == 0:
            eo.append(0)
        else:
            eo.append(abs((pred[s0][y0] == i).sum() / len(y0)
                          - (pred[s1][y1] == i).sum() / len(y1)))
    return {"delta_sp": np.mean(sp), "delta_eo": np.mean(eo),
            "head_acc": accuracy_score(labels[s1], pred[s1]),
            "tail_acc": accuracy_score(labels[s0], pred[s0]),
            "head_macro_f1": f1_score(labels[s1], pred[s1], average="macro"),
            "tail_macro_f1": f1_score(labels[s0], pred[s0], average="macro")}


def rawls_reference(loss, degree, idx):
    """RawlsGCN's Evaluator._get_bias on per-node losses."""
    by_degree = {}
    for i in idx:
        by_degree.setdefault(int(degree[i]), []).append(float(loss[i]))
    return statistics.variance([statistics.mean(v) for v in by_degree.values()])


def test_degree_report_matches_the_papers_code_on_a_dcsbm_graph():
    data = dcsbm(num_nodes=600, exponent=2.1, feature_dim=8, seed=3)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(600, 5, generator=g) + 2 * F.one_hot(data.y, 5)
    loss = F.cross_entropy(logits, data.y, reduction="none")
    pred = logits.argmax(1)
    report = degree_report(logits, data.y, loss, data.edge_index, data.test_mask, 5)
    idx = data.test_mask.nonzero().flatten().numpy()
    dense = torch.zeros(600, 600)
    dense[data.edge_index[0], data.edge_index[1]] = 1.0
    for hops in (1, 2):
        walks = torch.linalg.matrix_power(dense, hops).sum(1).numpy()  # their get_str_info
        ref = degfair_reference(pred.numpy(), data.y.numpy(), walks, idx)
        mine = report[f"degfair_{hops}hop"]
        for key, value in ref.items():
            assert mine[key] == pytest.approx(float(value), abs=1e-12), (hops, key)
    assert report["rawls_loss_variance"] == pytest.approx(
        rawls_reference(loss.double(), data.degree, idx), rel=1e-12)
    tail = data.degree[data.test_mask] <= 5
    correct = (pred == data.y)[data.test_mask]
    assert report["tailgnn"]["tail_acc"] == pytest.approx(float(correct[tail].float().mean()))
    assert report["tailgnn"]["n_tail"] + report["tailgnn"]["n_head"] == int(
        data.test_mask.sum())
