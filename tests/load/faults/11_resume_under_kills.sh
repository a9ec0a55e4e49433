#!/usr/bin/env bash
# Scenario 11 (issue 16): durable turns under worker kills. Two in five
# appends are streamed and cut by their client after a few events; every cut
# stream is then read again from the last event the client saw (the turn's
# events URL, through nginx: any instance), and a keyed one is sent again.
# Meanwhile a random app worker is killed every second: a producer among
# them leaves its turn to end 'incomplete' once its lease runs out, a reader
# among them is a resume that did not reach its end. The checker proves every
# resumed stream that reached its answer assembled exactly the stored
# answer, and everything else it always proves.
#
#   11_resume_under_kills.sh [--duration S]
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DURATION=30
[[ ${1:-} == --duration ]] && DURATION=$2
[[ -n ${CHATLLM_FAKE_LLM_PORT:-} ]] || { say "needs the fake LLM provider (the test stack)"; finish; }

mark=$(access_log_mark)
say "cutting and resuming streams, killing a worker every second for ${DURATION} s"
load_start run --clients 16 --sessions 64 --duration "$DURATION" --mix "append=8,read=2" \
  "${REALISTIC[@]}" --cut 0.4 --resume 1 --stream-model fake-drip-10-40
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
resumed=$(grep -o '[0-9]* resumed streams checked' "$WORK/run.check" | cut -d' ' -f1)
say "$kills workers killed; ${resumed:-0} resumed streams reached their answer and match it"
((${resumed:-0} > 0)) || fail "no cut stream was resumed to its answer"
errs=$(errors run)
((errs <= kills)) || fail "more failed requests ($errs) than killed workers ($kills)"
for s in $(error_statuses run); do
  [[ $s == 404 ]] && allowed_404s run "$mark" && continue
  [[ $s == 502 || $s == conn || $s == 409 || $s == 599 ]] ||
    fail "status $s: a killed worker may only cost its own request"
done
finish
