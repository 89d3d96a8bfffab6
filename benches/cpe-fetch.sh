#!/usr/bin/env bash
# Benchmark: `tc cpe fetch` of one large capture vs OpenSSH's `sftp` client, same sshd, loopback.
#
# Starts `tc lab up` with one emulated device whose capture file is CAPTURE_BYTES long, then runs
# ROUNDS rounds; each round fetches the file once with `tc cpe fetch` and once with
# `sftp -b -` (password via `sshpass -e`, never on a command line), alternating which goes first
# (with TC_ALT, once more with that binary, the three in rotating order).
# Every output is checked against the served file's sha256 and deleted. Measured per fetch: the
# wall time of the client process (connect, SSH handshake, login and transfer included for both
# tools) and its CPU time (user + system, children included: sshpass + sftp + ssh for OpenSSH).
# The machine's 1-minute load average at the start of each round is recorded: on a shared machine
# a round run under contention shows it.
#
# Prints a Markdown report on stdout (progress on stderr). Needs: root (the lab runs a real sshd
# with chroots), jq, sshpass, openssh-client, openssh-server.
#
# Usage: sudo benches/cpe-fetch.sh            (from the repository root)
# Environment (all optional):
#   TC=PATH               tc binary (default: the static musl release build, see
#                         benches/tc-bin.sh)
#   ROUNDS=11             rounds (each round = one tc fetch + one sftp fetch; the machine this
#                         was written on is noisy, so many short rounds and the median)
#   CAPTURE_BYTES=200000000
#   LAB_USER=tcbench1     system user the lab creates for SFTP logins (removed when it stops)
#   LAB_SUBNET=196        third octet of the device address (127.0.N.1)
#   WORK=DIR              scratch directory (default: a new mktemp -d, removed at the end)
#   TC_ALT=PATH           a second tc binary (e.g. built from a patched copy, see
#                         benches/README.md) timed in the same rounds as a third contender
#                         ("alt"); the order of the three rotates each round
#   TC_ALT_ARGS=...       options for the alt run only, e.g. TC_ALT=\$TC TC_ALT_ARGS="--progress
#                         always" times the fetch drawing its progress bars (into a file) against
#                         the same binary drawing none (issue 21)
set -euo pipefail

ROUNDS=${ROUNDS:-11}
CAPTURE_BYTES=${CAPTURE_BYTES:-200000000}
LAB_USER=${LAB_USER:-tcbench1}
LAB_SUBNET=${LAB_SUBNET:-196}

die() { echo "cpe-fetch.sh: $*" >&2; exit 2; }
log() { echo "cpe-fetch.sh: $*" >&2; }

[ "$(id -u)" = 0 ] || die "needs root (tc lab up runs a real sshd with per-device chroots)"
for p in jq sshpass sftp sha256sum; do
    command -v "$p" >/dev/null || die "missing $p (apt-get install -y jq sshpass openssh-client)"
done

repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/benches/tc-bin.sh"
TC=$(tc_bin) || die "no tc binary"
[ -x "$TC" ] || die "no tc binary at $TC"
[ -z "${TC_ALT:-}" ] || [ -x "$TC_ALT" ] || die "no tc binary at TC_ALT=$TC_ALT"

own_work=0
if [ -z "${WORK:-}" ]; then
    WORK=$(mktemp -d /tmp/tc-bench-fetch.XXXXXX)
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
        rm -rf "$WORK/lab" "$WORK/out" "$WORK/sftp.pcap" "$WORK/lab.out" "$WORK/lab.err"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the lab ---------------------------------------------------------------------------------
log "starting lab: 1 device, capture $CAPTURE_BYTES bytes"
"$TC" lab up --dir "$WORK/lab" --devices 1 --capture-bytes "$CAPTURE_BYTES" \
    --user "$LAB_USER" --subnet "$LAB_SUBNET" >"$WORK/lab.out" 2>"$WORK/lab.err" &
lab_pid=$!
for _ in $(seq 600); do
    grep -q '"lab.ready"' "$WORK/lab.out" 2>/dev/null && break
    kill -0 "$lab_pid" 2>/dev/null || { cat "$WORK/lab.err" >&2; die "tc lab up exited"; }
    sleep 0.1
done
ready=$(grep -m1 '"lab.ready"' "$WORK/lab.out") || die "no lab.ready within 60 s"
ssh_port=$(jq -r .ssh_port <<<"$ready")
sftp_root=$(jq -r .sftp_root <<<"$ready")
inventory=$(jq -r .inventory <<<"$ready")
env_file=$(jq -r .env <<<"$ready")
addr=$(awk -F, 'NR==2 {print $1}' "$inventory")
# shellcheck disable=SC1090
. "$env_file"
export SSHPASS="$TC_CPE_PASSWORD"
remote=/debug-capture/debug-capture-data.pcap
served="$sftp_root/$addr$remote"
bytes=$(stat -c %s "$served")
want=$(sha256sum "$served" | cut -d' ' -f1)
log "device $addr, ssh port $ssh_port, served file $bytes bytes, sha256 $want"

# --- one timed fetch per tool ----------------------------------------------------------------
mkdir -p "$WORK/out"
TIMEFORMAT='%3R %3U %3S'

# Prints "WALL CPU" (seconds) of one `tc cpe fetch` by binary $1 (default $TC), with the
# options in $2 (word-split on purpose: options, not file names).
run_tc() {
    local bin=${1:-$TC} got
    local -a extra
    read -r -a extra <<<"${2:-}"
    rm -rf "$WORK/out"/*
    { time "$bin" cpe fetch --devices "$inventory" --out "$WORK/out" "${extra[@]}" >"$WORK/tc.out" \
        2>"$WORK/tc.err"; } 2>"$WORK/time" \
        || die "tc cpe fetch failed: $(cat "$WORK/tc.err")"
    got=$(sha256sum "$WORK"/out/CPE_device_*.pcap | cut -d' ' -f1)
    [ "$got" = "$want" ] || die "tc output sha256 $got != served $want"
    # (TC_ALT may be a diagnostic build that does not hash: only the file itself is checked.)
    [ "$bin" != "$TC" ] || [ "$(jq -r 'select(.type=="cpe.fetched").sha256' "$WORK/tc.out")" = "$want" ] \
        || die "tc reported a different sha256"
    rm -rf "$WORK/out"/*
    awk '{printf "%.3f %.3f", $1, $2 + $3}' "$WORK/time"
}

# Prints "WALL CPU" (seconds) of one OpenSSH sftp download of the same file.
run_sftp() {
    local got
    rm -f "$WORK/sftp.pcap"
    printf 'get %s %s\n' "$remote" "$WORK/sftp.pcap" >"$WORK/batch"
    { time sshpass -e sftp -q -P "$ssh_port" -o UserKnownHostsFile="$TC_KNOWN_HOSTS" \
        -o BatchMode=no -o StrictHostKeyChecking=yes -o PubkeyAuthentication=no \
        -o PreferredAuthentications=password -b "$WORK/batch" "$TC_CPE_USER@$addr" \
        >/dev/null 2>"$WORK/sftp.err"; } 2>"$WORK/time" \
        || die "sftp failed: $(cat "$WORK/sftp.err")"
    got=$(sha256sum "$WORK/sftp.pcap" | cut -d' ' -f1)
    [ "$got" = "$want" ] || die "sftp output sha256 $got != served $want"
    rm -f "$WORK/sftp.pcap"
    awk '{printf "%.3f %.3f", $1, $2 + $3}' "$WORK/time"
}

# A warm-up fetch by each tool (not reported): page cache, sshd's first fork.
log "warm-up"
run_tc >/dev/null
run_sftp >/dev/null
tools=(tc sftp)
if [ -n "${TC_ALT:-}" ]; then
    run_tc "$TC_ALT" "${TC_ALT_ARGS:-}" >/dev/null
    tools+=(alt)
fi

rows=()
for r in $(seq "$ROUNDS"); do
    k=${#tools[@]}
    order=
    alt="0 0"
    load=$(cut -d' ' -f1 /proc/loadavg)
    for i in $(seq 0 $((k - 1))); do
        tool=${tools[$(((r - 1 + i) % k))]}
        case $tool in
            tc) tc=$(run_tc) ;;
            sftp) sftp=$(run_sftp) ;;
            alt) alt=$(run_tc "$TC_ALT" "${TC_ALT_ARGS:-}") ;;
        esac
        order+="${order:+, }$tool"
    done
    log "round $r (load $load; $order): tc $tc, sftp $sftp${TC_ALT:+, alt $alt} (wall s, CPU s)"
    rows+=("$r|$load|$order|$tc|$sftp|$alt")
done

# --- report ----------------------------------------------------------------------------------
printf '%s\n' "${rows[@]}" | tr ' ' '|' | sed 's/,|/, /g' | awk -F'|' -v bytes="$bytes" \
    -v tc="$("$TC" --version)" -v alt="${TC_ALT:+$("$TC_ALT" --version) at $TC_ALT ${TC_ALT_ARGS:-}}" \
    -v ssh="$(ssh -V 2>&1)" -v cores="$(nproc)" -v when="$(date -u +%Y-%m-%dT%H:%M:%SZ)" '
function median(a, n,   i, j, t, b) {
    for (i = 1; i <= n; i++) b[i] = a[i]
    for (i = 2; i <= n; i++) for (j = i; j > 1 && b[j-1] > b[j]; j--) { t = b[j]; b[j] = b[j-1]; b[j-1] = t }
    return n % 2 ? b[(n+1)/2] : (b[n/2] + b[n/2+1]) / 2
}
function min(a, n,   i, m) { m = a[1]; for (i = 2; i <= n; i++) if (a[i] < m) m = a[i]; return m }
function max(a, n,   i, m) { m = a[1]; for (i = 2; i <= n; i++) if (a[i] > m) m = a[i]; return m }
function stats(name, a, fmt) {
    printf "| %s | " fmt " | " fmt " | " fmt " |\n", name, median(a, n), min(a, n), max(a, n)
}
{
    # round|load|order|tc wall|tc cpu|sftp wall|sftp cpu|alt wall|alt cpu
    n++; load[n] = $2; order[n] = $3
    tw[n] = $4; tcpu[n] = $5; sw[n] = $6; scpu[n] = $7; aw[n] = $8; acpu[n] = $9
    tm[n] = bytes / 1e6 / tw[n]; sm[n] = bytes / 1e6 / sw[n]; ratio[n] = tm[n] / sm[n]
    if (alt != "") { am[n] = bytes / 1e6 / aw[n]; aratio[n] = am[n] / sm[n]; atc[n] = am[n] / tm[n] }
}
END {
    printf "Run %s, %s cores, %s, %s; file %d bytes; MB = 10^6 bytes.\n", when, cores, tc, ssh, bytes
    if (alt != "") printf "alt = %s.\n", alt
    printf "s = wall seconds of the client process; CPU = its user + system seconds (children included); load = 1-minute load average when the round began.\n\n"
    if (alt == "") {
        print "| round | load | order | tc s | tc MB/s | tc CPU | sftp s | sftp MB/s | sftp CPU | tc/sftp |"
        print "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"
        for (i = 1; i <= n; i++)
            printf "| %d | %.2f | %s | %.3f | %.1f | %.3f | %.3f | %.1f | %.3f | %.2f |\n", i, load[i], order[i], tw[i], tm[i], tcpu[i], sw[i], sm[i], scpu[i], ratio[i]
    } else {
        print "| round | load | order | tc s | tc MB/s | sftp s | sftp MB/s | alt s | alt MB/s | tc/sftp | alt/sftp | alt/tc |"
        print "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        for (i = 1; i <= n; i++)
            printf "| %d | %.2f | %s | %.3f | %.1f | %.3f | %.1f | %.3f | %.1f | %.2f | %.2f | %.2f |\n", i, load[i], order[i], tw[i], tm[i], sw[i], sm[i], aw[i], am[i], ratio[i], aratio[i], atc[i]
    }
    printf "\n| over %d rounds | median | min | max |\n|---|---:|---:|---:|\n", n
    stats("tc MB/s", tm, "%.1f"); stats("sftp MB/s", sm, "%.1f")
    if (alt != "") stats("alt MB/s", am, "%.1f")
    stats("tc CPU s", tcpu, "%.3f"); stats("sftp CPU s", scpu, "%.3f")
    if (alt != "") stats("alt CPU s", acpu, "%.3f")
    stats("tc/sftp (per round)", ratio, "%.2f")
    if (alt != "") { stats("alt/sftp (per round)", aratio, "%.2f"); stats("alt/tc (per round)", atc, "%.2f") }
    r = median(ratio, n)
    printf "\nMedian ratio tc/sftp = %.2f: goal >= 0.9 %s.\n", r, (r >= 0.9 ? "MET" : "NOT MET")
    if (alt != "") { r = median(aratio, n); printf "Median ratio alt/sftp = %.2f: goal >= 0.9 %s.\n", r, (r >= 0.9 ? "MET" : "NOT MET") }
}'
