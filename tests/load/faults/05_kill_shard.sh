#!/usr/bin/env bash
# Scenario 5: SIGKILL a MariaDB shard mid-load, restart it 5 s later.
# Acknowledged appends survive the crash (durable commits); sessions on the
# other shard see no error (the load's user has its home and key
# elsewhere: key_away_from); the app recovers without a restart.
# Clients behave like real ones (lib.sh REALISTIC).
#
#   05_kill_shard.sh [--down S]
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DOWN=5
[[ ${1:-} == --down ]] && DOWN=$2
SHARD=$(first_shard)
key_away_from "$SHARD"
masters_before=$(for item in $CHATLLM_APPS; do master_pid "${item%%:*}"; done)
say "SIGKILL shard $SHARD at t=5s, restart after ${DOWN} s, load for $((DOWN + 15)) s"
load_start run --clients 16 --sessions 64 --duration $((DOWN + 15)) --mix "append=8,read=2,$REALISTIC_MIX" "${REALISTIC[@]}"
sleep 5
stack kill-db "$SHARD"
sleep "$DOWN"
stack start-db "$SHARD"
load_wait run
wait_ready
"$CHATLLM_BUILD/shardctl" --config "$(app_config "$(first_app)")" map >"$WORK/map.json"
check run --map "$WORK/map.json" --only-5xx-on-shard "$SHARD"
say "$(errors run) requests failed while $SHARD was down ($(error_statuses run))"
# 409 idempotency_key_in_use: a keyed turn cut by the shard's death keeps
# its key until idempotency_lease_s; its retries are told to come back.
# 599: a streamed turn whose shard went down after its 200 and user
# message: it ends with an `error` event (its outcome unknown to the client,
# like a 5xx; the checker proves nothing acknowledged was lost).
for s in $(error_statuses run); do
  [[ $s == 503 || $s == 409 || $s == 599 ]] || fail "status $s: a down shard must give 503 shard_unavailable (or end a stream with an error event)"
done
masters_after=$(for item in $CHATLLM_APPS; do master_pid "${item%%:*}"; done)
[[ $masters_before == "$masters_after" ]] || fail "an app instance restarted"
finish
