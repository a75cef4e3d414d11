"""Param groups from a module: no weight decay by a mask, lr per module.

    groups = optim.param_groups(model, no_decay=["bias", "norm"], module_lr={"head": 1e-2})

``no_decay`` takes the usual exclusions (timm's ``param_groups_weight_decay``, optax's
``masked``): ``bias`` (every parameter whose name ends in "bias"), ``norm`` (the
parameters of normalisation layers: any module whose class name contains "Norm", such
as BatchNorm, LayerNorm, GroupNorm, RMSNorm and PyG's norms), ``embedding`` (nn.Embedding
and nn.EmbeddingBag weights). ``module_lr`` maps a module name (a prefix of parameter
names, "encoder" for "encoder.*") to its lr; the longest matching prefix wins.
Parameters keep their names (``param_names`` in each group), so errors can name them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import nn

from . import checks

NO_DECAY = ("bias", "norm", "embedding")


def check(no_decay: Iterable[str] | None, module_lr: Mapping[str, float] | None) -> None:
    """The values alone, before any module is built (config validation)."""
    for entry in no_decay or ():
        checks.choice("no_decay entry", entry, NO_DECAY)
    for prefix, lr in (module_lr or {}).items():
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"module_lr key {prefix!r} is invalid: expected a module name")
        checks.non_negative(f"module_lr[{prefix!r}]", lr)


def param_groups(model: nn.Module, no_decay: Iterable[str] | None = None,
                 module_lr: Mapping[str, float] | None = None) -> list[dict]:
    """The parameters of ``model`` in groups: one per (lr, decayed or not)
    present, each with ``param_names``; decayed groups leave weight_decay to the
    optimizer's default, the others set it to 0."""
    no_decay, module_lr = list(no_decay or ()), dict(module_lr or {})
    check(no_decay, module_lr)
    excluded = _excluded(model, no_decay)
    used = set()
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():  # frozen ones too, as model.parameters()
        prefix = _longest_prefix(name, module_lr)
        used.add(prefix)
        key = (prefix, id(p) in excluded)
        group = groups.setdefault(key, {"params": []})
        group["params"].append((name, p))
        if prefix is not None:
            group["lr"] = module_lr[prefix]
        if id(p) in excluded:
            group["weight_decay"] = 0.0
    unmatched = sorted(set(module_lr) - used)
    if unmatched:
        modules = sorted({n.rsplit(".", 1)[0] for n, _ in model.named_parameters() if "." in n})
        raise ValueError(f"module_lr names {unmatched}, which match no parameter: expected "
                         f"module names such as {modules[:8]}")
    return list(groups.values())


def _excluded(model: nn.Module, no_decay: list[str]) -> set[int]:
    out = set()
    for module in model.modules():
        kind = type(module).__name__
        own = [p for _, p in module.named_parameters(recurse=False)]
        if ("norm" in no_decay and "Norm" in kind) or (
                "embedding" in no_decay and isinstance(module, (nn.Embedding, nn.EmbeddingBag))):
            out.update(id(p) for p in own)
    if "bias" in no_decay:
        out.update(id(p) for n, p in model.named_parameters() if n.endswith("bias"))
    return out


def _longest_prefix(name: str, prefixes: Mapping[str, float]) -> str | None:
    matches = [k for k in prefixes if name == k or name.startswith(k + ".")]
    return max(matches, key=len) if matches else None
