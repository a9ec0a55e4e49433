# Shared by the fault scenarios (sourced). Each scenario runs load, injects
# its fault, runs chatllm-check on the recorded history and judges the errors
# the clients saw. They use the stack described by $CHATLLM_STACK_ENV (which
# scripts/test and tests/load/faults/run start) and leave it as they found it.
set -euo pipefail

[[ -n ${CHATLLM_STACK_ENV:-} && -r $CHATLLM_STACK_ENV ]] ||
  { echo "CHATLLM_STACK_ENV must name a running stack's env file (tests/load/faults/run starts one)" >&2; exit 2; }
# shellcheck disable=SC1090
. "$CHATLLM_STACK_ENV"
export CHATLLM_API_KEY_FILE  # chatllm-load and chatllm-check read the key from it.
# CHATLLM_LOAD / CHATLLM_CHECK: another build's load program and checker
# (to run today's workload and checker against an older stack).
LOAD=${CHATLLM_LOAD:-$CHATLLM_BUILD/tests/chatllm-load}
# Clients that behave like real ones (docs/reliability.md): half of the
# writes carry an Idempotency-Key and are retried with it when their outcome
# is unknown, a fifth send short texts every client sends ("yes"), keyed
# writes are sometimes sent twice at once, streams are cut at a random point
# (half of them then read again from their last event, as a client whose
# connection dropped does: the checker proves the text it assembles is the
# stored answer) and sent again, and REALISTIC_MIX adds creates, retried creates and
# deletes of sessions others are appending to, lists of sessions and reads
# (some of deleted sessions). The checker proves the
# stored histories against all of it.
REALISTIC=(--retries 5 --keys 0.5 --identical 0.2 --twice 0.05 --cut 0.03 --resume 0.5)
if [[ -n ${CHATLLM_FAKE_LLM_PORT:-} ]]; then
  REALISTIC+=(--stream-model fake-drip-4-20)  # Slow enough to be cut mid-answer.
fi
REALISTIC_MIX=create=0.2,recreate=0.2,delete=0.1,sessions=0.1,get=0.3
CHECK=${CHATLLM_CHECK:-$CHATLLM_BUILD/tests/chatllm-check}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/chatllm-fault.XXXXXX")
SCENARIO=$(basename "$0" .sh)
FAILED=0

say() { printf '[%s] %s\n' "$SCENARIO" "$*"; }
fail() { say "FAIL: $*"; FAILED=1; }
stack() { "$CHATLLM_ROOT/scripts/stack" --stack "$CHATLLM_STACK" "$@"; }
app_config() { echo "$CHATLLM_VAR/app/$1.ini"; }
master_pid() { cat "$CHATLLM_VAR/run/$1.pid"; }
workers_of() { pgrep -P "$(master_pid "$1")" || true; }
shard_pid() { cat "$CHATLLM_VAR/db/$1/mariadb.pid"; }
app_port() { local item; for item in $CHATLLM_APPS; do [[ ${item%%:*} == "$1" ]] && echo "${item##*:}"; done; return 0; }
first_app() { local a=($CHATLLM_APPS); echo "${a[0]%%:*}"; }
first_shard() { local s=($CHATLLM_SHARDS); echo "${s[0]%%:*}"; }

# shard_sql SHARD QUERY: QUERY on SHARD's database (its primary), as root
# over its socket.
shard_sql() {
  local member=$1
  if [[ ${CHATLLM_REPLICAS:-0} == 1 ]]; then member=$(stack primary-of "$1"); fi
  mariadb --no-defaults -uroot --socket="$CHATLLM_VAR/db/$member/mariadb.sock" chatllm -N -B -e "$2"
}
map_shards() {
  "$CHATLLM_BUILD/shardctl" --config "$(app_config "$(first_app)")" map |
    python3 -c 'import json,sys; print(" ".join(s["name"] for s in json.load(sys.stdin)["shards"]))'
}

# key_away_from SHARD: a user and an API key of this run whose key's unit
# and user's home are on shards other than SHARD; the load and the checker
# use it from then on. A request then needs SHARD only for a session SHARD
# holds: authentication reads the key's unit and the home, and a create,
# list or delete the home too (docs/architecture.md), so with the stack's
# own key on SHARD every request would need it.
key_away_from() {
  local admin=("$CHATLLM_BUILD/chatllm-admin" --config "$(app_config "$(first_app)")")
  local try user id key key_id shard held elsewhere n
  for try in $(seq 1 40); do
    user="fault-$SCENARIO-$$-$try"
    id=$("${admin[@]}" user add "$user" 2>/dev/null | sed -n 's/.*(id \([0-9a-f]*\)).*/\1/p')
    key=$("${admin[@]}" key create "$user" 2>/dev/null | grep '^ck_' || true)
    [[ -n $id && -n $key ]] || continue
    # The user's first create writes its home.
    curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' -H "Authorization: Bearer $key" \
      -d '{}' "$CHATLLM_URL/v1/sessions" || continue
    key_id=$(cut -c4-19 <<<"$key")
    held=0 elsewhere=0
    for shard in $(map_shards); do
      n=$(shard_sql "$shard" "SELECT COUNT(*) FROM sessions WHERE state = 'active' AND ((kind = 'key' AND
            JSON_VALUE(metadata, '\$.key_id') = '$key_id') OR (kind = 'home' AND user_id = UNHEX('$id')))")
      if [[ $shard == "$1" ]]; then held=$((held + n)); else elsewhere=$((elsewhere + n)); fi
    done
    if ((held == 0 && elsewhere == 2)); then
      echo "$key" >"$WORK/api_key"
      export CHATLLM_API_KEY_FILE=$WORK/api_key
      say "the load's user $user: its home and its key on shards other than $1"
      return 0
    fi
  done
  fail "no user of 40 had its home and key off shard $1"
  finish
}

# Waits until /readyz answers 200 (the stack is whole again).
wait_ready() {
  local i
  for i in $(seq 1 100); do
    curl -fsS -o /dev/null "$CHATLLM_URL/readyz" 2>/dev/null && return 0
    sleep 0.2
  done
  fail "stack not ready after 20 s: $(curl -sS "$CHATLLM_URL/readyz")"
}

# load_start NAME ARGS...: chatllm-load in the background, history and JSON
# summary under $WORK/NAME.*; load_wait NAME waits for it.
declare -A LOAD_PIDS
load_start() {
  local name=$1
  shift
  "$LOAD" --url "$CHATLLM_URL" --history "$WORK/$name.history" --json "$WORK/$name.json" \
    --label "$SCENARIO" "$@" >"$WORK/$name.out" 2>&1 &
  LOAD_PIDS[$name]=$!
}
load_stop() { kill -INT "${LOAD_PIDS[$1]}" 2>/dev/null || true; load_wait "$1"; }
load_wait() {
  wait "${LOAD_PIDS[$1]}" || fail "chatllm-load exited with $?"
  cat "$WORK/$1.out"
}

# status_count NAME STATUS: how many requests of the run got STATUS
# ("conn" for no response); errors NAME: all non-2xx.
status_count() {
  python3 -c "
import json,sys
d=json.load(open('$WORK/$1.json'))
print(sum(op['by_status'].get('$2',0) for op in d['ops'] if op['op']!='total'))"
}
errors() {
  python3 -c "
import json
d=json.load(open('$WORK/$1.json'))
print(sum(op['errors'] for op in d['ops'] if op['op']!='total'))"
}
error_statuses() {
  python3 -c "
import json
d=json.load(open('$WORK/$1.json'))
s=set()
for op in d['ops']:
  if op['op']=='total': continue
  s|={k for k in op['by_status'] if not k.startswith('2')}
print(' '.join(sorted(s)))"
}

now_us() { date +%s%6N; }

# A DELETE whose worker died after it deleted the session, before it
# answered, is passed by nginx to another instance (fastcgi_next_upstream
# replays methods RFC 9110 calls idempotent: the same effect, not the same
# answer), which answers 404: the client asked for the session to be gone
# and it is. access_log_mark gives the access log's size now;
# replayed_delete_404s MARK counts such DELETEs logged since (404, two
# upstream addresses); allowed_404s NAME MARK says whether every 404 the run
# saw is one of them.
ACCESS_LOG=$CHATLLM_VAR/nginx/access.log
access_log_mark() { stat -c %s "$ACCESS_LOG" 2>/dev/null || echo 0; }
replayed_delete_404s() {
  sleep 1.5  # nginx flushes the access log every second.
  tail -c +"$(($1 + 1))" "$ACCESS_LOG" | grep -cE '"DELETE [^"]*" 404 [^"]*"[^",]+, [^"]+"' || true
}
op_status_count() {
  python3 -c "
import json
d=json.load(open('$WORK/$1.json'))
print(sum(op['by_status'].get('$3',0) for op in d['ops'] if op['op']=='$2'))"
}
allowed_404s() {
  local all deletes replays
  all=$(status_count "$1" 404)
  deletes=$(op_status_count "$1" delete 404)
  replays=$(replayed_delete_404s "$2")
  say "404s: $all, to DELETEs: $deletes, DELETEs nginx replayed that got 404: $replays"
  ((all == deletes && deletes <= replays))
}
# phase_failures NAME FROM_UNIX_US TO_UNIX_US: "N (status:count ...)" of the
# writes in NAME's run that started within [FROM, TO) and failed with a 5xx
# or no answer (a stream its client cut on purpose is not one).
phase_failures() {
  python3 - "$WORK/$1.history" "$WORK/$1.json" "$2" "$3" <<'PY'
import collections, json, sys
start = json.load(open(sys.argv[2]))["start_unix_us"]
lo, hi = int(sys.argv[3]) - start, int(sys.argv[4]) - start
bad = collections.Counter(
    r["status"] for r in map(json.loads, open(sys.argv[1]))
    if r.get("type") in ("append", "create", "delete") and lo <= r["invoke"] < hi
    and not r.get("cut") and (r["status"] == 0 or r["status"] >= 500))
print("%d (%s)" % (sum(bad.values()), " ".join("%s:%d" % kv for kv in sorted(bad.items())) or "none"))
PY
}

# phase_latency NAME FROM_UNIX_US TO_UNIX_US: "count p50 p99" of the plain
# appends (no key, not streamed) acknowledged in NAME's run that started
# within [FROM, TO) (wall clock).
phase_latency() {
  python3 - "$WORK/$1.history" "$WORK/$1.json" "$2" "$3" <<'PY'
import json, sys
start = json.load(open(sys.argv[2]))["start_unix_us"]
lo, hi = int(sys.argv[3]) - start, int(sys.argv[4]) - start
# Plain turns: no key (so no retry or copy sent at once), not streamed.
lat = sorted(r["complete"] - r["invoke"] for r in map(json.loads, open(sys.argv[1]))
             if r.get("type") == "append" and r["outcome"] == "ok" and lo <= r["invoke"] < hi
             and not r.get("key") and not r.get("stream"))
pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] / 1000 if lat else 0
print("%d %.2f %.2f" % (len(lat), pct(0.5), pct(0.99)))
PY
}

# check NAME[,NAME...] [chatllm-check args...]: runs the checker on the runs'
# histories; a violation fails the scenario.
check() {
  local name=${1%%,*} histories=() n
  for n in ${1//,/ }; do histories+=(--history "$WORK/$n.history"); done
  shift
  if "$CHECK" --url "$CHATLLM_URL" "${histories[@]}" --echo "$@" >"$WORK/$name.check" 2>&1; then
    say "$(grep '^chatllm-check:' "$WORK/$name.check")"
  else
    cat "$WORK/$name.check"
    fail "chatllm-check found violations"
  fi
}

finish() {
  if ((FAILED)); then
    say "FAILED (work files kept in $WORK)"
    exit 1
  fi
  say "passed"
  rm -rf "$WORK"
  exit 0
}
