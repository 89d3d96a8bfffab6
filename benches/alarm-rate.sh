#!/usr/bin/env bash
# Benchmark (issue 4): `tc alarm listen` parsed alarms per CPU-second against the bare UDP
# receive loop (`tc alarm listen --bare`: same socket, same mio loop, counts datagrams and does
# nothing else), and loss at a sustained 20,000 alarms/s for 10 s.
#
# Receiver pinned to CPU 0 (taskset -c 0), sender (benches/alarm-blast.c: pre-built OVOC-worded
# Connection Lost datagrams, UDP GSO) pinned to CPU 1. Receiver modes:
#   bare      --bare (counts only)
#   null      parsed, every `alarm` line written to stdout = /dev/null
#   file      parsed, every `alarm` line written to a file on tmpfs
#   filtered  parsed, every alarm filtered out (--device 192.0.2.99): nothing serialized
# Two regimes, each for SECONDS:
#   overload  `alarm-blast blast`: as fast as the sender can; the parsed receiver falls behind and
#             runs with a full receive queue
#   equal     `alarm-blast gsopace` at EQUAL_RATE/s (default 100,000), below every mode's
#             capacity: each mode receives every datagram, with short queues
# Figure: datagrams received per CPU-second of the receiver, where received = sent - the kernel's
# drop count for the socket (/proc/net/udp), and CPU = the receiver's run time from
# /proc/PID/schedstat (nanoseconds) from before the send to 0.5 s after it (the queue drained).
# Modes rotate their order each round.
#
# Loss rounds: parsed receiver (file), paced sender at PACE_RATE/s for PACE_SECONDS;
# loss = sent - matched; dropped_kernel from the summary.
#
# Prints a Markdown report on stdout (progress on stderr). Needs: taskset, cc, jq.
# Usage: benches/alarm-rate.sh          (from the repository root)
# Environment: TC=PATH (default: the static musl release build, see benches/tc-bin.sh), ROUNDS=5, SECONDS_EACH=4,
#   EQUAL_RATE=100000, PACE_RATE=20000, PACE_SECONDS=10, LOSS_ROUNDS=3, PORT=21401,
#   ADDR=127.0.0.1, SEG=128 (datagrams per GSO send)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/benches/tc-bin.sh"
TC=$(tc_bin)
ROUNDS=${ROUNDS:-5}
SECONDS_EACH=${SECONDS_EACH:-4}
EQUAL_RATE=${EQUAL_RATE:-100000}
PACE_RATE=${PACE_RATE:-20000}
PACE_SECONDS=${PACE_SECONDS:-10}
LOSS_ROUNDS=${LOSS_ROUNDS:-3}
PORT=${PORT:-21401}
export SEG=${SEG:-128}
ADDR=${ADDR:-127.0.0.1}
log() { echo "alarm-rate.sh: $*" >&2; }
WORK=$(mktemp -d /dev/shm/tc-alarm-rate.XXXXXX)
. "$repo/benches/alarm-lib.sh"
BLAST=$(build_blast "$WORK")
rpid=
cleanup() { if [ -n "$rpid" ]; then kill -TERM "$rpid" 2>/dev/null; wait "$rpid" 2>/dev/null; fi; rm -rf "$WORK"; }
trap cleanup EXIT

# run_recv MODE -> starts the receiver in the background, sets rpid
run_recv() {
    local extra=() out=$WORK/recv.out
    case $1 in
        bare) extra=(--bare) ;;
        null) out=/dev/null ;;
        filtered) extra=(--device 192.0.2.99) ;;
    esac
    taskset -c 0 "$TC" alarm listen --listen "$ADDR:$PORT" --quiet-unparsed -q "${extra[@]}" \
        >"$out" 2>"$WORK/recv.err" &
    rpid=$!
    sleep 0.5
}
stop_recv() { # not in a $(...) subshell: `wait` only works for the shell's own children
    kill -TERM "$rpid"
    wait "$rpid" || true
    rpid=
    grep '"alarm.summary"' "$WORK/recv.out" >"$WORK/summary" 2>/dev/null || : >"$WORK/summary"
    rm -f "$WORK/recv.out"
}

# measure MODE REGIME -> "per_cpu_second received drops cpu_seconds sender_rate"
measure() {
    run_recv "$1"
    local n0 n1 s sent drops
    n0=$(run_ns "$rpid")
    if [ "$2" = overload ]; then
        s=$(taskset -c 1 "$BLAST" blast "$ADDR" "$PORT" "$SECONDS_EACH")
    else
        s=$(taskset -c 1 "$BLAST" gsopace "$ADDR" "$PORT" "$SECONDS_EACH" "$EQUAL_RATE")
    fi
    sleep 0.5
    n1=$(run_ns "$rpid")
    drops=$(udp_drops)
    stop_recv
    sent=$(sed -E 's/.*sent=([0-9]+).*/\1/' <<<"$s")
    local received=$((sent - drops))
    if [ -s "$WORK/summary" ] && [ "$(jq -r .received "$WORK/summary")" != "$received" ]; then
        log "warning: $1/$2: sent - drops = $received, the listener counted $(jq -r .received "$WORK/summary")"
    fi
    log "raw $1/$2: sender '$s' drops $drops run_ns $((n1 - n0))"
    local rate
    rate=$(sed -E 's/.*rate=([0-9]+).*/\1/' <<<"$s")
    awk -v r="$received" -v ns="$((n1 - n0))" -v d="$drops" -v rate="$rate" \
        'BEGIN{printf "%.0f %d %d %.2f %d", r / (ns / 1e9), r, d, ns / 1e9, rate}'
}

pct() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.0f", 100*a/b}'; }
fmt() { printf '%.0f' "$1"; }

for regime in overload equal; do
    if [ "$regime" = overload ]; then
        modes=(bare null file filtered)
        echo "### Overload: the sender as fast as it can for $SECONDS_EACH s"
    else
        modes=(bare null file)
        echo "### Equal load: $EQUAL_RATE datagrams/s for $SECONDS_EACH s, below every mode's capacity"
    fi
    echo
    echo "Datagrams received per CPU-second of the receiver (kernel drops for the socket in brackets;"
    echo "in the equal-load rounds every mode must show 0). Last column: the sender's rate in the bare"
    echo "round; when it falls, the machine has slowed, and the bare loop's figure falls more than the"
    echo "others'."
    echo
    hdr="| round |"; sep="|---|"
    for m in "${modes[@]}"; do hdr="$hdr $m /CPU-s |"; sep="$sep---|"; done
    echo "$hdr null / bare | file / bare | sent/s to bare |"; echo "$sep---|---|---|"
    declare -A all=()
    for r in $(seq "$ROUNDS"); do
        # rotate the order each round
        order=("${modes[@]:$(( (r - 1) % ${#modes[@]} ))}" "${modes[@]:0:$(( (r - 1) % ${#modes[@]} ))}")
        declare -A got=()
        for m in "${order[@]}"; do got[$m]=$(measure "$m" "$regime"); done
        row="| $r |"
        for m in "${modes[@]}"; do
            read -r per _ drops _ <<<"${got[$m]}"
            row="$row $(fmt "$per") ($drops) |"
            all[$m]="${all[$m]:-} $per"
        done
        read -r b _ _ _ brate <<<"${got[bare]}"; read -r n _ <<<"${got[null]}"; read -r f _ <<<"${got[file]}"
        all[rn]="${all[rn]:-} $(pct "$n" "$b")"; all[rf]="${all[rf]:-} $(pct "$f" "$b")"
        echo "$row $(pct "$n" "$b") % | $(pct "$f" "$b") % | $(fmt "$brate") |"
        log "$regime round $r: $row"
    done
    row="| **median** |"
    for m in "${modes[@]}"; do row="$row **$(fmt "$(tr ' ' '\n' <<<"${all[$m]}" | grep . | median)")** |"; done
    echo "$row **$(tr ' ' '\n' <<<"${all[rn]}" | grep . | median) %** | **$(tr ' ' '\n' <<<"${all[rf]}" | grep . | median) %** | |"
    echo
    unset all
done

log "loss: $LOSS_ROUNDS rounds at $PACE_RATE/s for ${PACE_SECONDS}s"
echo "### Loss at a sustained $PACE_RATE alarms/s for $PACE_SECONDS s (parsed, receiver on CPU 0)"
echo
echo "| round | sent | sender rate/s | received | matched | sent - matched | dropped_kernel |"
echo "|---|---|---|---|---|---|---|"
for r in $(seq "$LOSS_ROUNDS"); do
    run_recv file
    s=$(taskset -c 1 "$BLAST" pace "$ADDR" "$PORT" "$PACE_SECONDS" "$PACE_RATE")
    sleep 0.5
    stop_recv
    sum=$(cat "$WORK/summary")
    sent=$(sed -E 's/.*sent=([0-9]+).*/\1/' <<<"$s")
    srate=$(sed -E 's/.*rate=([0-9]+).*/\1/' <<<"$s")
    rec=$(jq -r .received <<<"$sum"); mat=$(jq -r .matched <<<"$sum"); dk=$(jq -r .dropped_kernel <<<"$sum")
    echo "| $r | $sent | $srate | $rec | $mat | $((sent - mat)) | $dk |"
    log "loss round $r: sent $sent matched $mat dropped_kernel $dk"
done
