#!/usr/bin/env bash
# Stops the local Slurm that scripts/slurm_up.sh started, and wipes its state. Idempotent.
# It touches nothing else: the config must carry slurm_up.sh's mark, scontrol must report
# that cluster, and only the daemons whose pid files slurm_up.sh left under $BASE are stopped
# (munged only if slurm_up.sh started it).
set -uo pipefail
running() { kill -0 "$1" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
BASE=${SLURM_LOCAL_DIR:-/tmp/adamlab-slurm}
CONF=${SLURM_CONF:-/etc/slurm/slurm.conf}  # Slurm's own variable: the daemons and commands read it too
MARK="# written by adamlab scripts/slurm_up.sh"

if ! grep -qxF "$MARK" "$CONF" 2>/dev/null; then
  echo "slurm: $CONF was not written by scripts/slurm_up.sh: no local cluster to stop"
  exit 0
fi
pids=()
for daemon in slurmd slurmctld munged; do
  pid=$(cat "$BASE/run/$daemon.pid" 2>/dev/null) && [ -n "$pid" ] && running "$pid" \
    && pids+=("$pid")
done
config=$(timeout 10 scontrol show config 2>/dev/null)
if grep -q "ClusterName *= *adamlab-local" <<<"$config" \
   && grep -q "SlurmctldPidFile *= *$BASE/run/slurmctld.pid" <<<"$config"; then
  timeout 10 scancel --quiet --user="$(id -un)" 2>/dev/null  # the jobs of this cluster only
fi
for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
for _ in $(seq 100); do  # at most 10 s for a clean exit
  alive=0
  for pid in "${pids[@]}"; do running "$pid" && alive=1; done
  [ "$alive" = 0 ] && break
  sleep 0.1
done
for pid in "${pids[@]}"; do running "$pid" && kill -9 "$pid" 2>/dev/null; done
rm -rf "$BASE/state" "$BASE/spool" "$BASE/run"
echo "slurm: down"
exit 0
