"""Writes an sbatch script for one training run that survives preemption and time limits.

    python -m pipelines.slurm.sbatch --nodes 2 --gpus-per-node 4 --time 24:00:00 \\
        -o train.sbatch -- pipeline=gnn optim=adamw trainer=ddp
    sbatch train.sbatch

Slurm sends SIGUSR1 90 s before the end; at the end of the epoch the run writes
hpc_ckpt_N.ckpt in the run dir, requeues the job and exits (pipelines.harness.slurm); the
rerun has the same job id, hence the same run dir and W&B id, and Lightning restores the
checkpoint by itself.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

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
# SIGUSR1 -> hpc_ckpt_N.ckpt at the epoch's end, then requeue; the rerun keeps this job id,
# so run dir and W&B id below stay the same and training resumes from the checkpoint.
RUN_DIR="${{ADAMLAB_RUNS:-{runs}}}/slurm/{name}-${{SLURM_JOB_ID}}"
export WANDB_RUN_ID="{name}-{stamp}-${{SLURM_JOB_ID}}" WANDB_RESUME=allow
echo "$(date -Is) job $SLURM_JOB_ID restart ${{SLURM_RESTART_COUNT:-0}} -> $RUN_DIR"

srun {adamlab} train {overrides}trainer.num_nodes={nodes} trainer.devices={tasks} \\
    "hydra.run.dir=$RUN_DIR"
"""


def render(overrides: list[str], *, nodes: int = 1, gpus_per_node: int = 0, cpus: int = 1,
           time_limit: str = "01:00:00", partition: str | None = None, mem: str | None = None,
           name: str = "adamlab", signal_s: int = 90, runs: str = "runs",
           adamlab: str = "adamlab", extra: list[str] = ()) -> str:
    """The script; DDP: one task per GPU (``--ntasks-per-node`` = ``trainer.devices``)."""
    tasks = max(gpus_per_node, 1)
    quoted = "".join(shlex.quote(o) + " " for o in overrides)
    return TEMPLATE.format(
        name=name, nodes=nodes, tasks=tasks, cpus=cpus, time=time_limit, signal_s=signal_s,
        gpus=f"#SBATCH --gpus-per-node={gpus_per_node}\n" if gpus_per_node else "",
        partition=f"#SBATCH --partition={partition}\n" if partition else "",
        mem=f"#SBATCH --mem={mem}\n" if mem else "",
        log=f"{name}-%j.log", runs=runs, stamp=time.strftime("%Y%m%d%H%M%S"),
        extra="".join(f"#SBATCH {e}\n" for e in extra), adamlab=adamlab, overrides=quoted)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ours, overrides = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv \
        else (argv, [])
    p = argparse.ArgumentParser(prog="python -m pipelines.slurm.sbatch",
                                description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=1, help="= trainer.num_nodes")
    p.add_argument("--gpus-per-node", type=int, default=0, help="= trainer.devices (0: CPU)")
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
    script = render(overrides, nodes=a.nodes, gpus_per_node=a.gpus_per_node,
                    cpus=a.cpus_per_task, time_limit=a.time, partition=a.partition, mem=a.mem,
                    name=a.name, signal_s=a.signal_s, runs=a.runs, adamlab=a.adamlab,
                    extra=a.extra)
    if a.output:
        Path(a.output).write_text(script)
        print(f"wrote {a.output}: sbatch {a.output}", file=sys.stderr)
    else:
        sys.stdout.write(script)


if __name__ == "__main__":
    main()
