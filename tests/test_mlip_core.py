"""MLIP core: models (SchNet, PaiNN and mace-torch's MACE), losses, ASE calculator, data module,
NVE helper. Fast (CPU, seconds)."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.calculators.singlepoint import SinglePointCalculator

from data.atoms import (
    AtomsDataModule,
    AtomsDataset,
    atoms_to_graph,
    collate_atoms,
    emt_dataset,
    fit_reference_energies,
    force_scale,
    generate_emt_dataset,
    min_pair_distance,
)
from pipelines.mlip import mace
from pipelines.mlip.calculator import MLIPCalculator
from pipelines.mlip.losses import EnergyForceLoss
from pipelines.mlip.md import run_nve
from pipelines.mlip.models import PaiNN, SchNet

CUTOFF = 4.0
SMALL = dict(cutoff=CUTOFF, hidden=16, num_interactions=2)
needs_mace = pytest.mark.skipif(not mace.available(), reason="mace-torch not installed "
                                "(pip install '.[mace]'; CI installs it)")
MODELS = [SchNet, PaiNN, pytest.param("mace", marks=needs_mace)]


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(cls, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    if cls == "mace":
        model = mace.MACEModel(cutoff=CUTOFF, elements=[29], avg_num_neighbors=18.0,
                               hidden_irreps="8x0e+8x1o", num_interactions=2)
        model.set_energy_reference({29: -3.0}, 0.2)
        return model.to(dtype)
    return cls(**SMALL).to(dtype)


def _cell(seed=0) -> ase.Atoms:
    """A rattled, sheared 8-atom periodic Cu cell: no symmetry to hide a wrong force."""
    atoms = bulk("Cu", "fcc", cubic=True).repeat((2, 1, 1))
    atoms.set_cell(
        atoms.cell.array @ (np.eye(3) + [[0, 0.05, 0], [0, 0, 0], [0.03, 0, 0]]), scale_atoms=True
    )
    atoms.rattle(0.1, seed=seed)
    return atoms


@pytest.fixture(scope="module")
def emt_small():
    return generate_emt_dataset(
        "Cu",
        n_configs=20,
        seed=0,
        size=(2, 2, 1),
        temperatures=(300, 800),
        mix={"bulk": 1, "strained": 1},
        snapshots_per_run=5,
        equilibration_steps=20,
        sample_interval=5,
    )


def _write(path, frames):
    ase.io.write(path, frames, format="extxyz")
    return path


def _labelled(energy=-1.0, forces=None, n=4):
    atoms = bulk("Cu", "fcc", cubic=True)
    forces = np.zeros((n, 3)) if forces is None else forces
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    return atoms


# ---------------------------------------------------------------- models


@pytest.mark.parametrize("cls", MODELS)
def test_forces_are_minus_energy_gradient(cls):
    calc = MLIPCalculator(_model(cls), dtype=torch.float64)
    atoms = _cell()
    atoms.calc = calc
    forces = atoms.get_forces()
    numeric = calculate_numerical_forces(atoms, eps=1e-4)
    assert np.abs(forces).max() > 1e-3
    assert np.abs(numeric - forces).max() <= 1e-6 * np.abs(forces).max()


@pytest.mark.parametrize("cls", MODELS)
def test_stress_is_strain_derivative(cls):
    atoms = _cell()
    atoms.calc = MLIPCalculator(_model(cls), dtype=torch.float64)
    stress = atoms.get_stress()
    numeric = calculate_numerical_stress(atoms, eps=1e-5)
    assert np.abs(numeric - stress).max() <= 1e-6 * np.abs(stress).max()


@pytest.mark.parametrize("cls", MODELS)
def test_energy_invariant_forces_equivariant(cls):
    calc = MLIPCalculator(_model(cls), dtype=torch.float64)
    atoms = _cell()
    energy, forces = calc.get_potential_energy(atoms), calc.get_forces(atoms)

    rot, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
    rotated = atoms.copy()
    rotated.set_cell(atoms.cell.array @ rot.T)
    rotated.positions = atoms.positions @ rot.T
    assert calc.get_potential_energy(rotated) == pytest.approx(energy, rel=1e-10)
    np.testing.assert_allclose(calc.get_forces(rotated), forces @ rot.T, atol=1e-9)

    moved = atoms.copy()
    moved.positions += [0.7, -1.3, 2.1]
    assert calc.get_potential_energy(moved) == pytest.approx(energy, rel=1e-10)

    perm = np.random.default_rng(2).permutation(len(atoms))
    permuted = atoms[perm]
    assert calc.get_potential_energy(permuted) == pytest.approx(energy, rel=1e-10)
    np.testing.assert_allclose(calc.get_forces(permuted), forces[perm], atol=1e-9)


@pytest.mark.parametrize("cls", MODELS)
def test_batched_equals_single_float32_inference_mode(cls):
    model = _model(cls, dtype=torch.float32)
    structures = [_labelled(), _cell(1), _cell(2)]
    for a in structures[1:]:
        a.calc = SinglePointCalculator(a, energy=0.0, forces=np.zeros((len(a), 3)))
    graphs = AtomsDataset(structures, CUTOFF).graphs
    batched = model(collate_atoms(graphs))
    assert batched["energy"].dtype == torch.float64  # summed in float64 (references)
    assert batched["forces"].dtype == torch.float32 and batched["forces"].shape == (20, 3)
    with torch.inference_mode():
        singles = [model(collate_atoms([g])) for g in graphs]
    torch.testing.assert_close(batched["energy"], torch.cat([s["energy"] for s in singles]))
    torch.testing.assert_close(batched["forces"], torch.cat([s["forces"] for s in singles]))


@pytest.mark.parametrize("cls", [SchNet, PaiNN])
def test_filters_per_pair_equal_filters_per_edge(cls):
    """Radial filters computed once per pair (the default) give the per-edge model exactly."""
    model = _model(cls)
    graphs = [atoms_to_graph(a, CUTOFF, torch.float64, labels=False) for a in (_cell(2), _cell(3))]
    batch = collate_atoms(graphs)
    per_edge = {k: v for k, v in batch.items() if not k.startswith("pair")}
    a, b = model(batch), model(per_edge)
    torch.testing.assert_close(a["energy"], b["energy"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a["forces"], b["forces"], rtol=1e-10, atol=1e-12)


def test_reference_energies_are_float64_and_survive_casts(tmp_path):
    """A -1.6e7 eV total (heavy-element DFT) keeps its interaction energy to 1e-6 eV in a
    float32 model, and the references live through .to() and a state_dict round trip."""
    model = SchNet(**SMALL)
    model.set_energy_reference({29: -4.0e6}, 0.5)  # 4 atoms: -1.6e7 eV
    batch = collate_atoms(AtomsDataset([_labelled()], CUTOFF).graphs)
    interaction = SchNet(**SMALL)
    interaction.load_state_dict(model.state_dict())
    interaction.set_energy_reference({}, 0.5)
    total = model(batch)["energy"].item()
    assert total - (-1.6e7) == pytest.approx(interaction(batch)["energy"].item(), abs=1e-6)
    model.to(torch.float32)
    assert model.atom_ref == {29: -4.0e6}
    torch.save(model.state_dict(), tmp_path / "m.pt")
    fresh = SchNet(**SMALL)
    fresh.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    assert fresh.atom_ref == {29: -4.0e6} and fresh.elements == [29]


def test_non_periodic_molecule():
    atoms = bulk("Cu", "fcc", cubic=True)
    atoms.pbc = False
    atoms.cell = np.zeros((3, 3))
    calc = MLIPCalculator(_model(PaiNN), dtype=torch.float64)
    atoms.calc = calc
    forces = atoms.get_forces()
    np.testing.assert_allclose(forces.sum(axis=0), 0.0, atol=1e-10)
    np.testing.assert_allclose(calculate_numerical_forces(atoms, eps=1e-4), forces, atol=1e-8)


# ---------------------------------------------------------------- ASE calculator


def test_calculator_refuses_unseen_elements():
    model = _model(SchNet)
    model.set_energy_reference({29: -3.0, 79: -3.2})
    calc = MLIPCalculator.from_model(model)
    ni = bulk("Ni", "fcc", cubic=True)
    with pytest.raises(ValueError, match="elements Ni were not in this model's training data "
                                         r"\(trained on Cu, Au\)"):
        calc.get_potential_energy(ni)
    assert np.isfinite(calc.get_potential_energy(bulk("Cu", "fcc", cubic=True)))


def test_calculator_contract_and_caching():
    calc = MLIPCalculator.from_model(_model(SchNet, dtype=torch.float32))
    calls = []
    calc.model.register_forward_hook(lambda *_: calls.append(1))
    atoms = _cell()
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    assert isinstance(energy, float)
    assert atoms.get_forces().shape == (len(atoms), 3)
    assert atoms.get_potential_energy() == energy and len(calls) == 1
    atoms.positions[0] += 0.01
    atoms.get_forces()
    assert len(calls) == 2


# ---------------------------------------------------------------- data


def test_emt_dataset_seeded_and_varied():
    kw = dict(n_configs=12, size=(2, 2, 1), snapshots_per_run=2, equilibration_steps=5,
              melt_equilibration_steps=5, sample_interval=5)
    a, b = generate_emt_dataset(seed=3, **kw), generate_emt_dataset(seed=3, **kw)
    c = generate_emt_dataset(seed=4, **kw)
    assert len(a) == 12
    assert all(np.array_equal(x.positions, y.positions) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0].positions, c[0].positions)
    kinds = [s.info["config_type"] for s in a]
    assert set(kinds) == {"bulk", "strained", "vacancy", "surface", "melt", "close"}
    groups = {}
    for s in a:
        groups.setdefault(s.info["group"], set()).add(s.info["config_type"])
    assert all(len(kinds) == 1 and g.startswith(kinds.pop()) for g, kinds in groups.items())
    for s in a:
        if s.info["config_type"] == "close":
            assert 1.1 < min_pair_distance(s) < 1.9
            assert np.linalg.norm(s.get_forces(), axis=1).max() > 5.0


@pytest.mark.parametrize("element", ["Ag", "Al", "Au", "Ni", "Pd", "Pt"])
def test_emt_all_fcc_metals(element):
    (atoms,) = generate_emt_dataset(
        element, n_configs=1, size=(1, 1, 1), equilibration_steps=2, mix={"bulk": 1}
    )
    assert set(atoms.get_chemical_symbols()) == {element}


def test_emt_cache_roundtrip(tmp_path):
    kw = dict(n_configs=4, size=(1, 1, 1), mix={"bulk": 1}, equilibration_steps=2)
    first = emt_dataset(tmp_path, **kw)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".extxyz"
    second = emt_dataset(tmp_path, **kw)
    assert all(
        np.array_equal(x.get_forces(), y.get_forces()) for x, y in zip(first, second, strict=True)
    )
    emt_dataset(tmp_path, seed=1, **kw)
    assert len(list(tmp_path.iterdir())) == 2


def test_reference_energies_least_squares():
    e_ref = {29: -1.5, 79: 0.75}
    structures = []
    for n_cu in range(1, 4):
        atoms = bulk("Cu", "fcc", cubic=True)
        atoms.numbers[:n_cu] = 79
        energy = sum(e_ref[z] for z in atoms.numbers)
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=np.zeros((4, 3)))
        structures.append(atoms)
    fitted = fit_reference_energies(structures)
    assert fitted == pytest.approx(e_ref)


def test_datamodule_split_filter_and_collate(emt_small):
    dm = AtomsDataModule(emt_small, cutoff=CUTOFF, val_fraction=0.2, test_fraction=0.1,
                         group_key=None)
    assert [len(x) for x in (dm.train_structures, dm.val_structures, dm.test_structures)] == [
        14,
        4,
        2,
    ]
    strong = _labelled(forces=np.full((4, 3), 30.0))
    dm = AtomsDataModule(
        emt_small[:12] + [strong],
        val=emt_small[12:16],
        test=emt_small[16:],
        cutoff=CUTOFF,
        batch_size=4,
        max_force=20.0,
    )
    assert dm.n_dropped == 1 and len(dm.train_structures) == 12
    assert dm.force_scale == pytest.approx(force_scale(emt_small[:12]))
    batch = next(iter(dm.val_dataloader()))
    counts = batch["n_atoms"]
    assert batch["batch"].shape == (int(counts.sum()),)
    i, j = batch["edge_index"]
    assert (batch["batch"][i] == batch["batch"][j]).all()
    assert (i[batch["batch"][i] == 1] >= counts[0]).all()


def test_datamodule_from_source(tmp_path, emt_small):
    train = _write(tmp_path / "train.xyz", emt_small[:10])
    test = _write(tmp_path / "test.xyz", emt_small[10:13])
    dm = AtomsDataModule.from_source("extxyz", train=train, test=test, cutoff=CUTOFF, seed=1,
                                     group_key=None)
    assert [len(x) for x in (dm.train_structures, dm.val_structures, dm.test_structures)] == [
        9,
        1,
        3,
    ]
    emt = dict(n_configs=5, size=(1, 1, 1), mix={"bulk": 1}, equilibration_steps=2,
               snapshots_per_run=1)
    dm = AtomsDataModule.from_source(
        "emt", source=dict(cache_dir=tmp_path / "cache", emt=emt), cutoff=CUTOFF, test_fraction=0.2
    )
    assert len(dm.test_structures) == 1 and len(dm.train_structures) == 4 - len(dm.val_structures)


@pytest.mark.parametrize("element, text", [("Fe", "no parameters"), ("O", "adsorbates")])
def test_bad_emt_element(element, text):
    with pytest.raises(ValueError, match=f"'{element}'.*{text}.*allowed: Ag, Al, Au, Cu"):
        generate_emt_dataset(element, n_configs=1)


# ---------------------------------------------------------------- losses and training


def test_force_clipping_is_huber_on_the_norm():
    batch = {"energy": torch.zeros(1), "n_atoms": torch.tensor([2]), "forces": torch.zeros(2, 3)}
    pred = {"energy": torch.zeros(1), "forces": torch.tensor([[0.3, 0.0, 0.4], [6.0, 0.0, 8.0]])}
    plain = EnergyForceLoss()(pred, batch)
    assert plain["force_loss"].item() == pytest.approx((0.25 + 100) / 6)
    assert plain["force_clipped_fraction"].item() == 0.0
    clipped = EnergyForceLoss(force_clip=1.0)(pred, batch)
    assert clipped["force_loss"].item() == pytest.approx((0.25 + 1.0 * (2 * 10 - 1)) / 6)
    assert clipped["force_clipped_fraction"].item() == 0.5
    assert clipped["force_mse"].item() == pytest.approx(plain["force_mse"].item())


def test_stress_term_and_float64_energies():
    f64 = torch.float64
    batch = {"energy": torch.tensor([-1.6e7], dtype=f64), "n_atoms": torch.tensor([4]),
             "forces": torch.zeros(4, 3), "stress": torch.zeros(1, 3, 3)}
    pred = {"energy": torch.tensor([-1.6e7 + 0.004], dtype=f64), "forces": torch.zeros(4, 3),
            "stress": torch.full((1, 3, 3), 0.01)}
    loss = EnergyForceLoss(energy_weight=1.0, force_weight=1.0, stress_weight=10.0)
    parts = loss(pred, batch)
    assert parts["energy_mse"].item() == pytest.approx(1e-6, rel=1e-6)
    assert parts["stress_mse"].item() == pytest.approx(1e-4, rel=1e-6)
    assert parts["loss"].item() == pytest.approx(1e-6 + 10 * 1e-4, rel=1e-6)
    assert loss.wants_stress(batch) and not EnergyForceLoss().wants_stress(batch)


def test_training_reduces_loss_tenfold(emt_small):
    torch.manual_seed(0)
    model = SchNet(cutoff=CUTOFF, hidden=32, num_interactions=2)
    model.set_energy_reference(fit_reference_energies(emt_small), force_scale(emt_small))
    batch = collate_atoms(AtomsDataset(emt_small, CUTOFF).graphs)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = EnergyForceLoss()
    losses = []
    for _ in range(150):
        optimizer.zero_grad()
        loss = loss_fn(model(batch), batch)["loss"]
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert min(losses[-10:]) < losses[0] / 10


# ---------------------------------------------------------------- MD


def test_run_nve_with_emt_conserves_energy():
    atoms = bulk("Cu", "fcc", cubic=True).repeat(2)
    result = run_nve(atoms, EMT(), steps=300, timestep_fs=2.0, temperature_K=300)
    assert result["steps_completed"] == 300
    assert abs(result["energy_drift_mev_per_atom_per_ps"]) < 1.0
    assert result["max_abs_delta_e_mev_per_atom"] < 1.0
    assert not result["collapsed"] and not result["exploded"]
    assert result["ns_per_day"] > 0
    assert len(atoms.get_velocities()) == 32 and not atoms.get_velocities().any()
