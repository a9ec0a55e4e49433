#!/usr/bin/env bash
# Scenario 9: soak at 70 % of measured capacity (default 30 minutes; CI runs
# --minutes 2). Every 10 s it samples the RSS of every process of the stack,
# the established TCP connections and the interval's p99; it fails if the app
# processes' memory or the connection count grows, if latency drifts upward,
# on any failed request or on any checker violation.
#
#   09_soak.sh [--minutes M] [--fraction F]
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
MINUTES=30
FRACTION=0.7
while (($#)); do
  case $1 in
    --minutes) MINUTES=$2; shift 2 ;;
    --fraction) FRACTION=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
MIX="append=8,read=2"

say "measuring capacity (closed loop, 16 clients, 10 s)"
"$LOAD" --url "$CHATLLM_URL" --clients 16 --sessions 64 --duration 10 --warmup 2 --mix "$MIX" \
  --json "$WORK/capacity.json" --quiet >/dev/null
capacity=$(python3 -c "import json;print(int([o for o in json.load(open('$WORK/capacity.json'))['ops'] if o['op']=='total'][0]['ok_per_s']))")
rate=$(python3 -c "print(int($capacity * $FRACTION))")
say "capacity $capacity req/s; soaking at $rate req/s for $MINUTES min"

load_start run --clients 128 --sessions 256 --rate "$rate" --duration $((MINUTES * 60)) --mix "$MIX" --report-every 10

# role -> pids, re-read every sample (a respawned worker is still a worker).
sample() {
  local t=$1 item name pid rss conns
  {
    printf 't=%s' "$t"
    for item in $CHATLLM_APPS; do
      name=${item%%:*}
      pid=$(master_pid "$name")
      rss=0
      for p in $(workers_of "$name"); do rss=$((rss + $(awk '/VmRSS/{print $2}' "/proc/$p/status" 2>/dev/null || echo 0))); done
      printf ' %s_master=%s %s_workers=%s' "$name" "$(awk '/VmRSS/{print $2}' "/proc/$pid/status")" "$name" "$rss"
    done
    rss=0
    for p in $(pgrep -f "nginx: worker process" || true); do rss=$((rss + $(awk '/VmRSS/{print $2}' "/proc/$p/status" 2>/dev/null || echo 0))); done
    printf ' nginx_workers=%s' "$rss"
    for item in $CHATLLM_SHARDS; do
      printf ' mariadb_%s=%s' "${item%%:*}" "$(awk '/VmRSS/{print $2}' "/proc/$(shard_pid "${item%%:*}")/status")"
    done
    conns=$(ss -Htan state established 2>/dev/null | wc -l)
    printf ' tcp_established=%s\n' "$conns"
  } >>"$WORK/samples.txt"
}
start=$SECONDS
while kill -0 "${LOAD_PIDS[run]}" 2>/dev/null; do
  sleep 10
  kill -0 "${LOAD_PIDS[run]}" 2>/dev/null && sample $((SECONDS - start))
done
load_wait run
check run

python3 - "$WORK/samples.txt" "$WORK/run.out" "$(errors run)" "$((MINUTES * 60))" <<'PY' || FAILED=1
import re, statistics, sys
samples = [dict(kv.split("=") for kv in line.split()) for line in open(sys.argv[1]) if line.strip()]
# Interval reports after the scheduled end are the run draining: not judged.
p99 = [float(m.group(2)) for m in re.finditer(r"t=\s*(\d+)s.*?p99\s+([\d.]+) ms", open(sys.argv[2]).read())
       if int(m.group(1)) <= int(sys.argv[4])]
errors = int(sys.argv[3])
keys = [k for k in samples[0] if k != "t"]
print("\n%-8s" % "t(s)" + "".join("%16s" % k for k in keys))
for s in samples:
    print("%-8s" % s["t"] + "".join("%16s" % (s[k] if k == "tcp_established" else "%.1f MB" % (int(s[k]) / 1024)) for k in keys))
print("interval p99 (ms):", " ".join("%.0f" % x for x in p99))
bad = []
n = len(samples)
if n < 3:
    bad.append("too few samples (%d)" % n)
else:
    first, last = samples[n // 5], samples[-1]  # Skip the first fifth: warm-up.
    for k in keys:
        a, b = int(first[k]), int(last[k])
        if k == "tcp_established":
            if b > a * 1.5 + 20:
                bad.append("%s grew from %d to %d" % (k, a, b))
        elif not k.startswith("mariadb"):  # InnoDB's buffer pool fills by design; reported, not judged.
            if b > a * 1.10 + 4096:
                bad.append("%s grew from %.1f MB to %.1f MB" % (k, a / 1024, b / 1024))
if len(p99) >= 6:
    third = len(p99) // 3
    early, late = statistics.median(p99[1:third + 1]), statistics.median(p99[-third:])
    print("median interval p99: first third %.1f ms, last third %.1f ms" % (early, late))
    if late > 2 * early + 20:
        bad.append("p99 drifted from %.1f ms to %.1f ms" % (early, late))
if errors:
    bad.append("%d requests failed" % errors)
for b in bad:
    print("FLATNESS:", b)
sys.exit(1 if bad else 0)
PY
finish
