"""MACE (Batatia et al. 2022) from mace-torch, trained by this pipeline: ``model=mace``.

mace-torch's own ``MACE`` module computes the per-atom energies; everything around it is the
pipeline's (reference energies, energy scale, forces and stress by autograd through
:func:`~pipelines.mlip.models.edge_vectors`, loss, optimizers, EMA, calculator, MD). MACE is
handed the edge vectors directly: its ``positions[receiver] - positions[sender] + shifts`` is
given zero positions and ``shifts = vec``, so its graph sees exactly our (strained, periodic)
vectors and the gradients flow back to our positions and strain. Its own E0s are zero and its
forces are off; nothing of MACE is reimplemented here.

Optional: ``pip install 'adamlab[mace]'`` (mace-torch 0.3.16, which pins e3nn 0.4.4).
"""

from __future__ import annotations

import os
import warnings

import torch

from pipelines.mlip.models import AtomisticModel

INSTALL_HINT = "model=mace needs mace-torch: pip install 'adamlab[mace]' (mace-torch==0.3.16)"


_NO_WEIGHTS_ONLY = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def _mace():
    """``(mace.modules, e3nn.o3)``, imported without weakening ``torch.load``.

    mace's ``__init__`` sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` for the whole process (so
    e3nn can unpickle its constants, which hold ``slice`` objects); that would turn every later
    default ``torch.load`` into a pickle load. e3nn is imported with ``slice`` allowed instead
    and the variable is restored.
    """
    before = os.environ.get(_NO_WEIGHTS_ONLY)
    try:
        with torch.serialization.safe_globals([slice]):
            from e3nn import o3
            from mace import modules
    except ImportError as error:
        raise ImportError(f"{INSTALL_HINT} ({error})") from None
    finally:
        if before is None:
            os.environ.pop(_NO_WEIGHTS_ONLY, None)
        else:
            os.environ[_NO_WEIGHTS_ONLY] = before
    return modules, o3


def available() -> bool:
    """Whether mace-torch imports (the optional ``mace`` extra is installed)."""
    try:
        _mace()
    except ImportError:
        return False
    return True


class MACEModel(AtomisticModel):
    """mace-torch's ``MACE`` as an :class:`AtomisticModel`.

    ``elements`` (atomic numbers, the one-hot node attributes) and ``avg_num_neighbors`` (the
    message normalisation) come from the training data when the config leaves them null; the
    pipeline writes the values it used into the run config, so a checkpoint rebuilds the same
    model. The remaining arguments are MACE's, with its command line's defaults except for
    size (``hidden_irreps``, ``max_ell``, ``correlation``, ``num_interactions``).
    """

    def __init__(
        self,
        cutoff: float = 5.0,
        elements: list[int] | None = None,
        avg_num_neighbors: float | None = None,
        hidden_irreps: str = "32x0e+32x1o",
        max_ell: int = 2,
        correlation: int = 3,
        num_interactions: int = 2,
        num_bessel: int = 8,
        num_polynomial_cutoff: int = 5,
        radial_mlp: tuple[int, ...] = (64, 64, 64),
        mlp_irreps: str = "16x0e",
    ):
        super().__init__(cutoff)
        if not elements or avg_num_neighbors is None:
            raise ValueError("MACEModel needs elements and avg_num_neighbors (from the data)")
        modules, o3 = _mace()
        self.register_buffer("element_index", torch.full((119,), -1, dtype=torch.long))
        self.element_index[torch.tensor(sorted(elements))] = torch.arange(len(elements))
        self.num_elements = len(elements)
        with warnings.catch_warnings():  # e3nn's TorchScript codegen: nothing to act on
            warnings.filterwarnings("ignore", message="The TorchScript type system")
            self.mace = modules.MACE(
                r_max=float(cutoff),
                num_bessel=num_bessel,
                num_polynomial_cutoff=num_polynomial_cutoff,
                max_ell=max_ell,
                interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
                interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
                num_interactions=num_interactions,
                num_elements=len(elements),
                hidden_irreps=o3.Irreps(hidden_irreps),
                MLP_irreps=o3.Irreps(mlp_irreps),
                atomic_energies=torch.zeros(len(elements)).numpy(),
                avg_num_neighbors=float(avg_num_neighbors),
                atomic_numbers=sorted(elements),
                correlation=correlation,
                gate=torch.nn.functional.silu,
                radial_MLP=list(radial_mlp),
            )

    def atomic_energies(self, z, vec, edge_index, pairs=None) -> torch.Tensor:
        n_atoms = z.shape[0]
        node_attrs = torch.nn.functional.one_hot(self.element_index[z], self.num_elements)
        data = {
            "positions": vec.new_zeros((n_atoms, 3)),
            "shifts": vec,
            "edge_index": edge_index,
            "node_attrs": node_attrs.to(vec.dtype),
            "batch": z.new_zeros(n_atoms),
            "ptr": z.new_tensor([0, n_atoms]),
            "cell": vec.new_zeros((1, 3, 3)),
        }
        out = self.mace(data, training=self.training, compute_force=False)
        return out["node_energy"]
