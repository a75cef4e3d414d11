"""Node classification for the gnn study: the GNN pipeline's own model and graph tensors
(``pipelines.gnn``), trained by a plain loop so a grid of a thousand short runs fits the
budget (Lightning costs ~10x a 3,000-node, 200-step run).

``fit(job)`` is one run described by a plain dict, so the study can hand jobs to worker
processes. Two regimes:

- ``full``: every step is the loss over all training nodes (the pipeline's regime);
- ``minibatch``: every step is the loss over a batch of training nodes (an epoch is a
  shuffled pass over them), the messages still over the whole graph, so an embedding row
  gets a gradient only when its node is within ``num_layers`` hops of a batch node: the
  regime where low-degree rows really get rare gradients.

``optim.embedding_optimizer: lazy`` trains the node embedding with ``sparse_adam`` (lazy Adam:
only the rows the batch reaches are read and written; torch.optim.SparseAdam's rule) and
every other parameter with dense Adam at the same lr and betas; otherwise one optimizer
trains everything. The model is evaluated every ``eval_every`` steps; the test numbers
are those of the best validation accuracy (ties: the lower validation loss), as the
pipeline reports them.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

import optim
from data.graphs import dcsbm, load_planetoid
from data.graphs.degree import degree_report, hop_degree

from ..engine.arms import generator, make_optimizer

GRAPH_KINDS = ("dcsbm", "cora")
REPORT_KEYS = {  # row field -> (group in degree_report, its key)
    "acc_gap_1hop": ("degfair_1hop", "acc_gap"), "acc_gap_2hop": ("degfair_2hop", "acc_gap"),
    "acc_gap_le5": ("tailgnn", "acc_gap"),
    "macro_f1_gap_1hop": ("degfair_1hop", "macro_f1_gap"),
    "macro_f1_gap_2hop": ("degfair_2hop", "macro_f1_gap"),
    "head_acc_1hop": ("degfair_1hop", "head_acc"), "tail_acc_1hop": ("degfair_1hop", "tail_acc"),
    "delta_sp_1hop": ("degfair_1hop", "delta_sp"), "delta_eo_1hop": ("degfair_1hop", "delta_eo"),
    "delta_sp_2hop": ("degfair_2hop", "delta_sp"), "delta_eo_2hop": ("degfair_2hop", "delta_eo"),
}


@lru_cache(maxsize=8)
def _graph(spec: tuple, seed: int):
    g = dict(spec)
    kind = g.pop("kind")
    if kind == "cora":  # the public split, features row-normalised as the pipeline does
        data = load_planetoid("Cora", root=g.get("root"), raw_dir=g.get("raw_dir"),
                              download=False)
        data.x = data.x / data.x.sum(1, keepdim=True).clamp(min=1)
        return data
    if kind == "dcsbm":
        return dcsbm(**g, seed=seed)
    raise ValueError(f"graph kind={kind!r} is invalid: expected one of {GRAPH_KINDS}")


def graph(spec: dict, seed: int):
    """The graph of a run: a DC-SBM drawn with the run's seed (tuning seeds draw graphs no
    report seed sees), or Cora (one graph; the seed only draws the training)."""
    return _graph(tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                               for k, v in spec.items())), int(seed))


def receptive_rows(adjacency: list[torch.Tensor], nodes: torch.Tensor, n: int, hops: int):
    """The nodes within ``hops`` hops of ``nodes`` (themselves included), as a mask."""
    source, target = adjacency
    reached = torch.zeros(n, dtype=torch.bool)
    reached[nodes] = True
    for _ in range(hops):
        reached = reached | torch.zeros(n, dtype=torch.bool).index_fill_(
            0, source[reached[target]], True)
    return reached


def _groups(params: list, decayed: set) -> list[dict]:
    """Weight decay (the arm's, coupled or decoupled as its preset has it) on the first
    layer's weight only, as Kipf & Welling decay it; never on the embedding, so the
    embedding's second moment sees data gradients alone."""
    return [{"params": [p for p in params if id(p) in decayed]},
            {"params": [p for p in params if id(p) not in decayed], "weight_decay": 0.0}]


def _optimizers(spec: dict, lazy: bool, model) -> list:
    decayed = {id(model.convs[0].weight)}
    table = model.embedding.weight
    if lazy:
        rest = [p for p in model.parameters() if p is not table]
        dense = make_optimizer({**spec, "name": "adam"}, _groups(rest, decayed))
        sparse = optim.create("sparse_adam", [table], lr=spec["lr"],
                            **({"betas": tuple(spec["betas"])} if "betas" in spec else {}))
        return [dense, sparse]
    return [make_optimizer(spec, _groups(list(model.parameters()), decayed))]


def row_steps(opts, table: torch.Tensor) -> tuple[np.ndarray, np.ndarray] | None:
    """Per embedding row: the mean over its columns of the effective step lr / (sqrt(v_hat)
    + eps) (v_hat bias-corrected for Adam, raw for RMSprop, as each steps), and whether
    its second moment is non-zero (the row ever had a gradient). None without a second
    moment (SGD)."""
    for opt in opts:
        group = next((g for g in opt.param_groups if any(p is table for p in g["params"])),
                     None)
        if group is None:
            continue
        state = opt.state[table]
        v = state.get("exp_avg_sq", state.get("square_avg"))
        if v is None:
            return None
        v = (v.to_dense() if v.is_sparse else v).detach()
        if "exp_avg_sq" in state:
            v = v / (1 - group["betas"][1] ** float(state["step"]))
        steps = group["lr"] / (v.sqrt() + group["eps"])
        return steps.mean(1).numpy(), (v > 0).any(1).numpy()
    return None


def fit(job: dict) -> dict:
    """One run. ``job``: graph (spec), seed, model {hidden, embedding_dim, dropout},
    optim (hyperparameters with name; embedding_optimizer: lazy as above), regime (full |
    minibatch), steps, batch_size, eval_every, record_rows (keep the per-row effective
    steps and gradient counts for figures).

    Returns val_acc, test_acc and val_loss at the best validation step, best_step,
    diverged (a non-finite loss stops the run: its best step so far stands), the degree
    metrics of the test nodes at that step (``REPORT_KEYS``, rawls_loss_variance,
    test_acc) and, with record_rows, ``_rows`` (degree, effective step, second moment
    non-zero, gradient count per embedding row at the best step)."""
    from pipelines.gnn.graph import GraphTensors
    from pipelines.gnn.models import NodeClassifier

    data = graph(job["graph"], job["seed"])
    torch.manual_seed(job["seed"])
    n, m = data.num_nodes, job["model"]
    tensors = GraphTensors(data, "gcn")
    num_classes = int(data.y.max()) + 1
    model = NodeClassifier("gcn", data.num_features, num_classes, n, hidden=m["hidden"],
                           num_layers=2, dropout=m["dropout"], embedding="concat",
                           embedding_dim=m["embedding_dim"])
    with torch.no_grad():  # the run starts as the features-only GCN (module docstring)
        model.embedding.weight.zero_()
    spec = dict(job["optim"])
    lazy = spec.pop("embedding_optimizer", None) == "lazy"
    opts = _optimizers(spec, lazy, model)
    table = model.embedding.weight
    train = tensors.train_index
    edges = data.edge_index
    minibatch = job["regime"] == "minibatch"
    g = generator(job["seed"])
    order, cursor = torch.randperm(len(train), generator=g), 0
    touched = torch.zeros(n, dtype=torch.long)
    best = {"score": (-math.inf, -math.inf), "step": -1}
    diverged = False
    for step in range(1, job["steps"] + 1):
        model.train()
        if minibatch:
            if cursor >= len(order):
                order, cursor = torch.randperm(len(train), generator=g), 0
            batch = train[order[cursor:cursor + job["batch_size"]]]
            cursor += job["batch_size"]
        else:
            batch = train
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(tensors)[batch], data.y[batch])
        if not torch.isfinite(loss):
            diverged = True
            break
        loss.backward()
        reached = receptive_rows(edges, batch, n, 2)
        touched += reached
        if lazy:
            rows = reached.nonzero().flatten()
            table.grad = torch.sparse_coo_tensor(rows[None], table.grad[rows], table.shape,
                                                 check_invariants=False)
        for opt in opts:
            opt.step()
        if step % job["eval_every"] and step != job["steps"]:
            continue
        model.eval()
        with torch.no_grad():
            logits = model(tensors)
        node_loss = F.cross_entropy(logits, data.y, reduction="none")
        val = tensors.val_index
        score = (float((logits[val].argmax(1) == data.y[val]).float().mean()),
                 -float(node_loss[val].mean()))
        if score > best["score"]:
            best = {"score": score, "step": step, "logits": logits, "loss": node_loss}
            if job.get("record_rows"):
                best["rows"] = (row_steps(opts, table),
                                touched.clone())
    out = {"diverged": int(diverged), "best_step": best["step"], "steps": job["steps"]}
    if best["step"] < 0:  # diverged before the first evaluation
        return {**out, "val_acc": -math.inf, "val_loss": math.inf, "test_acc": 0.0}
    logits, test = best["logits"], data.test_mask
    report = degree_report(logits, data.y, best["loss"], edges, test, num_classes)
    out.update(val_acc=best["score"][0], val_loss=-best["score"][1],
               test_acc=float((logits[test].argmax(1) == data.y[test]).float().mean()),
               rawls_loss_variance=report["rawls_loss_variance"])
    for key, (group, name) in REPORT_KEYS.items():
        value = report[group][name]
        out[key] = math.nan if value is None else value
    out["n_tail_1hop"] = report["degfair_1hop"]["n_tail"]
    out["n_head_1hop"] = report["degfair_1hop"]["n_head"]
    if job.get("record_rows"):
        steps, counts = best["rows"]
        out["_rows"] = {"degree": hop_degree(edges, n, 1).numpy(), "counts": counts.numpy(),
                        "fraction_steps": counts.numpy() / best["step"],
                        "step": None if steps is None else steps[0],
                        "moved": None if steps is None else steps[1]}
    return out
