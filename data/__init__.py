"""Data builders and LightningDataModules: graphs, atoms, rollouts. Never imports pipelines."""
