"""No dead configuration: every key of the `adamlab train` config groups is read somewhere.

How each key is shown to be read:
- ``trainer/*``: a keyword of ``lightning.Trainer`` (passed through whole);
- ``optim/*`` and ``schedule/*``: each file builds its optimizer / schedule, and both
  builders refuse a keyword they do not take;
- every other key: its name is accessed in the Python sources (``.key``, ``"key"``, ``key=``,
  or a parameter ``key:``), or it feeds another key by interpolation (``${...key}``);
- pass-throughs by design, listed in PASS_THROUGH with why.
Out of scope: configs/study (the study engine validates its own keys against each study's
declared arms and checks) and configs/hydra (Hydra's and the Slurm launcher's keys).
"""

import inspect
import re
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from pipelines.harness.optimizers import build_optimizer, build_scheduler

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
SOURCES = "\n".join(p.read_text() for d in ("pipelines", "data", "optim")
                    for p in (ROOT / d).rglob("*.py"))
INTERPOLATED = "\n".join(re.findall(r"\$\{[^}]*\}", "\n".join(
    p.read_text() for p in CONFIGS.rglob("*.yaml"))))
PASS_THROUGH = {
    "env.kwargs": "gymnasium.make(env.id, **env.kwargs)",
    "env.wrappers": "instantiated by Hydra (each entry's _target_)",
}
GROUPS = [p for p in sorted(CONFIGS.rglob("*.yaml"))
          if p.relative_to(CONFIGS).parts[0] not in ("study", "hydra", "optim", "schedule",
                                                     "trainer") and p.name != "study.yaml"]


def leaves(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "defaults":
                continue
            path = f"{prefix}{key}"
            yield path
            if path not in PASS_THROUGH:
                yield from leaves(value, path + ".")


def read_in_code(key: str) -> bool:
    k = re.escape(key)
    access = rf"\.{k}\b|[\"']{k}[\"']|\b{k}\s*=|\b{k}\s*:"
    return bool(re.search(access, SOURCES)) or bool(re.search(rf"\b{k}\b", INTERPOLATED))


def global_keys(path: Path) -> list[str]:
    """The file's keys as they sit in the composed config (group files live under their
    group name unless they are ``# @package _global_``)."""
    text = path.read_text()
    data = yaml.safe_load(text) or {}
    rel = path.relative_to(CONFIGS)
    if "@package _global_" in text or rel == Path("train.yaml"):
        return list(leaves(data))
    return list(leaves(data, f"{rel.parts[0]}."))


@pytest.mark.parametrize("path", GROUPS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_key_is_read(path):
    dead = []
    for key in global_keys(path):
        if key.startswith(("hydra.", "trainer.", "optim.", "schedule.")) or key == "hydra":
            continue  # Hydra's own, and the groups checked below
        if key.endswith("_target_") or any(key.startswith(p + ".") for p in PASS_THROUGH):
            continue
        if not read_in_code(key.split(".")[-1]):
            dead.append(key)
    assert not dead, f"{path.name}: keys nothing reads: {dead}"


def test_trainer_keys_are_trainer_arguments():
    accepted = set(inspect.signature(L.Trainer.__init__).parameters)
    for path in sorted((CONFIGS / "trainer").glob("*.yaml")):
        keys = set(yaml.safe_load(path.read_text()))
        assert keys <= accepted, f"{path.name}: not Trainer arguments: {keys - accepted}"


@pytest.mark.parametrize("path", sorted((CONFIGS / "optim").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_optim_keys_build_the_optimizer(path):
    cfg = OmegaConf.create({"optim": OmegaConf.load(path), "model": {}, "pipeline": {}})
    build_optimizer([torch.zeros(2, requires_grad=True)], cfg.optim)


@pytest.mark.parametrize("path", sorted((CONFIGS / "schedule").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_schedule_keys_build_the_schedule(path):
    opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    build_scheduler(opt, OmegaConf.load(path), total_steps=1000)


def test_the_checker_finds_a_dead_key(tmp_path):
    assert not read_in_code("certainly_nothing_reads_this_key")
    assert read_in_code("max_requeues") and read_in_code("adam_lr")  # code; interpolation
