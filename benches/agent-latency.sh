#!/usr/bin/env bash
# Benchmark (issue 3): request round-trip latency of `tc ovoc serve`.
#
# One agent (`--no-ovoc-rules --probes none`, interface lo) pinned to CPU 0; benches/agent-rtt.c
# (pinned to CPU 1) sends COUNT requests strictly one after the other from one UDP socket and
# times each from send() to the response datagram's arrival:
#   - REGISTER <dev> -> its first answer (a provisional one: `101 tc Agent` from tc) and its
#     `200 OK` (no REST call; the agent saves its state before a reply that changes it, which
#     only the first REGISTER does: the same device from the same address again changes nothing);
#   - VERIFY <dev>   -> `100 Trying` (first answer) and the final `200 OK` (no probes enabled;
#     VERIFY is for a device being captured, so the device is captured first).
# The agent's per-source and VERIFY rate limits are lifted: this measures latency, not limits.
# A build older than those limits (it has no flags for them) is run without the flags, so an
# older commit can be timed against a newer one with this same script.
# ROUNDS rounds, each with both verbs; prints a Markdown table (progress on stderr).
# Usage: sudo benches/agent-latency.sh     (from the repository root)
# Environment: TC=PATH (default: the static musl release build, see benches/tc-bin.sh), ROUNDS=5, COUNT=5000,
#   ADDR=127.0.171.253 (agent address), DEVICE=127.0.171.1
set -euo pipefail
. "$(dirname "$0")/tc-bin.sh"
TC=$(tc_bin)
ROUNDS=${ROUNDS:-5}
COUNT=${COUNT:-5000}
ADDR=${ADDR:-127.0.171.253}
DEVICE=${DEVICE:-127.0.171.1}
repo=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/tc-agent-latency.XXXXXX)
chmod 755 "$WORK"
cc -O2 -o "$WORK/agent-rtt" "$repo/benches/agent-rtt.c" -lcrypto
agent_pid=
cleanup() { [ -n "$agent_pid" ] && kill -TERM "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
limits=()
if "$TC" ovoc serve --help | grep -q -- --verify-rate; then
    limits=(--rate-limit 1000000 --verify-rate 10000 --max-verifies 1000)
fi
taskset -c 0 "$TC" ovoc serve --interface lo --listen "$ADDR:20001" --dir "$WORK/agent" \
    --allow 127.0.0.0/8 --no-ovoc-rules --probes none ${limits[@]+"${limits[@]}"} \
    -q >/dev/null 2>"$WORK/agent.err" &
agent_pid=$!
sleep 1
kill -0 "$agent_pid" || { cat "$WORK/agent.err" >&2; exit 1; }
"$WORK/agent-rtt" "$ADDR" 20001 REGISTER "$DEVICE" 1 0 >/dev/null
"$WORK/agent-rtt" "$ADDR" 20001 CAPTURE "$DEVICE" 1 0 >/dev/null
f() { sed -E "s/.* $1=([^ ]+).*/\1/" <<<"$2"; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'; }
echo "### Request round trip of one agent (µs; $COUNT sequential requests per verb and round)"
echo
echo "| round | REGISTER first p50 | REGISTER 200 p50 | p99 | VERIFY 100 Trying p50 | p99 | VERIFY final 200 p50 | p99 | lost |"
echo "|---|---|---|---|---|---|---|---|---|"
rf50=(); r50=(); r99=(); v50=(); v99=(); f50=(); f99=()
for r in $(seq "$ROUNDS"); do
    a=$(taskset -c 1 "$WORK/agent-rtt" "$ADDR" 20001 REGISTER "$DEVICE" "$COUNT" 200)
    b=$(taskset -c 1 "$WORK/agent-rtt" "$ADDR" 20001 VERIFY "$DEVICE" "$COUNT" 200)
    echo "agent-latency.sh: $a" >&2; echo "agent-latency.sh: $b" >&2
    rf50+=("$(f first_p50_us "$a")")
    r50+=("$(f final_p50_us "$a")"); r99+=("$(f final_p99_us "$a")")
    v50+=("$(f first_p50_us "$b")"); v99+=("$(f first_p99_us "$b")")
    f50+=("$(f final_p50_us "$b")"); f99+=("$(f final_p99_us "$b")")
    echo "| $r | ${rf50[-1]} | ${r50[-1]} | ${r99[-1]} | ${v50[-1]} | ${v99[-1]} | ${f50[-1]} | ${f99[-1]} | $(( $(f lost "$a") + $(f lost "$b") )) |"
done
m() { printf '%s\n' "$@" | median; }
echo "| **median** | **$(m "${rf50[@]}")** | **$(m "${r50[@]}")** | **$(m "${r99[@]}")** | **$(m "${v50[@]}")** | **$(m "${v99[@]}")** | **$(m "${f50[@]}")** | **$(m "${f99[@]}")** | |"
