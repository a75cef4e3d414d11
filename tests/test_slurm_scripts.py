"""Slurm plumbing that needs no cluster: scontrol through a login shell when PATH lacks it,
and the local-cluster scripts touching only the cluster that scripts/slurm_up.sh started.
(The real thing: tests/test_slurm.py under `make test-slurm`.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pipelines.harness import slurm

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
MARK = "# written by adamlab scripts/slurm_up.sh"


def _fake(bin_dir: Path, name: str, body: str) -> Path:
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
    (bin_dir / name).chmod(0o755)
    return bin_dir


def test_requeue_finds_scontrol_through_the_login_shell(tmp_path, monkeypatch):
    """PATH without scontrol (a bare batch environment); the login profile adds it."""
    calls = tmp_path / "calls"
    site = _fake(tmp_path / "site-slurm", "scontrol", f'echo "$@" >> {calls}')
    home = tmp_path / "home"
    home.mkdir()
    (home / ".profile").write_text(f'PATH="{site}:$PATH"; export PATH\n')
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    slurm.requeue("4242_3")
    assert calls.read_text().split() == ["requeue", "4242_3"]


def test_requeue_through_the_login_shell_reports_a_failure(tmp_path, monkeypatch):
    site = _fake(tmp_path / "site-slurm", "scontrol",
                 'echo "scontrol: error: Invalid job id specified" >&2; exit 1')
    home = tmp_path / "home"
    home.mkdir()
    (home / ".profile").write_text(f'PATH="{site}:$PATH"; export PATH\n')
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(slurm.RunFailed, match=r"`scontrol requeue 7` failed with status 1 "
                                              r"\(scontrol: error: Invalid job id specified\)"):
        slurm.requeue("7")


def _down(tmp_path: Path, conf_text: str, cluster: str) -> tuple[subprocess.CompletedProcess,
                                                                 Path]:
    """slurm_down.sh against a config and a scontrol that reports ``cluster``; a fake scancel
    records any call. The pid-file dir is empty: no daemon of this machine is touched."""
    conf = tmp_path / "slurm.conf"
    conf.write_text(conf_text)
    calls = tmp_path / "scancel-calls"
    bin_dir = _fake(tmp_path / "bin", "scancel", f'echo "$@" >> {calls}')
    _fake(bin_dir, "scontrol",
          f'echo "ClusterName             = {cluster}"\n'
          f'echo "SlurmctldPidFile        = {tmp_path}/base/run/slurmctld.pid"')
    env = {**os.environ, "SLURM_CONF": str(conf), "SLURM_LOCAL_DIR": str(tmp_path / "base"),
           "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(SCRIPTS / "slurm_down.sh")], env=env,
                          capture_output=True, text=True, timeout=60)
    return done, calls


def test_slurm_down_leaves_a_config_it_did_not_write_alone(tmp_path):
    done, calls = _down(tmp_path, "ClusterName=production\n", "adamlab-local")
    assert done.returncode == 0 and "was not written by scripts/slurm_up.sh" in done.stdout
    assert not calls.exists()  # no scancel


def test_slurm_down_cancels_nothing_on_another_cluster(tmp_path):
    """The mark is there but scontrol talks to another cluster: no job is cancelled."""
    done, calls = _down(tmp_path, f"{MARK}\nClusterName=adamlab-local\n", "production")
    assert done.returncode == 0 and "slurm: down" in done.stdout
    assert not calls.exists()


def test_slurm_down_cancels_the_jobs_of_its_own_cluster(tmp_path):
    """The control for the two above: with its own cluster reported, it does call scancel."""
    done, calls = _down(tmp_path, f"{MARK}\nClusterName=adamlab-local\n", "adamlab-local")
    assert done.returncode == 0
    assert calls.read_text().split()[:1] == ["--quiet"]


def test_slurm_up_refuses_to_replace_another_clusters_config(tmp_path):
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=production\n")
    done = subprocess.run(["bash", str(SCRIPTS / "slurm_up.sh")],
                          env={**os.environ, "SLURM_CONF": str(conf),
                               "SLURM_LOCAL_DIR": str(tmp_path / "base")},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "refusing to replace" in done.stderr
    assert conf.read_text() == "ClusterName=production\n"
