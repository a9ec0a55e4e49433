#!/usr/bin/env bash
# Scenario 2: SIGKILL a random app worker every second (default 60 s) under
# load. Only the request in hand on a killed worker may fail: a 502 from
# nginx (outcome unknown), a 404 to a DELETE nginx replayed after the
# killed worker had deleted the session, or, when the worker died after its response
# headers had reached nginx, a response cut short ("conn"); everything
# acknowledged is stored once.
# Clients behave like real ones (lib.sh REALISTIC).
#
#   02_kill_workers.sh [--duration S]
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DURATION=60
[[ ${1:-} == --duration ]] && DURATION=$2

mark=$(access_log_mark)
say "killing a worker every second for ${DURATION} s under load"
load_start run --clients 16 --sessions 64 --duration "$DURATION" --mix "append=7,read=2,get=1,$REALISTIC_MIX" "${REALISTIC[@]}"
kills=0
end=$((SECONDS + DURATION - 1))
while ((SECONDS < end)); do
  sleep 1
  apps=($CHATLLM_APPS)
  app=${apps[RANDOM % ${#apps[@]}]%%:*}
  victims=($(workers_of "$app"))
  ((${#victims[@]})) || continue
  kill -KILL "${victims[RANDOM % ${#victims[@]}]}" 2>/dev/null && kills=$((kills + 1))
done
load_wait run
check run

errs=$(errors run)
say "$kills workers killed; $errs requests failed ($(error_statuses run))"
((errs <= kills)) || fail "more failed requests ($errs) than killed workers ($kills)"
# 409 idempotency_key_in_use: a keyed retry of a request whose worker was
# killed, before idempotency_lease_s frees its key (a documented answer to
# retry later; never a second write).
# 404 to a DELETE nginx replayed after the first instance deleted the
# session (lib.sh allowed_404s).
for s in $(error_statuses run); do
  [[ $s == 404 ]] && allowed_404s run "$mark" && continue
  [[ $s == 502 || $s == conn || $s == 409 ]] ||
    fail "status $s: a killed worker may only cost its own request (502, a cut response, or its key in use)"
done
for item in $CHATLLM_APPS; do
  n=$(workers_of "${item%%:*}" | wc -l)
  ((n == CHATLLM_WORKERS)) || fail "${item%%:*} has $n workers, want $CHATLLM_WORKERS"
done
finish
