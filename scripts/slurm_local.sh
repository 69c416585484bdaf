#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the tests and for trying hydra/launcher=submitit_slurm.
#
#   scripts/slurm_local.sh up      install (Debian, as root) and start munged, MariaDB, slurmdbd,
#                                  slurmctld and slurmd; returns once `sinfo` shows the node idle.
#                                  Jobs left from daemons that died (machine stopped) are cancelled.
#   scripts/slurm_local.sh down    stop them (configs and accounting data are kept)
#   scripts/slurm_local.sh status  what answers
#
# Accounting (slurmdbd on MariaDB) is part of it because submitit follows its jobs with `sacct`.
# It never touches a SLURM set-up it did not write: an /etc/slurm/slurm.conf without its marker
# line means this machine belongs to a real cluster, and the script stops.
set -euo pipefail

CLUSTER=ganforge
NODE=localhost
MARK="# written by ganforge scripts/slurm_local.sh"
CONF_DIR=/etc/slurm
STATE=/var/spool/slurm-ganforge
LOGS=/var/log/slurm-ganforge
RUN=/run/slurm-ganforge
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)
DB_PASS=ganforge-local  # the database listens on the loopback socket only

die() { echo "error: $*" >&2; exit 1; }
say() { echo "slurm_local: $*"; }

install_packages() {
  local missing=()
  for cmd in slurmctld slurmd slurmdbd sbatch sacct munged mariadbd; do
    command -v "$cmd" >/dev/null 2>&1 || [[ -x /usr/sbin/$cmd ]] || missing+=("$cmd")
  done
  [[ ${#missing[@]} -eq 0 ]] && return
  if [[ $(id -u) -ne 0 ]]; then
    die "missing ${missing[*]}; install them with: sudo apt-get install ${PACKAGES[*]} (then rerun as root)"
  fi
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get here; install SLURM 22.05+, munge and MariaDB"
  say "installing ${PACKAGES[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
}

mine() { [[ ! -e $1 ]] || grep -qxF "$MARK" "$1"; }

write_configs() {
  for f in "$CONF_DIR/slurm.conf" "$CONF_DIR/slurmdbd.conf"; do
    mine "$f" || die "$f was not written by this script: this machine is set up for another SLURM cluster; use that one"
  done
  local cpus mem_mb
  cpus=$(nproc)
  mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)  # leave some for the system
  mkdir -p "$CONF_DIR" "$STATE/ctld" "$STATE/d" "$LOGS" "$RUN"
  cat > "$CONF_DIR/slurm.conf" <<EOF
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmUser=root
AuthType=auth/munge
# a requeued job waits cred_expire seconds before it starts again (SLURM's default: 120)
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
# no cgroups: the node may itself be a container
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$NODE
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
JobRequeue=1
ReturnToService=2
MinJobAge=600
# test pending jobs every 2 s (default 60), so a requeued job starts as soon as it may
SchedulerParameters=sched_interval=2
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  cat > "$CONF_DIR/slurmdbd.conf" <<EOF
$MARK
AuthType=auth/munge
DbdHost=$NODE
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$CONF_DIR/slurmdbd.conf"
}

running() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq "$((seconds * 4))"); do
    "$@" >/dev/null 2>&1 && return
    sleep 0.25
  done
  die "$what did not come up within ${seconds}s; see $LOGS"
}

start_munge() {
  [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge && chown munge:munge /run/munge
  if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- munged --force
    wait_for 10 munged sh -c 'munge -n | unmunge'
  fi
}

start_database() {
  if ! mysqladmin ping >/dev/null 2>&1; then
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    (setsid mariadbd --user=mysql --bind-address=127.0.0.1 >>"$LOGS/mariadb.log" 2>&1 &)
    wait_for 30 MariaDB mysqladmin ping
  fi
  mysql <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
}

start_slurm() {
  if ! running "$RUN/slurmdbd.pid"; then
    slurmdbd
    wait_for 30 slurmdbd sacctmgr -n list cluster
  fi
  sacctmgr -n list cluster format=cluster | grep -qw "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
  running "$RUN/slurmctld.pid" || slurmctld
  wait_for 30 slurmctld scontrol ping
  if running "$RUN/slurmd.pid"; then
    wait_for 60 "node $NODE" sh -c "sinfo -h -n $NODE -o %t | grep -qE '^(idle|mix|alloc)'"
  else
    slurmd -N "$NODE"
    wait_for 60 "node $NODE" sh -c "sinfo -h -n $NODE -o %t | grep -qE '^(idle|mix|alloc)'"
    cancel_orphans
    wait_for 60 "node $NODE" sh -c "sinfo -h -n $NODE -o %t | grep -qx idle"
  fi
}

# Jobs a previous slurmd ran died with it (a killed container, a reboot), but slurmctld restores them
# from its saved state as running and holds their CPUs until it declares the node failed, about half
# an hour later; their submitters are gone too. A freshly started slurmd runs nothing, so cancel them.
cancel_orphans() {
  local jobs
  jobs=$(squeue -h -t RUNNING,COMPLETING,PENDING,CONFIGURING,SUSPENDED -o %i | paste -sd, -)
  [[ -z $jobs ]] && return
  say "cancelling job(s) $jobs, left by SLURM daemons that did not shut down cleanly"
  scancel ${jobs//,/ }
}

up() {
  install_packages
  [[ $(id -u) -eq 0 ]] || die "starting the SLURM daemons needs root; run: sudo $0 up"
  write_configs
  start_munge
  start_database
  start_slurm
  say "up: $(sinfo -h -o '%P %D node(s) %c CPUs %m MB %t')"
}

down() {
  for pid in "$RUN/slurmd.pid" "$RUN/slurmctld.pid" "$RUN/slurmdbd.pid"; do
    running "$pid" && kill "$(cat "$pid")"
  done
  mysqladmin shutdown 2>/dev/null || true
  pkill -x munged 2>/dev/null || true
  say "down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) sinfo && squeue ;;
  *) die "usage: $0 up|down|status" ;;
esac
