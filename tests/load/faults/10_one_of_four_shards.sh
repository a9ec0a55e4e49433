#!/usr/bin/env bash
# Scenario 10 (issue 15): one of four shards killed under mixed load
# (creates, appends, lists, gets, deletes, key lookups: realistic clients).
# The stack's seed shards a and b get two more, c and d (add-shard +
# rebalance each); the shard killed is one that holds neither the load
# user's home (its list and session count) nor its API key. While it is
# down, a request that does not need it must succeed: every list, and
# every request on a session of another shard; one that needs it gets 503
# (a create whose new session lands on it, a turn or read of a session it
# holds). Then it comes back, and the checker proves every acknowledged
# write kept, and that no session of another shard saw a 5xx.
#
#   10_one_of_four_shards.sh [--down S]
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DOWN=6
[[ ${1:-} == --down ]] && DOWN=$2
# The stack runs its spare c; d is one more the stack script can start.
export CHATLLM_SPARE_SHARDS="c:13309 d:13310"
CFG=$(app_config "$(first_app)")
SHARDCTL() { "$CHATLLM_BUILD/shardctl" --config "$CFG" "$@"; }
sql() { mariadb --no-defaults -uroot --socket="$CHATLLM_VAR/db/$1/mariadb.sock" chatllm -N -B -e "$2"; }
restore() {
  # Back to the seed shards whatever happened.
  local s
  for s in d c; do
    if SHARDCTL map | grep -q "\"name\":\"$s\""; then
      stack start-db "$s" >/dev/null 2>&1 || true
      SHARDCTL rebalance >/dev/null 2>&1 || true
      SHARDCTL drain "$s" >/dev/null 2>&1 || true
      SHARDCTL remove-shard "$s" >/dev/null 2>&1 || true
    fi
    stack stop-db "$s" >/dev/null 2>&1 || true
  done
}
stack start-db c >/dev/null
stack start-db d >/dev/null
restore  # A run interrupted earlier may have left c or d in the map.
trap restore EXIT
for s in c d; do
  stack start-db "$s" >/dev/null
  port=$(tr ' ' '\n' <<<"$CHATLLM_SPARE_SHARDS" | grep "^$s:" | cut -d: -f2)
  SHARDCTL add-shard "$s" --host 127.0.0.1 --port "$port" >/dev/null || fail "add-shard $s failed"
  SHARDCTL rebalance >/dev/null || fail "rebalance onto $s failed"
done
SHARDCTL map >"$WORK/map.json"
# The load's user: its key's unit, and (from it) the user's home.
key_id=$(cut -c4-19 "$CHATLLM_API_KEY_FILE")
unit="kind = 'key' AND JSON_VALUE(metadata, '\$.key_id') = LOWER('$key_id')"
user=""
for s in a b c d; do
  [[ -n $user ]] || user=$(sql "$s" "SELECT HEX(user_id) FROM sessions WHERE state = 'active' AND $unit")
done
[[ -n $user ]] || { fail "the load's key has no unit"; finish; }
victim=""
for s in d c b a; do
  held=$(sql "$s" "SELECT COUNT(*) FROM sessions WHERE state = 'active' AND (($unit) OR (kind = 'home' AND user_id = UNHEX('$user')))")
  [[ $held == 0 && -z $victim ]] && victim=$s
done
[[ -n $victim ]] || { fail "every shard holds the load user's home or key"; finish; }
say "4 shards; SIGKILL shard $victim (not the user's home or key) at t=5s, restart after ${DOWN} s"
load_start run --clients 16 --sessions 64 --duration $((DOWN + 15)) --mix "append=6,read=2,create=1,sessions=2,get=1,delete=0.2" "${REALISTIC[@]}"
sleep 5
stack kill-db "$victim"
sleep "$DOWN"
stack start-db "$victim" >/dev/null
load_wait run
wait_ready
check run --map "$WORK/map.json" --only-5xx-on-shard "$victim"
say "$(errors run) requests failed while $victim was down ($(error_statuses run))"
# Every list needs only the user's home: none may fail.
lists_failed=$(python3 -c "
import json
d=json.load(open('$WORK/run.json'))
print(sum(o['errors'] for o in d['ops'] if o['op']=='sessions'))")
[[ $lists_failed == 0 ]] || fail "$lists_failed lists failed: a list needs only the user's home"
# 409 and 599 as in scenario 5 (a keyed turn cut by the shard's death; a
# stream whose shard died after its 200).
for s in $(error_statuses run); do
  [[ $s == 503 || $s == 409 || $s == 599 ]] ||
    fail "status $s: a down shard must give 503 shard_unavailable (or end a stream with an error event)"
done
SHARDCTL verify >"$WORK/verify.out" 2>&1 || { cat "$WORK/verify.out"; fail "shardctl verify found problems"; }
finish
