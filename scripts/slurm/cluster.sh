#!/usr/bin/env bash
# Private single-node Slurm cluster (munged + slurmctld + slurmd) living entirely
# under one folder, for integration tests. No systemd, nothing in /etc is touched.
#
#   cluster.sh start  DIR   start (or confirm running); prints `export ...` lines on stdout
#   cluster.sh stop   DIR   cancel jobs, stop daemons by pid file, verify; idempotent
#   cluster.sh status DIR   exit 0 = all up, 1 = all down, 2 = partly up
#   cluster.sh env    DIR   print the export lines (same as DIR/env.sh)
#
# Typical use:   eval "$(scripts/slurm/cluster.sh start "$dir")"   (or: . "$dir/env.sh")
#
# Environment knobs:
#   SLURM_TEST_PORT     base port: SlurmctldPort=BASE, SlurmdPort=BASE+1 (default: first
#                       free pair found from a random point in 20000..29998, checked with ss)
#   SLURM_TEST_TIMEOUT  seconds to wait for the node to become idle (default 60)
#   SLURM_TEST_CPUS     CPUs of the node (default: nproc)
#   SLURM_TEST_DEBUG    SlurmctldDebug/SlurmdDebug level (default: info)
#   SLURM_TEST_CRED_EXPIRE  AuthInfo cred_expire in s (default 10, minimum 5); a requeued
#                       job is eligible again only cred_expire+1 s after its first run ended
#   SLURM_TEST_MIN_JOB_AGE  MinJobAge in s (default 300): how long an ended job stays visible to
#                       scontrol/squeue (slurmctld purges ended jobs about once a minute)
#
# Layout of DIR (DIR itself is chmod 0755: munged refuses a socket whose folder or any
# parent is not world-executable):
#   etc/slurm.conf  state/ (StateSaveLocation)  spool/ (SlurmdSpoolDir)  log/*.log
#   munge/ (0700: munge.key 0400, seed)  run/ (munge.socket, *.pid)  env.sh
#
# Requires: scripts/slurm/install.sh (Debian packages slurmctld slurmd slurm-client munge).
set -euo pipefail

PROG=cluster.sh
die() { echo "$PROG: error: $*" >&2; exit 1; }
log() { echo "$PROG: $*" >&2; }

PATH=$PATH:/usr/sbin:/sbin
for b in munged munge unmunge slurmctld slurmd sinfo scontrol squeue scancel ss; do
    command -v "$b" >/dev/null 2>&1 || die "'$b' not found; run scripts/slurm/install.sh first"
done

usage() {
    sed -n "2,11p" "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[[ $# -eq 2 ]] || usage
CMD=$1
[[ -n $2 ]] || die "DIR must not be empty"
case $CMD in
    start) mkdir -p -- "$2" ;;
    stop | status | env) [[ -d $2 ]] || { [[ $CMD == stop ]] && { log "$2 does not exist: nothing to stop"; exit 0; }; die "no such folder: $2"; } ;;
    *) usage ;;
esac
DIR=$(cd -- "$2" && pwd -P)
[[ $DIR != / ]] || die "refusing to use / as DIR"
[[ $DIR =~ ^[A-Za-z0-9_./+-]+$ ]] || die "DIR must consist of [A-Za-z0-9_./+-] only (it goes into slurm.conf unquoted): $DIR"

CONF=$DIR/etc/slurm.conf
SOCK=$DIR/run/munge.socket
KEY=$DIR/munge/munge.key
MUNGED_PID=$DIR/run/munged.pid
CTLD_PID=$DIR/run/slurmctld.pid
SLURMD_PID=$DIR/run/slurmd.pid
CTLD_LOG=$DIR/log/slurmctld.log
SLURMD_LOG=$DIR/log/slurmd.log
MUNGED_LOG=$DIR/log/munged.log
NODE=$(hostname -s)
TIMEOUT=${SLURM_TEST_TIMEOUT:-60}

# ---------------------------------------------------------------- helpers

# pid_of NAME PIDFILE -> prints pid and returns 0 if that pid is alive, is NAME, and
# belongs to this DIR (its command line mentions DIR), so a stale pid file whose pid
# was reused by someone else is never killed.
pid_of() {
    local name=$1 file=$2 pid comm
    [[ -s $file ]] || return 1
    pid=$(tr -dc '0-9' <"$file")
    [[ -n $pid ]] || return 1
    [[ -d /proc/$pid ]] || return 1
    # zombies (PID 1 here reaps lazily) are not running
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    # Debian installs slurmctld-wlm / slurmd-wlm behind update-alternatives
    [[ $comm == "$name" || $comm == "$name-wlm" ]] || return 1
    tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$DIR/" || return 1
    echo "$pid"
}

# ancestors of this script (never killed by `stop`, e.g. when it runs inside a job)
ancestors() {
    local p=$$
    while [[ -n $p && $p != 0 && $p != 1 ]]; do
        echo "$p"
        p=$(awk '{print $4}' "/proc/$p/stat" 2>/dev/null) || break
    done
}

# slurmstepd processes forked by this DIR's slurmd (slurmd is started with
# SLURM_CONF=$CONF in its environment and slurmstepd inherits it).
stepd_pids() {
    local p
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [[ $(cat "/proc/$p/comm" 2>/dev/null) == slurmstepd ]] || continue
        [[ $(awk '{print $3}' "/proc/$p/stat" 2>/dev/null) != Z ]] || continue
        tr '\0' '\n' 2>/dev/null <"/proc/$p/environ" | grep -qxF "SLURM_CONF=$CONF" && echo "$p"
    done
    return 0
}

# Job processes of this cluster that outlived their job: with proctrack/linuxproc a
# child that was orphaned (its batch shell exited first) is no longer tracked, so
# slurmstepd does not kill it. Recognised by SLURM_CONF=$CONF plus SLURM_JOB_ID in
# their environment; this script's own ancestors are spared.
stray_job_pids() {
    local p anc
    anc=" $(ancestors | tr '\n' ' ') "
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [[ $anc == *" $p "* ]] && continue
        [[ $(awk '{print $3}' "/proc/$p/stat" 2>/dev/null) != Z ]] || continue
        local env
        env=$(tr '\0' '\n' 2>/dev/null <"/proc/$p/environ") || continue
        grep -qxF "SLURM_CONF=$CONF" <<<"$env" && grep -q '^SLURM_JOB_ID=' <<<"$env" && echo "$p"
    done
    return 0
}

# kill_wait NAME PID: TERM, wait up to 15 s, then KILL and wait up to 5 s more.
kill_wait() {
    local name=$1 pid=$2 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 150; i++)); do
        [[ -d /proc/$pid ]] || return 0
        # a zombie counts as gone
        [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]] && return 0
        sleep 0.1
    done
    log "$name (pid $pid) ignored SIGTERM for 15 s: sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        [[ -d /proc/$pid ]] || return 0
        sleep 0.1
    done
    return 1
}

port_free() { [[ -z $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; }

pick_ports() {
    if [[ -n ${SLURM_TEST_PORT:-} ]]; then
        if ! [[ $SLURM_TEST_PORT =~ ^[0-9]+$ ]] || ((SLURM_TEST_PORT < 1024 || SLURM_TEST_PORT > 65534)); then
            die "SLURM_TEST_PORT must be a port number in 1024..65534, got '$SLURM_TEST_PORT'"
        fi
        port_free "$SLURM_TEST_PORT" || die "SLURM_TEST_PORT=$SLURM_TEST_PORT is in use"
        port_free $((SLURM_TEST_PORT + 1)) || die "port $((SLURM_TEST_PORT + 1)) (SLURM_TEST_PORT+1) is in use"
        CTLD_PORT=$SLURM_TEST_PORT
        return
    fi
    local start=$((20000 + (RANDOM % 5000) * 2)) p i
    for ((i = 0; i < 5000; i++)); do
        p=$((20000 + (start - 20000 + 2 * i) % 10000))
        if port_free "$p" && port_free $((p + 1)); then
            CTLD_PORT=$p
            return
        fi
    done
    die "no free pair of TCP ports in 20000..29999"
}

print_env() {
    cat <<EOF
export SLURM_CONF=$CONF
export SLURM_TEST_DIR=$DIR
export MUNGE_SOCKET=$SOCK
EOF
}

dump_logs() {
    local f
    for f in "$MUNGED_LOG" "$CTLD_LOG" "$SLURMD_LOG"; do
        [[ -f $f ]] || continue
        echo "----- tail -n 25 $f" >&2
        tail -n 25 "$f" >&2 || true
    done
}

fail_start() {
    echo "$PROG: error: $*" >&2
    dump_logs
    log "stopping what was started"
    do_stop >&2 || true
    exit 1
}

all_up() {
    pid_of munged "$MUNGED_PID" >/dev/null && pid_of slurmctld "$CTLD_PID" >/dev/null &&
        pid_of slurmd "$SLURMD_PID" >/dev/null
}

node_state() { SLURM_CONF=$CONF sinfo -h -n "$NODE" -o '%T' 2>/dev/null | head -n1; }

# ---------------------------------------------------------------- start

write_conf() {
    local cpus=${SLURM_TEST_CPUS:-$(nproc)} mem_mb
    mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    # a bit below the real memory, else slurmd drains the node with "Low RealMemory"
    mem_mb=$((mem_mb * 9 / 10))
    ((mem_mb > 0)) || mem_mb=1
    local user
    user=$(id -un)
    cat >"$CONF.tmp" <<EOF
# Generated by scripts/slurm/cluster.sh for a private test cluster in $DIR
ClusterName=deepcoraltest
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$((CTLD_PORT + 1))
SlurmUser=$user
SlurmdUser=$user

AuthType=auth/munge
CredType=cred/munge
# socket: private munged; cred_expire: also the delay before a requeued job may start
# again (default 120 s)
AuthInfo=socket=$SOCK,cred_expire=${SLURM_TEST_CRED_EXPIRE:-10}

StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$CTLD_LOG
SlurmdLogFile=$SLURMD_LOG
SlurmctldDebug=${SLURM_TEST_DEBUG:-info}
SlurmdDebug=${SLURM_TEST_DEBUG:-info}

# no cgroups: cgroup plugins write outside DIR
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true

SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# sched_interval: the main scheduler also runs every second (default 60). Without it a
# requeued job, which becomes eligible only cred_expire+1 s after the requeue, waits
# for the next periodic pass (up to 60 s): backfill skips a pass when nothing changed.
SchedulerParameters=bf_interval=1,sched_interval=1
ReturnToService=2
# finished jobs stay visible to scontrol/squeue for 300 s (no accounting here)
MinJobAge=${SLURM_TEST_MIN_JOB_AGE:-300}
JobRequeue=1
# seconds between SIGTERM and SIGKILL on scancel / time limit (default 30)
KillWait=5
InactiveLimit=0
Waittime=0

NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    mv -f "$CONF.tmp" "$CONF"
}

check_parents() {
    # munged: the socket's folder and all parents must be world-executable
    local d=$DIR/run mode
    while :; do
        mode=$(stat -c '%a' "$d")
        ((8#$mode & 1)) || die "munged needs $d to be world-executable (mode $mode); chmod o+x it or pick another DIR"
        [[ $d == / ]] && break
        d=$(dirname "$d")
    done
}

do_start() {
    local ce=${SLURM_TEST_CRED_EXPIRE:-10}
    # Slurm silently falls back to 120 s for cred_expire < 5 (only an error in the logs)
    if ! [[ $ce =~ ^[0-9]+$ ]] || ((ce < 5)); then
        die "SLURM_TEST_CRED_EXPIRE must be an integer >= 5 (Slurm uses 120 for smaller values), got '$ce'"
    fi
    if all_up; then
        log "cluster in $DIR is already running"
        print_env | tee "$DIR/env.sh"
        return 0
    fi
    if pid_of munged "$MUNGED_PID" >/dev/null || pid_of slurmctld "$CTLD_PID" >/dev/null ||
        pid_of slurmd "$SLURMD_PID" >/dev/null; then
        log "cluster in $DIR is partly running: stopping it first"
        do_stop >&2
    fi
    # a port found free can be taken before slurmctld/slurmd bind it (e.g. by a cluster
    # started in parallel): retry with other ports unless the caller fixed them
    local attempt
    for attempt in 1 2 3; do
        if (start_once); then
            return 0
        fi
        if [[ -z ${SLURM_TEST_PORT:-} ]] && grep -qs 'Address already in use' "$CTLD_LOG" "$SLURMD_LOG"; then
            log "port clash, retrying with other ports (attempt $((attempt + 1)) of 3)"
            continue
        fi
        exit 1
    done
    die "could not start the cluster after 3 attempts"
}

# start_once: runs in a subshell; exits non-zero (after cleaning up) on failure
start_once() {
    local t0=$SECONDS
    chmod 0755 "$DIR"
    # fresh state each start: a new munge key would not match any saved credentials
    rm -rf -- "$DIR/state" "$DIR/spool" "$DIR/run" "$DIR/munge"
    mkdir -p -- "$DIR"/{etc,state,spool,log,munge,run}
    chmod 0755 "$DIR"/{etc,state,spool,log,run}
    chmod 0700 "$DIR/munge"
    : >"$MUNGED_LOG"; : >"$CTLD_LOG"; : >"$SLURMD_LOG"
    check_parents

    # munge key: 1024 random bytes, 0400, owned by the running user
    dd if=/dev/urandom of="$KEY" bs=1024 count=1 status=none
    chmod 0400 "$KEY"
    chown "$(id -u):$(id -g)" "$KEY"

    pick_ports
    write_conf
    print_env >"$DIR/env.sh"

    # munged forks into the background itself; stdio away from the caller's pipes
    munged --socket="$SOCK" --key-file="$KEY" --pid-file="$MUNGED_PID" \
        --log-file="$MUNGED_LOG" --seed-file="$DIR/munge/munged.seed" \
        </dev/null >>"$MUNGED_LOG" 2>&1 || fail_start "munged failed to start"
    local i
    for ((i = 0; i < 50; i++)); do
        [[ -S $SOCK ]] && munge -n -S "$SOCK" 2>/dev/null | unmunge -S "$SOCK" >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n -S "$SOCK" 2>/dev/null | unmunge -S "$SOCK" >/dev/null 2>&1 ||
        fail_start "munged does not answer on $SOCK"

    # The daemons fork into the background (no -D); SLURM_CONF in their environment both
    # points them at the config and tags their slurmstepd children for `stop`.
    (
        # shellcheck disable=SC2030
        export SLURM_CONF=$CONF
        cd "$DIR"
        setsid slurmctld -f "$CONF" </dev/null >>"$CTLD_LOG" 2>&1
    ) || fail_start "slurmctld failed to start"
    for ((i = 0; i < 100; i++)); do
        SLURM_CONF=$CONF scontrol ping 2>/dev/null | grep -q 'is UP' && break
        pid_of slurmctld "$CTLD_PID" >/dev/null || [[ $i -lt 20 ]] || fail_start "slurmctld exited"
        sleep 0.2
    done
    SLURM_CONF=$CONF scontrol ping 2>/dev/null | grep -q 'is UP' || fail_start "slurmctld does not answer scontrol ping"

    (
        # shellcheck disable=SC2031
        export SLURM_CONF=$CONF
        cd "$DIR"
        setsid slurmd -f "$CONF" </dev/null >>"$SLURMD_LOG" 2>&1
    ) || fail_start "slurmd failed to start"

    local st=""
    local deadline=$((SECONDS + TIMEOUT))
    while ((SECONDS < deadline)); do
        st=$(node_state)
        [[ $st == idle ]] && break
        if [[ $st == inval* || $st == drain* ]]; then
            local reason
            reason=$(SLURM_CONF=$CONF scontrol -o show node "$NODE" 2>/dev/null | grep -o 'Reason=.*' || true)
            fail_start "node $NODE is '$st' (${reason:-no reason}); slurm.conf does not match the machine (see slurmd -C)"
        fi
        sleep 0.2
    done
    [[ $st == idle ]] || fail_start "node $NODE not idle after ${TIMEOUT}s (sinfo state: '${st:-none}')"
    all_up || fail_start "a daemon exited during start"
    log "cluster up in $((SECONDS - t0))s: node $NODE idle, slurmctld port $CTLD_PORT, slurmd port $((CTLD_PORT + 1))"
    print_env
}

# ---------------------------------------------------------------- stop

do_stop() {
    local pid ok=1
    # 1. cancel jobs so slurmstepd kills the job processes itself
    if pid_of slurmctld "$CTLD_PID" >/dev/null && pid_of slurmd "$SLURMD_PID" >/dev/null; then
        local jobs i
        jobs=$(SLURM_CONF=$CONF squeue -h -o '%A' 2>/dev/null | sort -u | tr '\n' ' ') || jobs=""
        if [[ -n ${jobs// /} ]]; then
            log "cancelling jobs: $jobs"
            # shellcheck disable=SC2086
            SLURM_CONF=$CONF scancel $jobs 2>/dev/null || true
            for ((i = 0; i < 100; i++)); do
                [[ -z $(SLURM_CONF=$CONF squeue -h -t R,CG,S -o '%A' 2>/dev/null) && -z $(stepd_pids) ]] && break
                sleep 0.2
            done
        fi
    fi
    # 2. daemons, by pid file
    for spec in "slurmd:$SLURMD_PID" "slurmctld:$CTLD_PID" "munged:$MUNGED_PID"; do
        local name=${spec%%:*} file=${spec#*:}
        if pid=$(pid_of "$name" "$file"); then
            log "stopping $name (pid $pid)"
            kill_wait "$name" "$pid" || { log "$name (pid $pid) survived SIGKILL"; ok=0; }
        fi
    done
    # 3. leftover slurmstepd of this cluster (slurmd does not take them down with it)
    for pid in $(stepd_pids); do
        log "killing leftover slurmstepd (pid $pid)"
        kill -KILL "$pid" 2>/dev/null || true
    done
    local strays
    strays=$(stray_job_pids | tr '\n' ' ')
    if [[ -n ${strays// /} ]]; then
        log "killing leftover job processes: $strays"
        # shellcheck disable=SC2086
        kill -TERM $strays 2>/dev/null || true
        sleep 1
        # shellcheck disable=SC2086
        kill -KILL $strays 2>/dev/null || true
    fi
    sleep 0.2
    # 4. verify
    for spec in "slurmd:$SLURMD_PID" "slurmctld:$CTLD_PID" "munged:$MUNGED_PID"; do
        local name=${spec%%:*} file=${spec#*:}
        if pid=$(pid_of "$name" "$file"); then
            log "error: $name (pid $pid) is still running"
            ok=0
        fi
    done
    if [[ -n $(stepd_pids) ]]; then
        log "error: slurmstepd still running: $(stepd_pids | tr '\n' ' ')"
        ok=0
    fi
    if [[ -n $(stray_job_pids) ]]; then
        log "error: job processes still running: $(stray_job_pids | tr '\n' ' ')"
        ok=0
    fi
    rm -f -- "$SOCK"
    ((ok)) || return 1
    log "cluster in $DIR stopped"
}

# ---------------------------------------------------------------- status

do_status() {
    local up=0 total=0 spec pid
    for spec in "munged:$MUNGED_PID" "slurmctld:$CTLD_PID" "slurmd:$SLURMD_PID"; do
        local name=${spec%%:*} file=${spec#*:}
        total=$((total + 1))
        if pid=$(pid_of "$name" "$file"); then
            echo "$name: running (pid $pid)"
            up=$((up + 1))
        else
            echo "$name: not running"
        fi
    done
    local s
    s=$(stepd_pids | tr '\n' ' ')
    [[ -n $s ]] && echo "slurmstepd: $s"
    if pid_of slurmctld "$CTLD_PID" >/dev/null; then
        echo "node $NODE: $(node_state)"
        SLURM_CONF=$CONF squeue -h -o '%i %T %R' 2>/dev/null | sed 's/^/job /' || true
    fi
    ((up == total)) && return 0
    ((up == 0)) && return 1
    return 2
}

case $CMD in
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    env) print_env ;;
esac
