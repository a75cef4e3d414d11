"""MLIP data: readers (keys, stress, ASE db), bad frames, leak-free splits, EMT melt and close
subset. Fast (CPU, seconds); the check on the full default EMT data is ``slow``."""

from __future__ import annotations

import os
import re
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.db import connect

from data.atoms import (
    AtomsDataModule,
    DataError,
    LabelKeys,
    emt_dataset,
    force_rms,
    force_scale,
    generate_emt_dataset,
    lindemann_ratio,
    matched_rmsd,
    nearest_neighbour_distance,
    nearest_rmsd,
    read_structures,
    split_structures,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# Consecutive frames 5 MD steps apart (the old sampling) are 0.02-0.03 Å apart; frames of
# different trajectories are >= 0.126 Å apart even at 300 K, frames 50 steps apart in one
# trajectory >= 0.108 Å (measured, docs/mlip.md). A test frame closer than this to a training
# frame is a near-copy.
NEAR_DUPLICATE_ANG = 0.1


def _write(path, frames):
    ase.io.write(path, frames, format="extxyz")
    return path


def _labelled(energy=-1.0, forces=None, symbol="Cu", stress=None, **info):
    atoms = bulk(symbol, "fcc", a=3.6, cubic=True)
    forces = np.zeros((4, 3)) if forces is None else forces
    results = dict(energy=energy, forces=forces)
    if stress is not None:
        results["stress"] = stress
    atoms.calc = SinglePointCalculator(atoms, **results)
    atoms.info.update(info)
    return atoms


def _match(path, frame, text):
    return re.escape(f"{path} frame {frame}") + ".*" + text


# ---------------------------------------------------------------- readers


def test_ref_keys_win_over_the_calculator(tmp_path):
    atoms = _labelled(energy=9.0, stress=np.full(6, 9.0))
    atoms.info["REF_energy"] = -3.5
    atoms.arrays["REF_forces"] = np.full((4, 3), 0.25)
    atoms.info["REF_stress"] = np.arange(9.0).reshape(3, 3).ravel()
    path = _write(tmp_path / "ref.xyz", [atoms])
    keys = LabelKeys("REF_energy", "REF_forces", "REF_stress")
    (read,) = read_structures(path, keys)
    assert read.get_potential_energy() == -3.5
    np.testing.assert_array_equal(read.get_forces(), 0.25)
    np.testing.assert_array_equal(read.calc.results["stress"], np.arange(9.0).reshape(3, 3))
    (plain,) = read_structures(path)  # standard names: the calculator's values
    assert plain.get_potential_energy() == 9.0
    np.testing.assert_allclose(plain.get_stress(), 9.0)


def test_virial_becomes_stress(tmp_path):
    atoms = _labelled()
    virial = np.diag([1.0, 2.0, 3.0])
    atoms.info["virial"] = virial.ravel()
    (read,) = read_structures(_write(tmp_path / "v.xyz", [atoms]))
    np.testing.assert_allclose(read.calc.results["stress"], -virial / atoms.get_volume())


def test_ase_db_key_value_pairs_and_data(tmp_path):
    path = tmp_path / "custom.db"
    with connect(path) as db:
        for k in range(3):
            atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
            db.write(atoms, dft_energy=-1.0 - k, config_type="bulk",
                     data={"dft_forces": np.full((4, 3), 0.1 * k),
                           "dft_stress": np.full(6, 0.01 * k)})
    keys = LabelKeys("dft_energy", "dft_forces", "dft_stress")
    frames = read_structures(path, keys)
    assert [a.get_potential_energy() for a in frames] == [-1.0, -2.0, -3.0]
    np.testing.assert_allclose(frames[2].get_forces(), 0.2)
    np.testing.assert_allclose(frames[1].get_stress(), 0.01)
    assert frames[0].info["config_type"] == "bulk"
    with pytest.raises(DataError, match=_match(path, 0, "no energy .looked for 'energy'")):
        read_structures(path)


# ---------------------------------------------------------------- bad frames


def test_bad_frame_without_forces(tmp_path):
    no_forces = bulk("Cu", "fcc", cubic=True)
    no_forces.calc = SinglePointCalculator(no_forces, energy=1.0)
    path = _write(tmp_path / "nof.xyz", [_labelled(), no_forces])
    with pytest.raises(DataError, match=_match(path, 1, "no forces")):
        read_structures(path)


@pytest.mark.parametrize("energy, forces", [(np.nan, None), (-1.0, np.full((4, 3), np.nan))])
def test_bad_nan_labels(tmp_path, energy, forces):
    path = _write(tmp_path / "nan.xyz", [_labelled(), _labelled(), _labelled(energy, forces)])
    with pytest.raises(DataError, match=_match(path, 2, "NaN")):
        read_structures(path)


def test_bad_nan_positions(tmp_path):
    path = tmp_path / "pos.db"  # extxyz would not even write it; a database does
    broken = _labelled()
    broken.positions[1, 2] = np.nan
    with connect(path) as db:
        db.write(_labelled())
        db.write(broken)
    with pytest.raises(DataError, match=_match(path, 1, "NaN or infinite positions")):
        read_structures(path)


def test_bad_coincident_atoms(tmp_path):
    broken = _labelled()
    broken.positions[3] = broken.positions[0] + [0.05, 0.0, 0.0]
    path = _write(tmp_path / "coincident.xyz", [_labelled(), broken])
    with pytest.raises(DataError, match=_match(path, 1, r"atoms 0 and 3 are 0.050 Å apart")):
        read_structures(path)


def test_bad_shape(tmp_path):
    path = tmp_path / "shape.db"
    with connect(path) as db:
        db.write(_labelled())
        db.write(_labelled(forces=np.zeros((3, 3))))
    with pytest.raises(DataError, match=_match(path, 1, r"forces have shape \(3, 3\)")):
        read_structures(path)


def test_bad_empty_file(tmp_path):
    path = tmp_path / "empty.xyz"
    path.touch()
    with pytest.raises(DataError, match=re.escape(f"{path}: empty file")):
        read_structures(path)


def test_bad_cutoff_below_nearest_neighbour(tmp_path):
    path = _write(tmp_path / "cu.xyz", [_labelled()])
    with pytest.raises(DataError, match=_match(path, 0, r"cutoff 2.0 Å .* distance 2.546 Å")):
        read_structures(path, cutoff=2.0)
    assert len(read_structures(path, cutoff=2.6)) == 1


def test_unseen_element_in_test_names_file_and_frame(tmp_path):
    train = read_structures(_write(tmp_path / "train.xyz", [_labelled(), _labelled(-2.0)]))
    test_path = _write(tmp_path / "test.xyz", [_labelled(), _labelled(symbol="Au")])
    test = read_structures(test_path)
    with pytest.raises(DataError, match=_match(test_path, 1, "element Au never occurs")):
        AtomsDataModule(train, val=train, test=test, cutoff=4.0)


# ---------------------------------------------------------------- splits


def test_group_split_keeps_groups_whole():
    frames = [_labelled(-k, group=f"g{k // 5}") for k in range(50)]
    train, val, test = split_structures(frames, None, None, 0.2, 0.1, seed=3, group_key="group")
    assert len(train) + len(val) + len(test) == 50
    assert len(test) == 5 and len(val) == 10
    for split in (val, test):
        for a in split:
            assert not any(t.info["group"] == a.info["group"] for t in train)
    by_frame = split_structures(frames, None, None, 0.2, 0.1, seed=3, group_key=None)
    mixed = {a.info["group"] for a in by_frame[2]} & {a.info["group"] for a in by_frame[0]}
    assert mixed  # frame by frame, groups straddle the splits (what the group key prevents)


def test_given_validation_file_is_used(tmp_path):
    frames = [_labelled(-k) for k in range(10)]
    val = [_labelled(5.0)]
    dm = AtomsDataModule(frames, val=val, cutoff=4.0, test_fraction=0.2)
    assert dm.val_structures == val and len(dm.test_structures) == 2
    assert len(dm.train_structures) == 8


def test_matched_rmsd_sees_through_permutation_and_translation():
    a = bulk("Cu", "fcc", cubic=True).repeat(2)
    a.rattle(0.1, seed=1)
    b = a[np.random.default_rng(0).permutation(len(a))]
    b.positions += [1.1, -0.4, 2.9]  # a translation by a non-lattice vector, through the PBC
    assert matched_rmsd(a, b) < 1e-9
    c = a.copy()
    c.positions[5] += [0.4, 0.0, 0.0]
    assert matched_rmsd(a, c) == pytest.approx(0.4 * np.sqrt((1 - 1 / 32) / 32), rel=1e-6)
    assert matched_rmsd(a, a[:-1]) == np.inf


@pytest.fixture(scope="module")
def emt_trajectories():
    """Default sampling (equilibration, 50-step spacing), small cells, bulk only."""
    return generate_emt_dataset(n_configs=30, size=(2, 2, 1), mix={"bulk": 1},
                                snapshots_per_run=5)


def test_no_test_frame_has_a_near_duplicate_in_train(emt_trajectories):
    train, _, test = split_structures(emt_trajectories, None, None, 0.0, 0.2, seed=0,
                                      group_key="group")
    assert len(test) >= 5
    assert min(nearest_rmsd(a, train) for a in test) > NEAR_DUPLICATE_ANG


def test_the_near_duplicate_check_catches_close_frames():
    """Frames 5 steps apart (the old sampling), split frame by frame: the check must fail."""
    close = generate_emt_dataset(n_configs=10, size=(2, 2, 1), mix={"bulk": 1},
                                 snapshots_per_run=10, sample_interval=5,
                                 equilibration_steps=20)
    train, _, test = split_structures(close, None, None, 0.0, 0.3, seed=0, group_key=None)
    assert min(nearest_rmsd(a, train) for a in test) < NEAR_DUPLICATE_ANG


# ---------------------------------------------------------------- EMT kinds


@pytest.fixture(scope="module")
def emt_mixed(tmp_path_factory):
    return emt_dataset(tmp_path_factory.mktemp("emt"), n_configs=44, mix={"bulk": 1,
                       "melt": 1, "close": 0.2}, temperatures=(1200,))


def test_melt_frames_are_liquid_and_bulk_frames_solid(emt_mixed):
    """Lindemann ratio over a run's 10 frames (450 steps): the solid at 1200 K (0.88 of the
    melting point) stays near 0.085, the liquid at 1.35 Tm diffuses to about 0.155 (measured)."""
    nn = nearest_neighbour_distance("Cu")
    groups = {}
    for a in emt_mixed:
        groups.setdefault(a.info["group"], []).append(a)
    melt = [lindemann_ratio(f, nn) for g, f in groups.items() if g.startswith("melt")]
    solid = [lindemann_ratio(f, nn) for g, f in groups.items() if g.startswith("bulk")]
    assert melt and solid
    assert min(melt) > 0.12 and max(solid) < 0.1


def test_close_subset_is_sized_and_does_not_set_the_energy_scale(emt_mixed):
    close = [a for a in emt_mixed if a.info["config_type"] == "close"]
    rest = [a for a in emt_mixed if a.info["config_type"] != "close"]
    assert len(close) == round(44 * 0.2 / 2.2)
    assert all(np.linalg.norm(a.get_forces(), axis=1).max() > 5.0 for a in close)
    assert force_rms(emt_mixed) > 1.5 * force_rms(rest)  # the RMS follows the outliers ...
    assert force_scale(emt_mixed) == pytest.approx(force_scale(rest), rel=0.15)  # ... not this


@pytest.mark.slow
def test_default_emt_data_split_has_no_near_duplicates():
    """The default data (1000 structures, the pipeline's cache) as the pipeline splits it."""
    structures = emt_dataset(Path(os.environ.get("ADAMLAB_CACHE", ".cache")) / "emt")
    dm = AtomsDataModule(structures, cutoff=4.0, group_key="group")
    nearest = [nearest_rmsd(a, dm.train_structures) for a in dm.test_structures]
    assert len(nearest) == 100 and min(nearest) > NEAR_DUPLICATE_ANG
