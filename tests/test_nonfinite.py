"""A non-finite loss stops the run with a clear error and a non-zero exit (or skips the step),
and summary.json stays valid JSON saying the run failed."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from runs import config, overrides, train
from torch.utils.data import DataLoader, TensorDataset

import optim
from pipelines.harness.nonfinite import NonFiniteGuard, NonFiniteLoss
from pipelines.train import run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_diverging_run_exits_non_zero_with_a_clear_error(tmp_path):
    done = train(tmp_path / "run", overrides("gnn", tmp_path, "optim.lr=1e30"))
    assert done.returncode == 3, done.stderr[-2000:]
    line = next(x for x in done.stderr.splitlines() if x.startswith("adamlab train: error:"))
    assert "training diverged at step" in line and "optim.lr=1e+30" in line
    assert "nonfinite.action=skip" in line and "Traceback" not in done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "diverged" in summary["error"]


@pytest.mark.parametrize("pipeline", ["mlip", "rl"])  # automatic and manual optimization
def test_every_pipeline_stops_on_a_non_finite_loss(tmp_path, pipeline):
    with pytest.raises(NonFiniteLoss, match="training diverged"):
        run(config(*overrides(pipeline, tmp_path, "optim.lr=1e30", "clip=none")),
            tmp_path / "run")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "failed"


def test_skipping_stops_after_the_consecutive_cap(tmp_path):
    args = overrides("gnn", tmp_path, "optim.lr=1e30", "nonfinite.action=skip",
                     "nonfinite.max_consecutive=3")
    with pytest.raises(NonFiniteLoss, match=r"3 steps in a row .*max_consecutive=3"):
        run(config(*args), tmp_path / "run")


class NaNAt(L.LightningModule):
    """Linear regression whose loss is NaN at the given steps."""

    def __init__(self, bad_steps):
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.bad_steps = set(bad_steps)
        self.weights = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        if self.global_step in self.bad_steps:
            loss = loss * float("nan")
        return loss

    def on_train_batch_start(self, batch, batch_idx):
        self.weights.append(self.layer.weight.detach().clone())

    def configure_optimizers(self):
        return optim.create("adam", self.parameters(), lr=0.1)


def _fit(module, guard, steps=6):
    data = TensorDataset(torch.randn(steps, 3), torch.randn(steps, 1))
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[guard])
    trainer.fit(module, DataLoader(data, batch_size=1))
    return trainer


def test_a_skipped_step_changes_no_parameter_and_training_goes_on():
    guard = NonFiniteGuard("skip", max_consecutive=2)
    module = NaNAt(bad_steps={2})
    trainer = _fit(module, guard)
    w = module.weights  # before steps 0..5
    assert torch.equal(w[2], w[3])                  # step 2 was skipped ...
    assert not torch.equal(w[3], w[4])              # ... and step 3 trained
    assert guard.skipped == 1 and trainer.global_step == 6
    assert torch.isfinite(module.layer.weight).all()
    moments = trainer.optimizers[0].state[module.layer.weight]
    assert all(torch.isfinite(v).all() for v in moments.values() if torch.is_tensor(v))


def test_error_mode_stops_at_the_first_non_finite_loss():
    with pytest.raises(NonFiniteLoss, match="at step 1"):
        _fit(NaNAt(bad_steps={1}), NonFiniteGuard("error", max_consecutive=1))
