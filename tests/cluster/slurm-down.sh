#!/usr/bin/env bash
# Stop the single-node SLURM started by tests/cluster/slurm-up.sh (by its PID files).
# Jobs still queued or running are cancelled first; munged is stopped only if
# slurm-up.sh started it.  The state folder is removed unless VOLSEG_SLURM_KEEP=1.
set -uo pipefail

DIR="${VOLSEG_SLURM_DIR:-${TMPDIR:-/tmp}/volseg-slurm}"
[ -d "$DIR" ] || { echo "slurm-down: nothing under $DIR"; exit 0; }
export SLURM_CONF="$DIR/slurm.conf"

stop() {  # stop NAME PIDFILE: SIGTERM, wait up to 10 s, then SIGKILL
    local name="$1" file="$2" pid
    [ -s "$file" ] || return 0
    pid="$(cat "$file")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        echo "slurm-down: stopped $name (pid $pid)"
    fi
    rm -f "$file"
}

if [ -s "$DIR/slurmctld.pid" ] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null; then
    timeout 10 scancel --quiet -u "$(id -un)" 2>/dev/null || true   # this SLURM's jobs
fi
stop slurmd "$DIR/slurmd.pid"
stop slurmctld "$DIR/slurmctld.pid"
if [ -e "$DIR/munged.ours" ]; then
    stop munged "$DIR/munge/munged.pid"
    rm -f "$DIR/munged.ours"
fi
if [ -e "$DIR/conf-link.ours" ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$DIR/slurm.conf" ]; then
    rm -f /etc/slurm/slurm.conf
fi
if [ "${VOLSEG_SLURM_KEEP:-0}" != 1 ]; then
    rm -rf "$DIR"
fi
echo "slurm-down: done"
