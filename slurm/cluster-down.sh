#!/usr/bin/env bash
# Stop the one-node Slurm cluster started by slurm/cluster-up.sh.
#
#   bash slurm/cluster-down.sh [STATE_DIR] [--purge]
#
# Cancels all jobs first (so no slurmstepd outlives slurmd), then stops slurmd, slurmctld,
# slurmdbd, MariaDB and munged through their own pid files; a pid is signalled only if its
# /proc/PID/comm names the expected daemon.  --purge then deletes STATE_DIR.
set -uo pipefail

STATE=${SLURMBOX_STATE:-/tmp/hpc-forget-slurm}
PURGE=0
for arg in "$@"; do
    case "$arg" in
    --purge) PURGE=1 ;;
    -*) echo "cluster-down.sh: unknown option $arg; usage: cluster-down.sh [STATE_DIR] [--purge]" >&2; exit 2 ;;
    *) STATE=$arg ;;
    esac
done
case "$STATE" in /*) ;; *) STATE="$(pwd)/$STATE" ;; esac
export SLURM_CONF="$STATE/etc/slurm.conf"

if [ ! -d "$STATE/run" ]; then
    echo "cluster-down.sh: no cluster state in $STATE; nothing to stop" >&2
    exit 0
fi

# stop PIDFILE COMM: TERM the daemon, wait up to 20 s, then KILL.
stop() {
    local pidfile="$STATE/run/$1.pid" comm=$2 pid i
    [ -s "$pidfile" ] || return 0
    pid=$(tr -dc 0-9 <"$pidfile")
    if [ -z "$pid" ] || [ ! -r "/proc/$pid/comm" ] || [[ "$(cat "/proc/$pid/comm")" != "$comm"* ]]; then
        rm -f "$pidfile"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 200); do
        [ -d "/proc/$pid" ] || break
        sleep 0.1
    done
    if [ -d "/proc/$pid" ]; then
        echo "cluster-down.sh: $comm ($pid) did not exit after 20 s; sending KILL" >&2
        kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$pidfile"
}

if [ -f "$SLURM_CONF" ] && command -v scancel >/dev/null && scontrol ping >/dev/null 2>&1; then
    scancel --quiet --full --user="$(id -un)" 2>/dev/null
    for i in $(seq 50); do
        [ -z "$(squeue -h -t running,completing -o %i 2>/dev/null)" ] && break
        sleep 0.2
    done
fi

# Stop in parallel where order does not matter: slurmd and slurmctld, then slurmdbd, the
# database, and munged last (the others authenticate through it while they shut down).
stop slurmd slurmd &
stop slurmctld slurmctld &
wait
stop slurmdbd slurmdbd
stop mariadbd mariadbd
stop munged munged

if [ "$PURGE" = 1 ]; then
    rm -rf -- "$STATE"
    echo "cluster-down.sh: stopped and removed $STATE" >&2
else
    echo "cluster-down.sh: stopped (state kept in $STATE; --purge deletes it)" >&2
fi
