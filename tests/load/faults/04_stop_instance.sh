#!/usr/bin/env bash
# Scenario 4: SIGSTOP a whole app instance for 10 s, then SIGCONT. Its
# connections hang rather than fail; nginx's least_conn balancing moves new
# requests to the other instance as the stopped one's connections pile up.
# No request may fail; the stalled ones finish after SIGCONT.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
APP=$(first_app)
say "SIGSTOP $APP for 10 s under load (25 s)"
load_start run --clients 16 --sessions 64 --duration 25 --mix append=8,read=2 --timeout 30
sleep 5
pids="$(master_pid "$APP") $(workers_of "$APP")"
kill -STOP $pids
sleep 10
kill -CONT $pids
load_wait run
check run
[[ $(errors run) == 0 ]] || fail "$(errors run) requests failed ($(error_statuses run)); none may"
finish
