#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for trying hydra/launcher=slurm and srun DDP for real.
#
#   sudo scripts/slurm-local.sh start    # install (Debian: slurm-wlm, munge) if needed, start
#   sudo scripts/slurm-local.sh status   # sinfo
#   sudo scripts/slurm-local.sh stop     # stop the daemons (the config stays in its folder)
#
# Root only; everything listens on 127.0.0.1. The node is this machine (its CPUs and memory as
# `slurmd -C` reports them); its config, state and logs live in $SLURM_LOCAL_DIR
# (default /var/tmp/mnistapp-slurm). Exit status: 0 started/stopped, 1 failure, 3 unavailable
# here (not root, no apt-get and no SLURM): callers skip rather than fail.
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/var/tmp/mnistapp-slurm}
CONF=$DIR/slurm.conf
NODE=$(hostname -s)

say() { echo "slurm-local: $*" >&2; }
unavailable() { say "unavailable: $*"; exit 3; }

install() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null && return
    command -v apt-get >/dev/null || unavailable "no slurmctld/munged and no apt-get to install them"
    say "installing slurm-wlm and munge (Debian packages)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

start_munge() {
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
    mkdir -p /etc/munge /var/log/munge /var/lib/munge /run/munge
    [ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    # munged refuses keys and folders that others can read or write
    chown -R root:root /etc/munge /var/log/munge /var/lib/munge /run/munge
    chmod 700 /etc/munge /var/log/munge /var/lib/munge
    chmod 755 /run/munge
    chmod 400 /etc/munge/munge.key
    munged --force
    touch "$DIR/munged.ours"  # stop stops it only then
}

write_conf() {
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
    # CPUs, cores and memory of this machine, as slurmd sees them
    local hw
    hw=$(slurmd -C | head -1 | sed "s/^NodeName=[^ ]*/NodeName=$NODE/")
    cat >"$CONF" <<EOF
# written by scripts/slurm-local.sh: a one-node cluster on the loopback interface
ClusterName=mnistapp-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# containers often lack cgroup v2 controllers: track processes without them
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SlurmctldTimeout=30
SlurmdTimeout=30
$hw State=UNKNOWN NodeAddr=127.0.0.1
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

wait_idle() {
    for _ in $(seq 60); do
        if SLURM_CONF=$CONF sinfo -h -N -o %t 2>/dev/null | grep -Eq '^(idle|mix|alloc)'; then
            return 0
        fi
        sleep 1
    done
    say "the node did not come up; see $DIR/log/"
    SLURM_CONF=$CONF sinfo -N -l >&2 || true
    return 1
}

start() {
    [ "$(id -u)" = 0 ] || unavailable "must run as root (it starts munged, slurmctld and slurmd)"
    install
    mkdir -p "$DIR"
    start_munge
    write_conf
    stop_daemons quietly
    SLURM_CONF=$CONF slurmctld -f "$CONF"
    SLURM_CONF=$CONF slurmd -f "$CONF"
    wait_idle
    SLURM_CONF=$CONF scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true
    say "up: partition 'local' on $NODE; use it with: export SLURM_CONF=$CONF"
    echo "export SLURM_CONF=$CONF"
}

stop_daemons() {
    local name pidfile
    for name in slurmd slurmctld; do
        pidfile=$DIR/$name.pid
        if [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null; then
            for _ in $(seq 20); do kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null || break; sleep 0.5; done
        fi
        rm -f "$pidfile"
    done
    [ "${1:-}" = quietly ] && return
    if [ -e "$DIR/munged.ours" ] && [ -s /run/munge/munged.pid ]; then
        kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
        rm -f "$DIR/munged.ours"
    fi
    say "stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop_daemons ;;
    status) SLURM_CONF=$CONF sinfo ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
