#!/usr/bin/env bash
# Scenario 1: 64 concurrent writers on one session (default 60 s). Every
# acknowledged turn must be stored once, in one dense order; no errors.
#
#   01_one_session_writers.sh [--duration S] [--broken]
#
# --broken runs the app instances on chatllm-fcgi-broken-lock (appends
# without the row lock) and passes only if chatllm-check catches lost
# acknowledged appends: the proof that the checker can fail.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DURATION=60
BROKEN=0
while (($#)); do
  case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --broken) BROKEN=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

restart_apps() {
  local item
  for item in $CHATLLM_APPS; do stack stop-app "${item%%:*}"; done
  for item in $CHATLLM_APPS; do CHATLLM_FCGI_BIN=$1 stack start-app "${item%%:*}"; done
  wait_ready
}
if ((BROKEN)); then
  SCENARIO+=" (broken lock)"
  say "restarting the app instances on chatllm-fcgi-broken-lock"
  trap 'restart_apps "$CHATLLM_BUILD/chatllm-fcgi" >/dev/null' EXIT
  restart_apps "$CHATLLM_BUILD/tests/chatllm-fcgi-broken-lock" >/dev/null
fi

say "64 writers on one session for ${DURATION} s"
load_start run --clients 64 --sessions 1 --duration "$DURATION" --mix append=9,read=1 --timeout 30
load_wait run

if ((BROKEN)); then
  if "$CHECK" --url "$CHATLLM_URL" --history "$WORK/run.history" --echo --max-print 5 >"$WORK/run.check" 2>&1; then
    cat "$WORK/run.check"
    fail "the checker passed a build without the row lock"
  else
    head -n 8 "$WORK/run.check"
    grep -q "acknowledged" "$WORK/run.check" || fail "expected lost acknowledged appends"
    say "the checker caught the broken build, as it must"
  fi
else
  check run
  [[ $(errors run) == 0 ]] || fail "$(errors run) requests failed ($(error_statuses run)); none may"
fi
finish
