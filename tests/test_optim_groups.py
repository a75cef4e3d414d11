"""Param groups from a module: no weight decay by a mask (timm's param_groups_weight_decay,
optax's masked) and lr per module, from create() and from the config."""

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import optim
from pipelines.harness.errors import ConfigError
from pipelines.harness.optimizers import build_optimizer


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(10, 4)
        self.encoder = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 8))
        self.head = nn.Linear(8, 2)
        self.bn = nn.BatchNorm1d(2)


def names(group) -> set:
    return {name for name, _ in group["params"]}


def test_no_decay_masks_bias_norm_and_embedding():
    groups = optim.param_groups(Net(), no_decay=["bias", "norm", "embedding"])
    decayed, plain = sorted(groups, key=lambda g: "weight_decay" in g)
    assert "weight_decay" not in decayed and plain["weight_decay"] == 0.0
    assert names(decayed) == {"encoder.0.weight", "encoder.2.weight", "head.weight"}
    assert names(plain) == {"embedding.weight", "encoder.0.bias", "encoder.1.weight",
                            "encoder.1.bias", "encoder.2.bias", "head.bias", "bn.weight",
                            "bn.bias"}
    only_bias = optim.param_groups(Net(), no_decay=["bias"])
    assert "embedding.weight" in names(only_bias[0]) and "bn.weight" in names(only_bias[0])


def test_adamw_on_a_module_decays_only_what_the_mask_leaves():
    torch.manual_seed(0)
    net = Net()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = optim.create("adamw", net, lr=0.1, weight_decay=0.5, no_decay=["bias", "norm"])
    for _ in range(3):
        for p in net.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
    for n, p in net.named_parameters():
        masked = n.endswith("bias") or n.startswith(("encoder.1", "bn"))
        expected = before[n] if masked else before[n] * (1 - 0.05) ** 3
        assert torch.allclose(p.detach(), expected), n


def test_module_lr_takes_the_longest_prefix_and_refuses_unknown_names():
    groups = optim.param_groups(Net(), module_lr={"encoder": 1e-4, "encoder.2": 1e-2})
    lrs = {n: g.get("lr") for g in groups for n, _ in g["params"]}
    assert lrs["encoder.0.weight"] == 1e-4 and lrs["encoder.2.bias"] == 1e-2
    assert lrs["head.weight"] is None  # the optimizer's lr
    opt = optim.create("adam", Net(), lr=3e-3, module_lr={"head": 1e-1})
    assert sorted(g["lr"] for g in opt.param_groups) == [3e-3, 1e-1]
    with pytest.raises(ValueError, match=r"module_lr names \['encodr'\], which match no"):
        optim.param_groups(Net(), module_lr={"encodr": 1e-4})
    with pytest.raises(ValueError, match="no_decay entry='norms' is invalid"):
        optim.create("adamw", Net(), no_decay=["norms"])
    with pytest.raises(ValueError, match="need the module"):
        optim.create("adamw", Net().parameters(), no_decay=["bias"])


def test_config_keys_reach_the_optimizer():
    """optim.no_decay and optim.module_lr (Hydra nests a dotted key) from a config; a
    config checked without a model fails on a bad value, naming the key."""
    cfg = OmegaConf.create({"name": "adamw", "lr": 1e-3, "weight_decay": 0.1,
                            "no_decay": ["bias", "norm"],
                            "module_lr": {"encoder": {"2": 1e-2}}, "accumulate": 1})
    opt = build_optimizer(Net(), cfg)
    by_name = {n: g for g in opt.param_groups for n in g["param_names"]}
    assert by_name["encoder.2.weight"]["lr"] == 1e-2
    assert by_name["encoder.2.bias"]["weight_decay"] == 0.0
    assert by_name["head.weight"]["weight_decay"] == 0.1
    build_optimizer([torch.zeros(1, requires_grad=True)], cfg)  # the validation probe
    bad = OmegaConf.merge(cfg, {"no_decay": ["biases"]})
    with pytest.raises(ConfigError, match=r"optim\.no_decay entry='biases' is invalid"):
        build_optimizer([torch.zeros(1, requires_grad=True)], bad)
    chain = OmegaConf.create({"name": "chain", "lr": 1e-3, "no_decay": ["bias"],
                              "transforms": [{"name": "scale_by_adam"},
                                             {"name": "add_decayed_weights",
                                              "weight_decay": 0.1},
                                             {"name": "scale_by_lr"}]})
    assert len(build_optimizer(Net(), chain).param_groups) == 2
