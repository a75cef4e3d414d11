"""gnn: does Adam balance hubs and low-degree nodes?

A 2-layer GCN whose input is the node features and a learnable per-node embedding (zero at
the start, so a run starts as the features-only GCN): the embedding is where degree meets
the optimizer, a hub's row getting many large gradients and a tail node's few small ones.
Graphs: DC-SBMs with power-law degrees (exponents 2.1, 2.5, 3.5; each seed draws its own
graph, so tuning seeds never see a report seed's graph), a near-regular control (equal
propensities: Poisson degrees) and Cora. Regimes: full batch, and mini-batch (the loss on
a batch of training nodes, messages over the whole graph). Arms: Adam, AdamW, SGD+momentum,
RMSprop, each tuned per graph and regime by validation accuracy; lazy Adam (sparse_adam on
the embedding) in the mini-batch regime. Training: ``problems.graphs.fit``.

Metrics on the test nodes at the best validation step (data/graphs/degree.py): DegFairGNN's
head-tail gaps (20 % percentile groups with ties kept, 1- and 2-hop), Tail-GNN's <= 5 vs > 5
gap, macro-F1 gap, delta-SP/EO, RawlsGCN's loss variance. Besides one row per run, the
runs on ``row_graphs`` add a row per log2 degree bin (degree 0 on its own) with the
embedding rows' effective step lr / (sqrt(v_hat) + eps) at the best step (median and IQR
over the bin's rows that ever had a gradient) and the fraction of steps a row had one.
"""

from __future__ import annotations

import math

import numpy as np

from .engine import Result, Table
from .engine.arms import describe
from .engine.figures import plt, save
from .engine.stats import column, summarize
from .problems import graphs

GAP_METRICS = ["test_acc", "acc_gap_1hop", "acc_gap_2hop", "acc_gap_le5", "macro_f1_gap_1hop",
               "delta_sp_1hop", "delta_eo_1hop", "rawls_loss_variance", "tail_acc_1hop",
               "head_acc_1hop", "diverged"]
GRADIENT_METRICS = ["gradient_step_fraction", "n_rows"]
STEP_METRICS = ["step_median", "step_q25", "step_q75", "never_moved_fraction", "n_moved"]


def graph_spec(p, name: str) -> dict:
    spec = {k: v for k, v in dict(p.graphs[name]).items() if k != "heavy_tail"}
    return {**dict(p.dcsbm), **spec} if spec["kind"] == "dcsbm" else spec


def job(p, graph: str, regime: str, setting: dict, seed: int, record: bool) -> dict:
    r = dict(p.regimes[regime])
    return {"graph": graph_spec(p, graph), "seed": seed, "model": dict(p.model),
            "optim": dict(setting), "regime": regime, "steps": r["steps"],
            "eval_every": r["eval_every"], "batch_size": r.get("batch_size"),
            "record_rows": record}


def evaluator(s, graph: str, regime: str):
    def evaluate(settings, seeds):
        jobs = [(job(s.p, graph, regime, st, seed, False),) for st in settings for seed in seeds]
        done = iter(s.map(graphs.fit, jobs))
        return [[{"seed": seed, **_scalars(next(done))} for seed in seeds] for _ in settings]
    return evaluate


def _scalars(out: dict) -> dict:
    return {k: v for k, v in out.items() if not k.startswith("_")}


def cells(p):
    for graph in p.graphs_used:
        for regime in p.regimes_used:
            for arm in p.arms_used:
                if regime == "full" and arm in p.minibatch_only:
                    continue
                yield graph, regime, arm


def run(s) -> Result:
    p = s.p
    chosen = {(g, r, a): s.tune(a, evaluator(s, g, r), {"graph": g, "regime": r})
              for g, r, a in cells(p)}
    keys = [(g, r, a, seed) for g, r, a in cells(p) for seed in s.report_seeds]
    jobs = [(job(p, g, r, chosen[(g, r, a)], seed, g in p.row_graphs),)
            for g, r, a, seed in keys]
    rows, bins = [], []
    for (g, r, a, seed), out in zip(keys, s.map(graphs.fit, jobs)):
        hp = chosen[(g, r, a)]
        rows.append({"kind": "run", "graph": g, "heavy_tail": int(p.graphs[g].heavy_tail),
                     "regime": r, "optimizer": a, "seed": seed, "lr": hp["lr"],
                     **_scalars(out)})
        if "_rows" in out:
            bins += degree_bin_rows(out["_rows"], {"graph": g, "regime": r, "optimizer": a,
                                                   "seed": seed})
    runs = [r for r in rows if r["kind"] == "run"]
    tables = [Table("Per graph, regime and optimizer at its tuned setting (test nodes, best "
                    "validation step)", runs, ["kind", "graph", "regime", "optimizer"],
                    GAP_METRICS)]
    keys = ["kind", "graph", "regime", "optimizer", "degree_bin"]
    for kind, title, metrics in (
            ("gradients_by_degree", "Embedding rows by degree bin: the fraction of steps up "
             "to the best one on which a row had a gradient", GRADIENT_METRICS),
            ("steps_by_degree", "Embedding rows by degree bin at the best step: effective "
             "step lr / (sqrt(v_hat) + eps), per seed the median and quartiles over the bin's "
             "rows that ever had a gradient, and the fraction of the bin's rows that never had "
             "one (the cells average the seeds)", STEP_METRICS)):
        rows_of_kind = [b for b in bins if b["kind"] == kind]
        if rows_of_kind:
            tables.append(Table(title, rows_of_kind, keys, metrics))
    figures = [plot_gaps(runs, p, s.out_dir)]
    if bins:
        figures.append(plot_steps(bins, p, s.out_dir))
    setup = [
        f"GCN (2 layers, hidden {p.model.hidden}, dropout {p.model.dropout}) on the node "
        f"features concatenated with a learnable {p.model.embedding_dim}-dim node embedding "
        "(zero at the start). Weight decay only on the first layer's weight (Kipf & "
        "Welling), never on the embedding, so its second moment sees data gradients only.",
        "Graphs: " + "; ".join(f"{g} = {dict(p.graphs[g])}" for g in p.graphs_used)
        + f"; DC-SBM settings {dict(p.dcsbm)} (the DC-SBM is drawn per seed; Cora's public "
        "split is one graph).",
        "Regimes: " + "; ".join(f"{r} = {dict(p.regimes[r])}" for r in p.regimes_used)
        + ". Mini-batch: the loss on a batch of training nodes, messages over the whole graph;"
        " an embedding row gets a gradient when its node is within 2 hops of a batch node.",
        "Arms (fixed parts): " + "; ".join(f"{a} = {describe(s.arms[a]['fixed'])}"
                                           for a in p.arms_used)
        + "; tuned per graph and regime on the tuning seeds by validation accuracy at the "
        "best step; lazy_adam: sparse_adam (torch's SparseAdam rule) on the embedding rows a "
        "batch reaches, dense Adam at the same lr on the rest, mini-batch only.",
        "Degree metrics on the test nodes at the best validation step (data/graphs/degree.py):"
        " acc_gap_* = head accuracy - tail accuracy; 1hop/2hop: DegFairGNN's groups (degree <="
        " the 20th percentile of the test nodes' degree vs > the 80th, ties kept; 2hop: [A^2 "
        "1]); le5: Tail-GNN's degree <= 5 vs > 5; delta_sp/eo: DegFairGNN's; "
        "rawls_loss_variance: RawlsGCN's sample variance of mean loss over distinct degrees.",
    ]
    return Result(rows + bins, tables, figures, setup, notes(runs, bins, p))


def degree_bin_rows(rows: dict, fields: dict) -> list[dict]:
    """Per log2 degree bin (degree 0 on its own) of the whole graph's nodes: a
    ``gradients_by_degree`` row, and a ``steps_by_degree`` row where the optimizer has a
    second moment and some row of the bin has had a gradient."""
    degree, frac = rows["degree"], rows["fraction_steps"]
    out = []
    edges = [0, 1] + [2**k for k in range(1, int(degree.max()).bit_length() + 1)]
    for lo, hi in zip(edges[:-1], edges[1:]):
        member = (degree >= lo) & (degree < hi)
        if not member.any():
            continue
        where = {**fields, "degree_bin": "0" if lo == 0 else f"[{lo},{hi})", "degree_low": lo}
        out.append({"kind": "gradients_by_degree", **where, "n_rows": int(member.sum()),
                    "gradient_step_fraction": float(frac[member].mean())})
        if rows["step"] is None:
            continue
        moved = member & rows["moved"]
        if moved.any():
            q25, med, q75 = np.percentile(rows["step"][moved], [25, 50, 75])
            out.append({"kind": "steps_by_degree", **where, "n_moved": int(moved.sum()),
                        "never_moved_fraction": float(1 - moved.sum() / member.sum()),
                        "step_median": float(med), "step_q25": float(q25),
                        "step_q75": float(q75)})
    return out


def notes(runs, bins, p) -> list[str]:
    out = []
    for g in p.graphs_used:
        for r in p.regimes_used:
            gaps = {a: summarize(column(runs, "acc_gap_1hop", graph=g, regime=r, optimizer=a))
                    for a in p.arms_used if column(runs, "acc_gap_1hop", graph=g, regime=r,
                                                   optimizer=a)}
            out.append(f"{g}/{r}: mean head-tail gap (1-hop) " + ", ".join(
                f"{a} {x.mean:.3f}" for a, x in gaps.items()) + ".")
    for g in p.row_graphs:
        if g not in p.graphs_used or "minibatch" not in p.regimes_used:
            continue
        rs = [b for b in bins if b["graph"] == g and b["regime"] == "minibatch"
              and b["optimizer"] == "adam" and b["kind"] == "gradients_by_degree"]
        if rs:
            low = [b["gradient_step_fraction"] for b in rs if b["degree_low"] <= 2]
            high = [b["gradient_step_fraction"] for b in rs if b["degree_low"] >= 16]
            out.append(f"{g}, mini-batch: rows of degree <= 2 had a gradient on "
                       f"{np.mean(low):.0%} of steps, rows of degree >= 16 on "
                       f"{np.mean(high) if high else math.nan:.0%} (messages over the whole "
                       "graph reach most rows through the hubs).")
    return out


def plot_gaps(runs, p, out_dir):
    """Mean head-tail gap (1-hop) ± its 95% CI per graph, regime and optimizer."""
    regimes = list(p.regimes_used)
    fig, axes = plt.subplots(1, len(regimes), figsize=(6.5 * len(regimes), 4.2), squeeze=False)
    arms = list(p.arms_used)
    width = 0.8 / len(arms)
    for ax, regime in zip(axes[0], regimes):
        for i, arm in enumerate(arms):
            st = [summarize(column(runs, "acc_gap_1hop", graph=g, regime=regime, optimizer=arm))
                  for g in p.graphs_used]
            means = [x.mean for x in st]
            err = [0 if math.isnan(x.ci_lo) else x.mean - x.ci_lo for x in st]
            ax.bar(np.arange(len(st)) + i * width, means, width, yerr=err, capsize=2,
                   label=arm)
        ax.set_xticks(np.arange(len(p.graphs_used)) + 0.4 - width / 2, list(p.graphs_used),
                      fontsize=8, rotation=20)
        ax.set(ylabel="head - tail test accuracy (DegFairGNN 20 %, 1-hop)",
               title=f"{regime}: mean [95% CI] over seeds, tuned arms")
        ax.axhline(0, color="k", lw=0.5)
        ax.legend(fontsize=7)
    return save(fig, out_dir / "degree_gap.png")


def plot_steps(bins, p, out_dir):
    """Effective step per embedding row by degree bin (median and IQR over rows, pooled
    medians over seeds), and the fraction of steps a row had a gradient."""
    graphs_ = [g for g in p.row_graphs if g in p.graphs_used]
    regimes = list(p.regimes_used)
    fig, axes = plt.subplots(2, len(graphs_) * len(regimes),
                             figsize=(4.6 * len(graphs_) * len(regimes), 7.5), squeeze=False)
    for j, (g, r) in enumerate((g, r) for g in graphs_ for r in regimes):
        top, bottom = axes[0][j], axes[1][j]
        rs = [b for b in bins if b["graph"] == g and b["regime"] == r]
        labels = list(dict.fromkeys(b["degree_bin"] for b in sorted(
            rs, key=lambda b: b["degree_low"])))
        x = {lab: i for i, lab in enumerate(labels)}
        for arm in p.arms_used:
            grad = [b for b in rs if b["optimizer"] == arm and b["kind"] == "gradients_by_degree"]
            if grad:
                here = [lab for lab in labels if any(b["degree_bin"] == lab for b in grad)]
                bottom.plot([x[lab] for lab in here],
                            [np.mean([b["gradient_step_fraction"] for b in grad
                                      if b["degree_bin"] == lab]) for lab in here],
                            marker="o", label=arm)
            step = [b for b in rs if b["optimizer"] == arm and b["kind"] == "steps_by_degree"]
            if step:
                here = [lab for lab in labels if any(b["degree_bin"] == lab for b in step)]
                med, lo, hi = ([np.median([b[k] for b in step if b["degree_bin"] == lab])
                                for lab in here] for k in ("step_median", "step_q25",
                                                           "step_q75"))
                top.errorbar([x[lab] for lab in here], med,
                             yerr=[np.subtract(med, lo), np.subtract(hi, med)], marker="o",
                             capsize=2, label=arm)
        for ax in (top, bottom):
            ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=30)
        top.set(yscale="log", title=f"{g} / {r}", ylabel="lr / (sqrt(v_hat) + eps) per row")
        bottom.set(ylim=(0, 1.05), xlabel="node degree (0 on its own, then log2 bins)",
                   ylabel="fraction of steps with a gradient")
        for ax in (top, bottom):
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    fig.suptitle("Embedding rows at the best step: median and IQR over the rows of each bin "
                 "(medians over seeds); rows that never had a gradient left out")
    return save(fig, out_dir / "embedding_step_by_degree.png")
