#!/usr/bin/env bash
# Benchmark: `tc cpe start` on many emulated devices with REST latency, concurrent vs sequential.
#
# Starts `tc lab up` with DEVICES emulated devices (alternating MSBR and gateway/SBC) whose REST API
# waits LATENCY_MS before every answer, then times `tc cpe start --jobs J` (wall time of the
# process) for each J in JOBS, ROUNDS rounds, alternating the order of the J values; then times the
# sequential `--jobs 1` SEQ_ROUNDS times. Between timed runs every capture is stopped with
# `tc cpe stop --jobs 200` (not timed). Every timed run must exit 0 with ok == DEVICES in its
# summary line. The speed-up is the sequential time (median) over each J's median.
#
# Prints a Markdown report on stdout (progress on stderr). Needs: jq. Runs the lab with
# --no-sftp, so no root is needed; when run as root, the lab runs as LAB_RUN_AS (setpriv) so
# that it starts neither tcpdump nor snmpd, which this benchmark does not use.
#
# Usage: benches/cpe-start.sh                 (from the repository root)
# Environment (all optional):
#   TC=PATH               tc binary (default: the static musl release build, see
#                         benches/tc-bin.sh)
#   DEVICES=200  LATENCY_MS=100
#   JOBS="200 32"         concurrent --jobs values timed (32 is tc's default)
#   ROUNDS=5              rounds of the concurrent runs
#   SEQ_ROUNDS=1          rounds of the sequential --jobs 1 run (each about 40 s at the defaults)
#   LAB_USER=tcbench2     REST admin user of the lab
#   LAB_SUBNET=198        third octet of the first device address (127.0.N.1)
#   LAB_RUN_AS=nobody     unprivileged user the lab runs as when this script runs as root (WORK
#                         is chowned to it, so it must be reachable by that user)
#   WORK=DIR              scratch directory (default: a new mktemp -d, removed at the end)
set -euo pipefail

DEVICES=${DEVICES:-200}
LATENCY_MS=${LATENCY_MS:-100}
JOBS=${JOBS:-200 32}
ROUNDS=${ROUNDS:-5}
SEQ_ROUNDS=${SEQ_ROUNDS:-1}
LAB_USER=${LAB_USER:-tcbench2}
LAB_SUBNET=${LAB_SUBNET:-198}
LAB_RUN_AS=${LAB_RUN_AS:-nobody}

die() { echo "cpe-start.sh: $*" >&2; exit 2; }
log() { echo "cpe-start.sh: $*" >&2; }

command -v jq >/dev/null || die "missing jq (apt-get install -y jq)"

repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/benches/tc-bin.sh"
TC=$(tc_bin) || die "no tc binary"
[ -x "$TC" ] || die "no tc binary at $TC"

own_work=0
if [ -z "${WORK:-}" ]; then
    WORK=$(mktemp -d /tmp/tc-bench-start.XXXXXX)
    own_work=1
fi
mkdir -p "$WORK"
lab_pid=
cleanup() {
    if [ -n "$lab_pid" ] && kill -0 "$lab_pid" 2>/dev/null; then
        kill -TERM "$lab_pid" 2>/dev/null || true
        wait "$lab_pid" 2>/dev/null || true
    fi
    if [ "$own_work" = 1 ]; then
        rm -rf "$WORK"
    else
        rm -rf "$WORK/lab" "$WORK/lab.out" "$WORK/lab.err" "$WORK/run.out"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the lab ---------------------------------------------------------------------------------
log "starting lab: $DEVICES devices, REST latency $LATENCY_MS ms"
as_lab=()
if [ "$(id -u)" = 0 ]; then
    command -v setpriv >/dev/null || die "running as root needs setpriv (util-linux) to drop to $LAB_RUN_AS"
    id "$LAB_RUN_AS" >/dev/null 2>&1 || die "no user $LAB_RUN_AS"
    uid=$(id -u "$LAB_RUN_AS")
    gid=$(id -g "$LAB_RUN_AS")
    chown "$uid:$gid" "$WORK"
    as_lab=(setpriv --reuid="$uid" --regid="$gid" --clear-groups --)
fi
"${as_lab[@]}" "$TC" lab up --dir "$WORK/lab" --devices "$DEVICES" --latency-ms "$LATENCY_MS" --no-sftp \
    --user "$LAB_USER" --subnet "$LAB_SUBNET" >"$WORK/lab.out" 2>"$WORK/lab.err" &
lab_pid=$!
for _ in $(seq 1200); do
    grep -q '"lab.ready"' "$WORK/lab.out" 2>/dev/null && break
    kill -0 "$lab_pid" 2>/dev/null || { cat "$WORK/lab.err" >&2; die "tc lab up exited"; }
    sleep 0.1
done
ready=$(grep -m1 '"lab.ready"' "$WORK/lab.out") || die "no lab.ready within 120 s"
inventory=$(jq -r .inventory <<<"$ready")
env_file=$(jq -r .env <<<"$ready")
# shellcheck disable=SC1090
. "$env_file"
log "lab ready: $(($(wc -l <"$inventory") - 1)) devices in $inventory"

now() { date +%s.%N; }

# Stop every capture (untimed), and check none is left active.
stop_all() {
    "$TC" cpe stop --devices "$inventory" --jobs 200 >"$WORK/run.out" \
        || die "tc cpe stop failed: $(tail -1 "$WORK/run.out")"
}

# One timed `tc cpe start --jobs J`; prints the seconds.
timed_start() {
    local jobs=$1 t0 t1 ok
    t0=$(now)
    "$TC" cpe start --devices "$inventory" --jobs "$jobs" >"$WORK/run.out" \
        || die "tc cpe start --jobs $jobs failed: $(tail -1 "$WORK/run.out")"
    t1=$(now)
    ok=$(jq -r 'select(.type=="summary").ok' "$WORK/run.out")
    [ "$ok" = "$DEVICES" ] || die "tc cpe start --jobs $jobs: ok=$ok, want $DEVICES"
    [ "$(grep -c '"cpe.capture_started"' "$WORK/run.out")" = "$DEVICES" ] \
        || die "tc cpe start --jobs $jobs: not $DEVICES cpe.capture_started lines"
    stop_all
    echo "$t0 $t1" | awk '{printf "%.3f", $2 - $1}'
}

stop_all # a clean state (the lab starts with captures stopped; this also warms up)

rows=()
for r in $(seq "$ROUNDS"); do
    # Alternate the order of the --jobs values from round to round.
    read -r -a order <<<"$JOBS"
    if [ $((r % 2)) = 0 ]; then
        rev=()
        for j in "${order[@]}"; do rev=("$j" "${rev[@]}"); done
        order=("${rev[@]}")
    fi
    for j in "${order[@]}"; do
        t=$(timed_start "$j")
        log "round $r: --jobs $j: ${t}s"
        rows+=("$j|$r|$t")
    done
done
for r in $(seq "$SEQ_ROUNDS"); do
    log "sequential round $r (--jobs 1; at least $((DEVICES * LATENCY_MS * 2 / 1000)) s)"
    t=$(timed_start 1)
    log "sequential round $r: --jobs 1: ${t}s"
    rows+=("1|$r|$t")
done

# --- report ----------------------------------------------------------------------------------
printf '%s\n' "${rows[@]}" | awk -F'|' -v devices="$DEVICES" -v latency="$LATENCY_MS" \
    -v jobs="$JOBS" -v tc="$("$TC" --version)" -v cores="$(nproc)" \
    -v when="$(date -u +%Y-%m-%dT%H:%M:%SZ)" '
function sort(a, n,   i, j, t) {
    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
}
function median(a, n) { sort(a, n); return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2 }
{
    j = $1; cnt[j]++; v[j, cnt[j]] = $3
    if (!(j in seen)) { seen[j] = 1; order[++nj] = j }
    if ($2 > maxr) maxr = $2
}
END {
    printf "Run %s, %s cores, %s; %d devices, %d ms before every REST answer; wall time of `tc cpe start` in seconds.\n\n", when, cores, tc, devices, latency
    printf "| --jobs |"; for (r = 1; r <= maxr; r++) printf " round %d |", r
    printf " median | min | max |\n|---:|"; for (r = 1; r <= maxr; r++) printf "---:|"
    print "---:|---:|---:|"
    for (k = 1; k <= nj; k++) {
        j = order[k]; n = cnt[j]
        printf "| %s |", j
        for (r = 1; r <= maxr; r++) printf (r <= n ? " %.2f |" : " |"), v[j, r]
        for (r = 1; r <= n; r++) s[r] = v[j, r]
        sort(s, n); med[j] = median(s, n)
        printf " %.2f | %.2f | %.2f |\n", med[j], s[1], s[n]
        lo[j] = s[1]; hi[j] = s[n]
    }
    if (!(1 in med)) exit
    printf "\n| --jobs | speed-up vs --jobs 1 (median) | range (worst, best) | goal >= 20x |\n|---:|---:|---:|---|\n"
    for (k = 1; k <= nj; k++) {
        j = order[k]; if (j == 1) continue
        sp = med[1] / med[j]
        printf "| %s | %.1fx | %.1fx, %.1fx | %s |\n", j, sp, lo[1] / hi[j], hi[1] / lo[j], (sp >= 20 ? "MET" : "NOT MET")
    }
}'
