#!/usr/bin/env bash
# A/B rounds for `tc alarm listen` (issue 4): two or more receivers, in alternating order, each
# fed by the same sender for SECONDS_EACH; the figure is datagrams received per CPU-second of the
# receiver (as in benches/alarm-rate.sh: received = sent - the kernel's drops for the socket, CPU
# from /proc/PID/schedstat). Used to time one change against the build before it.
#
# Usage: benches/alarm-ab.sh "BIN [ARGS]" "BIN [ARGS]" ...   (from the repository root)
#   e.g. benches/alarm-ab.sh "$BEFORE" "$AFTER"   (two builds; see benches/README.md)
#        REGIME=drain benches/alarm-ab.sh "$TC --bare" "$TC"
# Receiver: taskset -c 0 BIN alarm listen --listen ADDR:PORT --quiet-unparsed -q ARGS, stdout on
# /dev/null. Sender (benches/alarm-blast.c) on CPU 1. REGIME:
#   overload  (default) `alarm-blast blast`: as fast as the sender can
#   drain     `alarm-blast drain`: the receiver is stopped (SIGSTOP) while the sender fills its
#             receive queue for FILL_MS (10), then let go (SIGCONT) for IDLE_MS (40) to work it
#             off, for SECONDS_EACH: every contender works through the same full queue with the
#             sender idle
# Prints a Markdown table: per round each contender's figure, and each one's ratio to the first;
# then medians, and in how many rounds each beat the first. Needs: taskset, cc, jq.
# Environment: ROUNDS=8, SECONDS_EACH=3, REGIME=overload, PORT=21402, ADDR=127.0.0.1, SEG=128.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 \"BIN [ARGS]\" \"BIN [ARGS]\" ..." >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-8}
SECONDS_EACH=${SECONDS_EACH:-3}
REGIME=${REGIME:-overload}
PORT=${PORT:-21402}
ADDR=${ADDR:-127.0.0.1}
export SEG=${SEG:-128}
case $REGIME in overload | drain) ;; *) echo "REGIME: overload or drain, not $REGIME" >&2; exit 2 ;; esac
WORK=$(mktemp -d /dev/shm/tc-alarm-ab.XXXXXX)
. "$repo/benches/alarm-lib.sh"
BLAST=$(build_blast "$WORK")
rpid=
cleanup() {
    if [ -n "$rpid" ]; then kill -CONT "$rpid" 2>/dev/null; kill -TERM "$rpid" 2>/dev/null; wait "$rpid" 2>/dev/null; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# measure "BIN [ARGS]" -> per-CPU-second figure
measure() {
    local cmd
    read -r -a cmd <<<"$1"
    taskset -c 0 "${cmd[0]}" alarm listen --listen "$ADDR:$PORT" --quiet-unparsed -q "${cmd[@]:1}" \
        >/dev/null 2>"$WORK/recv.err" &
    rpid=$!
    sleep 0.4
    local n0 n1 s sent drops
    n0=$(run_ns "$rpid")
    if [ "$REGIME" = drain ]; then
        s=$(taskset -c 1 "$BLAST" drain "$ADDR" "$PORT" "$SECONDS_EACH" "$rpid")
    else
        s=$(taskset -c 1 "$BLAST" blast "$ADDR" "$PORT" "$SECONDS_EACH")
    fi
    sleep 0.3
    n1=$(run_ns "$rpid")
    drops=$(udp_drops)
    kill -TERM "$rpid"
    wait "$rpid" || true
    rpid=
    sent=$(sed -E 's/.*sent=([0-9]+).*/\1/' <<<"$s")
    echo "alarm-ab.sh: $1: sender '$s' drops $drops run_ns $((n1 - n0))" >&2
    awk -v r="$((sent - drops))" -v ns="$((n1 - n0))" 'BEGIN{printf "%.0f", r / (ns / 1e9)}'
}

n=$#
echo "### $REGIME, $ROUNDS rounds of $SECONDS_EACH s, datagrams received per CPU-second"
echo
hdr="| round |"; sep="|---|"
for i in $(seq "$n"); do hdr="$hdr #$i |"; sep="$sep---|"; done
for i in $(seq 2 "$n"); do hdr="$hdr #$i / #1 |"; sep="$sep---|"; done
echo "$hdr"; echo "$sep"
declare -A all=() wins=()
for r in $(seq "$ROUNDS"); do
    declare -A got=()
    # alternate: contenders in turn, the order rotated by one each round
    for k in $(seq 0 $((n - 1))); do
        i=$(( (k + r - 1) % n + 1 ))
        got[$i]=$(measure "${!i}")
    done
    row="| $r |"
    for i in $(seq "$n"); do row="$row ${got[$i]} |"; all[$i]="${all[$i]:-} ${got[$i]}"; done
    for i in $(seq 2 "$n"); do
        row="$row $(awk -v a="${got[$i]}" -v b="${got[1]}" 'BEGIN{printf "%.3f", a / b}') |"
        all[r$i]="${all[r$i]:-} $(awk -v a="${got[$i]}" -v b="${got[1]}" 'BEGIN{printf "%.4f", a / b}')"
        [ "${got[$i]}" -gt "${got[1]}" ] && wins[$i]=$(( ${wins[$i]:-0} + 1 ))
    done
    echo "$row"
done
row="| **median** |"
for i in $(seq "$n"); do row="$row **$(tr ' ' '\n' <<<"${all[$i]}" | grep . | median | awk '{printf "%.0f", $1}')** |"; done
for i in $(seq 2 "$n"); do row="$row **$(tr ' ' '\n' <<<"${all[r$i]}" | grep . | median | awk '{printf "%.3f", $1}')** |"; done
echo "$row"
echo
for i in $(seq "$n"); do echo "- #$i: \`${!i}\`"; done
for i in $(seq 2 "$n"); do echo "- #$i above #1 in ${wins[$i]:-0} of $ROUNDS rounds"; done
