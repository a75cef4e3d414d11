"""Slurm: job-array sweeps (Hydra launcher) and sbatch scripts for single runs.

Both give each run a directory and W&B id derived from its Slurm job id, so a job that
is requeued after SIGUSR1 finds its own hpc checkpoint and continues its W&B run.
"""
