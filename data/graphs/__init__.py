"""Graph data for the GNN pipeline: DC-SBM generator, Planetoid loader, degree metrics."""

from data.graphs.datamodule import GraphDataModule
from data.graphs.dcsbm import dcsbm
from data.graphs.degree import (
    SCHEMES,
    accuracy_by_degree,
    degree_buckets,
    degree_report,
    fit_power_law_exponent,
    rawls_loss_variance,
)
from data.graphs.planetoid import load_planetoid

__all__ = [
    "SCHEMES",
    "GraphDataModule",
    "accuracy_by_degree",
    "dcsbm",
    "degree_buckets",
    "degree_report",
    "fit_power_law_exponent",
    "load_planetoid",
    "rawls_loss_variance",
]
