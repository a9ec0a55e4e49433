#!/usr/bin/env bash
# Scenario 7: reload nginx 10 times under load (one per second). A reload
# hands the listen socket to new workers and lets requests in progress
# finish, so no request may fail with an HTTP error. The old workers do close
# idle keep-alive connections; a client that sends on one at that instant
# sees the connection close without an answer (RFC 9112 9.3.1 leaves the retry
# to the client). Those, and only those, are allowed: at most one per client
# connection per reload, never stored twice (the checker).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
say "10 nginx reloads under load"
load_start run --clients 16 --sessions 64 --duration 14 --mix append=8,read=2
sleep 2
for i in $(seq 1 10); do
  stack reload-nginx
  sleep 1
done
load_wait run
check run
errs=$(errors run)
say "$errs requests lost their keep-alive connection to a reload ($(error_statuses run))"
for s in $(error_statuses run); do
  [[ $s == conn ]] || fail "status $s: a reload must not produce HTTP errors"
done
((errs <= 16 * 10)) || fail "$errs connection errors for 16 connections and 10 reloads"
finish
