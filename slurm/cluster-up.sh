#!/usr/bin/env bash
# Start a real one-node Slurm cluster (with accounting) on this machine, for trying hpc-forget
# and for its integration tests.  Debian/Ubuntu, run as root (a VM, a container or CI).
#
#   bash slurm/cluster-up.sh [STATE_DIR]        # default: $SLURMBOX_STATE or /tmp/hpc-forget-slurm
#   eval "$(bash slurm/cluster-up.sh | grep '^export ')"
#
# Everything (configs, munge key, MariaDB data, spool, logs, pid files) lives under STATE_DIR;
# nothing is written to /etc.  Clients find the cluster through SLURM_CONF, printed at the end.
# Running it again while the cluster is up returns in about a second.  Stop it with
# slurm/cluster-down.sh [STATE_DIR].
#
# Environment: SLURMBOX_ACCOUNTING=0 skips slurmdbd/MariaDB (no sacct: submitit cannot see
# failed jobs then); SLURMBOX_DB_PORT (13306); SLURMBOX_PROBE=0 skips the probe job;
# SLURMBOX_WAIT (60) bounds every wait, in seconds.
set -euo pipefail

STATE=${1:-${SLURMBOX_STATE:-/tmp/hpc-forget-slurm}}
ACCOUNTING=${SLURMBOX_ACCOUNTING:-1}
DB_PORT=${SLURMBOX_DB_PORT:-13306}
PROBE=${SLURMBOX_PROBE:-1}
WAIT=${SLURMBOX_WAIT:-60}
CLUSTER=slurmbox

die() { echo "cluster-up.sh: $*" >&2; exit 1; }
log() { echo "cluster-up.sh: $*" >&2; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts daemons); use sudo, a VM or a container"
case "$STATE" in /*) ;; *) STATE="$(pwd)/$STATE" ;; esac
case "$STATE" in *[[:space:]]*|*\'*|*\"*|*'$'*|*,*|*:*|*=*) die "state dir '$STATE' must not contain spaces, quotes, \$, ',', ':' or '=' (daemon configs cannot quote them); pass another STATE_DIR" ;; esac

CONF="$STATE/etc/slurm.conf"
export SLURM_CONF="$CONF"

# --- helpers --------------------------------------------------------------------------------
# pid_alive PIDFILE COMM: the pid in PIDFILE runs and its /proc/PID/comm starts with COMM.
pid_alive() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(tr -dc 0-9 <"$1")
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
    case "$(cat "/proc/$pid/comm")" in "$2"*) return 0 ;; *) return 1 ;; esac
}

# wait_for DESCRIPTION COMMAND...: retry COMMAND every 0.2 s for at most $WAIT seconds.
wait_for() {
    local what=$1 deadline=$((SECONDS + WAIT))
    shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || die "timed out after ${WAIT}s waiting for $what; see $STATE/log/"
        sleep 0.2
    done
}

node_state() { sinfo -h -N -o %T 2>/dev/null | head -n 1; }
node_idle() { case "$(node_state)" in idle | mixed | allocated) return 0 ;; *) return 1 ;; esac; }

all_up() {
    pid_alive "$STATE/run/munged.pid" munged || return 1
    if [ "$ACCOUNTING" = 1 ]; then
        pid_alive "$STATE/run/mariadbd.pid" mariadbd || return 1
        pid_alive "$STATE/run/slurmdbd.pid" slurmdbd || return 1
    fi
    pid_alive "$STATE/run/slurmctld.pid" slurmctld || return 1
    pid_alive "$STATE/run/slurmd.pid" slurmd || return 1
    node_idle
}

print_env() {
    echo "export SLURM_CONF=$CONF"
    log "cluster '$CLUSTER' is up (state in $STATE); run the line above in your shell"
}

if [ -f "$CONF" ] && all_up; then
    print_env
    exit 0
fi

# --- packages -------------------------------------------------------------------------------
need=()
command -v slurmctld >/dev/null || need+=(slurmctld)
command -v slurmd >/dev/null || need+=(slurmd)
command -v sbatch >/dev/null || need+=(slurm-client)
command -v munged >/dev/null || need+=(munge)
if [ "$ACCOUNTING" = 1 ]; then
    command -v slurmdbd >/dev/null || need+=(slurmdbd)
    command -v mariadbd >/dev/null || need+=(mariadb-server)
fi
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]} (apt-get, --no-install-recommends)"
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        # keep package scripts from starting system-wide services
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    trap '[ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
    if ! apt-cache show slurmctld >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
    trap - EXIT
fi

mkdir -p "$STATE"/{etc,run,log,slurmctld,slurmd,munge}
chmod 755 "$STATE" "$STATE/munge" # munged: the socket directory must be searchable by all

HOST=$(hostname -s)

# --- munge ----------------------------------------------------------------------------------
if ! pid_alive "$STATE/run/munged.pid" munged; then
    if [ ! -s "$STATE/munge/munge.key" ]; then
        dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
    fi
    chmod 600 "$STATE/munge/munge.key"
    rm -f "$STATE/munge/munge.socket" "$STATE/munge/munge.socket.lock"
    munged --key-file="$STATE/munge/munge.key" --socket="$STATE/munge/munge.socket" \
        --pid-file="$STATE/run/munged.pid" --log-file="$STATE/log/munged.log" \
        --seed-file="$STATE/munge/munged.seed" --force
    wait_for munged test -S "$STATE/munge/munge.socket"
fi

# --- configs --------------------------------------------------------------------------------
# The node line comes from the hardware slurmd sees (RealMemory set too high drains the node).
HW=$(slurmd -C | head -n 1 | sed -e 's/^NodeName=[^ ]* //')
if [ "$ACCOUNTING" = 1 ]; then
    ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStoragePass=$STATE/munge/munge.socket
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=10"
else
    ACCT="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi
cat >"$CONF.new" <<EOF
# written by hpc-forget slurm/cluster-up.sh; state in $STATE
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE/munge/munge.socket,cred_expire=10
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=5,bf_interval=5
DependencyParameters=kill_invalid_depend
$ACCT
JobCompType=jobcomp/none
ReturnToService=2
KillWait=5
OverTimeLimit=0
MinJobAge=300
InactiveLimit=0
MaxArraySize=1001
NodeName=$HOST NodeAddr=127.0.0.1 $HW State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
mv "$CONF.new" "$CONF"

# --- accounting: MariaDB + slurmdbd ----------------------------------------------------------
if [ "$ACCOUNTING" = 1 ]; then
    DB="$STATE/mysql"
    SOCK="$STATE/run/mysqld.sock"
    if ! pid_alive "$STATE/run/mariadbd.pid" mariadbd; then
        if [ ! -d "$DB/mysql" ]; then
            mkdir -p "$DB"
            chown mysql:mysql "$DB"
            mariadb-install-db --no-defaults --datadir="$DB" --user=mysql \
                --auth-root-authentication-method=socket >"$STATE/log/mariadb-install.log" 2>&1 ||
                die "mariadb-install-db failed; see $STATE/log/mariadb-install.log"
        fi
        chown mysql:mysql "$STATE/run"
        setsid mariadbd --no-defaults --datadir="$DB" --user=mysql --socket="$SOCK" \
            --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
            --pid-file="$STATE/run/mariadbd.pid" --log-error="$STATE/log/mariadb.log" \
            </dev/null >/dev/null 2>&1 &
        wait_for "MariaDB on $SOCK" mariadb --no-defaults -S "$SOCK" -u root -e 'select 1'
    fi
    if [ ! -s "$STATE/etc/db.pass" ]; then
        (umask 077 && head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$STATE/etc/db.pass")
    fi
    DBPASS=$(cat "$STATE/etc/db.pass")
    mariadb --no-defaults -S "$SOCK" -u root -e "
        CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DBPASS';
        CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DBPASS';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
    (
        umask 077
        cat >"$STATE/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$STATE/munge/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DBPASS
StorageLoc=slurm_acct_db
EOF
    )
    chmod 600 "$STATE/etc/slurmdbd.conf"
    if ! pid_alive "$STATE/run/slurmdbd.pid" slurmdbd; then
        slurmdbd # finds slurmdbd.conf next to $SLURM_CONF
        wait_for "slurmdbd" sacctmgr -n list cluster
    fi
    if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
fi

# --- slurmctld + slurmd ---------------------------------------------------------------------
if ! pid_alive "$STATE/run/slurmctld.pid" slurmctld; then
    slurmctld
    wait_for slurmctld scontrol ping
fi
if ! pid_alive "$STATE/run/slurmd.pid" slurmd; then
    slurmd
fi
deadline=$((SECONDS + WAIT))
until node_idle; do
    case "$(node_state)" in
    down* | drain* | fail*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
    esac
    [ $SECONDS -lt $deadline ] || die "node $HOST is '$(node_state)', not idle, after ${WAIT}s; see $STATE/log/slurmd.log"
    sleep 0.2
done

# --- probe: a batch job must really run ------------------------------------------------------
if [ "$PROBE" = 1 ]; then
    out="$STATE/log/probe.out"
    rm -f "$out"
    jobid=$(sbatch --parsable --job-name=probe --time=1 -o "$out" --wrap 'echo probe-ok') ||
        die "sbatch of the probe job failed; see $STATE/log/slurmctld.log"
    # poll (sbatch --wait backs off to multi-second sleeps)
    probe_done() { grep -q probe-ok "$out" 2>/dev/null && [ -z "$(squeue -h -j "$jobid" -o %i 2>/dev/null)" ]; }
    wait_for "the probe job $jobid to run" probe_done
    grep -q probe-ok "$out" || die "the probe job ran but wrote no output to $out"
fi

print_env
