#!/usr/bin/env bash
# Starts a one-node Slurm on this machine (for the tests; no systemd needed). Idempotent: safe to
# run again while it is up. Needs root and apt. Config and state live under $SLURM_DIR.
set -euo pipefail
SLURM_DIR=${SLURM_DIR:-/var/lib/mpfnet-slurm}
NODE=$(hostname -s)
CPUS=$(nproc)

if ! command -v slurmctld >/dev/null || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    # policy-rc.d exiting 101 stops the packages' maintainer scripts from starting the daemons
    had_policy=0
    [ -e /usr/sbin/policy-rc.d ] && had_policy=1
    if [ $had_policy = 0 ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends munge slurmctld slurmd slurm-client >/dev/null
    [ $had_policy = 0 ] && rm -f /usr/sbin/policy-rc.d
fi

# munge: authentication between the Slurm commands and daemons
if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown -R munge:munge /etc/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
if ! pgrep -x munged >/dev/null; then
    if id munge >/dev/null 2>&1; then
        su -s /bin/sh munge -c /usr/sbin/munged
    else
        /usr/sbin/munged --force
    fi
fi

mkdir -p "$SLURM_DIR"/{state,spool,log}
CONF="$SLURM_DIR/slurm.conf"
MARK="# written by mpfnet scripts/slurm-up.sh"
if [ -e /etc/slurm/slurm.conf ] && ! grep -qx "$MARK" /etc/slurm/slurm.conf; then
    echo "/etc/slurm/slurm.conf exists and is not ours: not touching a real cluster's Slurm" >&2
    exit 1
fi
cat >"$CONF.new" <<CONF
$MARK
ClusterName=mpfnet-test
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
MinJobAge=300
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
# the client commands read /etc/slurm/slurm.conf
mkdir -p /etc/slurm
if ! cmp -s "$CONF.new" /etc/slurm/slurm.conf; then
    cp "$CONF.new" /etc/slurm/slurm.conf
fi
mv "$CONF.new" "$CONF"

pgrep -x slurmctld >/dev/null || slurmctld -f /etc/slurm/slurm.conf
pgrep -x slurmd >/dev/null || slurmd -f /etc/slurm/slurm.conf -N "$NODE"

for _ in $(seq 1 150); do
    state=$(sinfo -h -N -n "$NODE" -o %t 2>/dev/null || true)
    case "$state" in
        idle|mix|alloc) echo "slurm up: node $NODE $state"; exit 0 ;;
        down*|drain*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.2
done
echo "slurm did not come up; see $SLURM_DIR/log/" >&2
sinfo >&2 || true
exit 1
