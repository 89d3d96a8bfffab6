#!/usr/bin/env bash
# Benchmark (issue 3): how many concurrent captures one `tc ovoc serve` sustains, with memory and
# CPU per capture.
#
# Starts `tc lab up --no-sftp` with N devices (the emulated OVOC REST API answers REGISTER's
# forwarding-rule calls) and one agent on the lab's agent address (interface lo, real tcpdump,
# default ring 3 x 10 MB). benches/agent-ramp.py then REGISTERs and CAPTUREs the devices one after
# the other (every one must answer 200 OK), and the script measures:
#   - memory: the agent's VmRSS, and the sum of VmRSS of its tcpdump children / their count;
#   - CPU: utime+stime of all tcpdumps and of the agent over IDLE_SECONDS with no traffic, then
#     over TRAFFIC_SECONDS while agent-ramp.py sends TRAFFIC_RATE UDP datagrams/s (200 bytes) to
#     the N device addresses round-robin (every packet on lo is seen by every tcpdump's filter);
#   - then STOPs every capture (each must answer 200 OK) and checks no tcpdump child is left.
# Prints a Markdown report on stdout (progress on stderr).
# Usage: sudo benches/agent-captures.sh     (from the repository root; root: tcpdump)
# LAB=1: REGISTER through `tc lab up`'s emulated OVOC (default 0: --no-ovoc-rules, no lab).
# Environment: TC=PATH (default: the static musl release build, see benches/tc-bin.sh), DEVICES=500, SUBNET=170,
#   IDLE_SECONDS=10, TRAFFIC_SECONDS=10, TRAFFIC_RATE=10000, LAB_USER=tcbench2c
set -euo pipefail
. "$(dirname "$0")/tc-bin.sh"
TC=$(tc_bin)
DEVICES=${DEVICES:-500}
SUBNET=${SUBNET:-170}
IDLE_SECONDS=${IDLE_SECONDS:-10}
TRAFFIC_SECONDS=${TRAFFIC_SECONDS:-10}
TRAFFIC_RATE=${TRAFFIC_RATE:-10000}
LAB_USER=${LAB_USER:-tcbench2c}
log() { echo "agent-captures.sh: $*" >&2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
RAMP=$repo/benches/agent-ramp.py
WORK=$(mktemp -d /tmp/tc-agent-captures.XXXXXX)
chmod 755 "$WORK"  # tcpdump runs as user tcpdump (-Z) and must reach the agent dir
lab_pid= agent_pid=
cleanup() {
    [ -n "$agent_pid" ] && kill -TERM "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
    [ -n "$lab_pid" ] && kill -TERM "$lab_pid" 2>/dev/null && wait "$lab_pid" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
HZ=$(getconf CLK_TCK)

agent_addr=127.0.$SUBNET.253
rules=(--no-ovoc-rules)
if [ "${LAB:-0}" = 1 ]; then
    # REGISTER through the emulated OVOC. Note: as root `tc lab up` starts snmpd on every device
    # address and gives it 10 s; on the 2-core test machine snmpd had bound only 121 of 500
    # addresses after 60 s, so the lab could not start 500 devices there.
    "$TC" lab up --dir "$WORK/lab" --devices "$DEVICES" --subnet "$SUBNET" --no-sftp \
        --user "$LAB_USER" -q >"$WORK/lab.out" 2>"$WORK/lab.err" &
    lab_pid=$!
    for _ in $(seq 600); do grep -q lab.ready "$WORK/lab.out" 2>/dev/null && break; sleep 0.1; done
    grep -q lab.ready "$WORK/lab.out" || { cat "$WORK/lab.err" >&2; exit 1; }
    set -a; . "$WORK/lab/env"; set +a
    rules=()
else
    # No lab: the devices are just addresses (tcpdump filters on them; nothing needs to answer).
    mkdir -p "$WORK/lab"
    { echo "device,type,interfaces,username,ovoc"
      for i in $(seq 0 $((DEVICES - 1))); do
          echo "127.0.$((SUBNET + i / 250)).$((1 + i % 250)),msbr,eth-wan,x,$agent_addr"
      done; } >"$WORK/lab/devices.csv"
fi
"$TC" ovoc serve --interface lo --listen "$agent_addr:20001" --dir "$WORK/agent" \
    --allow 127.0.0.0/8 "${rules[@]}" -q >"$WORK/agent.out" 2>"$WORK/agent.err" &
agent_pid=$!
sleep 1
kill -0 "$agent_pid" || { cat "$WORK/agent.err" >&2; exit 1; }

tcpdumps() { # PIDs of the agent's tcpdump children
    local p
    for p in $(cat /proc/"$agent_pid"/task/*/children 2>/dev/null); do
        [ "$(cat /proc/$p/comm 2>/dev/null)" = tcpdump ] && echo "$p"
    done
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
ticks() { local s=0 p t; for p in "$@"; do t=$(awk '{print $14 + $15}' /proc/$p/stat 2>/dev/null || echo 0); s=$((s + t)); done; echo $s; }

log "ramping $DEVICES devices: REGISTER then CAPTURE, one by one"
ramp=$(python3 "$RAMP" ramp "$agent_addr" 20001 "$WORK/lab/devices.csv" "$DEVICES") || true
log "ramp: $ramp"
sleep 2
mapfile -t pids < <(tcpdumps)
n=${#pids[@]}
sum=0; for p in "${pids[@]}"; do sum=$((sum + $(rss_kb "$p"))); done
agent_rss=$(rss_kb "$agent_pid")
free_before=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
log "$n tcpdumps, sum RSS ${sum} kB, agent RSS ${agent_rss} kB"

log "idle CPU over ${IDLE_SECONDS}s"
t0=$(ticks "${pids[@]}"); a0=$(ticks "$agent_pid")
sleep "$IDLE_SECONDS"
t1=$(ticks "${pids[@]}"); a1=$(ticks "$agent_pid")
log "traffic CPU over ${TRAFFIC_SECONDS}s at ${TRAFFIC_RATE}/s"
python3 "$RAMP" traffic "$WORK/lab/devices.csv" "$DEVICES" "$TRAFFIC_RATE" "$TRAFFIC_SECONDS" >"$WORK/traffic.out" &
tp=$!
t2=$(ticks "${pids[@]}"); a2=$(ticks "$agent_pid"); s2=$(date +%s.%N)
wait "$tp"
t3=$(ticks "${pids[@]}"); a3=$(ticks "$agent_pid"); s3=$(date +%s.%N)
traffic=$(cat "$WORK/traffic.out")
n_after=$(tcpdumps | wc -l)

log "stopping all"
stop=$(python3 "$RAMP" stop "$agent_addr" 20001 "$WORK/lab/devices.csv" "$DEVICES") || true
log "stop: $stop"
sleep 2
left=$(tcpdumps | wc -l)
files=$(find "$WORK/agent" -maxdepth 1 -name 'OVOC_*' | wc -l)
fbytes=$(find "$WORK/agent" -maxdepth 1 -name 'OVOC_*' -printf '%s\n' | awk '{s+=$1} END {print s+0}')

pc() { awk -v d="$1" -v hz="$HZ" -v s="$2" -v n="${3:-1}" 'BEGIN{printf "%.3f", 100*d/hz/s/n}'; }
tsec=$(awk -v a="$s2" -v b="$s3" 'BEGIN{print b-a}')
cat <<EOF
### Concurrent captures of one agent ($DEVICES devices)

- agent: \`tc ovoc serve --interface lo --listen $agent_addr:20001 --dir DIR --allow 127.0.0.0/8 ${rules[*]}\`
- ramp (REGISTER$([ ${#rules[@]} = 0 ] && echo " with the rule created through the emulated OVOC" || echo " without REST (--no-ovoc-rules)"), then CAPTURE, device after
  device; times are request to final answer): \`$ramp\`
- tcpdump processes running after the ramp: **$n** (after the traffic phase: $n_after)
- memory: tcpdump VmRSS sum $((sum / 1024)) MiB = **$(awk -v s="$sum" -v n="$n" 'BEGIN{printf "%.2f", s/n/1024}') MiB per capture**; agent VmRSS $(awk -v a="$agent_rss" 'BEGIN{printf "%.1f", a/1024}') MiB
- CPU, idle (${IDLE_SECONDS} s, no traffic to the devices): all tcpdumps together $(pc $((t1 - t0)) "$IDLE_SECONDS")% of one core = $(pc $((t1 - t0)) "$IDLE_SECONDS" "$n")% per capture; agent $(pc $((a1 - a0)) "$IDLE_SECONDS")%
- CPU with traffic (\`$traffic\`, ${TRAFFIC_RATE}/s to the $DEVICES addresses, i.e. $((TRAFFIC_RATE / DEVICES)) datagrams/s per device plus the ICMP port-unreachable answers): all tcpdumps $(pc $((t3 - t2)) "$tsec")% of one core = $(pc $((t3 - t2)) "$tsec" "$n")% per capture; agent $(pc $((a3 - a2)) "$tsec")%
- STOP of every capture: \`$stop\`; tcpdump processes left: **$left**; OVOC_ files: $files, $fbytes bytes in all
EOF
