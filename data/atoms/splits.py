"""Train/val/test splits that keep related frames together, and the check that they do.

Frames of one MD trajectory a few steps apart are near-copies: split frame by frame, a test
frame has its twin in training and the test error measures interpolation. So structures are
split by a group key (``info["group"]`` for EMT data, e.g. ``config_type`` in a user's file):
a group goes to one split whole. :func:`nearest_rmsd` is the check: the smallest RMSD between a
frame and any frame of another set, after the best permutation of like atoms and the best
translation (periodic images included).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from scipy.optimize import linear_sum_assignment


def split_structures(
    structures: list[Atoms],
    val: list[Atoms] | None,
    test: list[Atoms] | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    group_key: str | None = None,
) -> tuple[list[Atoms], list[Atoms], list[Atoms]]:
    """``(train, val, test)``: whichever of ``val``/``test`` is None is split off
    ``structures``, whole groups of ``info[group_key]`` at a time (frames without the key, or
    ``group_key=None``, are their own group), groups in a permutation seeded by ``seed``. A
    split takes groups until it holds its fraction of the frames (at most one group over)."""
    groups: dict[object, list[int]] = {}
    for k, atoms in enumerate(structures):
        key = atoms.info.get(group_key, ("frame", k)) if group_key else ("frame", k)
        groups.setdefault(key, []).append(k)
    members = list(groups.values())
    order = np.random.default_rng(seed).permutation(len(members))
    queue = [members[g] for g in order]
    taken = {}
    for name, given, fraction in (("test", test, test_fraction), ("val", val, val_fraction)):
        target = 0 if given is not None else int(round(fraction * len(structures)))
        picked: list[int] = []
        while queue and len(picked) < target:
            picked += queue.pop(0)
        taken[name] = given if given is not None else [structures[k] for k in sorted(picked)]
    train = [structures[k] for k in sorted(k for group in queue for k in group)]
    return train, taken["val"], taken["test"]


def matched_rmsd(a: Atoms, b: Atoms, cell_tolerance: float = 1e-3) -> float:
    """RMSD (Å) between two structures of the same composition and cell after the best
    translation and the best permutation of like atoms, displacements by the minimum image;
    ``inf`` when compositions, periodicity or cells (relative ``cell_tolerance``) differ."""
    if len(a) != len(b) or sorted(a.numbers) != sorted(b.numbers) or (a.pbc != b.pbc).any():
        return float("inf")
    cell = a.cell.array
    scale = max(np.abs(cell).max(), 1.0)
    if not np.allclose(cell, b.cell.array, atol=cell_tolerance * scale):
        return float("inf")
    inverse = np.linalg.pinv(cell) if a.pbc.any() else None

    def minimum_image(d: np.ndarray) -> np.ndarray:
        if inverse is None:
            return d
        frac = d @ inverse
        frac[..., a.pbc] -= np.round(frac[..., a.pbc])
        return frac @ cell

    unlike = a.numbers[:, None] != b.numbers[None, :]
    raw = b.positions[None, :, :] - a.positions[:, None, :]

    def assignment(shift: np.ndarray) -> tuple[float, np.ndarray]:
        d = minimum_image(raw - shift)
        cost = (d**2).sum(-1) + 1e6 * unlike
        rows, cols = linear_sum_assignment(cost)
        disp = d[rows, cols]
        centred = disp - disp.mean(axis=0)
        return float(np.sqrt((centred**2).sum(-1).mean())), shift + disp.mean(axis=0)

    # candidate translations: atom 0 of a onto each like atom of b; keep the one that puts
    # every atom of a nearest a like atom of b, then refine by assignment
    like = np.flatnonzero(~unlike[0])
    candidates = minimum_image(raw[0, like])
    nearest = [_nearest_cost(minimum_image(raw - t), unlike) for t in candidates]
    shift = candidates[int(np.argmin(nearest))]
    best = float("inf")
    for _ in range(3):
        rmsd, shift = assignment(shift)
        best = min(best, rmsd)
    return best


def _nearest_cost(d: np.ndarray, unlike: np.ndarray) -> float:
    sq = (d**2).sum(-1) + 1e6 * unlike
    return float(sq.min(axis=1).sum())


def nearest_rmsd(frame: Atoms, others: list[Atoms]) -> float:
    """Smallest :func:`matched_rmsd` between ``frame`` and any of ``others`` (``inf`` if none
    is comparable)."""
    return min((matched_rmsd(frame, other) for other in others), default=float("inf"))
