"""adamlab.optim: Adam and its variants as composable gradient transforms.

An optimizer step is a chain of small transforms (clip, moments, decay, lr), and the
questions of the studies are questions of their order. ``chain`` wraps a list of
transforms as a real ``torch.optim.Optimizer``; presets are named chains.

    opt = optim.create("adamw", model, lr=1e-3, clip=1.0, no_decay=["bias", "norm"])
    opt = optim.chain(model.parameters(), optim.clip_by_global_norm(1.0),
                      optim.scale_by_adam(), optim.add_decayed_weights(1e-2),
                      optim.scale_by_lr(), lr=1e-3)
"""

from . import schedules
from .base import StepContext, Transform
from .chain import ChainOptimizer, chain
from .clipping import (
    adaptive_grad_clip,
    clip_by_global_norm,
    clip_by_norm,
    clip_by_value,
    clip_update_norm,
    clip_update_value,
)
from .decay import add_decayed_weights
from .groups import param_groups
from .guards import scale_by_lr, skip_nonfinite
from .moments import (
    scale_by_adam,
    scale_by_adamax,
    scale_by_adopt,
    scale_by_belief,
    scale_by_lion,
    scale_by_radam,
    scale_by_rms,
    scale_by_yogi,
    trace,
)
from .presets import available, create
from .sparse import scale_by_sparse_adam
from .telemetry import effective_step, telemetry

__all__ = [
    "ChainOptimizer", "StepContext", "Transform", "adaptive_grad_clip", "add_decayed_weights",
    "available", "chain", "clip_by_global_norm", "clip_by_norm", "clip_by_value",
    "clip_update_norm", "clip_update_value", "create", "effective_step", "param_groups",
    "scale_by_adam", "scale_by_adamax", "scale_by_adopt", "scale_by_belief", "scale_by_lion",
    "scale_by_lr", "scale_by_radam", "scale_by_rms", "scale_by_sparse_adam", "scale_by_yogi",
    "schedules", "skip_nonfinite", "telemetry", "trace",
]
