"""Config → optimizer and LR schedule, from the `optim`, `clip` and `schedule` groups.

    optim:    {name: adamw, lr: 1e-3, weight_decay: 0.01, ...}   (any optim preset)
              {name: chain, lr: 1e-3, transforms: [{name: scale_by_adam, betas: [0.9, 0.99]},
                                                   {name: scale_by_lr}]}
    clip:     {kind: null} | {kind: global_norm|norm|value|agc, at: grad|update, max_norm: 1.0}
    schedule: {name: null} | {name: warmup_cosine|cyclical|one_cycle|linear|plateau, ...}
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf
from torch.optim import lr_scheduler

import optim

from .errors import ConfigError

TRANSFORMS = {
    name: getattr(optim, name)
    for name in (
        "scale_by_adam", "scale_by_adamax", "scale_by_radam", "scale_by_belief", "scale_by_yogi",
        "scale_by_rms", "trace", "add_decayed_weights", "clip_by_global_norm", "clip_by_norm",
        "clip_by_value", "adaptive_grad_clip", "clip_update_norm", "clip_update_value",
        "skip_nonfinite", "scale_by_lr",
    )
}
CLIP_KINDS = ("global_norm", "norm", "value", "agc")
SCHEDULES = (*optim.schedules.SCHEDULES, "plateau")


def _plain(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def build_optimizer(params, optim_cfg, clip_cfg=None) -> optim.ChainOptimizer:
    """The optimizer a config asks for; errors name the config key."""
    hp = _plain(optim_cfg)
    name = hp.pop("name", None)
    clip = _plain(clip_cfg) if clip_cfg is not None else {}
    try:
        if name == "chain":
            return _build_chain(params, hp)
        if clip.get("kind"):
            hp.update(clip=clip.get("max_norm", clip.get("value")), clip_kind=clip["kind"],
                      clip_at=clip.get("at", "grad"))
        if "betas" in hp:
            hp["betas"] = tuple(hp["betas"])
        return optim.create(name, params, **hp)
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError.under("optim", error) from None


def _build_chain(params, hp: dict) -> optim.ChainOptimizer:
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
    opt = build_optimizer(module.parameters(), cfg.optim, cfg.get("clip"))
    sched = build_scheduler(opt, cfg.get("schedule"), total_steps)
    return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}
