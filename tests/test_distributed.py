"""Multi-process training that does real work: the GPU/DDP trainer chosen from Slurm
resources (sbatch writer and launcher), arguments checked, and CPU DDP that shards data.

The GPU scripts are rendered and checked here (no GPU on this machine: unchecked on one);
tests/test_slurm.py runs 2-task jobs under a real local Slurm.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from runs import overrides, table, train

from pipelines.harness.errors import ConfigError
from pipelines.slurm.launcher import resources_to_trainer, trainer_from_launcher
from pipelines.slurm.sbatch import render
from pipelines.train import CONFIGS


@pytest.fixture(autouse=True)
def no_hydra_state():
    yield
    HydraConfig.instance().cfg = None


def _srun_overrides(script: str) -> list[str]:
    line = next(x for x in script.splitlines() if x.startswith("srun "))
    return [a for a in shlex.split(line)[3:] if not a.startswith("hydra.run.dir=")]


def _compose(args: list[str], hydra_config: bool = False):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose("train", args, return_hydra_config=hydra_config)


def test_two_node_gpu_script_trains_on_eight_gpus_with_ddp(tmp_path):
    script = render(["pipeline=mlip", "optim=adamw"], nodes=2, gpus_per_node=4,
                    time_limit="24:00:00", partition="gpu", name="big")
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --time=24:00:00", "#SBATCH --partition=gpu",
                 "#SBATCH --signal=SIGUSR1@90", "#SBATCH --requeue", "export ADAMLAB_SIGNAL_S=90"):
        assert line in script.splitlines(), line
    (tmp_path / "big.sbatch").write_text(script)
    assert subprocess.run(["bash", "-n", str(tmp_path / "big.sbatch")]).returncode == 0
    cfg = _compose(_srun_overrides(script))
    t = cfg.trainer
    assert (t.accelerator, t.devices, t.num_nodes, t.strategy) == ("gpu", 4, 2, "ddp")
    assert cfg.trainer.precision == "32-true"  # mlip keeps float32 forces on GPU too
    assert cfg.optim.name == "adamw"


def test_cpu_tasks_get_cpu_ddp_and_one_task_stays_plain():
    cfg = _compose(_srun_overrides(render(["pipeline=rl"], tasks_per_node=2)))
    assert (cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.strategy) == \
        ("cpu", 2, "ddp")
    plain = _srun_overrides(render(["pipeline=rl"]))
    assert not any(a.startswith("trainer") for a in plain)


@pytest.mark.parametrize("kwargs, option", [
    ({"gpus_per_node": 4, "tasks_per_node": 1}, "--tasks-per-node=1"),
    ({"nodes": 0}, "--nodes=0"),
    ({"gpus_per_node": -1}, "--gpus-per-node=-1"),
    ({"cpus": 0}, "--cpus-per-task=0"),
    ({"time_limit": "soon"}, "--time='soon'"),
    ({"time_limit": "1:00", "signal_s": 90}, "--signal-s=90"),
    ({"name": "my job"}, "--name='my job'"),
])
def test_sbatch_arguments_are_checked(kwargs, option):
    with pytest.raises(ConfigError, match=re.escape(option)):
        render([], **kwargs)


def test_sbatch_refuses_trainer_overrides_it_sets():
    with pytest.raises(ConfigError, match="trainer.devices=2"):
        render(["trainer.devices=2"], gpus_per_node=4)


def test_sbatch_cli_reports_bad_arguments_in_one_line():
    done = subprocess.run([sys.executable, "-m", "pipelines.slurm.sbatch", "--gpus-per-node", "2",
                           "--tasks-per-node", "1"], capture_output=True, text=True)
    assert done.returncode == 2 and "--tasks-per-node=1 is invalid" in done.stderr
    assert "Traceback" not in done.stderr


def test_slurm_launcher_resources_pick_the_trainer():
    cfg = _compose(["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=4",
                    "hydra.launcher.tasks_per_node=4", "hydra.launcher.nodes=2",
                    "hydra.launcher.signal_delay_s=300"], hydra_config=True)
    assert cfg.hydra.launcher.additional_parameters.signal == "USR1@300"  # no longer ignored
    assert "export ADAMLAB_SIGNAL_S=300" in cfg.hydra.launcher.setup
    HydraConfig.instance().set_config(cfg)
    t = trainer_from_launcher(cfg).trainer
    assert (t.accelerator, t.devices, t.num_nodes, t.strategy) == ("gpu", 4, 2, "ddp")


def test_slurm_launcher_refuses_a_contradicting_trainer_override():
    cfg = _compose(["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=2",
                    "hydra.launcher.tasks_per_node=2", "trainer.devices=1"], hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with pytest.raises(ConfigError, match="trainer.devices='1'.*launcher's resources"):
        trainer_from_launcher(cfg)


def test_resources_to_trainer():
    assert resources_to_trainer(1, 1, None) == {}
    assert resources_to_trainer(1, 1, 1) == {"accelerator": "gpu", "devices": 1,
                                             "num_nodes": 1, "strategy": "auto"}
    assert resources_to_trainer(3, 2, 0)["strategy"] == "ddp"
    with pytest.raises(ConfigError, match="hydra.launcher.tasks_per_node=1"):
        resources_to_trainer(1, 1, 2)


def test_cpu_ddp_shards_the_data(tmp_path):
    """Two ranks (gloo) each train on half the structures: half the optimizer steps per epoch
    of one process, and the run completes with one summary."""
    args = overrides("mlip", tmp_path, "trainer.max_epochs=2")
    one = train(tmp_path / "one", args)
    assert one.returncode == 0, one.stderr[-3000:]
    two = train(tmp_path / "two", [*args, "trainer=ddp", "trainer.devices=2",
                                   "trainer.accelerator=cpu", "trainer.precision=32-true"])
    assert two.returncode == 0, two.stderr[-3000:]
    assert "MEMBER: 2/2" in two.stderr + two.stdout  # really two ranks

    def steps(run_dir):
        return max(int(r["step"]) for r in table(run_dir)) + 1
    assert steps(tmp_path / "two") == pytest.approx(steps(tmp_path / "one") / 2, abs=1)
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["metrics"]["n_train"] > 0
