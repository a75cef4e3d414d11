"""Graph data layer: DC-SBM generator, Planetoid loader, degree metrics, DataModule."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torch_geometric.io.fs
from torch_geometric.nn import GCNConv

from data.graphs import (
    GraphDataModule,
    dcsbm,
    fit_power_law_exponent,
    load_planetoid,
)
from data.graphs.planetoid import DEFAULT_RAW_DIR, RAW_DIR_ENV

# ---------------------------------------------------------------- DC-SBM


@pytest.fixture(scope="module")
def graph():
    return dcsbm()  # defaults: 10^4 nodes, 5 classes, avg degree 10, exponent 2.5


def test_defaults_are_heavy_tailed(graph):
    degree = graph.degree.numpy()
    assert degree.max() / np.median(degree) >= 20
    # k_min = avg degree: above the Poisson bend of the Chung-Lu degree law
    assert fit_power_law_exponent(degree, k_min=10) == pytest.approx(2.5, abs=0.3)


@pytest.mark.parametrize("exponent", [2.2, 3.0])
def test_exponent_knob_moves_the_tail(exponent):
    degree = dcsbm(num_nodes=5000, exponent=exponent, feature_dim=1).degree
    assert fit_power_law_exponent(degree, k_min=10) == pytest.approx(exponent, abs=0.3)


def test_graph_is_simple_undirected_and_consistent(graph):
    n = graph.num_nodes
    row, col = graph.edge_index
    assert n == 10_000 and graph.edge_index.dtype == torch.long
    assert not bool((row == col).any())
    keys = row * n + col
    assert len(torch.unique(keys)) == len(keys)  # no duplicates
    assert torch.equal(torch.sort(keys).values, torch.sort(col * n + row).values)  # symmetric
    assert graph.degree.dtype == torch.long
    assert torch.equal(graph.degree, torch.bincount(row, minlength=n))
    assert graph.edge_index.shape[1] == 10 * n  # avg_degree 10 reached exactly
    assert graph.x.dtype == torch.float32 and graph.x.shape == (n, 64)
    assert graph.y.dtype == torch.long and set(graph.y.tolist()) == set(range(5))


@pytest.mark.parametrize("homophily", [0.0, 0.3, 1.0])
def test_homophily_is_the_same_class_edge_fraction(homophily):
    g = dcsbm(num_nodes=2000, homophily=homophily, feature_dim=1)
    row, col = g.edge_index
    assert float((g.y[row] == g.y[col]).float().mean()) == pytest.approx(homophily, abs=1e-3)


def test_same_seed_same_graph_other_seed_other_graph():
    a, b, c = (dcsbm(num_nodes=1000, feature_dim=8, seed=s) for s in (3, 3, 4))
    for key in ("x", "y", "edge_index", "degree", "train_mask", "val_mask", "test_mask"):
        assert torch.equal(a[key], b[key])
    assert a.edge_index.shape != c.edge_index.shape or not torch.equal(a.edge_index, c.edge_index)
    assert not torch.equal(a.x, c.x)


def test_splits_are_disjoint_and_stratified():
    g = dcsbm(num_nodes=1003, num_classes=5, split=(0.5, 0.3, 0.2), feature_dim=1)
    masks = torch.stack([g.train_mask, g.val_mask, g.test_mask])
    assert masks.dtype == torch.bool and torch.equal(masks.sum(0), torch.ones(1003).long())
    per_class = torch.bincount(g.y, minlength=5).double()
    for mask, fraction in zip(masks, (0.5, 0.3, 0.2), strict=True):
        counts = torch.bincount(g.y[mask], minlength=5).double()
        assert torch.all((counts - fraction * per_class).abs() <= 1.0)


def test_snr_sets_the_class_mean_energy():
    def mean_energy(snr):
        g = dcsbm(num_nodes=4000, feature_dim=32, snr=snr, seed=1)
        means = torch.stack([g.x[g.y == c].mean(0) for c in range(5)])
        return float((means**2).sum(1).mean())

    assert mean_energy(0.0) < 0.1  # only the sampling error of the mean, 32 / 800
    assert mean_energy(4.0) == pytest.approx(4.0, rel=0.35)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_nodes": 3}, "num_nodes"),
        ({"num_classes": 1}, "num_classes"),
        ({"avg_degree": 0}, "avg_degree"),
        ({"exponent": 2.0}, "exponent"),
        ({"homophily": 1.5}, "homophily"),
        ({"homophily": -0.1}, "homophily"),
        ({"feature_dim": 0}, "feature_dim"),
        ({"snr": -1.0}, "snr"),
        ({"split": (0.6, 0.2, 0.1)}, "split"),
        ({"split": (0.8, 0.2)}, "split"),
        ({"split": (1.2, -0.2, 0.0)}, "split"),
    ],
)
def test_bad_arguments_name_argument_and_value(kwargs, name):
    value = repr(next(iter(kwargs.values())))
    # a billion nodes would take minutes: the check must come before any sampling
    args = {"num_nodes": 10**9, **kwargs}
    with pytest.raises(ValueError, match=rf"{name}={re.escape(value)}.*must be"):
        dcsbm(**args)


# ---------------------------------------------------------------- power-law fit


def test_power_law_fit_by_hand_and_on_zipf_samples():
    expected = 1 + 2 / (math.log(10 / 9.5) + math.log(20 / 9.5))
    assert fit_power_law_exponent([3, 10, 20], k_min=10) == pytest.approx(expected)
    zipf = np.random.default_rng(0).zipf(2.5, size=200_000)
    assert fit_power_law_exponent(zipf, k_min=6) == pytest.approx(2.5, abs=0.05)
    with pytest.raises(ValueError, match="k_min"):
        fit_power_law_exponent([1, 2], k_min=5)


# degree buckets and degree-bias metrics: tests/test_degree.py


# ---------------------------------------------------------------- Planetoid

needs_cora = pytest.mark.skipif(
    not (DEFAULT_RAW_DIR / "Cora" / "raw" / "ind.cora.x").is_file(),
    reason=f"Cora raw files not in {DEFAULT_RAW_DIR}",
)


@pytest.fixture(scope="module")
def cora_root(tmp_path_factory):
    return tmp_path_factory.mktemp("planetoid")


@needs_cora
def test_cora_offline_from_shared_raw_files(cora_root):
    data = load_planetoid("cora", root=cora_root, raw_dir=DEFAULT_RAW_DIR, download=False)
    assert (data.num_nodes, data.num_edges, data.num_features) == (2708, 10556, 1433)
    assert int(data.y.max()) + 1 == 7
    counts = [int(m.sum()) for m in (data.train_mask, data.val_mask, data.test_mask)]
    assert counts == [140, 500, 1000]
    assert data.degree.dtype == torch.long and int(data.degree.sum()) == 10556
    assert (cora_root / "Cora" / "raw" / "ind.cora.graph").is_file()


@needs_cora
def test_cora_cached_root_needs_no_raw_dir(cora_root, tmp_path):
    load_planetoid("Cora", root=cora_root, raw_dir=DEFAULT_RAW_DIR, download=False)
    data = load_planetoid("Cora", root=cora_root, raw_dir=tmp_path / "none", download=False)
    assert data.num_nodes == 2708


def test_missing_raw_files_fail_fast_with_the_paths(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    monkeypatch.setenv(RAW_DIR_ENV, str(missing))
    with pytest.raises(FileNotFoundError) as err:
        load_planetoid("CiteSeer", root=tmp_path / "cache", download=False)
    message = str(err.value)
    assert "CiteSeer" in message and str(missing) in message and "raw_dir" in message


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("Cannot connect to host github.com:443")

    monkeypatch.setattr(torch_geometric.io.fs, "cp", no_network)
    with pytest.raises(RuntimeError, match="(?s)PubMed.*raw_dir.*Download failed"):
        load_planetoid("PubMed", root=tmp_path, raw_dir=tmp_path / "none", download=True)


def test_unknown_planetoid_name_lists_the_choices(tmp_path):
    with pytest.raises(ValueError, match="Cora, CiteSeer, PubMed"):
        load_planetoid("Reddit", root=tmp_path)


# ---------------------------------------------------------------- DataModule


def test_datamodule_yields_the_one_graph_each_epoch():
    dm = GraphDataModule("synthetic", num_nodes=300, num_classes=3, feature_dim=16, seed=1)
    dm.setup("fit")
    graph = dm.data
    dm.setup("test")
    assert dm.data is graph  # built once
    assert (dm.num_features, dm.num_classes) == (16, 3)
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        batches = list(loader)
        assert len(batches) == 1 and batches[0] is graph


def test_datamodule_rejects_bad_source_and_kwargs_at_construction():
    with pytest.raises(ValueError, match="source='ogb'"):
        GraphDataModule("ogb")
    with pytest.raises(TypeError):
        GraphDataModule("synthetic", num_nodez=10)
    with pytest.raises(TypeError):
        GraphDataModule("planetoid", num_nodes=10)


@needs_cora
def test_datamodule_planetoid(cora_root):
    dm = GraphDataModule("planetoid", name="Cora", root=cora_root, raw_dir=DEFAULT_RAW_DIR)
    dm.prepare_data()
    dm.setup()
    assert (dm.num_features, dm.num_classes) == (1433, 7)


class _TinyGCN(L.LightningModule):
    def __init__(self, num_features, num_classes):
        super().__init__()
        self.conv = GCNConv(num_features, num_classes)

    def _loss(self, batch, mask):
        out = self.conv(batch.x, batch.edge_index)
        return F.cross_entropy(out[mask], batch.y[mask])

    def training_step(self, batch, _):
        return self._loss(batch, batch.train_mask)

    def validation_step(self, batch, _):
        self.log("val_loss", self._loss(batch, batch.val_mask), batch_size=1)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)


def test_datamodule_drives_a_lightning_fit():
    dm = GraphDataModule("synthetic", num_nodes=400, num_classes=3, feature_dim=8, seed=0)
    model = _TinyGCN(dm.num_features, dm.num_classes)
    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 3  # one full-batch step per epoch


def test_data_never_imports_pipelines():
    for path in (Path(__file__).parents[1] / "data" / "graphs").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.split(".")[0] == "pipelines" for n in names), path
