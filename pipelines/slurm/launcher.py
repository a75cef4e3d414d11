"""Under ``hydra/launcher=slurm`` the job's resources decide the trainer: GPUs requested mean
the GPU accelerator with one DDP process per GPU, several CPU tasks mean CPU DDP (gloo).

Hydra composes the job's config before the launcher's settings are known to it, so this runs
inside the job: ``hydra.launcher.gpus_per_node=4 hydra.launcher.tasks_per_node=4
hydra.launcher.nodes=2`` trains with ``trainer.accelerator=gpu devices=4 num_nodes=2
strategy=ddp``. A trainer override on the command line that contradicts them is refused.
"""

from __future__ import annotations

from hydra.core.hydra_config import HydraConfig

from pipelines.harness.errors import ConfigError

SLURM_LAUNCHER = "SlurmLauncher"


def resources_to_trainer(nodes: int, tasks_per_node: int, gpus_per_node: int | None,
                         option=lambda key: f"hydra.launcher.{key}") -> dict:
    """Trainer keys for a job of ``nodes`` x ``tasks_per_node`` tasks and the given GPUs;
    errors name the resource as ``option(key)`` spells it."""
    for key, value, low in (("nodes", nodes, 1), ("tasks_per_node", tasks_per_node, 1),
                            ("gpus_per_node", gpus_per_node or 0, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(option(key), value, f"an integer >= {low}")
    if gpus_per_node:
        if tasks_per_node != gpus_per_node:
            raise ConfigError(option("tasks_per_node"), tasks_per_node,
                              f"{gpus_per_node} (= {option('gpus_per_node')}): Lightning runs "
                              "one process per GPU")
        world = gpus_per_node * nodes
        return {"accelerator": "gpu", "devices": gpus_per_node, "num_nodes": nodes,
                "strategy": "ddp" if world > 1 else "auto"}
    if tasks_per_node * nodes > 1:
        return {"accelerator": "cpu", "devices": tasks_per_node, "num_nodes": nodes,
                "strategy": "ddp"}
    return {}


def trainer_from_launcher(cfg):
    """``cfg`` with the trainer the Slurm launcher's resources call for (unchanged under any
    other launcher, or for a single CPU task)."""
    hydra_cfg = HydraConfig.get()
    launcher = hydra_cfg.get("launcher") or {}
    if not str(launcher.get("_target_", "")).endswith(SLURM_LAUNCHER):
        return cfg
    wanted = resources_to_trainer(launcher.get("nodes", 1), launcher.get("tasks_per_node", 1),
                                  launcher.get("gpus_per_node"))
    given = dict(o.split("=", 1) for o in hydra_cfg.overrides.task if "=" in o)
    for key, value in wanted.items():
        override = given.get(f"trainer.{key}")
        if override is not None and override != str(value):
            raise ConfigError(f"trainer.{key}", override,
                              f"{value} (or no override): hydra.launcher's resources set it")
        cfg.trainer[key] = value
    return cfg
