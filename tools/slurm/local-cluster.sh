#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, from Debian's packages (slurm-wlm, munge):
# munged, slurmctld and slurmd with a generated slurm.conf (this machine's CPUs and memory,
# as `slurmd -C` reports them). Enough for `adiff bench slurm --submit`, `squeue`,
# `scancel` and `scontrol requeue` to work for real; used by .ci/run and tests/bench_slurm.rs.
#
#   tools/slurm/local-cluster.sh start    # idempotent; installs nothing (see below)
#   tools/slurm/local-cluster.sh stop     # ends only the daemons `start` started
#   tools/slurm/local-cluster.sh status
#
# Install the packages first: apt-get install -y slurm-wlm munge
#
# As root the config goes to Slurm's default path, /etc/slurm/slurm.conf, and munged listens
# on its default socket, so plain `sbatch` / `squeue` / `scancel` in any shell reach the
# cluster. Otherwise everything lives in the state folder and `start` prints the
# `export SLURM_CONF=…` to run first.
#
# State (keys, logs, pids, spool): $ADIFF_SLURM_DIR, default /tmp/adiff-slurm-$UID.
set -euo pipefail

STATE=${ADIFF_SLURM_DIR:-/tmp/adiff-slurm-$(id -u)}
MARK="# written by adiff tools/slurm/local-cluster.sh"
ME=$(id -un)
HOST=$(hostname -s)

die() {
    echo "local-cluster: error: $*" >&2
    exit 1
}

if [ "$(id -u)" = 0 ]; then
    CONF=/etc/slurm/slurm.conf
    MUNGE_SOCKET=/run/munge/munge.socket.2
else
    CONF=$STATE/slurm.conf
    MUNGE_SOCKET=$STATE/munge/munge.socket
fi

# The pid in FILE when that process is alive and runs COMMAND.
alive() {
    local file=$1 command=$2 pid
    [ -s "$file" ] || return 1
    pid=$(cat "$file")
    [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$command" ]
}

need() {
    command -v "$1" >/dev/null 2>&1 ||
        die "$1 not found: install Slurm and MUNGE first (apt-get install -y slurm-wlm munge)"
}

start_munge() {
    if alive "$STATE/munged.pid" munged; then
        return
    fi
    mkdir -p "$STATE/munge"
    chmod 700 "$STATE/munge"
    local key=$STATE/munge/munge.key
    if [ ! -s "$key" ]; then
        if [ "$(id -u)" = 0 ] && [ -s /etc/munge/munge.key ]; then
            cp /etc/munge/munge.key "$key"
        else
            dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
        fi
        chmod 400 "$key"
    fi
    if [ "$(id -u)" = 0 ]; then
        mkdir -p /run/munge
        # A munged already serving the default socket (the distribution's service) is fine.
        if [ -S "$MUNGE_SOCKET" ] && munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; then
            return
        fi
    fi
    munged --force --socket="$MUNGE_SOCKET" --key-file="$key" \
        --pid-file="$STATE/munged.pid" --log-file="$STATE/munged.log" \
        --seed-file="$STATE/munge/munged.seed" ||
        die "munged did not start; see $STATE/munged.log"
    for _ in $(seq 50); do
        [ -S "$MUNGE_SOCKET" ] && break
        sleep 0.1
    done
}

write_conf() {
    # CPUs, sockets, cores, threads and memory as slurmd sees them.
    local node
    node=$(slurmd -C 2>/dev/null | head -n 1 | sed -e 's/^NodeName=[^ ]* //' -e 's/ UpTime.*//')
    [ -n "$node" ] || die "slurmd -C could not describe this machine"
    if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script; move it away or set ADIFF_SLURM_DIR and run as a non-root user"
    fi
    mkdir -p "$(dirname "$CONF")" "$STATE/ctld" "$STATE/spool"
    # A requeued job waits cred_expire seconds before it starts again (default 120).
    local auth="AuthInfo=cred_expire=10"
    if [ "$(id -u)" != 0 ]; then
        auth="AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10"
    fi
    local tmp=$CONF.tmp.$$
    cat >"$tmp" <<EOF
$MARK ($(date -u +%Y-%m-%dT%H:%M:%SZ))
ClusterName=adiff-local
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=$ME
SlurmdUser=$ME
AuthType=auth/munge
$auth
SlurmctldPort=${ADIFF_SLURMCTLD_PORT:-6817}
SlurmdPort=${ADIFF_SLURMD_PORT:-6818}
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
KillWait=5
MinJobAge=600
SchedulerParameters=sched_interval=2
NodeName=$HOST NodeAddr=127.0.0.1 $node State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$tmp" "$CONF"
}

start() {
    need munged
    need slurmctld
    need slurmd
    need sbatch
    mkdir -p "$STATE"
    start_munge
    if alive "$STATE/slurmctld.pid" slurmctld && alive "$STATE/slurmd.pid" slurmd; then
        echo "local-cluster: already running ($CONF)"
    else
        write_conf
        export SLURM_CONF=$CONF
        alive "$STATE/slurmctld.pid" slurmctld || slurmctld -f "$CONF" -i ||
            die "slurmctld did not start; see $STATE/slurmctld.log"
        alive "$STATE/slurmd.pid" slurmd || slurmd -f "$CONF" ||
            die "slurmd did not start; see $STATE/slurmd.log"
    fi
    export SLURM_CONF=$CONF
    # Wait for the node to take jobs.
    local state=""
    for _ in $(seq 120); do
        state=$(sinfo -h -N -n "$HOST" -o %t 2>/dev/null || true)
        case $state in
            idle* | mix* | alloc*) break ;;
            drain* | down*) scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    case $state in
        idle* | mix* | alloc*) ;;
        *) die "the node did not come up (state '${state:-none}'); see $STATE/slurmctld.log and $STATE/slurmd.log" ;;
    esac
    echo "local-cluster: up: node $HOST ($(grep '^NodeName' "$CONF" | sed 's/.*CPUs=\([0-9]*\).*RealMemory=\([0-9]*\).*/\1 CPUs, \2 MB/')), partition debug"
    if [ "$(id -u)" != 0 ]; then
        echo "export SLURM_CONF=$CONF"
    fi
}

stop() {
    local stopped=0 name
    for name in slurmd slurmctld munged; do
        if alive "$STATE/$name.pid" "$name"; then
            local pid
            pid=$(cat "$STATE/$name.pid")
            kill "$pid"
            for _ in $(seq 50); do
                [ -d "/proc/$pid" ] || break
                sleep 0.1
            done
            [ -d "/proc/$pid" ] && kill -9 "$pid" 2>/dev/null
            stopped=$((stopped + 1))
        fi
        rm -f "$STATE/$name.pid"
    done
    echo "local-cluster: stopped $stopped daemon(s)"
}

status() {
    local name
    for name in munged slurmctld slurmd; do
        if alive "$STATE/$name.pid" "$name"; then
            echo "$name: running (pid $(cat "$STATE/$name.pid"))"
        else
            echo "$name: not started by this script"
        fi
    done
    if alive "$STATE/slurmctld.pid" slurmctld; then
        SLURM_CONF=$CONF sinfo
    fi
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
