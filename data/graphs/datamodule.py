"""Full-batch node classification as a LightningDataModule.

The whole graph is one batch: every dataloader yields the same ``Data`` once per epoch
and the LightningModule picks nodes with ``train_mask``/``val_mask``/``test_mask``.
"""

from __future__ import annotations

import inspect

import lightning as L
from torch.utils.data import DataLoader
from torch_geometric.data import Data

from data.graphs.dcsbm import dcsbm
from data.graphs.planetoid import load_planetoid

BUILDERS = {"synthetic": dcsbm, "planetoid": load_planetoid}


class GraphDataModule(L.LightningDataModule):
    """``source="synthetic"`` builds ``dcsbm(**kwargs)``; ``"planetoid"`` runs
    ``load_planetoid(**kwargs)``. Unknown sources or keyword arguments fail here, at
    construction, rather than later inside ``trainer.fit``.
    """

    def __init__(self, source: str = "synthetic", **kwargs) -> None:
        super().__init__()
        if source not in BUILDERS:
            raise ValueError(
                f"source={source!r} is not allowed; source must be one of {sorted(BUILDERS)}"
            )
        self._builder = BUILDERS[source]
        inspect.signature(self._builder).bind(**kwargs)
        self.source = source
        self.kwargs = kwargs
        self._data: Data | None = None

    def prepare_data(self) -> None:
        """Copy/process Planetoid files once (Lightning calls this on one process only)."""
        if self.source == "planetoid":
            load_planetoid(**self.kwargs)

    def setup(self, stage: str | None = None) -> None:
        """Build or load the graph once; later calls (fit, then test) reuse it."""
        if self._data is None:
            self._data = self._builder(**self.kwargs)

    @property
    def data(self) -> Data:
        """The graph; built on first access so a model can be sized before ``fit``."""
        self.setup()
        return self._data

    @property
    def num_features(self) -> int:
        return self.data.num_features

    @property
    def num_classes(self) -> int:
        return int(self.data.y.max()) + 1

    def _single_batch(self) -> DataLoader:
        return DataLoader([self.data], batch_size=1, collate_fn=_only, num_workers=0)

    def train_dataloader(self) -> DataLoader:
        return self._single_batch()

    def val_dataloader(self) -> DataLoader:
        return self._single_batch()

    def test_dataloader(self) -> DataLoader:
        return self._single_batch()


def _only(batch: list[Data]) -> Data:
    """Collate a one-element batch to the element itself (no PyG batching of one graph)."""
    return batch[0]
