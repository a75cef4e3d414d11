"""GCN, GraphSAGE and GAT from PyG layers, optionally with a learnable node embedding.

The embedding table is where degree heterogeneity meets the optimizer: a hub's row gets
a gradient at every step from many neighbours, a tail node's row rarely and weakly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GATConv, GCNConv, SAGEConv

MODELS = ("gcn", "sage", "gat")
EMBEDDINGS = (None, "input", "concat")


class NodeClassifier(nn.Module):
    def __init__(self, name: str, in_dim: int, num_classes: int, num_nodes: int, hidden: int = 16,
                 num_layers: int = 2, dropout: float = 0.5, heads: int = 8,
                 embedding: str | None = None, embedding_dim: int = 16):
        super().__init__()
        self.dropout, self.embedding_mode = dropout, embedding
        self.embedding = nn.Embedding(num_nodes, embedding_dim) if embedding else None
        width = {None: in_dim, "input": embedding_dim, "concat": in_dim + embedding_dim}[embedding]
        self.convs = nn.ModuleList()
        for i in range(num_layers):
            last = i == num_layers - 1
            self.convs.append(_conv(name, width, num_classes if last else hidden, heads, last,
                                    dropout))
            width = hidden * heads if name == "gat" else hidden

    def node_input(self, x):
        if self.embedding is None:
            return x
        table = self.embedding.weight
        return table if self.embedding_mode == "input" else torch.cat([x, table], dim=1)

    def forward(self, x, edge_index):
        h = self.node_input(x)
        for i, conv in enumerate(self.convs):
            h = F.dropout(h, self.dropout, self.training)
            h = conv(h, edge_index)
            if i < len(self.convs) - 1:
                h = F.elu(h) if isinstance(conv, GATConv) else F.relu(h)
        return h


def _conv(name, d_in, d_out, heads, last, dropout):
    if name == "gcn":
        return GCNConv(d_in, d_out, cached=True)
    if name == "sage":
        return SAGEConv(d_in, d_out)
    if last:  # GAT's output layer: one head (Cora setting), attention dropout as hidden
        return GATConv(d_in, d_out, heads=1, concat=False, dropout=dropout)
    return GATConv(d_in, d_out, heads=heads, dropout=dropout)
