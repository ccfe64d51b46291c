#!/bin/bash
# Counts per replicated write on a fresh tracker pair (docs/BENCHMARKS-profile.md).
#
# usage: scripts/profile-writes.sh <depth> <plain|strace|perf|callgrind> [window-secs] [out-dir]
#
# Runs `bench --profile-load write <depth>` (release build: cargo build --release --bins),
# and over a window in the middle of the run divides by the writes committed in it (the
# leader's `digest` sequence number before and after):
#   plain   voluntary/involuntary context switches and CPU (utime + stime) of each tracker
#   strace  also `strace -c -f` of each tracker (a window of its own: ptrace slows the loop)
#   perf    also `perf record -e cpu-clock -g` of each tracker (perf report -i <out>/perf-L.data)
#   callgrind  both trackers run under valgrind (user-space instructions, exact where hardware
#           counters are missing): counters zeroed and dumped around the window, then
#           `callgrind_annotate --inclusive=yes <out>/cg.<pid>.1`; some 50x slower, so the
#           batching differs from a native run (fewer writes per turn)
# Needs strace / perf / valgrind (apt-get install strace linux-perf valgrind) for those
# modes, and ss (iproute2).
set -u
D=${1:?depth}; MODE=${2:?plain, strace or perf}; WIN=${3:-3}
OUT=${4:-/tmp/profile-writes/d$D-$MODE}
B=$(cd "$(dirname "$0")/.." && pwd)/target/release/bench
rm -rf "$OUT"; mkdir -p "$OUT"
if [ "$MODE" = callgrind ]; then
  # The bench starts the `tracker` beside its own executable: a copy of the bench beside a
  # wrapper that runs the real tracker under callgrind.
  cp "$B" "$OUT/bench"
  printf '#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file=%s/cg.%%p --dump-instr=no %s "$@"\n' \
    "$OUT" "$(dirname "$B")/tracker" > "$OUT/tracker"
  chmod +x "$OUT/tracker"
  B=$OUT/bench
fi
"$B" --profile-load write "$D" $((WIN + 4)) 2> "$OUT/bench.err" &
BP=$!
for _ in $(seq 900); do grep -q "leader pid" "$OUT/bench.err" && break; sleep 0.1; done
L=$(grep -o "leader pid [0-9]*" "$OUT/bench.err" | awk '{print $3}')
F=$(grep -o "follower pid [0-9]*" "$OUT/bench.err" | awk '{print $3}')
if [ -z "$L" ] || [ -z "$F" ]; then
  echo "the pair did not start: see $OUT/bench.err" >&2; kill "$BP" 2>/dev/null; exit 1
fi
LPORT=$(ss -ltnpH | grep "pid=$L," | awk '{print $4}' | sed 's/.*://' | head -1)
sleep 1.5 # past the load generator's warm-up
seq_now() {
  exec 3<>"/dev/tcp/127.0.0.1/$LPORT"; printf '1 digest\n' >&3; read -r line <&3; exec 3<&-
  echo "$line" | awk '{print $4}'
}
snap() {
  for p in $L $F; do
    echo "$(awk '/^voluntary_ctxt/{print $2}' /proc/$p/status)" \
         "$(awk '/^nonvoluntary_ctxt/{print $2}' /proc/$p/status)" \
         "$(awk '{print $14, $15}' /proc/$p/stat)"
  done
}
if [ "$MODE" = callgrind ]; then
  callgrind_control -z "$L" >/dev/null 2>&1; callgrind_control -z "$F" >/dev/null 2>&1
fi
S0=$(seq_now); A0=$(snap)
case $MODE in
  plain) sleep "$WIN" ;;
  callgrind)
    sleep "$WIN"
    callgrind_control -d "$L" >/dev/null 2>&1; callgrind_control -d "$F" >/dev/null 2>&1 ;;
  strace)
    timeout -s INT "$WIN" strace -c -f -p "$L" -o "$OUT/strace-L.txt" 2>/dev/null &
    timeout -s INT "$WIN" strace -c -f -p "$F" -o "$OUT/strace-F.txt" 2>/dev/null
    wait %2 2>/dev/null; sleep 0.2 ;;
  perf)
    perf record -q -e cpu-clock -F 1999 -g -p "$L" -o "$OUT/perf-L.data" -- sleep "$WIN" 2>/dev/null &
    perf record -q -e cpu-clock -F 1999 -g -p "$F" -o "$OUT/perf-F.data" -- sleep "$WIN" 2>/dev/null
    wait %2 2>/dev/null ;;
  *) echo "mode must be plain, strace or perf" >&2; kill "$BP"; exit 1 ;;
esac
S1=$(seq_now); A1=$(snap)
W=$((S1 - S0))
echo "depth $D, $MODE: $W writes committed in the window ($((W / WIN))/s)" | tee "$OUT/summary"
TICK=$(getconf CLK_TCK)
awk -v w="$W" -v t="$TICK" -v a="$(echo $A0)" -v b="$(echo $A1)" 'BEGIN {
  split(a, x, " "); split(b, y, " "); split("leader follower", who, " ");
  for (i = 0; i < 2; i++) {
    o = i * 4; us = 1e6 / t;
    printf "%-9s per write: voluntary cs %.3f, involuntary %.3f, CPU %.1f us (user %.1f, sys %.1f)\n",
      who[i + 1], (y[o+1] - x[o+1]) / w, (y[o+2] - x[o+2]) / w,
      ((y[o+3] - x[o+3]) + (y[o+4] - x[o+4])) * us / w, (y[o+3] - x[o+3]) * us / w, (y[o+4] - x[o+4]) * us / w
  } }' | tee -a "$OUT/summary"
if [ "$MODE" = strace ]; then
  for s in L F; do
    echo "-- $s: syscalls per write"
    # Columns: % time, seconds, usecs/call, calls, [errors], syscall. Per round (per
    # fdatasync) is exact; per write assumes the strace window matches the digest window.
    awk -v w="$W" '$4 ~ /^[0-9]+$/ && $NF ~ /^[a-z_0-9]+$/ { n[$NF] = $4; order[++k] = $NF }
      END { printf "  %-14s %10s %10s\n", "syscall", "per write", "per round";
            for (i = 1; i <= k; i++) printf "  %-14s %10.4f %10.2f\n", order[i], n[order[i]] / w, n[order[i]] / n["fdatasync"] }' \
      "$OUT/strace-$s.txt"
  done | tee -a "$OUT/summary"
fi
if [ "$MODE" = callgrind ]; then
  for p in "leader $L" "follower $F"; do
    set -- $p
    ir=$(awk '/^summary:/ {print $2}' "$OUT/cg.$2.1")
    echo "$1: $((ir / W)) user-space instructions per write ($OUT/cg.$2.1)" | tee -a "$OUT/summary"
  done
fi
wait "$BP"
grep "depth" "$OUT/bench.err" | tail -1 | tee -a "$OUT/summary"
