"""The GNN layers against PyG's own, and the sparse products against dense torch."""

import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.nn import GATConv, GCNConv, SAGEConv
from torch_geometric.utils import to_undirected

from pipelines.gnn.graph import GraphTensors
from pipelines.gnn.models import GATLayer, GCNLayer, NodeClassifier, SAGELayer
from pipelines.gnn.sparse import SparseMatrix, dropout


def random_graph(n=40, d=12, edges=150, directed=False, seed=0, density=0.2):
    g = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, n, (2, edges), generator=g)
    edge_index = edge_index[:, edge_index[0] != edge_index[1]]
    if not directed:
        edge_index = to_undirected(edge_index, num_nodes=n)
    x = torch.randn(n, d, generator=g) * (torch.rand(n, d, generator=g) < density)
    y = torch.randint(0, 3, (n,), generator=g)
    masks = torch.rand(n, generator=g)
    return Data(x=x, edge_index=edge_index, y=y, train_mask=masks < 0.5,
                val_mask=(masks >= 0.5) & (masks < 0.75), test_mask=masks >= 0.75)


def grads(outputs, *tensors):
    return torch.autograd.grad(outputs.square().sum(), tensors)


@pytest.mark.parametrize("directed", [False, True])
def test_gcn_layer_equals_pyg_gcnconv(directed):
    data = random_graph(directed=directed)
    graph = GraphTensors(data, "gcn", sparse_features=False)
    assert graph.adjacency.symmetric is not directed
    ours, theirs = GCNLayer(12, 5), GCNConv(12, 5, cached=True)
    with torch.no_grad():
        ours.lin.weight.copy_(theirs.lin.weight)
        ours.bias.copy_(torch.randn(5))
        theirs.bias.copy_(ours.bias)
    x = data.x.clone().requires_grad_()
    a = ours(x @ ours.weight.t(), graph)
    b = theirs(x, data.edge_index)
    torch.testing.assert_close(a, b)
    for ga, gb in zip(grads(a, x, ours.lin.weight, ours.bias),
                      grads(b, x, theirs.lin.weight, theirs.bias), strict=True):
        torch.testing.assert_close(ga, gb)


@pytest.mark.parametrize("directed", [False, True])
def test_sage_layer_equals_pyg_sageconv(directed):
    data = random_graph(directed=directed)
    data.edge_index = data.edge_index[:, data.edge_index[1] != 0]  # node 0: no in-neighbours
    graph = GraphTensors(data, "sage", sparse_features=False)
    ours, theirs = SAGELayer(12, 5), SAGEConv(12, 5)
    ours.load_state_dict(theirs.state_dict(), strict=False)
    assert {n for n, _ in ours.named_parameters()} == {n for n, _ in theirs.named_parameters()}
    x = data.x.clone().requires_grad_()
    a, b = ours(x @ ours.weight.t(), graph), theirs(x, data.edge_index)
    torch.testing.assert_close(a, b)
    for ga, gb in zip(grads(a, x, ours.lin_l.weight, ours.lin_r.weight),
                      grads(b, x, theirs.lin_l.weight, theirs.lin_r.weight), strict=True):
        torch.testing.assert_close(ga, gb)


@pytest.mark.parametrize("heads,concat", [(4, True), (3, False)])
def test_gat_layer_equals_pyg_gatconv(heads, concat):
    data = random_graph()
    graph = GraphTensors(data, "gat", sparse_features=False)
    ours = GATLayer(12, 5, heads, concat=concat, dropout=0.0)
    theirs = GATConv(12, 5, heads=heads, concat=concat)
    with torch.no_grad():
        ours.lin.weight.copy_(theirs.lin.weight)
        for name in ("att_src", "att_dst", "bias"):
            getattr(ours.conv, name).copy_(getattr(theirs, name))
    x = data.x.clone().requires_grad_()
    a, b = ours(x @ ours.weight.t(), graph), theirs(x, data.edge_index)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(grads(a, x)[0], grads(b, x)[0])


@pytest.mark.parametrize("name", ["gcn", "sage", "gat"])
@pytest.mark.parametrize("embedding", [None, "concat"])
def test_sparse_features_give_the_dense_model(name, embedding):
    """Same weights, same dropout draws: the CSR path of the first layer computes what the
    dense path computes, forward and backward (dropout off: the draws differ in number)."""
    data = random_graph()
    dense, sparse = (GraphTensors(data, name, sparse_features=s) for s in (False, True))
    assert isinstance(sparse.x, SparseMatrix) and isinstance(dense.x, torch.Tensor)
    torch.manual_seed(0)
    model = NodeClassifier(name, 12, 3, data.num_nodes, hidden=8, heads=2, dropout=0.0,
                           embedding=embedding, embedding_dim=4)
    a, b = model(dense), model(sparse)
    torch.testing.assert_close(a, b)
    params = list(model.parameters())
    for ga, gb in zip(grads(a, *params), grads(b, *params), strict=True):
        torch.testing.assert_close(ga, gb)


@pytest.mark.parametrize("name,pyg", [("gcn", GCNConv), ("sage", SAGEConv)])
def test_parameter_count_equals_pyg(name, pyg):
    model = NodeClassifier(name, 30, 4, 10, hidden=16)
    reference = [pyg(30, 16), pyg(16, 4)]
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for m in reference for p in m.parameters())


def test_gat_parameter_count_equals_pyg():
    model = NodeClassifier("gat", 30, 4, 10, hidden=8, heads=8, output_heads=2)
    reference = [GATConv(30, 8, heads=8), GATConv(64, 4, heads=2, concat=False)]
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for m in reference for p in m.parameters())


@pytest.mark.parametrize("square", [True, False])
def test_sparse_matrix_product_and_gradient_equal_dense(square):
    g = torch.Generator().manual_seed(1)
    shape = (30, 30) if square else (30, 50)
    a = torch.randn(*shape, generator=g) * (torch.rand(*shape, generator=g) < 0.15)
    matrix = SparseMatrix.from_dense(a)
    assert not matrix.symmetric and matrix.nnz == int((a != 0).sum())
    b = torch.randn(shape[1], 7, generator=g, requires_grad=True)
    values = matrix.values * 2
    out = matrix.matmul(b, values)
    torch.testing.assert_close(out, (2 * a) @ b)
    torch.testing.assert_close(grads(out, b)[0], grads((2 * a) @ b, b)[0])


def test_symmetric_matrix_shares_its_pattern():
    a = torch.tensor([[0.0, 2.0, 0.0], [2.0, 1.0, 3.0], [0.0, 3.0, 0.0]])
    matrix = SparseMatrix.from_dense(a)
    assert matrix.symmetric and not hasattr(matrix, "t_crow")
    b = torch.randn(3, 2, requires_grad=True)
    torch.testing.assert_close(grads(matrix.matmul(b), b)[0], grads(a @ b, b)[0])


def test_matrix_values_take_no_gradient():
    matrix = SparseMatrix.from_dense(torch.eye(3))
    with pytest.raises(ValueError, match="no gradient"):
        matrix.matmul(torch.ones(3, 1), matrix.values.clone().requires_grad_())


def test_dropout_has_the_law_of_dense_dropout():
    """Each entry kept with probability 1 - p, scaled by 1 / (1 - p): mean preserved, the
    kept fraction within 4 binomial standard deviations, zeros stay zero."""
    torch.manual_seed(0)
    x = torch.rand(200_000) + 0.5
    x[::10] = 0
    p = 0.3
    out = dropout(x, p, training=True)
    kept = out[x != 0] != 0
    n = kept.numel()
    assert abs(kept.float().mean().item() - (1 - p)) < 4 * ((p * (1 - p) / n) ** 0.5)
    torch.testing.assert_close(out[x != 0][kept], x[x != 0][kept] / (1 - p))
    assert (out[x == 0] == 0).all()
    assert dropout(x, p, training=False) is x
    assert out.mean().item() == pytest.approx(x.mean().item(), rel=0.01)


def test_sparse_dropout_draws_on_non_zeros_only():
    data = random_graph(density=0.1)
    graph = GraphTensors(data, "gcn", sparse_features=True)
    torch.manual_seed(0)
    values = graph.x.dropout(0.5, training=True)
    assert values.shape == graph.x.values.shape
    kept = values != 0
    torch.testing.assert_close(values[kept], 2 * graph.x.values[kept])


def test_graph_tensors_are_buffers_outside_the_state_dict():
    data = random_graph()
    graph = GraphTensors(data, "gcn")
    assert graph.state_dict() == {}
    assert torch.equal(graph.train_index, data.train_mask.nonzero().view(-1))
    with pytest.raises(ValueError, match="layer='gin'"):
        GraphTensors(data, "gin")

