#!/usr/bin/env bash
# Stops the local Slurm of scripts/slurm_up.sh and wipes its state. Idempotent.
set -uo pipefail
running() { pgrep -x -r R,S,D "$1" >/dev/null; }  # zombies do not count
BASE=${SLURM_LOCAL_DIR:-/tmp/adamlab-slurm}
scancel --quiet --user="$(id -un)" 2>/dev/null
for daemon in slurmd slurmctld; do
  pid=$(cat "$BASE/run/$daemon.pid" 2>/dev/null || pgrep -x "$daemon" | head -1)
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
done
mpid=$(cat /run/munge/munged.pid 2>/dev/null)
[ -n "$mpid" ] && kill "$mpid" 2>/dev/null
for _ in $(seq 100); do  # at most 10 s for a clean exit
  running slurmctld || running slurmd || running munged \
    || break
  sleep 0.1
done
for daemon in slurmd slurmctld; do
  pid=$(pgrep -x "$daemon" | head -1)
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
done
rm -rf "$BASE/state" "$BASE/spool" "$BASE/run"
echo "slurm: down"
exit 0
