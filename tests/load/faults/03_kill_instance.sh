#!/usr/bin/env bash
# Scenario 3: SIGKILL a whole app instance (master and workers), restart it
# 5 s later. nginx routes around it (connection refused is retried on the
# other instance), then sends it traffic again. Only requests nginx had
# already handed to the killed instance may fail: those being served and
# those waiting in its listen backlog, which the kernel resets. Each failure
# must be matched by such a reset in nginx's error log.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
APP=$(first_app)
APP_PORT=$(app_port "$APP")
NGINX_LOG=$CHATLLM_VAR/nginx/error.log
log_start=$(stat -c %s "$NGINX_LOG")
mark=$(access_log_mark)
say "killing $APP at t=5s, restarting it at t=10s, load for 20 s"
load_start run --clients 16 --sessions 64 --duration 20 --mix "append=8,read=2,$REALISTIC_MIX" "${REALISTIC[@]}"
sleep 5
stack kill-app "$APP"
sleep 5
stack start-app "$APP"
load_wait run
check run
errs=$(errors run)
resets=$(tail -c +"$((log_start + 1))" "$NGINX_LOG" | grep -E "reset by peer|prematurely closed" |
  grep -c "127.0.0.1:$APP_PORT" || true)
say "$errs requests failed ($(error_statuses run)); nginx logged $resets connections reset by the killed $APP"
((errs <= resets)) || fail "$errs failed but only $resets requests were on $APP when it died"
for s in $(error_statuses run); do
  [[ $s == 404 ]] && allowed_404s run "$mark" && continue  # A replayed DELETE (lib.sh).
  [[ $s == 502 || $s == 409 ]] ||
    fail "status $s: a killed instance may only cost its own requests (502, or a keyed retry's key in use)"
done
# nginx uses the instance again.
seen=0
for i in $(seq 1 40); do
  curl -s -D - -o /dev/null "$CHATLLM_URL/healthz" | grep -qi "X-Served-By: $APP" && { seen=1; break; }
  sleep 0.25
done
((seen)) || fail "nginx did not send requests to $APP after its restart"
finish
