"""The graph as a model consumes it, prepared once per run.

A PyG ``Data`` becomes: the node features (a CSR ``SparseMatrix`` when they are mostly
zeros, as bag-of-words features are), the propagation operator of the chosen layer
(GCN's normalised adjacency, SAGE's neighbour mean, GAT's edge list with self loops),
the labels and each split as an index tensor (boolean masks would make every indexing
wait for the device to count them). All are non-persistent buffers of one module: they move
to the device with the LightningModule, once, and never enter a checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.data import Data
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import add_self_loops, remove_self_loops

from .sparse import SparseMatrix

SPARSE_BELOW = 0.1  # features at most this dense are kept in CSR (Cora: 0.0127)
SPLITS = ("train", "val", "test")


class GraphTensors(nn.Module):
    def __init__(self, data: Data, layer: str, sparse_features: bool | None = None):
        super().__init__()
        n = data.num_nodes
        x = data.x.float()
        if sparse_features is None:
            sparse_features = x.numel() > 0 and x.count_nonzero() <= SPARSE_BELOW * x.numel()
        if sparse_features:  # self.x: the features, a SparseMatrix or a dense tensor
            self.x = SparseMatrix.from_dense(x)
        else:
            self.register_buffer("x", x, persistent=False)
        source, target = data.edge_index
        if layer == "gcn":  # D^-1/2 (A + I) D^-1/2, exactly as GCNConv computes it
            (source, target), weight = gcn_norm(data.edge_index, None, n, add_self_loops=True)
            self.adjacency = SparseMatrix(target, source, weight, (n, n))
        elif layer == "sage":  # mean over in-neighbours; none: zeros, as PyG's mean gives
            in_degree = torch.bincount(target, minlength=n).clamp(min=1)
            self.adjacency = SparseMatrix(target, source, 1.0 / in_degree[target].float(),
                                          (n, n))
        elif layer == "gat":  # GATConv's own self loops, added once instead of every call
            edges, _ = add_self_loops(remove_self_loops(data.edge_index)[0], num_nodes=n)
            self.register_buffer("edge_index", edges, persistent=False)
        else:
            raise ValueError(f"layer={layer!r} is not allowed; layer must be gcn, sage or gat")
        self.register_buffer("y", data.y, persistent=False)
        for split in SPLITS:
            index = data[f"{split}_mask"].nonzero().view(-1)
            self.register_buffer(f"{split}_index", index, persistent=False)

    def index(self, split: str) -> torch.Tensor:
        return getattr(self, f"{split}_index")

