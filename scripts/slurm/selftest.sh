#!/usr/bin/env bash
# Self-test of scripts/slurm/cluster.sh: starts a private cluster in a temp folder,
# exercises what deep-coral's integration tests rely on, prints timings and the
# `scontrol -o show job` lines of each job state, stops the cluster and checks that
# nothing is left running.
#
#   scripts/slurm/selftest.sh            # exit 0 = all checks passed
#   KEEP=1 scripts/slurm/selftest.sh     # keep the temp folder (logs, outputs, report.txt)
#
# Needs scripts/slurm/install.sh to have run. Takes about 1 minute.
set -euo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
CLUSTER=$HERE/cluster.sh
D=$(mktemp -d "${TMPDIR:-/tmp}/slurm-selftest.XXXXXX")
REPORT=$D/report.txt
FAILS=0

now() { date +%s.%N; }
dt() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
say() { echo "$*" | tee -a "$REPORT"; }
ok() { say "PASS: $*"; }
bad() { say "FAIL: $*"; FAILS=$((FAILS + 1)); }
check() { # check DESCRIPTION COMMAND...
    local what=$1
    shift
    if "$@"; then ok "$what"; else bad "$what"; fi
}

quiet() { "$@" >/dev/null 2>&1; }

cleanup() {
    local rc=$?
    "$CLUSTER" stop "$D" >/dev/null 2>&1 || true
    if [[ ${KEEP:-0} == 1 || $rc -ne 0 || $FAILS -ne 0 ]]; then
        echo "selftest: folder kept: $D (report: $REPORT)" >&2
    else
        rm -rf -- "$D"
    fi
}
trap cleanup EXIT

# job_line ID: the one-line record of a job (first line for an array)
job_line() { scontrol -o show job "$1" 2>/dev/null | head -n1; }
# field LINE KEY -> value of KEY=value in a scontrol -o line
field() { grep -o -E "(^| )$2=[^ ]*" <<<"$1" | head -n1 | sed "s/^ *$2=//"; }
job_state() { field "$(job_line "$1")" JobState; }
# wait_state ID TIMEOUT STATE... : wait until JobState is one of STATE
wait_state() {
    local id=$1 timeout=$2 st i
    shift 2
    for ((i = 0; i < timeout * 10; i++)); do
        st=$(job_state "$id")
        for s in "$@"; do [[ $st == "$s" ]] && return 0; done
        sleep 0.1
    done
    echo "selftest: job $id still '$st' after ${timeout}s (wanted: $*)" >&2
    return 1
}
wait_file_has() { # wait_file_has FILE PATTERN TIMEOUT
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        grep -q -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# ------------------------------------------------------------------ start
say "== start (DIR=$D)"
t0=$(now)
eval "$("$CLUSTER" start "$D")"
t1=$(now)
say "TIMING start: $(dt "$t0" "$t1") s until node idle"
check "start is idempotent while running" quiet "$CLUSTER" start "$D"
check "env.sh sets SLURM_CONF" grep -qx "export SLURM_CONF=$D/etc/slurm.conf" "$D/env.sh"
check "status exit 0 when up" quiet "$CLUSTER" status "$D"
cd "$D"

# ------------------------------------------------------------------ job array, %2 throttle
say "== array 0-3%2"
t0=$(now)
# shellcheck disable=SC2016
A=$(sbatch --parsable --array=0-3%2 --output="$D/arr_%A_%a.out" --wrap 'sleep 3; echo $SLURM_ARRAY_TASK_ID')
maxrun=0
pending_line=""
for ((i = 0; i < 600; i++)); do
    r=$(squeue -h -j "$A" -t R -o '%i' | wc -l)
    ((r > maxrun)) && maxrun=$r
    if [[ -z $pending_line ]]; then
        l=$(scontrol -o show job "$A" | grep 'JobState=PENDING' | grep 'Reason=JobArrayTaskLimit' | head -n1 || true)
        [[ -n $l ]] && pending_line=$l
    fi
    [[ -z $(squeue -h -j "$A" -t PD,R,CG,CF -o '%i') ]] && break
    sleep 0.1
done
t1=$(now)
say "TIMING array of 4 x 3 s tasks, 2 at a time: $(dt "$t0" "$t1") s"
check "array: at most 2 tasks running at once (saw $maxrun)" test "$maxrun" -le 2
check "array: 2 tasks did run in parallel (saw $maxrun)" test "$maxrun" -eq 2
for t in 0 1 2 3; do
    check "array task $t output" grep -qx "$t" "$D/arr_${A}_$t.out"
done
n_done=$(squeue -h --states=all -j "$A" -o '%T' | grep -c COMPLETED || true)
check "array: squeue --states=all shows 4 COMPLETED (got $n_done)" test "$n_done" -eq 4
say "LINE PENDING (throttled array tasks): $pending_line"
say "LINE COMPLETED (array task 0): $(scontrol -o show job "${A}_0")"
say "squeue --states=all -j $A -o '%i %A %a %T %r':"
squeue --states=all -j "$A" -o '%i %A %a %T %r' | tee -a "$REPORT"

# ------------------------------------------------------------------ completed / failed / cancelled
say "== plain states"
t0=$(now)
C=$(sbatch --parsable --output="$D/ok_%j.out" --wrap 'echo hello')
F=$(sbatch --parsable --output="$D/fail_%j.out" --wrap 'echo failing; exit 3')
X=$(sbatch --parsable --output="$D/cancel_%j.out" --wrap 'sleep 100')
wait_state "$C" 30 COMPLETED && t1=$(now) && say "TIMING sbatch -> COMPLETED (trivial job): $(dt "$t0" "$t1") s"
check "exit 0 job COMPLETED" test "$(job_state "$C")" = COMPLETED
wait_state "$F" 30 FAILED || true
check "exit 3 job FAILED" test "$(job_state "$F")" = FAILED
check "exit 3 job ExitCode=3:0" test "$(field "$(job_line "$F")" ExitCode)" = 3:0
wait_state "$X" 30 RUNNING || true
scancel "$X"
wait_state "$X" 30 CANCELLED || true
check "scancelled job CANCELLED" test "$(job_state "$X")" = CANCELLED
say "LINE COMPLETED: $(job_line "$C")"
say "LINE FAILED: $(job_line "$F")"
say "LINE CANCELLED: $(job_line "$X")"

# ------------------------------------------------------------------ requeue on USR1
say "== requeue on USR1"
cat >"$D/requeue.sh" <<'EOF'
#!/bin/bash
echo "run restart=${SLURM_RESTART_COUNT:-unset} at $(date +%s.%N)"
if [[ ${SLURM_RESTART_COUNT:-0} -ge 1 ]]; then echo "second run done"; exit 0; fi
child=
trap 'echo "got USR1 at $(date +%s.%N)"; kill $child 2>/dev/null; scontrol requeue $SLURM_JOB_ID; echo "requeue rc=$?"; exit 0' USR1
sleep 300 & child=$!
wait $child
EOF
# --open-mode=append: a requeued job's StdOut is truncated otherwise
R=$(sbatch --parsable --open-mode=append --output="$D/requeue_%j.out" "$D/requeue.sh")
wait_state "$R" 30 RUNNING
wait_file_has "$D/requeue_$R.out" 'restart=' 10 || true
sleep 0.5
running_line=$(job_line "$R")
t_sig=$(now)
scancel --signal=USR1 --batch "$R"
completing_line="" t_cg="" pending_line2="" t_pend=""
# poll without sleeping: the COMPLETING phase after a requeue lasts only ~30 ms here
for ((i = 0; i < 20000; i++)); do
    l=$(job_line "$R")
    st=$(field "$l" JobState)
    rs=$(field "$l" Restarts)
    if [[ -z $completing_line && $st == COMPLETING && $rs == 1 ]]; then completing_line=$l; t_cg=$(now); fi
    if [[ -z $pending_line2 && $st == PENDING ]]; then pending_line2=$l; t_pend=$(now); fi
    [[ -n $pending_line2 ]] && break
done
pending_line3=""
for ((i = 0; i < 300; i++)); do
    l=$(job_line "$R")
    [[ $(field "$l" Reason) == BeginTime ]] && { pending_line3=$l; break; }
    [[ $(field "$l" JobState) != PENDING ]] && break
    sleep 0.05
done
t_run2=$(now)
wait_state "$R" 60 COMPLETED || true
t_done=$(now)
out=$(cat "$D/requeue_$R.out")
check "requeue job ran twice" test "$(grep -c '^run restart=' <<<"$out")" -eq 2
check "second run saw SLURM_RESTART_COUNT=1" grep -q '^run restart=1' <<<"$out"
check "requeue job COMPLETED with Restarts=1" test "$(job_state "$R"):$(field "$(job_line "$R")" Restarts)" = COMPLETED:1
got=$(grep -m1 '^got USR1' <<<"$out" | awk '{print $NF}')
second_start=$(grep -m1 '^run restart=1' <<<"$out" | awk '{print $NF}')
say "TIMING scancel --signal=USR1 --batch -> trap runs: $(dt "$t_sig" "${got:-$t_sig}") s"
[[ -n $t_cg ]] && say "TIMING signal -> JobState=COMPLETING Restarts=1 seen: $(dt "$t_sig" "$t_cg") s"
[[ -n $t_pend ]] && say "TIMING signal -> JobState=PENDING Restarts=1 seen: $(dt "$t_sig" "$t_pend") s"
say "TIMING signal -> second run starts: $(dt "$t_sig" "${second_start:-$t_run2}") s (EligibleTime = end of first run + cred_expire + 1)"
say "TIMING signal -> COMPLETED seen: $(dt "$t_sig" "$t_done") s"
say "LINE RUNNING (before USR1): $running_line"
say "LINE REQUEUED, phase 1 (COMPLETING, Restarts=1): ${completing_line:-<not observed>}"
say "LINE REQUEUED, phase 2 (PENDING, Restarts=1): $pending_line2"
say "LINE REQUEUED, phase 2b (PENDING Reason=BeginTime): ${pending_line3:-<not observed>}"
say "LINE COMPLETED after requeue: $(job_line "$R")"
say "output of requeue job:"
tee -a "$REPORT" <<<"$out"

# ------------------------------------------------------------------ requeuehold
H=$(sbatch --parsable --output=/dev/null --wrap 'sleep 300')
wait_state "$H" 30 RUNNING
scontrol requeuehold "$H"
for ((i = 0; i < 100; i++)); do
    l=$(job_line "$H")
    [[ $(field "$l" JobState) == PENDING ]] && break
    sleep 0.1
done
check "requeuehold: PENDING Reason=job_requeued_in_held_state" test "$(field "$l" Reason)" = job_requeued_in_held_state
say "LINE REQUEUE_HOLD (scontrol requeuehold): $l"
scancel "$H"

# ------------------------------------------------------------------ signal delivery: --batch vs --full, exec
say "== signal delivery"
cat >"$D/child.sh" <<'EOF'
#!/bin/bash
# stands in for `deep-coral train`: traps USR1, says so, exits 0
trap 'echo "child $$ got USR1"; kill $s 2>/dev/null; exit 0' USR1
echo "child $$ started"
sleep 120 & s=$!
wait $s
EOF
cat >"$D/parent.sh" <<EOF
#!/bin/bash
# batch shell that is NOT the trainer: runs child.sh as a plain child process
trap 'echo "shell \$\$ got USR1"' USR1
echo "shell \$\$ started"
bash $D/child.sh & c=\$!
while kill -0 \$c 2>/dev/null; do wait \$c; done
echo "shell done"
EOF
cat >"$D/exec.sh" <<EOF
#!/bin/bash
# batch shell becomes the trainer
echo "shell \$\$ started"
exec bash $D/child.sh
EOF
P=$(sbatch --parsable --output="$D/parent_%j.out" "$D/parent.sh")
E=$(sbatch --parsable --output="$D/exec_%j.out" "$D/exec.sh")
wait_state "$P" 30 RUNNING
wait_state "$E" 30 RUNNING
wait_file_has "$D/parent_$P.out" 'child .* started' 10 || true
wait_file_has "$D/exec_$E.out" 'child .* started' 10 || true
# 1. no option: only job steps (srun) are signalled, not the batch step
scancel --signal=USR1 "$P"
sleep 1.5
check "scancel --signal=USR1 (no --batch/--full) reaches neither shell nor child" \
    test -z "$(grep 'got USR1' "$D/parent_$P.out")"
# 2. --batch: batch shell only
scancel --signal=USR1 --batch "$P"
wait_file_has "$D/parent_$P.out" 'shell .* got USR1' 10 || true
sleep 1
check "--batch: batch shell got USR1" grep -q 'shell .* got USR1' "$D/parent_$P.out"
check "--batch: child did NOT get USR1" test -z "$(grep 'child .* got USR1' "$D/parent_$P.out")"
# 3. --full: batch shell and all its children
scancel --signal=USR1 --full "$P"
wait_state "$P" 20 COMPLETED FAILED || true
check "--full: child got USR1" grep -q 'child .* got USR1' "$D/parent_$P.out"
check "--full: shell got USR1 twice in total" test "$(grep -c 'shell .* got USR1' "$D/parent_$P.out")" -eq 2
check "--full: job COMPLETED" test "$(job_state "$P")" = COMPLETED
# 4. exec: --batch reaches the exec'd trainer (same pid as the shell)
scancel --signal=USR1 --batch "$E"
wait_state "$E" 20 COMPLETED FAILED || true
check "exec: --batch reaches the exec'd child" grep -q 'child .* got USR1' "$D/exec_$E.out"
sp=$(grep -o -m1 'shell [0-9]*' "$D/exec_$E.out" | awk '{print $2}')
cp=$(grep -o -m1 'child [0-9]*' "$D/exec_$E.out" | awk '{print $2}')
check "exec: trainer pid == batch shell pid ($sp == $cp)" test -n "$sp" -a "$sp" = "$cp"
check "exec: job COMPLETED" test "$(job_state "$E")" = COMPLETED
say "output parent.sh:"; tee -a "$REPORT" <"$D/parent_$P.out"
say "output exec.sh:"; tee -a "$REPORT" <"$D/exec_$E.out"

# ------------------------------------------------------------------ errors
say "== errors"
if err=$(sbatch --parsable -p nosuchpartition --wrap true 2>&1); then
    bad "sbatch -p nosuchpartition should fail (got: $err)"
else
    ok "sbatch -p nosuchpartition fails"
fi
say "ERROR TEXT sbatch -p nosuchpartition: $err"
err2=$(scontrol -o show job 999999 2>&1 || true)
say "ERROR TEXT scontrol -o show job 999999: $err2"

# ------------------------------------------------------------------ stop
say "== stop"
# leave one job running to check that stop cancels it
L=$(sbatch --parsable --output=/dev/null --wrap 'sleep 300')
wait_state "$L" 30 RUNNING || true
t0=$(now)
"$CLUSTER" stop "$D" 2>&1 | tee -a "$REPORT"
t1=$(now)
say "TIMING stop (with one running job): $(dt "$t0" "$t1") s"
check "stop is idempotent" quiet "$CLUSTER" stop "$D"
rc=0; "$CLUSTER" status "$D" >/dev/null || rc=$?
check "status exit 1 when down (got $rc)" test "$rc" -eq 1
# zombies (<defunct>) are not counted: PID 1 on some machines reaps them late
left=$( (pgrep -a -r R,S,D,T munged; pgrep -a -r R,S,D,T slurm) || true)
check "no munged/slurm* process left${left:+: $left}" test -z "$left"
left_jobs=""
for p in /proc/[0-9]*; do
    [[ $(awk '{print $3}' "$p/stat" 2>/dev/null) != Z ]] || continue
    e=$(tr '\0' '\n' 2>/dev/null <"$p/environ") || continue
    grep -qxF "SLURM_CONF=$D/etc/slurm.conf" <<<"$e" && grep -q '^SLURM_JOB_ID=' <<<"$e" &&
        left_jobs+="${p#/proc/}($(cat "$p/comm" 2>/dev/null)) "
done
check "no job process of this cluster left${left_jobs:+: $left_jobs}" test -z "$left_jobs"

say "== $FAILS failure(s)"
[[ $FAILS -eq 0 ]]
