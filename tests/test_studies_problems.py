"""The facts the studies' problems rest on, checked directly (cheap, no study run)."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from pipelines.studies import amsgrad, overfit, ridge, saddle


def test_reddi_counterexample_adam_to_plus_one_amsgrad_to_minus_one():
    x0 = torch.linspace(-0.9, 0.9, 5, dtype=torch.float64)
    adam_path, adam_regret = amsgrad.reddi("adam", x0, c=3.0, alpha=0.5, steps=3000)
    ams_path, ams_regret = amsgrad.reddi("amsgrad", x0, c=3.0, alpha=0.5, steps=3000)
    assert (adam_path[-1] > 0.99).all()
    assert (ams_path[-1] < -0.98).all()
    assert (adam_regret > ams_regret).all()


@pytest.mark.parametrize("spec", [{"name": "sgd", "lr": 0.1},
                                  {"name": "sgd", "lr": 0.1, "momentum": 0.9},
                                  {"name": "adam", "lr": 0.1}])
def test_started_exactly_at_the_saddle_nothing_moves(spec):
    z0 = torch.zeros(3, 4, dtype=torch.float64)
    hit, settled, moved, _ = saddle.escape([spec], z0, torch.zeros(3, dtype=torch.float64),
                                           k=2, steps=500, threshold=0.5, settle=10,
                                           noise_seed=0)
    assert (moved == 0).all() and (hit == -1).all() and not settled.any()


def test_gd_escape_time_follows_the_linearised_rate():
    """From delta along the negative direction GD's coordinate grows by (1 + 2 lr) a step:
    ten decades of delta cost ten times ln(10)/ln(1 + 2 lr) steps."""
    lr = 0.1
    starts = torch.tensor([[0.0, 1e-12], [0.0, 1e-2]], dtype=torch.float64)
    hit, _, _, _ = saddle.escape([{"name": "sgd", "lr": lr}], starts,
                                 torch.zeros(2, dtype=torch.float64), k=1, steps=2000,
                                 threshold=0.5, settle=0, noise_seed=0)
    per_decade = (hit[0, 0] - hit[0, 1]).item() / 10
    assert per_decade == pytest.approx(math.log(10) / math.log(1 + 2 * lr), rel=0.02)


def test_wilson_construction_min_norm_vs_sign_solution():
    """Wilson et al.'s lemma: X sign(X'y) = 4y, so w = sign(X'y) / 4 interpolates; its
    prediction on new points is (y + 2)/4 > 0: every new point labelled +1."""
    x, y = overfit.wilson_data(20, 0.625, seed=3)
    w_sign = torch.sign(x.T @ y) / 4
    assert torch.allclose(x @ w_sign, y)
    err, _ = overfit.wilson_new_points(w_sign, 0.625)
    assert float(err) == pytest.approx(1 - 0.625)
    w_min = torch.linalg.pinv(x) @ y  # what gradient descent from 0 converges to
    assert torch.allclose(x @ w_min, y, atol=1e-10)
    err_min, _ = overfit.wilson_new_points(w_min, 0.625)
    assert float(err_min) == 0.0


def test_ridge_decaying_alpha_reaches_the_closed_form():
    p = OmegaConf.create({"n": 500, "d": 50, "noise": 0.5, "lam": 1.0, "eps": 1e-8})
    base = [{"lr": 0.01, "beta1": 0.9, "beta2": 0.999}]
    err = ridge.distances(p, "cosine", base, seeds=[0, 1], steps=3000, every=3000)
    assert err[0, :, 0] == pytest.approx(1.0)
    assert (err[0, :, -1] <= 1e-6).all()


def test_image_fit_is_a_function_of_its_job_and_tuning_never_sees_the_test_set():
    from pipelines.studies import overfit as ov
    from pipelines.studies.problems import images

    p = OmegaConf.create({"data_root": None, "n_val": 64, "n_test": 64,
                          "model": {"kind": "mlp", "width": 8}, "schedule": {"kind": "constant"},
                          "epochs": 1, "batch_size": 32, "evals": 1})
    tuning = ov.cnn_job(p, {"name": "adam", "lr": 1e-3}, 128, seed=3, report=False)
    assert "test" not in tuning["splits"] + tuning["final_splits"]
    a, b = images.fit(tuning), images.fit(tuning)
    assert {k: v for k, v in a.items() if k != "_curve"} == \
        {k: v for k, v in b.items() if k != "_curve"}
    assert not any(k.startswith("final_test") for k in a)
    report = images.fit(ov.cnn_job(p, {"name": "adam", "lr": 1e-3}, 128, seed=3, report=True))
    assert "final_test_acc" in report and 0 <= report["final_test_acc"] <= 1


def test_fashion_mnist_splits_are_disjoint_and_test_is_the_official_set():
    from data.images import fashion_mnist
    from pipelines.studies.problems import images

    if not all((fashion_mnist.SHARED / f).is_file() for f in fashion_mnist.FILES):
        pytest.skip("the shared Fashion-MNIST copy is not on this machine")
    parts = images.splits("fashion_mnist", {"train": 300, "val": 200, "test": 100}, seed=5)
    official = fashion_mnist.load_fashion_mnist(download=False)["test"]
    assert torch.equal(parts["test"][1], official.y[:100])
    train, val = parts["train"][0].flatten(1), parts["val"][0].flatten(1)
    assert not (torch.cdist(train, val) == 0).any()  # no training image in validation
