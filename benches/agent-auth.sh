#!/usr/bin/env bash
# Benchmark (issue 16): request round trip of `tc ovoc serve` with --key-file against without.
#
# The same agent twice (`--no-ovoc-rules --probes none`, interface lo, pinned to CPU 0): once
# plain, once with --key-file. benches/agent-rtt.c (pinned to CPU 1) sends COUNT requests one
# after the other; with the key it signs each (HMAC-SHA256, fresh time and nonce) and checks the
# MAC of each answer before it counts, so both sides' cost is in the figure. The device is
# captured first (VERIFY is for a device being captured); the per-source and VERIFY rate limits
# are lifted (this measures latency, not limits). ROUNDS rounds per mode, alternating.
# Usage: sudo benches/agent-auth.sh     (from the repository root)
# Environment: TC=PATH (default: the static musl release build, see benches/tc-bin.sh), ROUNDS=3,
#   COUNT=5000, ADDR=127.0.172.253 (agent address), DEVICE=127.0.172.1
set -euo pipefail
. "$(dirname "$0")/tc-bin.sh"
TC=$(tc_bin)
ROUNDS=${ROUNDS:-3}
COUNT=${COUNT:-5000}
ADDR=${ADDR:-127.0.172.253}
DEVICE=${DEVICE:-127.0.172.1}
repo=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/tc-agent-auth.XXXXXX)
chmod 755 "$WORK"
cc -O2 -o "$WORK/agent-rtt" "$repo/benches/agent-rtt.c" -lcrypto
head -c 32 /dev/urandom | base64 >"$WORK/key"
chmod 600 "$WORK/key"
agent_pid=
stop_agent() { [ -n "$agent_pid" ] && kill -TERM "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null; agent_pid=; }
trap 'stop_agent; rm -rf "$WORK"' EXIT
# start_agent MODE: plain | key
start_agent() {
    local extra=()
    [ "$1" = key ] && extra=(--key-file "$WORK/key")
    rm -rf "$WORK/agent"
    taskset -c 0 "$TC" ovoc serve --interface lo --listen "$ADDR:20001" --dir "$WORK/agent" \
        --allow 127.0.0.0/8 --no-ovoc-rules --probes none --rate-limit 1000000 \
        --verify-rate 10000 --max-verifies 1000 "${extra[@]}" -q >/dev/null 2>"$WORK/agent.err" &
    agent_pid=$!
    sleep 1
    kill -0 "$agent_pid" || { cat "$WORK/agent.err" >&2; exit 1; }
    rtt REGISTER 1 0 >/dev/null
    rtt CAPTURE 1 0 >/dev/null
}
rtt() { env ${RTT_KEY:+RTT_KEY="$RTT_KEY"} taskset -c 1 "$WORK/agent-rtt" "$ADDR" 20001 "$1" "$DEVICE" "$2" "$3"; }
f() { sed -E "s/.* $1=([^ ]+).*/\1/" <<<"$2"; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'; }
declare -A col
echo "### Request round trip with and without --key-file (µs; $COUNT sequential requests per verb and round)"
echo
echo "| mode | round | REGISTER final p50 | p99 | VERIFY 100 Trying p50 | p99 | VERIFY final p50 | p99 | lost |"
echo "|---|---|---|---|---|---|---|---|---|"
for r in $(seq "$ROUNDS"); do
    for mode in plain key; do
        RTT_KEY=; [ "$mode" = key ] && RTT_KEY="$WORK/key"
        start_agent "$mode"
        a=$(rtt REGISTER "$COUNT" 200)
        b=$(rtt VERIFY "$COUNT" 200)
        stop_agent
        echo "agent-auth.sh: $mode $a" >&2; echo "agent-auth.sh: $mode $b" >&2
        row="$(f final_p50_us "$a") $(f final_p99_us "$a") $(f first_p50_us "$b") $(f first_p99_us "$b") $(f final_p50_us "$b") $(f final_p99_us "$b")"
        col[$mode]+="$row;"
        # shellcheck disable=SC2086
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$mode" "$r" $row "$(( $(f lost "$a") + $(f lost "$b") ))"
    done
done
for mode in plain key; do
    meds=()
    for i in 1 2 3 4 5 6; do
        meds+=("$(tr ';' '\n' <<<"${col[$mode]}" | awk -v i="$i" 'NF {print $i}' | median)")
    done
    echo "| **$mode median** | | **${meds[0]}** | **${meds[1]}** | **${meds[2]}** | **${meds[3]}** | **${meds[4]}** | **${meds[5]}** | |"
done
