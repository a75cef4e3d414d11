"""GCN, GraphSAGE and GAT on a prepared graph, optionally with a learnable node embedding.

Each layer is a projection ``x Wᵀ`` followed by message passing. Only the first projection
sees the node input, so only it needs to know that the input may be sparse: there it is
one CSR product, with dropout on the non-zeros (Kipf & Welling's own implementation; the
zeros of dense dropout stay zero anyway). The layers compute what PyG's ``GCNConv``,
``SAGEConv`` and ``GATConv`` compute, with the same initialisation (tested against them).

The embedding table is where degree heterogeneity meets the optimizer: a hub's row gets
a gradient at every step from many neighbours, a tail node's row rarely and weakly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GATConv
from torch_geometric.nn.dense.linear import Linear

from .graph import GraphTensors
from .sparse import SparseMatrix, dropout

MODELS = ("gcn", "sage", "gat")
EMBEDDINGS = (None, "input", "concat")


class GCNLayer(nn.Module):
    """PyG's ``GCNConv``: ``Â (x Wᵀ) + b`` with ``Â = D^-1/2 (A + I) D^-1/2`` prebuilt."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.lin = Linear(d_in, d_out, bias=False, weight_initializer="glorot")
        self.bias = nn.Parameter(torch.zeros(d_out))

    @property
    def weight(self) -> torch.Tensor:
        return self.lin.weight

    def forward(self, z, graph: GraphTensors):
        return graph.adjacency.matmul(z) + self.bias


class SAGELayer(nn.Module):
    """PyG's ``SAGEConv`` (mean): ``mean_j x_j W_lᵀ + b + x W_rᵀ``, both projections in one
    product and the mean taken after projecting (it is linear)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.lin_l = Linear(d_in, d_out, bias=True)
        self.lin_r = Linear(d_in, d_out, bias=False)

    @property
    def weight(self) -> torch.Tensor:
        return torch.cat([self.lin_l.weight, self.lin_r.weight])

    def forward(self, z, graph: GraphTensors):
        neighbours, root = z.chunk(2, dim=1)
        return graph.adjacency.matmul(neighbours) + self.lin_l.bias + root


class GATLayer(nn.Module):
    """PyG's ``GATConv``, with its input projection done first (so it can be sparse)."""

    def __init__(self, d_in: int, d_out: int, heads: int, concat: bool, dropout: float):
        super().__init__()
        self.lin = Linear(d_in, heads * d_out, bias=False, weight_initializer="glorot")
        self.conv = GATConv(heads * d_out, d_out, heads=heads, concat=concat, dropout=dropout,
                            add_self_loops=False)  # the graph's edge list has them already
        self.conv.lin = nn.Identity()  # its input arrives projected by self.lin

    @property
    def weight(self) -> torch.Tensor:
        return self.lin.weight

    def forward(self, z, graph: GraphTensors):
        return self.conv(z, graph.edge_index)


class NodeClassifier(nn.Module):
    def __init__(self, name: str, in_dim: int, num_classes: int, num_nodes: int, hidden: int = 16,
                 num_layers: int = 2, dropout: float = 0.5, heads: int = 8, output_heads: int = 1,
                 embedding: str | None = None, embedding_dim: int = 16):
        super().__init__()
        self.dropout, self.embedding_mode = dropout, embedding
        self.embedding = nn.Embedding(num_nodes, embedding_dim) if embedding else None
        self.widths = {None: [in_dim], "input": [embedding_dim],
                       "concat": [in_dim, embedding_dim]}[embedding]
        width = sum(self.widths)
        self.convs = nn.ModuleList()
        for i in range(num_layers):
            last = i == num_layers - 1
            d_out = num_classes if last else hidden
            if name == "gcn":
                self.convs.append(GCNLayer(width, d_out))
            elif name == "sage":
                self.convs.append(SAGELayer(width, d_out))
            else:  # GAT: hidden heads concatenated, output heads averaged
                self.convs.append(GATLayer(width, d_out, output_heads if last else heads,
                                           concat=not last, dropout=dropout))
            width = hidden * heads if name == "gat" else hidden
        self.activation = F.elu if name == "gat" else F.relu

    def forward(self, graph: GraphTensors) -> torch.Tensor:
        h = None
        for i, layer in enumerate(self.convs):
            if i == 0:
                z = self.project_input(graph, layer.weight)
            else:
                z = dropout(self.activation(h), self.dropout, self.training) @ layer.weight.t()
            h = layer(z, graph)
        return h

    def project_input(self, graph: GraphTensors, weight: torch.Tensor) -> torch.Tensor:
        """Dropout, then ``input Wᵀ``, where the input is the features, the embedding table,
        or both side by side (then ``W`` is split by columns: the same product)."""
        parts = {None: [graph.x], "input": [], "concat": [graph.x]}[self.embedding_mode]
        if self.embedding is not None:
            parts.append(self.embedding.weight)
        out, start = 0, 0
        for part, width in zip(parts, self.widths, strict=True):
            w = weight[:, start:start + width].t()
            if isinstance(part, SparseMatrix):
                out = out + part.matmul(w, part.dropout(self.dropout, self.training))
            else:
                out = out + dropout(part, self.dropout, self.training) @ w
            start += width
        return out
