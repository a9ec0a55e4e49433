#!/usr/bin/env bash
# Reloads under load and the metrics, end to end through nginx:
#   - SIGHUP to both app masters three times while chatllm-load runs: no
#     request fails (the load program counts), workers are replaced;
#   - every instance's /metrics passes `promtool check metrics`;
#   - a real Prometheus scrapes both instances through nginx
#     (/_instances/NAME/metrics), and its request counters move by exactly
#     what the load program sent.
. "$(dirname "${BASH_SOURCE[0]}")/../load/faults/lib.sh"
SCENARIO=observability
PROM_PORT=$((CHATLLM_NGINX_PORT + 11000))
apps=()
for item in $CHATLLM_APPS; do apps+=("${item%%:*}"); done

# series NAME{LABELS}: the sum over instances of that series (0 when absent).
series() {
  local app
  for app in "${apps[@]}"; do curl -fsS "$CHATLLM_URL/_instances/$app/metrics"; done |
    awk -v want="$1" '$1 == want {sum += $2} END {printf "%.9f\n", sum + 0}'
}

# count METHOD ROUTE STATUS: the sum over instances of chatllm_http_requests_total.
count() {
  local total=0 n app
  for app in "${apps[@]}"; do
    n=$(curl -fsS "$CHATLLM_URL/_instances/$app/metrics" |
      awk -v want="chatllm_http_requests_total{method=\"$1\",route=\"$2\",status=\"$3\"}" '$1 == want {print $2}')
    total=$((total + ${n:-0}))
  done
  echo "$total"
}

for app in "${apps[@]}"; do
  curl -fsS "$CHATLLM_URL/_instances/$app/metrics" | promtool check metrics ||
    fail "promtool rejects $app's /metrics"
  # promtool does not look for a series given twice (same name and labels).
  dup=$(curl -fsS "$CHATLLM_URL/_instances/$app/metrics" | awk '!/^#/ {print $1}' | sort | uniq -d | head -3)
  [[ -z $dup ]] || fail "$app's /metrics repeats series: $dup"
done
# Operators only: not from outside loopback-by-proxy (the location allows 127.0.0.1).
[[ $(curl -s -o /dev/null -w '%{http_code}' "$CHATLLM_URL/metrics") == 200 ]] || fail "/metrics not served to loopback"

mkdir -p "$WORK/prom"
{
  echo "global: {scrape_interval: 1s, evaluation_interval: 1s}"
  echo "scrape_configs:"
  for app in "${apps[@]}"; do
    echo "  - job_name: $app"
    echo "    metrics_path: /_instances/$app/metrics"
    echo "    static_configs: [{targets: ['127.0.0.1:$CHATLLM_NGINX_PORT']}]"
  done
} >"$WORK/prom/prometheus.yml"
promtool check config "$WORK/prom/prometheus.yml" >/dev/null || fail "bad prometheus.yml"
prometheus --config.file="$WORK/prom/prometheus.yml" --storage.tsdb.path="$WORK/prom/data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prom/log" 2>&1 &
prom_pid=$!
trap 'kill $prom_pid 2>/dev/null || true' EXIT

ROUTE='/v1/sessions/{id}/messages'
AUTH="Authorization: Bearer $(<"$CHATLLM_API_KEY_FILE")"
ECHO='provider="echo",model="echo"'
answers_before=$(series "chatllm_answers_total{$ECHO}")
completion_before=$(series "chatllm_tokens_total{$ECHO,kind=\"completion\"}")
cost_before=$(series "chatllm_cost_usd_total{$ECHO}")
appends_before=$(count POST "$ROUTE" 201)
reads_before=$(count GET "$ROUTE" 200)
pids_before=$(for app in "${apps[@]}"; do workers_of "$app"; done | sort)

say "load for 15 s; SIGHUP to the app masters at 3, 6 and 9 s"
load_start run --clients 16 --sessions 64 --duration 15 --mix append=8,read=2
for round in 1 2 3; do
  sleep 3
  for app in "${apps[@]}"; do kill -HUP "$(master_pid "$app")"; done
done
load_wait run
sleep 1.5  # Let the last turns' counters land.

errs=$(errors run)
[[ $errs == 0 ]] || fail "$errs requests failed during reloads ($(error_statuses run))"
for app in "${apps[@]}"; do
  n=$(grep -c "configuration reloaded" "$CHATLLM_VAR/logs/$app.log" || true)
  ((n >= 3)) || fail "$app logged $n reloads, want 3"
done
pids_after=$(for app in "${apps[@]}"; do workers_of "$app"; done | sort)
[[ -z $(comm -12 <(echo "$pids_before") <(echo "$pids_after")) ]] || fail "some workers were not replaced by the reloads"

sent_appends=$(python3 -c "import json;print([o for o in json.load(open('$WORK/run.json'))['ops'] if o['op']=='append'][0]['ok'])")
sent_reads=$(python3 -c "import json;print([o for o in json.load(open('$WORK/run.json'))['ops'] if o['op']=='read'][0]['ok'])")
appends_after=$(count POST "$ROUTE" 201)
reads_after=$(count GET "$ROUTE" 200)
say "load sent $sent_appends appends and $sent_reads reads; /metrics counted $((appends_after - appends_before)) and $((reads_after - reads_before))"
((appends_after - appends_before == sent_appends)) || fail "append counter moved by $((appends_after - appends_before)), load sent $sent_appends"
((reads_after - reads_before == sent_reads)) || fail "read counter moved by $((reads_after - reads_before)), load sent $sent_reads"

# Every answer's tokens and cost (the stack prices echo: conf/chatllm.ini.in).
answers=$(python3 -c "print(round($(series "chatllm_answers_total{$ECHO}") - $answers_before))")
completion=$(python3 -c "print(round($(series "chatllm_tokens_total{$ECHO,kind=\"completion\"}") - $completion_before))")
cost=$(python3 -c "print($(series "chatllm_cost_usd_total{$ECHO}") - $cost_before)")
say "answers counted $answers, completion tokens $completion, cost \$$cost"
((answers >= sent_appends)) || fail "chatllm_answers_total moved by $answers, the load had $sent_appends answers"
((completion >= answers)) || fail "chatllm_tokens_total{kind=completion} moved by $completion for $answers answers"
python3 -c "import sys; sys.exit(0 if $cost > 0 else 1)" || fail "chatllm_cost_usd_total did not move"
# Prometheus has scraped both instances since (1 s interval): same numbers.
query='sum(chatllm_http_requests_total{method="POST",route="/v1/sessions/{id}/messages",status="201"})'
prom=""
for i in $(seq 1 50); do
  prom=$(curl -fsS --get "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode "query=$query" 2>/dev/null |
    python3 -c "import json,sys; r=json.load(sys.stdin)['data']['result']; print(r[0]['value'][1] if r else '')" 2>/dev/null || true)
  [[ $prom == "$appends_after" ]] && break
  sleep 0.2
done
say "Prometheus: $query = ${prom:-nothing}"
[[ $prom == "$appends_after" ]] || fail "Prometheus says ${prom:-nothing}, the instances say $appends_after"
up=$(curl -fsS --get "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode 'query=sum(up)' |
  python3 -c "import json,sys; print(json.load(sys.stdin)['data']['result'][0]['value'][1])")
[[ $up == "${#apps[@]}" ]] || fail "Prometheus sees $up of ${#apps[@]} targets up"
# The answer a client reads carries its usage and its price (after the
# counts above: this append is not the load's).
sid=$(curl -fsS -X POST -H "$AUTH" -H 'Content-Type: application/json' -d '{}' "$CHATLLM_URL/v1/sessions" |
  python3 -c "import json,sys; print(json.load(sys.stdin)['id'])")
curl -fsS -X POST -H "$AUTH" -H 'Content-Type: application/json' -d '{"content":"price me"}' \
  "$CHATLLM_URL/v1/sessions/$sid/messages" >"$WORK/priced.json"
python3 - "$WORK/priced.json" <<'PY' || fail "the answer's usage has no cost_usd: $(cat "$WORK/priced.json")"
import json, sys
a = json.load(open(sys.argv[1]))["assistant"]
u = a["usage"]
# [price.echo]: input 0.15, output 0.60 USD per million tokens, in nano-USD.
want = round(u["prompt_tokens"] * 150 + u["completion_tokens"] * 600)
assert u["cost_usd"] == "%d.%09d" % divmod(want, 10**9), (u, want)
PY

finish
