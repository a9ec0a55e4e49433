#!/usr/bin/env bash
# Scenario 12: a replica per shard (docs/architecture.md, "Shard high
# availability"), under the realistic mixed load, three times over:
#   1. switchover: shard S's primary hands over to its replica and back, under
#      load. No request fails: writes pause while the primary is read-only and
#      resume on the new one.
#   2. kill -9 of S's primary: the stack's two monitors fail S over. Writes
#      to S resume within BOUND seconds (measured: a probe appends to a
#      session on S every 100 ms), sessions elsewhere see no error, and the
#      old primary, restarted, rejoins as a replica.
#   3. SIGSTOP of S's primary (cut off from the monitors and its replica, as
#      a partition does): failed over; after SIGCONT the old primary
#      acknowledges no write (a write sent to it directly never succeeds);
#      restarted, it rejoins.
# After each: chatllm-check proves every acknowledged write stored once, as
# sent; at the end shardctl verify, and S's first member is its primary again.
#
#   12_failover.sh [--bound S]
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BOUND=15
[[ ${1:-} == --bound ]] && BOUND=$2
[[ ${CHATLLM_REPLICAS:-0} == 1 ]] || { fail "the stack runs no replicas (CHATLLM_REPLICAS=1)"; finish; }
SHARD=$(first_shard)
key_away_from "$SHARD"
SHARDCTL=("$CHATLLM_BUILD/shardctl" --config "$(app_config "$(first_app)")")
KEY=$(<"$CHATLLM_API_KEY_FILE")
api() { curl -sS -o /dev/null -w '%{http_code}' --max-time 3 -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' "$@" 2>/dev/null || true; }

# A session of the load's user on S, for the probe.
PROBE=""
for _ in $(seq 1 40); do
  id=$(curl -fsS -X POST -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' -d '{}' \
    "$CHATLLM_URL/v1/sessions" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  if [[ $("${SHARDCTL[@]}" locate "$id" | head -n 1) == "$SHARD" ]]; then PROBE=$id; break; fi
done
[[ -n $PROBE ]] || { fail "no session landed on $SHARD"; finish; }

# probe_start NAME: appends to the probe session every 100 ms, one line
# "<unix us> <status>" per attempt in $WORK/NAME.probe; probe_stop NAME.
declare -A PROBES
probe_start() {
  (
    n=0
    while :; do
      n=$((n + 1))
      echo "$(now_us) $(api -X POST -d "{\"content\": \"probe $1 $n\"}" "$CHATLLM_URL/v1/sessions/$PROBE/messages")"
      sleep 0.1
    done
  ) >"$WORK/$1.probe" 2>/dev/null &
  PROBES[$1]=$!
}
trap 'for p in "${PROBES[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
probe_stop() { kill "${PROBES[$1]}" 2>/dev/null || true; wait "${PROBES[$1]}" 2>/dev/null || true; }
# resumed_after NAME T_US: seconds from T_US to the first 2xx that follows
# the first failure after it (probes sent just after T_US may still reach
# the old primary before the fault takes hold).
resumed_after() {
  awk -v t="$2" '$1 > t && $2 !~ /^2/ { failed = 1 } failed && $2 ~ /^2/ { printf "%.2f\n", ($1 - t) / 1e6; found = 1; exit }
    END { if (!found) print "never" }' "$WORK/$1.probe"
}
primary_port() { "${SHARDCTL[@]}" map | python3 -c "import json,sys; print(next(s['port'] for s in json.load(sys.stdin)['shards'] if s['name'] == '$SHARD'))"; }
member_at() { # the stack's member of S on PORT
  local item
  for item in "$SHARD:$(port_of_member "$SHARD")" "$SHARD-r:$(port_of_member "$SHARD-r")"; do
    if [[ ${item##*:} == "$1" ]]; then echo "${item%%:*}"; fi
  done
}
port_of_member() { awk '/^port/ { print $3 }' "$CHATLLM_VAR/db/$1/my.cnf"; }
judge() { # judge RUN: only S's sessions may fail, and only as a down shard does
  "${SHARDCTL[@]}" map >"$WORK/map.json"
  check "$1" --map "$WORK/map.json" --only-5xx-on-shard "$SHARD"
  for s in $(error_statuses "$1"); do
    [[ $s == 503 || $s == 409 || $s == 599 ]] || fail "$1: status $s: a shard failing over must give 503 (or end a stream with an error event)"
  done
}

say "1. switchover of $SHARD to its replica and back under load (20 s)"
load_start switch --clients 16 --sessions 64 --duration 20 --mix "append=8,read=2,$REALISTIC_MIX" "${REALISTIC[@]}"
sleep 5
"${SHARDCTL[@]}" switchover "$SHARD" >"$WORK/switch1.out" 2>&1 || { cat "$WORK/switch1.out"; fail "switchover failed"; }
sleep 6
"${SHARDCTL[@]}" switchover "$SHARD" >"$WORK/switch2.out" 2>&1 || { cat "$WORK/switch2.out"; fail "switchover back failed"; }
load_wait switch
say "$(cat "$WORK/switch1.out") / $(cat "$WORK/switch2.out")"
check switch
(($(errors switch) == 0)) || fail "switchover: $(errors switch) requests failed ($(error_statuses switch)); a switchover must fail none"

say "2. kill -9 of $SHARD's primary under load (25 s)"
sleep 5 # [ha] min_failover_interval_s of the test stack, from the switchover.
load_start kill --clients 16 --sessions 64 --duration 25 --mix "append=8,read=2,$REALISTIC_MIX" "${REALISTIC[@]}"
probe_start kill
sleep 5
old=$(member_at "$(primary_port)")
t_kill=$(now_us)
stack kill-member "$old"
sleep 10
stack start-db "$SHARD" >"$WORK/start-kill.out" 2>&1 || { cat "$WORK/start-kill.out"; fail "start-db failed"; }
load_wait kill
probe_stop kill
resumed=$(resumed_after kill "$t_kill")
say "killed $old; writes to $SHARD resumed after ${resumed} s; now primary: $(member_at "$(primary_port)")"
[[ $resumed != never ]] && python3 -c "import sys; sys.exit(0 if $resumed <= $BOUND else 1)" ||
  fail "writes to $SHARD did not resume within $BOUND s (${resumed})"
judge kill

say "3. SIGSTOP of $SHARD's primary (a partition) under load (30 s)"
sleep 5
load_start pause --clients 16 --sessions 64 --duration 30 --mix "append=8,read=2,$REALISTIC_MIX" "${REALISTIC[@]}"
probe_start pause
sleep 5
old=$(member_at "$(primary_port)")
old_port=$(port_of_member "$old")
t_stop=$(now_us)
stack pause-member "$old"
for _ in $(seq 1 200); do
  [[ $(primary_port) != "$old_port" ]] && break
  sleep 0.1
done
stack resume-member "$old"
[[ $(primary_port) != "$old_port" ]] || fail "no failover within 20 s of cutting $old off"
# The old primary must not acknowledge a write now: its commits wait for a
# replica it no longer has. (Sent as the app would, to the app's account.)
if timeout 5 mariadb --no-defaults -h 127.0.0.1 -P "$old_port" -u chatllm_app \
  -p"$(<"$CHATLLM_VAR/secrets/app_password")" chatllm -e "UPDATE shard_fence SET epoch = epoch + 1 WHERE id = 1" \
  >"$WORK/old-write.out" 2>&1; then
  fail "the old primary $old acknowledged a write after the failover (two primaries)"
else
  say "a write sent to the old primary $old after SIGCONT was not acknowledged: $(head -c 120 "$WORK/old-write.out" | tr '\n' ' ')"
fi
# (The monitors also ask it to turn read-only; that waits behind its hung
# commits, and blocks new ones meanwhile.) Its unacknowledged tail goes
# with a restart (crash recovery of a semi-sync replica); then it rejoins.
stack kill-member "$old"
stack start-db "$SHARD" >"$WORK/start-pause.out" 2>&1 || { cat "$WORK/start-pause.out"; fail "start-db failed"; }
load_wait pause
probe_stop pause
say "cut off $old; writes to $SHARD resumed after $(resumed_after pause "$t_stop") s"
judge pause

# As it was: S's first member the primary, every member replicating.
if [[ $(member_at "$(primary_port)") != "$SHARD" ]]; then
  sleep 5
  "${SHARDCTL[@]}" switchover "$SHARD" --to "127.0.0.1:$(port_of_member "$SHARD")" >/dev/null || fail "could not switch back"
fi
"${SHARDCTL[@]}" members >"$WORK/members.out" || { cat "$WORK/members.out"; fail "a member is unreachable or not replicating"; }
"${SHARDCTL[@]}" verify >"$WORK/verify.out" 2>&1 || { cat "$WORK/verify.out"; fail "shardctl verify found problems"; }
finish
