#!/usr/bin/env bash
# Benchmark: size of the shipped static binary and `tc --version` start-up time, against the
# start-up of the original trafficCapture Python scripts on the same machine.
#
# The original scripts are not available here. Their start-up is stood in for by python3
# importing the standard-library modules such a script imports (socket, subprocess, re, json,
# datetime, os, sys, time, threading, logging), with `python3 -c pass` (the interpreter alone)
# as the floor. Every command runs without a shell (hyperfine -N), WARMUP warm-up runs, then RUNS
# timed runs; the figure compared is the median. Goals (issue 7): binary under 10 MB (12 MB since
# issue 14), start-up under 5 ms. The interpreter is the real one: /usr/bin/python3 (what a
# script on a server runs), else python3's sys.executable; never a wrapper such as a pyenv shim
# (itself a shell script costing more than Python's start-up).
#
# Prints a Markdown report on stdout (progress on stderr); exits 1 if a goal is missed.
# Needs: hyperfine (apt-get install hyperfine), python3.
#
# Usage: benches/startup.sh                   (from the repository root)
# Environment (all optional):
#   TC=PATH       tc binary (default: build the static release with
#                 cargo build --release --target x86_64-unknown-linux-musl, into CARGO_TARGET_DIR
#                 or ./target, and use that)
#   PYTHON=PATH   the Python interpreter (default: see above)
#   RUNS=300  WARMUP=30
set -euo pipefail

RUNS=${RUNS:-300}
WARMUP=${WARMUP:-30}
# 10 MB was issue 7's goal; since tc analyze (issue 14) the gate is 12 MB (.ci/run).
MAX_BYTES=$((12 * 1000 * 1000))
MAX_MS=5
IMPORTS="socket, subprocess, re, json, datetime, os, sys, time, threading, logging"

for t in hyperfine python3; do
  command -v "$t" >/dev/null || { echo "startup.sh: needs $t (apt-get install $t)" >&2; exit 2; }
done
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x /usr/bin/python3 ]]; then PYTHON=/usr/bin/python3; else
    PYTHON=$(python3 -c 'import sys; print(sys.executable)'); fi
fi

if [[ -z "${TC:-}" ]]; then
  musl=x86_64-unknown-linux-musl
  echo "building the static release ($musl) ..." >&2
  # As in .ci/run: the C parts (vendored OpenSSL, libssh2, ring) compiled by Debian's musl-gcc.
  CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --quiet --target "$musl" >&2
  TC="${CARGO_TARGET_DIR:-target}/$musl/release/tc"
fi
[[ -x "$TC" ]] || { echo "startup.sh: $TC is not an executable" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "timing start-up ($WARMUP warm-up + $RUNS runs each) ..." >&2
hyperfine -N --style none --warmup "$WARMUP" --runs "$RUNS" --export-json "$work/h.json" \
  "$TC --version" "$PYTHON -c pass" "$PYTHON -c 'import $IMPORTS'" >&2

bytes=$(stat -c %s "$TC")
linkage=$(file -b "$TC" 2>/dev/null | grep -oE 'static(-pie)? linked|dynamically linked' ||
  echo "unknown")

LOAD="$(cut -d' ' -f1-3 /proc/loadavg)" PYTHON="$PYTHON" TC_PATH="$TC" BYTES="$bytes" \
  LINKAGE="$linkage" MAX_BYTES="$MAX_BYTES" MAX_MS="$MAX_MS" IMPORTS="$IMPORTS" RUNS="$RUNS" \
  WARMUP="$WARMUP" python3 - "$work/h.json" <<'PY'
import json, os, platform, subprocess, sys

# In the order given to hyperfine.
tc, floor, imports = json.load(open(sys.argv[1]))["results"]
ms = lambda s: s * 1000.0
nbytes, max_bytes = int(os.environ["BYTES"]), int(os.environ["MAX_BYTES"])
max_ms = float(os.environ["MAX_MS"])

def cpu():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"

hf = subprocess.run(["hyperfine", "--version"], capture_output=True, text=True).stdout.strip()
py = os.environ["PYTHON"]
pyver = subprocess.run([py, "-c", "import platform; print(platform.python_version())"],
                       capture_output=True, text=True).stdout.strip()
print("## Binary size and start-up\n")
print(f"Machine: {cpu()}, {os.cpu_count()} CPUs, Linux {platform.release()}, load average "
      f"{os.environ['LOAD']} after the runs; `{py}` (Python {pyver}); {hf}.\n")
print(f"Binary `{os.environ['TC_PATH']}`: {nbytes} bytes ({nbytes / 1e6:.2f} MB), "
      f"{os.environ['LINKAGE']}.\n")
print("The original trafficCapture Python scripts are not available here. Their start-up is "
      "stood in for by Python importing the standard-library modules such a script imports "
      f"(`{py} -c 'import {os.environ['IMPORTS']}'`), with `{py} -c pass` (the interpreter "
      "alone) as the floor; the scripts' own code would only add to it.\n")
print(f"`hyperfine -N --warmup {os.environ['WARMUP']} --runs {os.environ['RUNS']}`, times in ms:\n")
print("| command | median | mean ± σ | min | max | median vs `tc --version` |")
print("|---|---|---|---|---|---|")
for r in (tc, floor, imports):
    ratio = "1" if r is tc else f"{r['median'] / tc['median']:.1f}x slower"
    print(f"| `{r['command']}` | {ms(r['median']):.2f} "
          f"| {ms(r['mean']):.2f} ± {ms(r['stddev']):.2f} "
          f"| {ms(r['min']):.2f} | {ms(r['max']):.2f} | {ratio} |")
ok_size, ok_time = nbytes < max_bytes, ms(tc["median"]) < max_ms
print()
print(f"Goals: binary under {max_bytes / 1e6:.0f} MB: {'met' if ok_size else 'MISSED'} "
      f"({nbytes / 1e6:.2f} MB); start-up under {max_ms:g} ms: {'met' if ok_time else 'MISSED'} "
      f"(median {ms(tc['median']):.2f} ms).")
sys.exit(0 if ok_size and ok_time else 1)
PY
