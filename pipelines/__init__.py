"""Hydra entry points and the three domain pipelines (gnn, rl, mlip) plus the studies."""
