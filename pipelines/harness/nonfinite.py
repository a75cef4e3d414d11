"""A non-finite training loss stops the run with a clear error (``nonfinite.action=error``),
or its step is skipped (``skip``: no parameter or optimizer-state update, gradients dropped)
until ``nonfinite.max_consecutive`` steps in a row were skipped.

The loss is checked before backward, the gradients (``skip`` only) before the optimizer step,
for automatic and manual optimization alike. A skipped step still counts as a step for the
schedule and the step counter. ``optim``'s ``skip_nonfinite`` transform does the same inside a
chain, on gradients alone.
"""

from __future__ import annotations

import lightning as L
import torch

from .callbacks import log_now
from .errors import RunFailed

ADVICE = ("lower optim.lr, clip the gradients (clip=grad_norm), or set nonfinite.action=skip "
          "to skip such steps")


class NonFiniteLoss(RunFailed):
    """The run diverged."""


class NonFiniteGuard(L.Callback):
    def __init__(self, action: str, max_consecutive: int, lr: float | None = None):
        self.action, self.max_consecutive, self.lr = action, max_consecutive, lr
        self.skipped_in_a_row = 0
        self.skipped = 0
        self._bad_loss = False

    def on_before_backward(self, trainer, pl_module, loss):
        self._bad_loss = not bool(torch.isfinite(loss.detach()).all())
        if self._bad_loss and self.action == "error":
            self._fail(trainer, f"the training loss is {loss.detach().float().mean().item()}")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self.action != "skip":
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]
                 if p.grad is not None]
        finite = all(bool(torch.isfinite(n)) for n in torch._foreach_norm(grads)) if grads \
            else True
        if finite and not self._bad_loss:
            self.skipped_in_a_row = 0
            return
        for group in optimizer.param_groups:  # the optimizer skips parameters without a grad
            for p in group["params"]:
                p.grad = None
        self.skipped += 1
        self.skipped_in_a_row += 1
        self._bad_loss = False
        log_now(trainer, {"nonfinite_skipped": float(self.skipped)})
        if self.skipped_in_a_row >= self.max_consecutive:
            self._fail(trainer, f"{self.skipped_in_a_row} steps in a row had a non-finite loss "
                       f"or gradient (nonfinite.max_consecutive={self.max_consecutive})")

    def _fail(self, trainer, what: str) -> None:
        lr = f" (optim.lr={self.lr})" if self.lr is not None else ""
        raise NonFiniteLoss(f"training diverged at step {trainer.global_step}, epoch "
                            f"{trainer.current_epoch}: {what}{lr}; {ADVICE}")
