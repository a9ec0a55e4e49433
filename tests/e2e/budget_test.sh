#!/usr/bin/env bash
# Budgets hold across both app instances (issue 18; docs/architecture.md,
# "Usage and budgets"), end to end through nginx:
#   1. a budget that admits exactly 100 turns, 1,000 turns sent at once
#      (200 at a time, through nginx to both instances): 100 answered, the
#      rest 429 budget_exceeded with x-ratelimit-* headers, nothing stored
#      for them; the ledger (GET /v1/usage) equals the usage stored with the
#      answers; no hold left;
#   2. a concurrent-turn budget of 1: 20 slow turns at once over both
#      instances, one answered, 19 refused;
#   3. kill -9 of every worker of both instances while 16 slow turns hold
#      their worst case: once the hold lease ([usage] hold_lease_s, 8 s on
#      the test stack) has run out, `chatllm-admin reap` leaves no hold, and
#      the ledger still equals the stored answers;
#   4. every answer a budget admitted carries the room left after its hold
#      (x-ratelimit-*: in part 1 exactly 2600 - 26k for the k-th), a
#      stream in its head; a user without a budget gets none.
. "$(dirname "${BASH_SOURCE[0]}")/../load/faults/lib.sh"
SCENARIO=budget
ADMIN=("$CHATLLM_BUILD/chatllm-admin" --config "$(app_config "$(first_app)")")
user="budget-$$"
"${ADMIN[@]}" user add "$user" >/dev/null
key=$("${ADMIN[@]}" key create "$user" 2>/dev/null | grep '^ck_')
[[ -n $key ]] || { fail "no key for $user"; finish; }

# turns.py MODE N PARALLEL [MODEL]: N turns, PARALLEL at a time, each on a
# session of its own (made first), "x" * 36 with max_tokens 13: 13 + 13 = 26
# tokens held and used by echo (docs/providers.md: 4 bytes a token, + 4).
# Prints a JSON summary: statuses, instances, refusals' headers, sessions.
cat >"$WORK/turns.py" <<'PY'
import json, sys, threading, urllib.request, urllib.error
url, key, n, parallel, model = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
H = {"Authorization": "Bearer " + key, "Content-Type": "application/json"}
def call(method, path, body=None):
    req = urllib.request.Request(url + path, method=method, headers=H,
                                 data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
sessions = [json.loads(call("POST", "/v1/sessions", {})[2])["id"] for _ in range(n)]
out = {"status": {}, "served_by": {}, "budget": {}, "headers_ok": 0, "sessions": sessions, "admitted": []}
lock = threading.Lock()
gate = threading.Barrier(parallel)
def worker(ids):
    try:
        gate.wait(timeout=30)
    except threading.BrokenBarrierError:
        pass
    for sid in ids:
        st, hd, body = call("POST", "/v1/sessions/%s/messages" % sid,
                            {"content": "x" * 36, "max_tokens": 13, "model": model})
        with lock:
            out["status"][st] = out["status"].get(st, 0) + 1
            by = hd.get("X-Served-By", "?")
            out["served_by"][by] = out["served_by"].get(by, 0) + 1
            if st == 201:
                # The room the budgets left once this turn's hold was taken.
                out["admitted"].append({h: hd.get(h) for h in (
                    "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
                    "x-ratelimit-limit-turns", "x-ratelimit-remaining-turns")})
            if st == 429:
                which = hd.get("x-chatllm-budget", "?")
                out["budget"][which] = out["budget"].get(which, 0) + 1
                code = json.loads(body)["error"]["code"]
                if code == "budget_exceeded" and ("x-ratelimit-remaining-tokens" in hd or
                                                  which.endswith("concurrent")):
                    out["headers_ok"] += 1
threads = [threading.Thread(target=worker, args=(sessions[i::parallel],)) for i in range(parallel)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(out))
PY

# stored.py: the usage stored with the answers of the sessions listed in
# FILE's "sessions" (summed), and the ledger's total for today.
cat >"$WORK/stored.py" <<'PY'
import json, sys, urllib.request
url, key = sys.argv[1], sys.argv[2]
H = {"Authorization": "Bearer " + key}
def get(path):
    with urllib.request.urlopen(urllib.request.Request(url + path, headers=H), timeout=60) as r:
        return json.loads(r.read())
answers = tokens = 0
for f in sys.argv[3:]:
    for sid in json.load(open(f))["sessions"]:
        for m in get("/v1/sessions/%s/messages?limit=100" % sid)["data"]:
            if m["role"] == "assistant" and "usage" in m:
                answers += 1
                tokens += m["usage"]["total_tokens"]
usage = get("/v1/usage")
held = [b for b in usage["budgets"]]
print(json.dumps({"answers": answers, "tokens": tokens, "ledger_answers": usage["total"]["answers"],
                  "ledger_tokens": usage["total"]["total_tokens"], "budgets": held}))
PY

field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {'d': d}))" "$@"; }

# 1. Exactly 100 turns' worth, 1,000 turns at once.
"${ADMIN[@]}" budget set "$user" --tokens-per-day 2600 >/dev/null
say "1,000 turns (200 at a time) against a budget of 100 turns (2,600 tokens)"
python3 "$WORK/turns.py" "$CHATLLM_URL" "$key" 1000 200 echo >"$WORK/one.json"
ok=$(field "$WORK/one.json" "d['status'].get('201', 0)")
refused=$(field "$WORK/one.json" "d['status'].get('429', 0)")
say "answered $ok, refused $refused; by instance $(field "$WORK/one.json" "d['served_by']")"
((ok == 100)) || fail "$ok turns answered, the budget admits exactly 100"
((refused == 900)) || fail "$refused refused (429), want 900; statuses $(field "$WORK/one.json" "d['status']")"
[[ $(field "$WORK/one.json" "d['headers_ok']") == "$refused" ]] || fail "a refusal lacks budget_exceeded or its headers"
[[ $(field "$WORK/one.json" "len(d['served_by'])") -ge 2 ]] || fail "the turns did not reach both instances"
# Each answer says the room left after its hold: the holds queue on the
# budget's lock and each takes 26 tokens, so the 100 answers carry
# 2600 - 26k for k = 1..100, each once, whatever instance served them.
[[ $(field "$WORK/one.json" "sorted(int(a['x-ratelimit-remaining-tokens'] or -1) for a in d['admitted']) == list(range(0, 2600, 26))") == True ]] ||
  fail "the answers' x-ratelimit-remaining-tokens are not 2600 - 26k, k = 1..100: $(field "$WORK/one.json" "sorted(a['x-ratelimit-remaining-tokens'] for a in d['admitted'])")"
[[ $(field "$WORK/one.json" "all(a['x-ratelimit-limit-tokens'] == '2600' and (a['x-ratelimit-reset-tokens'] or '').endswith('s') and a['x-ratelimit-limit-turns'] is None for a in d['admitted'])") == True ]] ||
  fail "an answer lacks x-ratelimit-limit-tokens: 2600 or its reset: $(field "$WORK/one.json" "d['admitted'][:3]")"
python3 "$WORK/stored.py" "$CHATLLM_URL" "$key" "$WORK/one.json" >"$WORK/one-stored.json"
say "stored: $(cat "$WORK/one-stored.json")"
[[ $(field "$WORK/one-stored.json" "d['answers']") == 100 ]] || fail "the sessions hold $(field "$WORK/one-stored.json" "d['answers']") answers, want 100"
[[ $(field "$WORK/one-stored.json" "d['tokens'] == d['ledger_tokens'] == 2600") == True ]] ||
  fail "ledger and stored usage differ: $(cat "$WORK/one-stored.json")"
# No user message stored for a refused turn: every session has 0 or 2 messages.
[[ $(field "$WORK/one-stored.json" "d['budgets'][0]['concurrent_turns']['used'] if 'concurrent_turns' in d['budgets'][0] else 0") == 0 ]] ||
  fail "holds left after every turn ended"
# Refused turns stored nothing: the messages of all 1,000 sessions are the 100 answers and their questions.
total_messages=$(python3 - "$CHATLLM_URL" "$key" "$WORK/one.json" <<'PY'
import json, sys, urllib.request
url, key, f = sys.argv[1:]
n = 0
for sid in json.load(open(f))["sessions"]:
    req = urllib.request.Request(url + "/v1/sessions/" + sid, headers={"Authorization": "Bearer " + key})
    n += json.loads(urllib.request.urlopen(req, timeout=60).read())["message_count"]
print(n)
PY
)
((total_messages == 200)) || fail "the 1,000 sessions hold $total_messages messages, want 200 (refusals store nothing)"

# 2. One turn at a time, across both instances.
"${ADMIN[@]}" budget set "$user" --concurrent 1 >/dev/null
say "20 slow turns at once against a budget of 1 concurrent turn"
python3 "$WORK/turns.py" "$CHATLLM_URL" "$key" 20 20 fake-slow-1000 >"$WORK/two.json"
ok=$(field "$WORK/two.json" "d['status'].get('201', 0)")
say "answered $ok; $(field "$WORK/two.json" "d['status']"); refusals $(field "$WORK/two.json" "d['budget']")"
((ok == 1)) || fail "$ok turns ran at once under a concurrent budget of 1"
[[ $(field "$WORK/two.json" "d['budget'].get('user.concurrent', 0)") == 19 ]] || fail "want 19 refusals by user.concurrent"
[[ $(field "$WORK/two.json" "[(a['x-ratelimit-limit-turns'], a['x-ratelimit-remaining-turns'], a['x-ratelimit-limit-tokens']) for a in d['admitted']] == [('1', '0', None)]") == True ]] ||
  fail "the answer does not say x-ratelimit-limit-turns: 1, remaining 0: $(field "$WORK/two.json" "d['admitted']")"
[[ $(field "$WORK/two.json" "len(d['served_by'])") -ge 2 ]] || fail "the turns did not reach both instances"

# 3. Workers killed while turns hold.
"${ADMIN[@]}" budget set "$user" --tokens-per-day 1000000 >/dev/null
say "16 slow turns; kill -9 of every worker of both instances after 0.7 s"
python3 "$WORK/turns.py" "$CHATLLM_URL" "$key" 16 16 fake-slow-1300 >"$WORK/three.json" 2>/dev/null &
turns=$!
sleep 0.7
held=$("${ADMIN[@]}" budget show "$user" | awk '$1 == "user" {print $2}')
say "held before the kill: $held tokens"
for item in $CHATLLM_APPS; do
  for w in $(workers_of "${item%%:*}"); do kill -9 "$w" 2>/dev/null || true; done
done
wait "$turns" || true
say "statuses: $(field "$WORK/three.json" "d['status']")"
sleep 9  # The test stack's hold lease is 8 s.
"${ADMIN[@]}" reap | sed "s/^/[$SCENARIO] /"
python3 "$WORK/stored.py" "$CHATLLM_URL" "$key" "$WORK/one.json" "$WORK/two.json" "$WORK/three.json" >"$WORK/three-stored.json"
say "after the reap: $(cat "$WORK/three-stored.json")"
[[ $(field "$WORK/three-stored.json" "d['tokens'] == d['ledger_tokens'] and d['answers'] == d['ledger_answers']") == True ]] ||
  fail "ledger and stored usage differ after the kills: $(cat "$WORK/three-stored.json")"
left=$("${ADMIN[@]}" budget show "$user" | awk '$1 == "user" {print $2}')
[[ $left == "$(field "$WORK/three-stored.json" "d['ledger_tokens']")" ]] ||
  fail "tokens used and held ($left) is not the ledger's: a hold was left"

# 4. A stream's head carries the room too; a user without a budget gets no
# x-ratelimit-* at all.
say "a streamed turn's head, with a budget and without"
session=$(curl -s -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -d '{}' \
  "$CHATLLM_URL/v1/sessions" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
head=$(curl -s -N -D - -o /dev/null -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
  -d '{"content":"stream me","max_tokens":13,"stream":true}' "$CHATLLM_URL/v1/sessions/$session/messages" | tr -d '\r')
grep -qi '^content-type: text/event-stream' <<<"$head" || fail "not a stream: $head"
grep -qi '^x-ratelimit-limit-tokens: 1000000$' <<<"$head" || fail "the stream's head lacks x-ratelimit-limit-tokens: $head"
grep -qi '^x-ratelimit-remaining-tokens: [0-9]' <<<"$head" || fail "the stream's head lacks x-ratelimit-remaining-tokens: $head"
"${ADMIN[@]}" budget clear "$user" >/dev/null  # Applies at once (only "no budget" is cached).
head=$(curl -s -D - -o /dev/null -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
  -d '{"content":"no budget"}' "$CHATLLM_URL/v1/sessions/$session/messages" | tr -d '\r')
grep -q '^HTTP/1.1 201' <<<"$head" || fail "a turn without a budget was not answered: $head"
! grep -qi '^x-ratelimit-' <<<"$head" || fail "a turn without a budget carries x-ratelimit-*: $head"
finish
