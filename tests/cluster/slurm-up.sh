#!/usr/bin/env bash
# Bring up a single-node SLURM on this machine for the test suite (and CI).
#
#   tests/cluster/slurm-up.sh      # install (if missing), start munged, slurmctld, slurmd
#   tests/cluster/slurm-down.sh    # stop them again (by their PID files)
#
# Debian/Ubuntu packages `slurmctld slurmd slurm-client munge` are installed with
# apt's --no-install-recommends when `slurmctld` is missing (needs root).  The one node
# is `localhost` (NodeAddr=127.0.0.1) with the CPUs and RealMemory `slurmd -C` reports;
# proctrack/linuxproc, task/none, no accounting; configuration, state, spool, logs and
# PID files live under $VOLSEG_SLURM_DIR (default: ${TMPDIR:-/tmp}/volseg-slurm).
# Clients find the configuration through /etc/slurm/slurm.conf, which is linked to ours
# when the machine has none (otherwise export SLURM_CONF as printed at the end).
set -euo pipefail

DIR="${VOLSEG_SLURM_DIR:-${TMPDIR:-/tmp}/volseg-slurm}"
PARTITION="${VOLSEG_SLURM_PARTITION:-debug}"

say() { echo "slurm-up: $*"; }
die() { echo "slurm-up: $*" >&2; exit 1; }

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
   || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    [ "$(id -u)" = 0 ] || die "SLURM is not installed and this is not root: apt-get install slurmctld slurmd slurm-client munge"
    command -v apt-get >/dev/null || die "SLURM is not installed and there is no apt-get"
    say "installing slurmctld slurmd slurm-client munge (apt, --no-install-recommends)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi
[ "$(id -u)" = 0 ] || die "the daemons are started as root (SlurmUser=root); run as root"

mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
CONF="$DIR/slurm.conf"

# --- munge: reuse a running munged, otherwise start one (and remember that we did) ---
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "munged already running"
else
    if [ ! -s /etc/munge/munge.key ]; then
        say "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge /etc/munge/munge.key
    chmod 0700 /etc/munge
    chmod 0400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    chmod 0755 /run/munge
    mkdir -p "$DIR/munge" && chown munge:munge "$DIR/munge"
    runuser -u munge -- /usr/sbin/munged --pid-file="$DIR/munge/munged.pid"
    touch "$DIR/munged.ours"
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n | unmunge >/dev/null || die "munged does not answer (see /var/log/munge/munged.log)"
    say "munged started"
fi

# --- slurm.conf: one node, this machine's CPUs and memory ---
HW="$(slurmd -C | head -1)"
CPUS="$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$HW")"
MEM="$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$HW")"
[ -n "$CPUS" ] && [ -n "$MEM" ] || die "cannot read CPUs/RealMemory from 'slurmd -C': $HW"
cat > "$CONF" <<CONF
# written by tests/cluster/slurm-up.sh: a single-node SLURM on loopback
ClusterName=volseg
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=${VOLSEG_SLURMCTLD_PORT:-6817}
SlurmdPort=${VOLSEG_SLURMD_PORT:-6818}
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
SchedulerParameters=sched_interval=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP
# a partition whose 1-minute limit no test job fits: jobs pend with PartitionTimeLimit
PartitionName=short Nodes=localhost MaxTime=1 State=UP
CONF

# clients (sbatch, squeue, scancel from dask-jobqueue) read /etc/slurm/slurm.conf
mkdir -p /etc/slurm
if [ ! -e /etc/slurm/slurm.conf ] || [ "$(readlink /etc/slurm/slurm.conf)" = "$CONF" ]; then
    ln -sfn "$CONF" /etc/slurm/slurm.conf
    touch "$DIR/conf-link.ours"
else
    say "/etc/slurm/slurm.conf exists and is not ours: export SLURM_CONF=$CONF"
fi
export SLURM_CONF="$CONF"

running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if running "$DIR/slurmctld.pid"; then
    say "slurmctld already running"
else
    slurmctld -f "$CONF" -i
fi
if running "$DIR/slurmd.pid"; then
    say "slurmd already running"
else
    slurmd -f "$CONF" -N localhost
fi

for _ in $(seq 120); do
    state="$(sinfo -h -n localhost -o %t 2>/dev/null | head -1 || true)"
    case "$state" in
        idle|mix|alloc) break ;;
        down*|drain*) scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
done
state="$(sinfo -h -n localhost -o %t 2>/dev/null | head -1 || true)"
case "$state" in
    idle|mix|alloc) ;;
    *) tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
       die "node localhost is '${state:-unknown}', not idle, after 60 s (logs in $DIR/log)" ;;
esac
say "up: partition $PARTITION, node localhost ($CPUS CPUs, $MEM MB), state $state; SLURM_CONF=$CONF"
