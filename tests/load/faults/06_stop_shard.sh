#!/usr/bin/env bash
# Scenario 6: SIGSTOP a MariaDB shard for 10 s. Its sessions get 503 within
# the read timeout, then fast 503s during the down backoff; writes that were
# in flight have an unknown outcome and may land after SIGCONT (at most
# once). Sessions on other shards see no error (the load's user has its home
# and key elsewhere: key_away_from).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SHARD=$(first_shard)
key_away_from "$SHARD"
say "SIGSTOP shard $SHARD for 10 s under load (25 s)"
load_start run --clients 16 --sessions 64 --duration 25 --mix append=8,read=2 --timeout 30
sleep 5
kill -STOP "$(shard_pid "$SHARD")"
sleep 10
kill -CONT "$(shard_pid "$SHARD")"
load_wait run
wait_ready
"$CHATLLM_BUILD/shardctl" --config "$(app_config "$(first_app)")" map >"$WORK/map.json"
check run --map "$WORK/map.json" --only-5xx-on-shard "$SHARD"
# 599: a streamed turn whose shard went down after its 200 and user
# message: it ends with an `error` event (its outcome unknown to the client,
# like a 5xx; the checker proves nothing acknowledged was lost).
for s in $(error_statuses run); do
  [[ $s == 503 || $s == 599 ]] || fail "status $s: a hung shard must give 503 shard_unavailable (or end a stream with an error event)"
done
finish
