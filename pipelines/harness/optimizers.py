"""Config → optimizer and LR schedule, from the `optim`, `clip` and `schedule` groups.

    optim:    {name: adamw, lr: 1e-3, weight_decay: 0.01, ...}   (any optim preset)
              {name: chain, lr: 1e-3, transforms: [{name: scale_by_adam, betas: [0.9, 0.99]},
                                                   {name: scale_by_lr}]}
              no_decay: [bias, norm, embedding]  (no weight decay on those parameters)
              module_lr: {model.embedding: 1e-2}  (lr per module; nested keys are joined by ".")
    clip:     {kind: null} | {kind: global_norm|norm|value|agc, at: grad|update, max_norm: 1.0}
    schedule: {name: null} | {name: warmup_cosine|cyclical|one_cycle|linear|plateau, ...}
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim import lr_scheduler

import optim

from .errors import ConfigError

TRANSFORMS = {
    name: getattr(optim, name)
    for name in (
        "scale_by_adam", "scale_by_adamax", "scale_by_radam", "scale_by_belief", "scale_by_yogi",
        "scale_by_rms", "trace", "add_decayed_weights", "clip_by_global_norm", "clip_by_norm",
        "clip_by_value", "adaptive_grad_clip", "clip_update_norm", "clip_update_value",
        "skip_nonfinite", "scale_by_lr", "scale_by_adopt", "scale_by_lion",
        "scale_by_sparse_adam",
    )
}
CLIP_KINDS = ("global_norm", "norm", "value", "agc")
SCHEDULES = (*optim.schedules.SCHEDULES, "plateau")


def _plain(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def build_optimizer(params, optim_cfg, clip_cfg=None) -> optim.ChainOptimizer:
    """The optimizer a config asks for; errors name the config key. ``params`` is the
    module (its names drive ``no_decay`` and ``module_lr``) or, to check a config before
    any model exists, a list of parameters (the masks are then checked, not applied)."""
    hp = _plain(optim_cfg)
    name = hp.pop("name", None)
    clip = _plain(clip_cfg) if clip_cfg is not None else {}
    if "module_lr" in hp:
        hp["module_lr"] = _dotted(hp["module_lr"] or {})
    try:
        if not isinstance(params, nn.Module):
            optim.groups.check(hp.pop("no_decay", None), hp.pop("module_lr", None))
        if name == "chain":
            return _build_chain(params, hp)
        if clip.get("kind"):
            hp.update(clip=clip.get("max_norm", clip.get("value")), clip_kind=clip["kind"],
                      clip_at=clip.get("at", "grad"))
            if clip.get("scope") is not None:
                hp["clip_scope"] = clip["scope"]
        if "betas" in hp:
            hp["betas"] = tuple(hp["betas"])
        return optim.create(name, params, **hp)
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError.under("optim", error) from None


def _dotted(mapping, prefix: str = "") -> dict:
    """{model: {embedding: 0.01}} (how Hydra nests a dotted key) -> {model.embedding: 0.01}."""
    out = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        out.update(_dotted(value, name + ".") if isinstance(value, dict) else {name: value})
    return out


def _build_chain(params, hp: dict) -> optim.ChainOptimizer:
    no_decay, module_lr = hp.pop("no_decay", None), hp.pop("module_lr", None)
    if isinstance(params, nn.Module):
        params = optim.param_groups(params, no_decay, module_lr)
    transforms = []
    for i, spec in enumerate(hp.pop("transforms", None) or []):
        spec = dict(spec)
        kind = spec.pop("name", None)
        if kind not in TRANSFORMS:
            raise ConfigError(f"optim.transforms[{i}].name", kind,
                              "one of " + ", ".join(sorted(TRANSFORMS)))
        if "betas" in spec:
            spec["betas"] = tuple(spec["betas"])
        transforms.append(TRANSFORMS[kind](**spec))
    if not transforms:
        raise ConfigError("optim.transforms", [], "a non-empty list of transforms")
    return optim.chain(params, *transforms, **hp)


def build_scheduler(opt, schedule_cfg, total_steps: int) -> dict | None:
    """A Lightning ``lr_scheduler`` dict, stepped every optimizer step (plateau: every epoch,
    on ``monitor``)."""
    spec = _plain(schedule_cfg) if schedule_cfg is not None else {}
    name = spec.pop("name", None)
    if name is None:
        return None
    if name not in SCHEDULES:
        raise ConfigError("schedule.name", name, "one of " + ", ".join(SCHEDULES))
    if name == "plateau":
        monitor = spec.pop("monitor", "val_loss")
        return {"scheduler": lr_scheduler.ReduceLROnPlateau(opt, **spec), "monitor": monitor,
                "interval": "epoch"}
    for key in ("total_steps",):
        if name in ("warmup_cosine", "one_cycle", "linear") and spec.get(key) is None:
            spec[key] = total_steps
    try:
        return {"scheduler": optim.schedules.create(name, opt, **spec), "interval": "step"}
    except (TypeError, ValueError) as error:
        raise ConfigError.under("schedule", error) from None


def configure_optimizers(module, cfg, total_steps: int):
    """What a LightningModule's ``configure_optimizers`` returns for ``cfg``."""
    opt = build_optimizer(module, cfg.optim, cfg.get("clip"))
    sched = build_scheduler(opt, cfg.get("schedule"), total_steps)
    return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}
