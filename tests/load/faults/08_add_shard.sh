#!/usr/bin/env bash
# Scenario 8: add a shard and rebalance under load, then drain it and remove
# it again, with appends at full speed on 200 sessions and 8 writers sharing
# 4 hot sessions, from clients that behave like real ones (lib.sh
# REALISTIC: keyed retries, identical texts, writes sent twice at once, cut
# streams sent again, creates retried with their key across the moves,
# sessions deleted under others' appends). Every acknowledged write is kept
# exactly once in one dense order (the checker), no session is ever active
# on two shards (`shardctl audit`, sampled throughout), `shardctl verify`
# passes, and no request fails.
#
#   08_add_shard.sh [--kills N]
#
# --kills N: first SIGKILL `shardctl rebalance` N times at random points, each
# time running it again, before letting it finish.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
KILLS=0
[[ ${1:-} == --kills ]] && KILLS=$2
spare=($CHATLLM_SPARE_SHARDS)
NEW=${spare[0]%%:*}
NEW_PORT=${spare[0]##*:}
CFG=$(app_config "$(first_app)")
SHARDCTL() { "$CHATLLM_BUILD/shardctl" --config "$CFG" "$@"; }
auditor=""
restore() {
  [[ -z $auditor ]] || kill "$auditor" 2>/dev/null || true
  # Leave the stack on its seed shards whatever happened.
  if SHARDCTL map | grep -q "\"name\":\"$NEW\""; then
    SHARDCTL rebalance >/dev/null 2>&1 || true
    SHARDCTL drain "$NEW" >/dev/null 2>&1 || true
    SHARDCTL remove-shard "$NEW" >/dev/null 2>&1 || true
  fi
  stack stop-db "$NEW" >/dev/null 2>&1 || true
}
stack start-db "$NEW" >/dev/null
restore  # A run interrupted earlier may have left the shard in the map.
trap restore EXIT
stack start-db "$NEW" >/dev/null
say "load on 200 sessions + 8 writers on 4 hot sessions (realistic clients); adding shard $NEW after 5 s"
load_start run --clients 16 --sessions 200 --duration 600 --mix "append=8,read=2,$REALISTIC_MIX" "${REALISTIC[@]}"
load_start hot --clients 8 --sessions 4 --duration 600 --mix append=9,read=1 --retries 5 --keys 0.5 --identical 0.3 --twice 0.05
# At no instant may a session be active on two shards: sampled all along.
(while :; do SHARDCTL audit >>"$WORK/audit.out" 2>&1 || echo "audit failed: $?" >>"$WORK/audit.out"; sleep 0.3; done) &
auditor=$!
sleep 5
t_add=$(now_us)
SHARDCTL add-shard "$NEW" --host 127.0.0.1 --port "$NEW_PORT" >/dev/null || fail "add-shard failed"
killed=0
for attempt in $(seq 1 $((KILLS * 3))); do
  ((killed < KILLS)) || break
  # Slowed down so that the kill lands in the middle of moving sessions:
  # one by one, or in batches of 20 (where it may land inside a batch).
  if ((attempt % 2)); then how=(--rate 10 --move-batch 1); else how=(--rate 100 --move-batch 20); fi
  "$CHATLLM_BUILD/shardctl" --config "$CFG" rebalance "${how[@]}" >/dev/null 2>&1 &
  pid=$!
  sleep "0.$((RANDOM % 9 + 1))"
  if kill -KILL "$pid" 2>/dev/null; then
    killed=$((killed + 1))
  fi
  wait "$pid" 2>/dev/null || true
done
((killed >= KILLS)) || fail "only $killed of $KILLS kills landed while rebalance was running"
((KILLS == 0)) || say "killed shardctl rebalance $killed times at random points"
# Their errors (not the progress bar) are kept for a failure's message.
SHARDCTL rebalance 2>"$WORK/rebalance.err" | tee "$WORK/rebalance.out" ||
  fail "rebalance failed: $(grep -v '^\[' "$WORK/rebalance.err" | tail -3)"
t_added=$(now_us)
sleep 3
t_drain=$(now_us)
SHARDCTL drain "$NEW" 2>"$WORK/drain.err" | tee "$WORK/drain.out" ||
  fail "drain failed: $(grep -v '^\[' "$WORK/drain.err" | tail -3)"
SHARDCTL remove-shard "$NEW" >/dev/null || fail "remove-shard failed"
t_drained=$(now_us)
sleep 2
load_stop run
load_stop hot
t_end=$(now_us)
kill "$auditor" 2>/dev/null || true
wait "$auditor" 2>/dev/null || true

check run,hot
SHARDCTL verify || fail "shardctl verify found problems"
samples=$(grep -c '^audit:' "$WORK/audit.out" || true)
if grep -E '^PROBLEM|audit failed' "$WORK/audit.out" | sort | uniq -c | head -20; then
  fail "shardctl audit saw a session active on two shards (or could not read a shard)"
else
  say "shardctl audit: $samples samples during the run, no session active on two shards"
fi
errs=$(( $(errors run) + $(errors hot) ))
((errs == 0)) || fail "$errs requests failed ($(error_statuses run) $(error_statuses hot)); none may"
say "5xx or no answer during add-shard + rebalance: run $(phase_failures run "$t_add" "$t_added"), hot $(phase_failures hot "$t_add" "$t_added")"
say "5xx or no answer during drain + remove-shard: run $(phase_failures run "$t_drain" "$t_drained"), hot $(phase_failures hot "$t_drain" "$t_drained")"
read -r n0 p50_0 p99_0 <<<"$(phase_latency run "$(python3 -c "import json;print(json.load(open('$WORK/run.json'))['start_unix_us'])")" "$t_add")"
read -r n1 p50_1 p99_1 <<<"$(phase_latency run "$t_add" "$t_added")"
read -r n2 p50_2 p99_2 <<<"$(phase_latency run "$t_drain" "$t_drained")"
say "appends before the move: $n0, p50 ${p50_0} ms, p99 ${p99_0} ms"
say "appends during add-shard + rebalance: $n1, p50 ${p50_1} ms, p99 ${p99_1} ms"
say "appends during drain: $n2, p50 ${p50_2} ms, p99 ${p99_2} ms"
say "$(grep -h '^moved' "$WORK/rebalance.out" "$WORK/drain.out" | tr '\n' ';')"
finish
