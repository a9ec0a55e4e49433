# Helpers of the benchmark scripts (tests/load/bench, tests/load/pool_bench):
# the throwaway "bench" stack (scripts/stack --stack bench: nginx 28080, apps
# 29001-29002, shards 23307-23309), one chatllm-load run per table row, and
# the table. Sourced, not executed.
. "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/common.sh"

LOAD=$CHATLLM_BUILD/tests/chatllm-load
CHECK=$CHATLLM_BUILD/tests/chatllm-check
VAR=$CHATLLM_ROOT/var/bench
URL=http://127.0.0.1:28080
# The bench stack's API key (made at its first start): chatllm-load and
# chatllm-check read it from here; curl sends "Authorization: Bearer $(api_key)".
export CHATLLM_API_KEY_FILE=$VAR/secrets/api_key
api_key() { cat "$CHATLLM_API_KEY_FILE"; }
stack() { "$CHATLLM_ROOT/scripts/stack" --stack bench "$@"; }

ROWS=()   # "label|ops/s|p50|p99|note"
WARMUP=${WARMUP:-2}
# measure LABEL NOTE chatllm-load-args...: one run of $CLIENTS clients for
# $DURATION s (after $WARMUP s) against $URL, one table row; later
# arguments override.
measure() {
  local label=$1 note=$2
  shift 2
  "$LOAD" --url "$URL" --clients "$CLIENTS" --duration "$DURATION" --warmup "$WARMUP" --quiet --json "$VAR/last.json" "$@" >/dev/null
  local row
  row=$(python3 -c "
import json
d=json.load(open('$VAR/last.json'))
o=[x for x in d['ops'] if x['op']=='total'] or d['ops']
o=o[0]
print('%.0f|%.2f|%.2f|%d' % (o['ok_per_s'], o['p50_ms'], o['p99_ms'], o['errors']))")
  IFS='|' read -r ops p50 p99 errs <<<"$row"
  [[ $errs == 0 ]] || note="$note; $errs errors"
  ROWS+=("$label|$ops|$p50|$p99|$note")
  printf '  %-48s %9s ops/s  p50 %7s ms  p99 %7s ms  %s\n' "$label" "$ops" "$p50" "$p99" "$note"
}
value_of() { local r; for r in "${ROWS[@]}"; do [[ ${r%%|*} == "$1" ]] && { cut -d'|' -f2 <<<"$r"; return; }; done; echo 0; }
print_rows() {
  local r label ops p50 p99 note
  printf '%-52s %10s %9s %9s  %s\n' "measurement" "ops/s" "p50 ms" "p99 ms" "note"
  for r in "${ROWS[@]}"; do
    IFS='|' read -r label ops p50 p99 note <<<"$r"
    printf '%-52s %10s %9s %9s  %s\n' "$label" "$ops" "$p50" "$p99" "$note"
  done
}

# topology "app1:29001 [app2:29002]" "a:23307 [b:23308 ...]": restart the
# apps on those shards (CHATLLM_APP_SET applies), nginx in front of them.
topology() {
  local item
  for item in app1:29001 app2:29002; do stack stop-app "${item%%:*}"; done
  for item in $1; do CHATLLM_SHARDS=$2 stack start-app "${item%%:*}" >/dev/null; done
  CHATLLM_APPS=$1 stack reload-nginx
  # Let the old nginx workers finish and exit before measuring.
  for _ in $(seq 1 50); do pgrep -f "nginx: worker process is shutting down" >/dev/null || break; sleep 0.2; done
  for _ in $(seq 1 100); do curl -fsS -o /dev/null "$URL/readyz" && return 0; sleep 0.2; done
  die "bench stack not ready with apps '$1' shards '$2'"
}
