"""Writes an sbatch script for one training run that survives preemption and time limits.

    python -m pipelines.slurm.sbatch --nodes 2 --gpus-per-node 4 --time 24:00:00 \\
        -o train.sbatch -- pipeline=mlip optim=adamw
    sbatch train.sbatch

GPUs requested mean the GPU trainer with one DDP process per GPU (``trainer=gpu
trainer.devices=<gpus per node> trainer.num_nodes=<nodes> trainer.strategy=ddp``); several CPU
tasks mean CPU DDP (gloo). Slurm sends SIGUSR1 ``--signal-s`` before the end; at the next
optimizer step the run writes hpc_ckpt_N.ckpt in the run dir, requeues the job and exits
(pipelines.harness.slurm); the rerun has the same job id, hence the same run dir and W&B id,
and continues from its newest checkpoint. A crash without a signal loses at most one
``checkpoint_every`` interval: requeue or resubmit and the run continues the same way.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import time
from pathlib import Path

from pipelines.harness.errors import ConfigError
from pipelines.slurm.launcher import resources_to_trainer

TEMPLATE = """#!/bin/bash
#SBATCH --job-name={name}
#SBATCH --nodes={nodes}
#SBATCH --ntasks-per-node={tasks}
#SBATCH --cpus-per-task={cpus}
{gpus}#SBATCH --time={time}
{partition}{mem}#SBATCH --signal=SIGUSR1@{signal_s}
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output={log}
{extra}
# SIGUSR1 -> hpc_ckpt_N.ckpt at the next optimizer step, then requeue; the rerun keeps this
# job id, so run dir and W&B id below stay the same and training continues from the newest
# checkpoint of the run dir (a crash without a signal too, once the job is requeued).
RUN_DIR="${{ADAMLAB_RUNS:-{runs}}}/slurm/{name}-${{SLURM_JOB_ID}}"
export WANDB_RUN_ID="{name}-{stamp}-${{SLURM_JOB_ID}}" WANDB_RESUME=allow
export ADAMLAB_SIGNAL_S={signal_s}
echo "$(date -Is) job $SLURM_JOB_ID restart ${{SLURM_RESTART_COUNT:-0}} -> $RUN_DIR"

srun {adamlab} train {overrides}{trainer}"hydra.run.dir=$RUN_DIR"
"""
# sbatch --time: minutes, minutes:seconds, hours:minutes:seconds, days-hours[:minutes[:seconds]]
TIME = re.compile(r"\d+(:\d{1,2}){0,2}|\d+-\d+(:\d{1,2}){0,2}")
OWN = ("trainer=", "trainer.accelerator=", "trainer.devices=", "trainer.num_nodes=",
       "trainer.strategy=", "hydra.run.dir=")


def seconds(limit: str) -> int:
    """``--time`` in seconds (Slurm's formats)."""
    days, hms = limit.split("-", 1) if "-" in limit else ("0", None)
    if hms is not None:  # days-hours[:minutes[:seconds]]
        h, m, s = ([int(p) for p in hms.split(":")] + [0, 0])[:3]
    else:                # minutes, minutes:seconds or hours:minutes:seconds
        parts = [int(p) for p in limit.split(":")]
        h, m, s = {1: (0, parts[0], 0), 2: (0, *parts), 3: tuple(parts)}[len(parts)]
    return int(days) * 86400 + h * 3600 + m * 60 + s


def render(overrides: list[str], *, nodes: int = 1, gpus_per_node: int = 0,
           tasks_per_node: int | None = None, cpus: int = 1, time_limit: str = "01:00:00",
           partition: str | None = None, mem: str | None = None, name: str = "adamlab",
           signal_s: int = 90, runs: str = "runs", adamlab: str = "adamlab",
           extra: list[str] = ()) -> str:
    """The script; ConfigError (naming the option) for arguments Slurm or Lightning would
    reject later."""
    tasks = tasks_per_node or max(gpus_per_node, 1)
    trainer = resources_to_trainer(nodes, tasks, gpus_per_node,
                                   option=lambda key: "--" + key.replace("_", "-"))
    if cpus < 1:
        raise ConfigError("--cpus-per-task", cpus, "an integer >= 1")
    if not TIME.fullmatch(time_limit) or seconds(time_limit) <= 0:
        raise ConfigError("--time", time_limit, "a Slurm time limit: MM, HH:MM:SS or D-HH:MM:SS")
    if not 0 < signal_s < seconds(time_limit):
        raise ConfigError("--signal-s", signal_s,
                          f"seconds > 0 and below the time limit ({seconds(time_limit)} s)")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConfigError("--name", name, "letters, digits, '.', '_' and '-' (it names files)")
    for override in overrides:
        if override.lstrip("+~").startswith(OWN):
            raise ConfigError("override", override, "no trainer device, node, strategy or "
                              "run-dir override: --nodes/--gpus-per-node/--tasks-per-node set "
                              "them, the job id sets the run dir")
    if gpus_per_node:
        trainer = {"": "gpu", **trainer}  # trainer=gpu (bf16-mixed where the pipeline allows)
    elif trainer:
        trainer = {"": "ddp", **trainer}
    trainer_args = "".join(
        shlex.quote(f"trainer={v}" if not k else f"trainer.{k}={v}") + " "
        for k, v in trainer.items())
    quoted = "".join(shlex.quote(o) + " " for o in overrides)
    return TEMPLATE.format(
        name=name, nodes=nodes, tasks=tasks, cpus=cpus, time=time_limit, signal_s=signal_s,
        gpus=f"#SBATCH --gpus-per-node={gpus_per_node}\n" if gpus_per_node else "",
        partition=f"#SBATCH --partition={partition}\n" if partition else "",
        mem=f"#SBATCH --mem={mem}\n" if mem else "",
        log=f"{name}-%j.log", runs=runs, stamp=time.strftime("%Y%m%d%H%M%S"),
        extra="".join(f"#SBATCH {e}\n" for e in extra), adamlab=adamlab, overrides=quoted,
        trainer=trainer_args)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ours, overrides = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv \
        else (argv, [])
    p = argparse.ArgumentParser(prog="python -m pipelines.slurm.sbatch",
                                description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=1, help="= trainer.num_nodes")
    p.add_argument("--gpus-per-node", type=int, default=0,
                   help="= trainer.devices, one task each (0: CPU)")
    p.add_argument("--tasks-per-node", type=int,
                   help="CPU DDP processes per node (default: one per GPU, else 1)")
    p.add_argument("--cpus-per-task", type=int, default=1)
    p.add_argument("--time", default="01:00:00")
    p.add_argument("--partition")
    p.add_argument("--mem")
    p.add_argument("--name", default="adamlab")
    p.add_argument("--signal-s", type=int, default=90, help="SIGUSR1 this long before the end")
    p.add_argument("--runs", default="runs", help="runs root (ADAMLAB_RUNS overrides it)")
    p.add_argument("--adamlab", default="adamlab", help="the adamlab command on the cluster")
    p.add_argument("--extra", action="append", default=[], help="another #SBATCH line")
    p.add_argument("-o", "--output", help="write here instead of stdout")
    a = p.parse_args(ours)
    try:
        script = render(overrides, nodes=a.nodes, gpus_per_node=a.gpus_per_node,
                        tasks_per_node=a.tasks_per_node, cpus=a.cpus_per_task,
                        time_limit=a.time, partition=a.partition, mem=a.mem, name=a.name,
                        signal_s=a.signal_s, runs=a.runs, adamlab=a.adamlab, extra=a.extra)
    except ConfigError as error:
        p.error(str(error))
    if a.output:
        Path(a.output).write_text(script)
        print(f"wrote {a.output}: sbatch {a.output}", file=sys.stderr)
    else:
        sys.stdout.write(script)


if __name__ == "__main__":
    main()
