"""The GNN pipeline's own behaviour: first-layer weight decay, the literature presets, what
stays out of checkpoints, and the CUDA path (skipped without a device)."""

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from data.graphs import dcsbm
from data.graphs.planetoid import DEFAULT_RAW_DIR
from pipelines.gnn.graph import GraphTensors
from pipelines.gnn.pipeline import GNNPipeline
from pipelines.gnn.sparse import SparseMatrix
from pipelines.harness.errors import ConfigError
from pipelines.harness.optimizers import build_optimizer
from pipelines.train import CONFIGS, run

TINY = ["data.num_nodes=300", "data.feature_dim=8", "trainer.enable_progress_bar=false",
        "logger=csv", "telemetry_every=0"]


def config(*overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def test_first_layer_decay_matches_pyg_recipe_groups():
    """``weight_decay_on: first_layer`` steps as PyG's examples/gcn.py optimizer does: Adam
    with weight decay on conv1's parameters and none on conv2's."""
    cfg = config("pipeline=gnn", "model=gcn", "optim.lr=0.01", "optim.weight_decay=0.5", *TINY)
    module, _ = GNNPipeline().build(cfg)
    conv1, conv2 = module.model.convs
    ours = build_optimizer(module.first_layer_groups(), cfg.optim)
    twins = {p: p.detach().clone().requires_grad_() for p in module.parameters()}
    reference = torch.optim.Adam(
        [{"params": [twins[p] for p in conv1.parameters()], "weight_decay": 0.5},
         {"params": [twins[p] for p in conv2.parameters()], "weight_decay": 0.0}], lr=0.01)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        for p, twin in twins.items():
            p.grad = torch.randn(p.shape, generator=g)
            twin.grad = p.grad.clone()
        ours.step()
        reference.step()
    for p, twin in twins.items():
        torch.testing.assert_close(p, twin)
    fresh = build_optimizer(module.first_layer_groups(), cfg.optim)
    before = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    for p in module.parameters():
        p.grad = torch.zeros_like(p)
    fresh.step()  # zero gradients, fresh moments: only the decay moves anything
    moved = {n for n, p in module.model.named_parameters() if not torch.equal(before[n], p)}
    assert moved == {"convs.0.lin.weight", "convs.0.bias"}


PRESETS = {  # experiment: dataset, model, lr, weight decay, decayed, heads/output heads
    "gcn_cora": ("Cora", "gcn", 0.01, 5e-4, "first_layer", None),
    "gcn_citeseer": ("CiteSeer", "gcn", 0.01, 5e-4, "first_layer", None),
    "gcn_pubmed": ("PubMed", "gcn", 0.01, 5e-4, "first_layer", None),
    "gat_cora": ("Cora", "gat", 0.005, 5e-4, "all", (8, 1)),
    "gat_citeseer": ("CiteSeer", "gat", 0.005, 5e-4, "all", (8, 1)),
    "gat_pubmed": ("PubMed", "gat", 0.01, 1e-3, "all", (8, 8)),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_carry_the_papers_settings(name):
    dataset, model, lr, decay, decayed, heads = PRESETS[name]
    cfg = config(f"experiment={name}")
    assert (cfg.data.dataset, cfg.model.name, cfg.optim.name) == (dataset, model, "adam")
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.model.weight_decay_on) == (lr, decay, decayed)
    assert cfg.trainer.max_epochs == 200 and cfg.model.num_layers == 2
    if model == "gcn":
        assert (cfg.model.hidden, cfg.model.dropout) == (16, 0.5)
    else:
        assert (cfg.model.hidden, cfg.model.dropout) == (8, 0.6)
        assert (cfg.model.heads, cfg.model.output_heads) == heads
    source = (Path(CONFIGS) / "experiment" / f"{name}.yaml").read_text()
    assert ("Kipf & Welling" if model == "gcn" else "Velickovic et al.") in source


@pytest.mark.parametrize("name", ["gcn_citeseer", "gat_pubmed"])
def test_missing_planetoid_files_fail_before_any_work(name, tmp_path):
    cfg = config(f"experiment={name}", "data.raw_dir=/nonexistent", "data.download=false",
                 f"data.root={tmp_path / 'cache'}")
    with pytest.raises(ConfigError, match=cfg.data.dataset):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "config.yaml").exists()


@pytest.mark.parametrize("overrides,match", [
    (["model.weight_decay_on=middle"], "model.weight_decay_on='middle'"),
    (["model=gat", "model.output_heads=0"], "model.output_heads=0"),
    (["model=gat", "model.heads=true"], "model.heads=True"),
    (["optim=adamw", "+optim.no_decay=[bias]"], r"optim.no_decay=\['bias'\]"),
])
def test_bad_model_settings_fail_before_any_work(overrides, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        run(config("pipeline=gnn", *overrides, *TINY), tmp_path)


def test_graph_stays_out_of_checkpoints(tmp_path):
    run(config("pipeline=gnn", "trainer.max_epochs=2", *TINY), tmp_path)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["state_dict"] and not any(k.startswith("graph.") for k in ckpt["state_dict"])
    assert all(k.startswith("model.") for k in ckpt["state_dict"])


def test_one_csv_row_per_epoch_with_every_metric(tmp_path):
    run(config("pipeline=gnn", "trainer.max_epochs=3", *TINY), tmp_path)
    lines = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]
    rows = [r for r in rows if r["val_acc"]]
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert [int(r["step"]) for r in rows] == [0, 1, 2]
    keys = ("train_loss", "train_acc", "val_loss", "test_loss", "test_acc", "lr")
    assert all(r[k] for r in rows for k in keys)
    summary = json.loads((tmp_path / "summary.json").read_text())["metrics"]
    best = max(rows, key=lambda r: (float(r["val_acc"]), -float(r["val_loss"])))
    assert summary["test_acc"] == pytest.approx(float(best["test_acc"]))


def test_sparse_features_only_when_mostly_zeros():
    data = dcsbm(num_nodes=200, feature_dim=20, seed=0)
    assert isinstance(GraphTensors(data, "gcn").x, torch.Tensor)  # Gaussian: dense
    data.x = data.x * (torch.rand(data.x.shape) < 0.05)
    assert isinstance(GraphTensors(data, "gcn").x, SparseMatrix)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_run_keeps_the_graph_on_the_device(tmp_path):
    """bf16-mixed on CUDA: the graph's buffers on the device, finite metrics, and the CSR
    products equal to their CPU results."""
    metrics = run(config("pipeline=gnn", "trainer=gpu", "trainer.max_epochs=3", *TINY), tmp_path)
    assert 0 <= metrics["test_acc"] <= 1
    data = dcsbm(num_nodes=200, feature_dim=20, seed=0)
    data.x = data.x * (torch.rand(data.x.shape) < 0.05)
    graph = GraphTensors(data, "gcn")
    dense = torch.randn(20, 4)
    expected = graph.x.matmul(dense)
    graph = graph.to("cuda")
    assert all(b.is_cuda for b in graph.buffers())
    torch.testing.assert_close(graph.x.matmul(dense.cuda()).cpu(), expected)


@pytest.mark.parametrize("model,lr", [("gcn", 0.01), ("gat", 0.005)])
def test_adam_takes_the_models_settings_and_other_optimizers_keep_theirs(model, lr):
    adam = config("pipeline=gnn", f"model={model}").optim
    assert (adam.name, adam.lr, adam.weight_decay) == ("adam", lr, 5e-4)
    adamw = config("pipeline=gnn", f"model={model}", "optim=adamw").optim
    assert (adamw.lr, adamw.weight_decay) == (1e-3, 1e-2)
    assert config("pipeline=gnn", f"model={model}", "optim.lr=0.1").optim.lr == 0.1
    assert config("pipeline=rl").optim.lr == 1e-3  # no GNN model: Adam's own default


@pytest.mark.slow
@pytest.mark.skipif(not (DEFAULT_RAW_DIR / "Cora" / "raw" / "ind.cora.x").is_file(),
                    reason=f"Cora raw files not in {DEFAULT_RAW_DIR}")
def test_default_cora_command_reaches_the_papers_accuracy(tmp_path):
    """`adamlab train pipeline=gnn data=cora model=gcn`, no optimizer override: mean test
    accuracy over 3 seeds at least 0.80 (issue 18; Kipf & Welling report 0.815)."""
    common = (*TINY[2:], "data.download=false", f"data.root={tmp_path / 'cache'}")
    accs = [run(config("pipeline=gnn", "data=cora", "model=gcn", f"seed={s}", *common),
                tmp_path / str(s))["test_acc"] for s in range(3)]
    assert sum(accs) / 3 >= 0.80, accs


def test_validate_alone_scores_a_trained_module(tmp_path):
    """``trainer.validate`` on a trained module (as an evaluation would): the validation and
    test metrics of its weights, no training metrics."""
    import lightning as L

    cfg = config("pipeline=gnn", "trainer.max_epochs=3", *TINY)
    run(cfg, tmp_path / "run")
    module, dm = GNNPipeline().build(cfg)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    module.load_state_dict(ckpt["state_dict"])
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    (scores,) = trainer.validate(module, datamodule=dm, verbose=False)
    assert set(scores) == {"val_loss", "val_acc", "test_loss", "test_acc"}
    assert 0 <= scores["test_acc"] <= 1 and module.best["test_acc"] == scores["test_acc"]
