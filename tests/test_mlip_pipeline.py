"""mlip pipeline: config checks, a tiny fit end to end, checkpoint -> ASE calculator, MD command.

Configs are composed from the real config files (``adamlab train pipeline=mlip ...``) with tiny
overrides: 4-atom EMT cells, a 16-wide SchNet, two or three epochs.
"""

from __future__ import annotations

import csv
import json
import math
import sys

import ase.io
import lightning as L
import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import EMAWeightAveraging

from pipelines.harness.callbacks import warmup_ema_avg_fn
from pipelines.harness.errors import ConfigError
from pipelines.mlip import mace, md
from pipelines.mlip.calculator import MLIPCalculator
from pipelines.mlip.checkpoint import load_model
from pipelines.mlip.losses import EnergyForceLoss
from pipelines.mlip.metrics import EnergyForceMetrics
from pipelines.mlip.module import LossWeightSchedule
from pipelines.mlip.pipeline import MLIPPipeline
from pipelines.train import CONFIGS, run

TINY_EMT = ["data.n_configs=40", "+data.size=[1,1,1]", "+data.snapshots_per_run=5"]
TINY_SCHNET = ["model.cutoff=4.0", "model.hidden=16", "model.num_interactions=2",
               "model.num_rbf=8"]
TINY = [
    "pipeline.batch_size=8",
    "trainer.max_epochs=3",
    "trainer.enable_progress_bar=false",
    "logger=csv",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(cache, *overrides):
    """Tiny settings; ``cache`` is the EMT cache dir, None for file data (``data=extxyz``)."""
    data = [f"data.cache_dir={cache}", *TINY_EMT] if cache is not None else []
    model = [] if "model=mace" in overrides else TINY_SCHNET
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose("train", ["pipeline=mlip", *data, *model, *TINY, *overrides])


def _fit(cfg, root, callbacks=()):
    pipeline = MLIPPipeline()
    pipeline.validate(cfg)
    L.seed_everything(0, verbose=False)
    module, datamodule = pipeline.build(cfg)
    trainer = L.Trainer(
        max_epochs=cfg.trainer.max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
        default_root_dir=root,
    )
    trainer.fit(module, datamodule=datamodule)
    return pipeline, trainer, module, datamodule


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Force clipping and the max-force filter on, weights averaged, checkpoint saved."""
    root = tmp_path_factory.mktemp("fit")
    cfg = _cfg(
        root / "cache",
        "pipeline.force_clip=0.5",
        "pipeline.max_force=10.0",
        "optim.lr=3e-3",
        "clip=grad_norm",
        "clip.max_norm=10",
    )
    pipeline, trainer, module, datamodule = _fit(cfg, root, [EMAWeightAveraging(decay=0.9)])
    ckpt = root / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    return dict(pipeline=pipeline, trainer=trainer, module=module, dm=datamodule, ckpt=ckpt)


# ---------------------------------------------------------------- validate


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.name=nequip", "model.name"),
        ("pipeline.evaluate=worst", "pipeline.evaluate"),
        ("pipeline.stress_weight=-1", "pipeline.stress_weight"),
        ("pipeline.stage_two.start=1.5", "pipeline.stage_two.start"),
        ("+pipeline.stage_two.lr=0.1", "pipeline.stage_two.lr"),
        ("pipeline.stage_two.energy_weight=-2", "pipeline.stage_two.energy_weight"),
        ("data.group_key=3", "data.group_key"),
        ("model.cutoff=0", "model.cutoff"),
        ("model.cutoff=-2.5", "model.cutoff"),
        ("model.hidden=0", "model.hidden"),
        ("+model.heads=4", "model.heads"),
        ("pipeline.energy_weight=-1", "pipeline.energy_weight"),
        ("pipeline.force_weight=-0.1", "pipeline.force_weight"),
        ("pipeline.force_clip=0", "pipeline.force_clip"),
        ("pipeline.max_force=-5", "pipeline.max_force"),
        ("pipeline.batch_size=0", "pipeline.batch_size"),
        ("pipeline.dtype=float16", "pipeline.dtype"),
        ("pipeline.test_fraction=0.95", "pipeline.test_fraction"),
        ("+pipeline.ema=0.99", "pipeline.ema"),
        ("data.element=Fe", "data.element"),
        ("data.element=O", "data.element"),
        ("data.n_configs=0", "data.n_configs"),
        ("+data.temperature=300", "data.temperature"),
        ("data=extxyz", "data.train"),
        ("data=extxyz data.train=/nonexistent/train.xyz", "data.train"),
        ("data=ase_db data.train=/nonexistent/train.db", "data.train"),
        ("data=zuo2020_ni data.val=/nonexistent/val.xyz", "data.val"),
    ],
)
def test_validate_names_the_bad_key(tmp_path, override, key):
    files = override.startswith("data=")
    cfg = _cfg(None if files else tmp_path / "cache", *override.split())
    with pytest.raises(ConfigError) as error:
        MLIPPipeline().validate(cfg)
    assert error.value.key == key
    assert not (tmp_path / "cache").exists()  # nothing generated before the check


def test_validate_accepts_the_defaults_and_files(tmp_path):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        MLIPPipeline().validate(compose("train", ["pipeline=mlip"]))
    (tmp_path / "train.xyz").write_text("")
    train = f"data.train={tmp_path}/train.xyz"
    MLIPPipeline().validate(_cfg(None, "data=extxyz", train))
    missing = _cfg(None, "data=extxyz", train, f"data.test={tmp_path}/test.xyz")
    with pytest.raises(ConfigError, match="data.test"):
        MLIPPipeline().validate(missing)


# ---------------------------------------------------------------- fit


def test_fit_logs_errors_and_force_handling(fitted):
    logged = fitted["trainer"].callback_metrics
    for key in ("val_force_mae_mev_per_ang", "val_energy_rmse_mev_per_atom", "val_loss"):
        assert torch.isfinite(logged[key])
    dm = fitted["dm"]
    assert dm.n_dropped > 0
    dropped = dm.n_dropped / (dm.n_dropped + len(dm.train_structures))
    assert logged["train_max_force_dropped_fraction"].item() == pytest.approx(dropped)
    assert 0 < logged["train_force_clipped_fraction"].item() <= 1
    assert all(p.dtype == torch.float32 for p in fitted["module"].parameters())


def test_summary_keys_and_bins(fitted):
    summary = fitted["pipeline"].summary(fitted["trainer"], fitted["module"], fitted["dm"])
    for split in ("val", "test"):
        for quantity in ("energy_mae_mev_per_atom", "energy_rmse_mev_per_atom",
                         "force_mae_mev_per_ang", "force_rmse_mev_per_ang"):
            assert math.isfinite(summary[f"{split}_{quantity}"])
    bins = summary["test_force_mae_mev_per_ang_by_force"]
    assert list(bins) == ["lt1", "1to5", "5to20", "gt20"]
    n_atoms = sum(len(a) for a in fitted["dm"].test_structures)
    assert sum(b["n_atoms"] for b in bins.values()) == n_atoms
    assert summary["max_force_dropped"] == fitted["dm"].n_dropped
    json.dumps(summary, allow_nan=False)


def test_parity_figures(fitted, tmp_path):
    paths = fitted["pipeline"].figures(fitted["trainer"], fitted["module"], fitted["dm"], tmp_path)
    assert [p.name for p in paths] == ["parity_energy.png", "parity_forces.png"]
    assert all(p.stat().st_size > 10_000 for p in paths)


def test_float64_option(tmp_path):
    cfg = _cfg(tmp_path / "cache", "pipeline.dtype=float64", "trainer.max_epochs=1")
    _, trainer, module, _ = _fit(cfg, tmp_path)
    assert all(p.dtype == torch.float64 for p in module.parameters())
    assert torch.isfinite(trainer.callback_metrics["val_force_mae_mev_per_ang"])


# ---------------------------------------------------------------- checkpoint -> calculator, MD


def test_checkpoint_is_a_calculator(fitted):
    """The .ckpt alone restores model config, cutoff, reference energies and (EMA) weights."""
    model, cfg = load_model(fitted["ckpt"])
    assert cfg["model"]["name"] == "schnet" and model.cutoff == 4.0
    module = fitted["module"]
    assert model.atom_ref == module.model.atom_ref and model.elements == [29]
    atoms = bulk("Cu", "fcc", cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.05, seed=0)
    atoms.calc = MLIPCalculator.from_checkpoint(fitted["ckpt"])
    expected = MLIPCalculator.from_model(module.model)
    assert atoms.get_potential_energy() == pytest.approx(expected.get_potential_energy(atoms))
    np.testing.assert_allclose(atoms.get_forces(), expected.get_forces(atoms), atol=1e-5)


def test_md_command(fitted, capsys):
    result = md.main(["--ckpt", str(fitted["ckpt"]), "--steps", "20"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == pytest.approx(result)
    assert result["n_atoms"] == 108 and result["steps_completed"] == 20  # rattled 3x3x3 cell
    assert result["ns_per_day"] > 0
    assert math.isfinite(result["energy_drift_mev_per_atom_per_ps"])
    assert result["collapsed"] is False


def test_harness_run_writes_summary(tmp_path):
    """The real entry point: summary.json carries the metric names of the design brief, says
    which weights they come from, and the run dir's calculator runs exactly those weights
    (its test-set MAE equals the summary's)."""
    cfg = _cfg(tmp_path / "cache", "trainer.max_epochs=2", "pipeline.stress_weight=1.0")
    metrics = run(cfg, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["pipeline"] == "mlip"
    for key in ("test_energy_mae_mev_per_atom", "test_force_mae_mev_per_ang",
                "test_stress_mae_mev_per_ang3"):
        assert math.isfinite(metrics[key])
        assert summary["metrics"][key] == pytest.approx(metrics[key])
    assert metrics["eval_weights"] == "last (EMA 0.99)"
    assert metrics["eval_checkpoint"] == "checkpoints/last.ckpt"
    assert (tmp_path / "run" / "parity_forces.png").is_file()
    by_type = metrics["test_by_config_type"]
    assert sum(t["n_structures"] for t in by_type.values()) == metrics["n_test"]
    assert all(math.isfinite(t["force_mae_mev_per_ang"]) for t in by_type.values())

    calc = MLIPCalculator.from_checkpoint(tmp_path / "run")
    _, datamodule = MLIPPipeline().build(cfg)
    errors = [abs(calc.get_potential_energy(a) - a.get_potential_energy()) / len(a)
              for a in datamodule.test_structures]
    assert 1000 * np.mean(errors) == pytest.approx(metrics["test_energy_mae_mev_per_atom"],
                                                   rel=1e-4)


def test_ema_is_on_by_default():
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("train", ["pipeline=mlip"])
    assert cfg.ema_decay == 0.99 and cfg.pipeline.evaluate == "last"


def test_stage_two_raises_the_energy_weight_and_lowers_the_rate_late(tmp_path):
    run(_cfg(tmp_path / "cache", "trainer.max_epochs=4", "pipeline.energy_weight=0.01",
             "pipeline.stage_two.start=0.5", "pipeline.stage_two.energy_weight=5.0",
             "pipeline.stage_two.force_weight=0.5", "pipeline.stage_two.lr_factor=0.1"),
        tmp_path / "run")
    rows = list(csv.DictReader((tmp_path / "run" / "csv" / "metrics.csv").open()))
    weights = {int(r["epoch"]): float(r["train_energy_weight"]) for r in rows
               if r.get("train_energy_weight")}
    assert weights == pytest.approx({0: 0.01, 1: 0.01, 2: 5.0, 3: 5.0})
    step_epoch = {r["step"]: int(r["epoch"]) for r in rows if r.get("epoch")}
    rates = {step_epoch[r["step"]]: float(r["lr-ChainOptimizer"]) for r in rows
             if r.get("lr-ChainOptimizer") and r["step"] in step_epoch}
    assert rates == pytest.approx({0: 3e-3, 1: 3e-3, 2: 3e-4, 3: 3e-4})


def test_loss_weight_schedule_by_progress():
    loss = EnergyForceLoss(energy_weight=0.01, force_weight=1.0)
    stage = LossWeightSchedule(start=0.7, energy_weight=10.0)
    assert not stage.apply(loss, (0.01, 1.0), 0.69)
    assert (loss.energy_weight, loss.force_weight) == (0.01, 1.0)
    assert stage.apply(loss, (0.01, 1.0), 0.7)
    assert (loss.energy_weight, loss.force_weight) == (10.0, 1.0)
    assert not LossWeightSchedule().apply(loss, (0.01, 1.0), 1.0)
    assert loss.energy_weight == 0.01


@pytest.mark.skipif(not mace.available(), reason="mace-torch not installed (CI installs it)")
def test_mace_trains_through_the_pipeline(tmp_path):
    """model=mace: elements and neighbour count from the data, saved with the checkpoint."""
    cfg = _cfg(tmp_path / "cache", "model=mace", "model.cutoff=4.0",
               "model.hidden_irreps=8x0e+8x1o", "trainer.max_epochs=1")
    metrics = run(cfg, tmp_path / "run")
    assert math.isfinite(metrics["test_force_mae_mev_per_ang"])
    model, _ = load_model(tmp_path / "run")
    assert model.elements == [29] and model.mace.atomic_numbers.tolist() == [29]
    calc = MLIPCalculator.from_checkpoint(tmp_path / "run")
    assert math.isfinite(calc.get_potential_energy(bulk("Cu", "fcc", cubic=True)))


def test_mace_missing_is_a_clear_config_error(tmp_path, monkeypatch):
    """Without the extra (imports of mace and e3nn fail), model=mace stops at validation."""
    monkeypatch.setitem(sys.modules, "mace", None)
    monkeypatch.setitem(sys.modules, "e3nn", None)
    with pytest.raises(ConfigError, match=r"pip install 'adamlab\[mace\]'") as error:
        MLIPPipeline().validate(_cfg(tmp_path / "cache", "model=mace"))
    assert error.value.key == "model.name"


# ---------------------------------------------------------------- bad input through the pipeline


def _frames(n=6, symbol="Cu"):
    out = []
    for k in range(n):
        atoms = bulk(symbol, "fcc", a=3.6, cubic=True)
        atoms.rattle(0.05, seed=k)
        atoms.calc = SinglePointCalculator(atoms, energy=-1.0 - 0.01 * k,
                                           forces=np.zeros((4, 3)))
        out.append(atoms)
    return out


@pytest.mark.parametrize("bad", ["unseen element", "coincident", "nan forces"])
def test_bad_structures_fail_before_training(tmp_path, bad):
    train, test = _frames(), _frames(3)
    if bad == "unseen element":
        test[1] = _frames(1, "Au")[0]
        key, where = "data.test", f"{tmp_path / 'test.xyz'} frame 1"
    elif bad == "coincident":
        train[4].positions[2] = train[4].positions[0] + [0.02, 0.0, 0.0]
        key, where = "data.train", f"{tmp_path / 'train.xyz'} frame 4"
    else:
        train[2].calc.results["forces"][1, 0] = np.nan
        key, where = "data.train", f"{tmp_path / 'train.xyz'} frame 2"
    ase.io.write(tmp_path / "train.xyz", train)
    ase.io.write(tmp_path / "test.xyz", test)
    cfg = _cfg(None, "data=extxyz", f"data.train={tmp_path / 'train.xyz'}",
               f"data.test={tmp_path / 'test.xyz'}")
    with pytest.raises(ConfigError) as error:
        run(cfg, tmp_path / "run")
    assert error.value.key == key and where in str(error.value)
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()


def test_validation_file(tmp_path):
    ase.io.write(tmp_path / "train.xyz", _frames(8))
    ase.io.write(tmp_path / "val.xyz", _frames(3))
    cfg = _cfg(None, "data=extxyz", f"data.train={tmp_path / 'train.xyz'}",
               f"data.val={tmp_path / 'val.xyz'}", "pipeline.test_fraction=0.25")
    _, datamodule = MLIPPipeline().build(cfg)
    assert [len(datamodule.train_structures), len(datamodule.val_structures),
            len(datamodule.test_structures)] == [6, 3, 2]


# ---------------------------------------------------------------- metrics


def test_resume_continues_exactly(tmp_path):
    """4 epochs straight equal 2 epochs + resume for 2 more: the shuffled batch order is a
    function of (seed, epoch), not of the RNG state the first run left behind."""
    cache = tmp_path / "cache"
    straight = run(_cfg(cache, "trainer.max_epochs=4"), tmp_path / "straight")
    run(_cfg(cache, "trainer.max_epochs=2"), tmp_path / "first")
    resumed = run(_cfg(cache, "trainer.max_epochs=4", f"resume={tmp_path / 'first'}"),
                  tmp_path / "resumed")
    assert resumed == straight
    other = run(_cfg(cache, "trainer.max_epochs=4", "seed=1"), tmp_path / "other")
    assert other != straight


def test_metrics_by_force_bin():
    ref = torch.tensor([[0.5, 0, 0], [0, 3.0, 0], [0, 0, 30.0], [0.1, 0.1, 0.1]])
    err = torch.tensor([[0.03, 0, 0], [0.3, 0, 0], [0, 0, 6.0], [0.0, 0.0, 0.03]])
    batch = {"energy": torch.tensor([1.0, 2.0]), "n_atoms": torch.tensor([1, 3]), "forces": ref}
    pred = {"energy": torch.tensor([1.01, 1.97]), "forces": ref + err}
    metrics = EnergyForceMetrics()
    metrics.update(pred, batch)
    out = {k: v.item() for k, v in metrics.compute().items()}
    assert out["energy_mae_mev_per_atom"] == pytest.approx(1000 * (0.01 + 0.01) / 2)
    assert out["force_mae_mev_per_ang"] == pytest.approx(1000 * 6.36 / 12)
    assert out["force_mae_mev_per_ang_lt1"] == pytest.approx(1000 * 0.06 / 6)
    assert out["force_mae_mev_per_ang_1to5"] == pytest.approx(1000 * 0.3 / 3)
    assert math.isnan(out["force_mae_mev_per_ang_5to20"]) and out["force_n_atoms_5to20"] == 0
    assert out["force_n_atoms_gt20"] == 1


@pytest.mark.slow
def test_default_config_learns_emt_copper(tmp_path):
    """The shipped defaults on the default data (1000 EMT Cu structures), 15 epochs with EMA:
    a learning regression guard, far looser than bench/mlip_accuracy.py's 60 meV/Å target."""
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("train", ["pipeline=mlip", "logger=csv", "trainer.max_epochs=15",
                                "trainer.enable_progress_bar=false", "ema_decay=0.99"])
    metrics = run(cfg, tmp_path / "run")
    assert metrics["test_force_mae_mev_per_ang"] < 150
    assert metrics["test_energy_mae_mev_per_atom"] < 100


def test_ema_warms_up_then_decays_at_its_rate():
    """The run's EMA (ema_decay): early updates follow the weights, later ones average."""
    update = warmup_ema_avg_fn(0.99)
    zero, one = torch.zeros(3), torch.ones(3)
    torch.testing.assert_close(update(zero, one, torch.tensor(1)), torch.full((3,), 9 / 11))
    torch.testing.assert_close(update(zero, one, torch.tensor(5000)), torch.full((3,), 0.01))
    index = torch.tensor([3, -1, 0])
    assert torch.equal(update(index, index, torch.tensor(7)), index)
