"""GNN figures: accuracy and loss per degree bucket; effective step per embedding row."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import optim  # noqa: E402
from data.graphs import degree_buckets  # noqa: E402


def by_degree(data, best_nodes, out_dir: Path) -> Path:
    """Test accuracy and mean loss per log2 degree bin, with node counts."""
    buckets = degree_buckets(data.degree, data.test_mask)["log2"]
    correct = (best_nodes["pred"] == data.y).float()
    labels, accs, losses, counts = [], [], [], []
    for label, members in buckets:
        if members.sum() == 0:
            continue
        labels.append(label)
        accs.append(correct[members].mean().item())
        losses.append(best_nodes["loss"][members].mean().item())
        counts.append(int(members.sum()))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.bar(labels, accs, color="tab:blue")
    for i, n in enumerate(counts):
        ax1.text(i, accs[i], f"n={n}", ha="center", va="bottom", fontsize=7)
    ax1.set(xlabel="node degree (log2 bin)", ylabel="test accuracy", ylim=(0, 1.05),
            title="Accuracy by degree")
    ax2.bar(labels, losses, color="tab:red")
    ax2.set(xlabel="node degree (log2 bin)", ylabel="mean test loss (cross-entropy)",
            title="Loss by degree")
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    path = Path(out_dir) / "accuracy_by_degree.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def embedding_step_vs_degree(opt, table: torch.Tensor, degree, out_dir: Path) -> Path | None:
    """Mean effective step lr/(sqrt(v_hat)+eps) of each embedding row against its node's
    degree: hubs (many large gradients) get small steps, tail nodes large ones."""
    steps = optim.effective_step(opt, table)
    if steps is None:
        return None
    row_step = steps.mean(dim=1).cpu().numpy()
    fig, ax = plt.subplots(figsize=(5.5, 4))  # numpy: matplotlib iterates a tensor per element
    ax.scatter(degree.clamp(min=1).cpu().numpy(), row_step, s=3, alpha=0.3)
    ax.set(xscale="log", yscale="log", xlabel="node degree",
           ylabel="effective step per embedding row", title="Adam's step vs degree")
    fig.tight_layout()
    path = Path(out_dir) / "embedding_step_vs_degree.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
