#!/usr/bin/env bash
# Benchmark (issue 4): `tc alarm listen` parsed alarms per second on one core against the bare
# UDP receive loop (`tc alarm listen --bare`: same socket, same mio loop, counts datagrams and
# does nothing else), and loss at a sustained 20,000 alarms/s for 10 s.
#
# Throughput rounds: the receiver is pinned to CPU 0 (taskset -c 0), the sender
# (benches/alarm-blast.c, pre-built OVOC-worded Connection Lost datagrams, sendmmsg) to CPU 1;
# the sender blasts for BLAST_SECONDS; rate = datagrams the receiver counted / BLAST_SECONDS
# (after the sender stops the receiver drains its queue, then gets SIGTERM and prints its
# alarm.summary). Parsed mode writes every `alarm` JSON line to a file on tmpfs
# (--quiet-unparsed, no filters), i.e. it parses, builds and serializes each event.
# Each round runs bare and parsed, alternating which goes first.
#
# Loss rounds: parsed receiver (pinned as above), paced sender at PACE_RATE/s for PACE_SECONDS;
# loss = sent - matched; dropped_kernel from the summary (/proc/net/udp drops).
#
# Prints a Markdown report on stdout (progress on stderr). Needs: taskset, cc, jq.
# Usage: benches/alarm-rate.sh          (from the repository root)
# Environment: TC=PATH (default /tmp/target-bench2/release/tc), ROUNDS=5, BLAST_SECONDS=5,
#   PACE_RATE=20000, PACE_SECONDS=10, LOSS_ROUNDS=3, PORT=21401, ADDR=127.0.0.1
set -euo pipefail
TC=${TC:-/tmp/target-bench2/release/tc}
ROUNDS=${ROUNDS:-5}
BLAST_SECONDS=${BLAST_SECONDS:-5}
PACE_RATE=${PACE_RATE:-20000}
PACE_SECONDS=${PACE_SECONDS:-10}
LOSS_ROUNDS=${LOSS_ROUNDS:-3}
PORT=${PORT:-21401}
export SEG=${SEG:-128}  # datagrams per GSO send of the blaster
ADDR=${ADDR:-127.0.0.1}
log() { echo "alarm-rate.sh: $*" >&2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /dev/shm/tc-alarm-rate.XXXXXX)
BLAST=$WORK/alarm-blast
cc -O2 -o "$BLAST" "$repo/benches/alarm-blast.c"
rpid=
cleanup() { if [ -n "$rpid" ]; then kill -TERM "$rpid" 2>/dev/null; wait "$rpid" 2>/dev/null; fi; rm -rf "$WORK"; }
trap cleanup EXIT

# run_recv MODE(bare|parsed) -> starts receiver in background, sets rpid
run_recv() {
    local extra=()
    [ "$1" = bare ] && extra=(--bare)
    # diagnostic: parse every datagram but filter every alarm out (nothing is serialized/written)
    [ "$1" = filtered ] && extra=(--device 192.0.2.99)
    taskset -c 0 "$TC" alarm listen --listen "$ADDR:$PORT" --quiet-unparsed -q "${extra[@]}" \
        >"$WORK/recv.out" 2>"$WORK/recv.err" &
    rpid=$!
    sleep 0.5
}
stop_recv() { # not in a $(...) subshell: `wait` only works for the shell's own children
    sleep 0.5
    kill -TERM "$rpid"
    wait "$rpid" || true
    rpid=
    grep '"alarm.summary"' "$WORK/recv.out" >"$WORK/summary" || : >"$WORK/summary"
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
throughput() { # MODE: retried (up to 3 times) when a figure is missing
    local out i
    for i in 1 2 3; do
        out=$(throughput_once "$1")
        if [ "$(wc -w <<<"$out")" = 7 ]; then echo "$out"; return; fi
        log "incomplete measurement ($1, attempt $i): '$out'"
    done
    echo "$out"
}
throughput_once() { # MODE -> "received rate sent sender_rate dropped cpu_seconds per_cpu_second"
    run_recv "$1"
    local s t0 t1
    t0=$(cpu_ticks "$rpid")
    s=$(taskset -c 1 "$BLAST" blast "$ADDR" "$PORT" "$BLAST_SECONDS")
    sleep 0.5
    t1=$(cpu_ticks "$rpid")
    local sum
    stop_recv
    sum=$(cat "$WORK/summary")
    log "raw $1: sender '$s' ticks $t0 $t1 summary $sum"
    local received dropped sent srate
    received=$(jq -r .received <<<"$sum")
    dropped=$(jq -r .dropped_kernel <<<"$sum")
    sent=$(sed -E 's/.*sent=([0-9]+).*/\1/' <<<"$s")
    srate=$(sed -E 's/.*rate=([0-9]+).*/\1/' <<<"$s")
    local cpu
    cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" 'BEGIN{printf "%.2f", (b-a)/hz}')
    rm -f "$WORK/recv.out"
    echo "$received $(( received / BLAST_SECONDS )) $sent $srate $dropped $cpu $(awk -v r="$received" -v c="$cpu" 'BEGIN{printf "%.0f", r/c}')"
}
HZ=$(getconf CLK_TCK)

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }

log "throughput: $ROUNDS rounds of ${BLAST_SECONDS}s, receiver on CPU 0, sender on CPU 1"
echo "### Parsed alarms per second vs the bare receive loop (one core)"
echo
echo "Per mode: datagrams received per CPU-second of the receiver (received / (utime+stime)), the"
echo "receiver's CPU seconds during the ${BLAST_SECONDS} s blast, received per wall second, what the"
echo "blaster offered per second, and the kernel's drop count for the receiver's socket (drops > 0:"
echo "the receiver was the bottleneck)."
echo
echo "| round | bare /CPU-s | bare CPU s | bare /s wall | bare offered/s, drops | parsed /CPU-s | parsed CPU s | parsed /s wall | parsed offered/s, drops | parsed/bare (CPU-s) | parsed/bare (wall) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
bares=(); parsed=(); ratios=(); wratios=(); bw=(); pw=()
for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then
        b=$(throughput bare); p=$(throughput parsed)
    else
        p=$(throughput parsed); b=$(throughput bare)
    fi
    read -r _ bwall _ bsrate bdrop bcpu bper <<<"$b"
    read -r _ pwall _ psrate pdrop pcpu pper <<<"$p"
    ratio=$(awk -v a="$pper" -v b="$bper" 'BEGIN{printf "%.0f", 100*a/b}')
    wratio=$(awk -v a="$pwall" -v b="$bwall" 'BEGIN{printf "%.0f", 100*a/b}')
    echo "| $r | $bper | $bcpu | $bwall | $bsrate, $bdrop | $pper | $pcpu | $pwall | $psrate, $pdrop | ${ratio}% | ${wratio}% |"
    log "round $r: bare $bper/CPU-s ($bwall/s) parsed $pper/CPU-s ($pwall/s): ${ratio}% (${wratio}% wall)"
    bares+=("$bper"); parsed+=("$pper"); ratios+=("$ratio"); wratios+=("$wratio"); bw+=("$bwall"); pw+=("$pwall")
done
mb=$(printf '%s\n' "${bares[@]}" | median)
mp=$(printf '%s\n' "${parsed[@]}" | median)
mr=$(printf '%s\n' "${ratios[@]}" | median)
mwr=$(printf '%s\n' "${wratios[@]}" | median)
mbw=$(printf '%s\n' "${bw[@]}" | median)
mpw=$(printf '%s\n' "${pw[@]}" | median)
echo "| **median** | **$mb** | | **$mbw** | | **$mp** | | **$mpw** | | **${mr}%** | **${mwr}%** |"
echo
echo "Diagnostic (same rounds' conditions, run after): parsing with every alarm filtered out"
echo "(\`--device 192.0.2.99\`: parsed, nothing serialized or written):"
echo
echo "| round | filtered /CPU-s | CPU s | /s wall | offered/s, drops |"
echo "|---|---|---|---|---|"
for r in $(seq "$ROUNDS"); do
    f=$(throughput filtered)
    read -r _ fwall _ fsrate fdrop fcpu fper <<<"$f"
    echo "| $r | $fper | $fcpu | $fwall | $fsrate, $fdrop |"
    log "filtered round $r: $fper/CPU-s ($fwall/s)"
done
echo
echo

log "loss: $LOSS_ROUNDS rounds at $PACE_RATE/s for ${PACE_SECONDS}s"
echo "### Loss at a sustained $PACE_RATE alarms/s for $PACE_SECONDS s (parsed, receiver on CPU 0)"
echo
echo "| round | sent | sender rate/s | received | matched | sent - matched | dropped_kernel |"
echo "|---|---|---|---|---|---|---|"
for r in $(seq "$LOSS_ROUNDS"); do
    run_recv parsed
    s=$(taskset -c 1 "$BLAST" pace "$ADDR" "$PORT" "$PACE_SECONDS" "$PACE_RATE")
    stop_recv
    sum=$(cat "$WORK/summary")
    sent=$(sed -E 's/.*sent=([0-9]+).*/\1/' <<<"$s")
    srate=$(sed -E 's/.*rate=([0-9]+).*/\1/' <<<"$s")
    rec=$(jq -r .received <<<"$sum"); mat=$(jq -r .matched <<<"$sum"); dk=$(jq -r .dropped_kernel <<<"$sum")
    echo "| $r | $sent | $srate | $rec | $mat | $((sent - mat)) | $dk |"
    log "loss round $r: sent $sent matched $mat dropped_kernel $dk"
done
