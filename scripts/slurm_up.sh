#!/usr/bin/env bash
# A one-node Slurm on this machine, for `pytest -m slurm` and for trying the sbatch scripts.
# Idempotent: a running cluster is left alone; stale state from an unclean stop is wiped.
# Facts behind each setting: /work/shared/notes/slurm-local.md (the lab's measurements).
set -euo pipefail
running() { pgrep -x -r R,S,D "$1" >/dev/null; }  # zombies do not count
BASE=${SLURM_LOCAL_DIR:-/tmp/adamlab-slurm}
HOST=$(hostname -s)
CONF=${SLURM_CONF:-/etc/slurm/slurm.conf}  # Slurm's own variable: the daemons and commands read it too
MARK="# written by adamlab scripts/slurm_up.sh"  # slurm_down.sh touches only this cluster

if [ -s "$CONF" ] && ! grep -qxF "$MARK" "$CONF"; then
  echo "slurm: $CONF exists and was not written by this script: refusing to replace" \
       "another cluster's config (remove it yourself if it is a leftover)" >&2
  exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi

if running slurmctld && running slurmd \
   && sinfo -h -o %t 2>/dev/null | grep -qx idle; then
  echo "slurm: already up ($BASE)"; exit 0
fi

# stale state from a killed session brings back phantom RUNNING jobs: start clean
running slurmctld || rm -rf "$BASE/state" "$BASE/spool"
mkdir -p "$BASE"/{state,spool,log,run} "$(dirname "$CONF")" /run/munge /var/log/munge /var/lib/munge

if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
if ! { [ -S /run/munge/munge.socket.2 ] && running munged; }; then
  runuser -u munge -- munged --force
  for _ in $(seq 50); do pgrep -x munged >/dev/null && break; sleep 0.1; done
  pgrep -x munged | head -1 > "$BASE/run/munged.pid"  # ours: slurm_down.sh may stop it
fi
for _ in $(seq 50); do [ -S /run/munge/munge.socket.2 ] && break; sleep 0.1; done
munge -n >/dev/null || { echo "slurm: munged did not start" >&2; exit 1; }

CPUS=$(nproc)
MEM=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))
cat > "$CONF" <<CONF
$MARK
ClusterName=adamlab-local
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=600
KillWait=5
SchedulerParameters=batch_sched_delay=0
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd.pid
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

running slurmctld || slurmctld
running slurmd || slurmd

for _ in $(seq 300); do  # at most 30 s
  sinfo -h -o %t 2>/dev/null | grep -qx idle && break
  sleep 0.1
done
sinfo -h -o %t | grep -qx idle || { echo "slurm: node never became idle" >&2; exit 1; }

# warm-up: the first job after slurmctld starts is slow (~3 s)
JOB=$(sbatch --parsable -o /dev/null --wrap true)
for _ in $(seq 300); do
  STATE=$(scontrol show job "$JOB" 2>/dev/null | grep -o 'JobState=[A-Z]*' | cut -d= -f2)
  [ "$STATE" = COMPLETED ] && break
  sleep 0.1
done
echo "slurm: up on $HOST ($CPUS CPUs, state in $BASE), warm-up job $JOB ${STATE:-?}"
