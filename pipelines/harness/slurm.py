"""Preemption and time limits on Slurm: checkpoint at the next step, requeue, stop.

Slurm sends SIGUSR1 ``--signal-s`` seconds before a time limit (and on preemption with a grace
time). The handler only notes it; :class:`~pipelines.harness.checkpoints.RunCheckpoints`
writes ``hpc_ckpt_N.ckpt`` at the next optimizer step and calls
:func:`after_signal_checkpoint`, which requeues the job (its id, hence its run dir, stays) and
ends the attempt. The requeued attempt continues from that checkpoint by itself. A requeue
that fails, or one past ``max_requeues``, ends the job with a non-zero status and says how to
continue. Outside Slurm a SIGUSR1 only writes the checkpoint and training goes on.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from datetime import datetime

from .errors import RunFailed
from .loggers import finish

log = logging.getLogger(__name__)
_pending = threading.Event()


class Requeued(SystemExit):
    """This attempt checkpointed and requeued its job; the rerun resumes from the checkpoint.

    A SystemExit with status 0, so that nothing on its way out (Hydra's job wrapper,
    submitit) records the attempt as a result or an error: the job is not done yet."""

    def __init__(self):
        super().__init__(0)


def install_signal_handler() -> None:
    """Note SIGUSR1 from now on (its default action would kill the process)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGUSR1, lambda signum, frame: _pending.set())


def pending() -> bool:
    return _pending.is_set()


def clear() -> None:
    _pending.clear()


def job_id() -> str | None:
    """This job (or array task) as ``scontrol`` names it; None outside a Slurm job."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def signal_reason(job: str) -> str:
    """Time limit or preemption, from the job's end time and the signal's lead
    (``ADAMLAB_SIGNAL_S``, written by our sbatch scripts and the launcher; 90 s otherwise)."""
    lead = float(os.environ.get("ADAMLAB_SIGNAL_S", 90))
    try:
        out = _scontrol(["show", "job", "-o", job], timeout=10).stdout
        end = datetime.fromisoformat(re.search(r"\bEndTime=(\S+)", out)[1])
    except (OSError, subprocess.SubprocessError, TypeError, ValueError):
        return "SIGUSR1 (the job's end time is unknown: time limit or preemption)"
    left = end.timestamp() - time.time()
    if left <= lead + 60:
        return f"SIGUSR1 {left:.0f} s before the job's time limit ({end.isoformat()})"
    return (f"SIGUSR1 {left:.0f} s before the job's time limit: a preemption or a manual "
            "`scancel --signal=USR1`")


def _scontrol(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """``scontrol`` from PATH, else through a login shell: batch steps often run with a bare
    PATH, and sites add Slurm's commands in the login profile (``/etc/profile.d``, modules)."""
    if shutil.which("scontrol"):
        cmd = ["scontrol", *args]
    else:
        cmd = ["/bin/sh", "-lc", "exec scontrol " + shlex.join(args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def requeue(job: str) -> None:
    """``scontrol requeue`` this job; RunFailed (exit 3) with Slurm's answer if it fails."""
    try:
        done = _scontrol(["requeue", job], timeout=60)
    except (OSError, subprocess.SubprocessError) as error:
        raise RunFailed(f"could not run `scontrol requeue {job}` ({error})") from None
    if done.returncode:
        answer = (done.stderr or done.stdout).strip().splitlines()
        raise RunFailed(f"`scontrol requeue {job}` failed with status {done.returncode}"
                        f" ({answer[-1] if answer else 'no output'})")
    log.info("requeued Slurm job %s", job)


def after_signal_checkpoint(trainer, path, max_requeues: int) -> None:
    """Requeue and end this attempt (in a Slurm job); outside Slurm, go on training."""
    job = job_id()
    if job is None:
        log.warning("SIGUSR1: wrote %s; not a Slurm job, so training goes on", path)
        return
    print(f"{signal_reason(job)}: wrote {path}", flush=True)
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    if restarts >= max_requeues:
        raise RunFailed(f"job {job} was requeued {restarts} times (max_requeues={max_requeues})"
                        f": it stops here; submit it again to continue from {path}")
    if trainer.is_global_zero:  # one requeue per job; the other ranks only stop
        try:
            requeue(job)
        except RunFailed as error:
            raise RunFailed(f"{error}: the job ends here; submit it again to continue from "
                            f"{path}") from None
    # Slurm now stops this attempt (SIGTERM, then SIGKILL after KillWait): flush logs first
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for logger in trainer.loggers:
        logger.finalize("finished")
    finish(trainer.loggers)
    if trainer.is_global_zero:
        print(f"requeued job {job} after writing {path}; the rerun resumes from it", flush=True)
    raise Requeued
