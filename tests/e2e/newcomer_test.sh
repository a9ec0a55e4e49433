#!/usr/bin/env bash
# The newcomer's path (issue 13), on a throwaway local stack (scripts/up and
# scripts/down themselves, on free ports, its state under the test stack's
# var/): scripts/up prints the commands README.md's quick start shows; a
# "real" provider configured in the local stack's override file (the test
# stack's fake LLM, through CHATLLM_APP_OVERRIDE, which stands for
# conf/app.local.ini) answers turns; echo answers only its own model; and
# after scripts/down (which says what it stops) and scripts/up again, the
# provider is still configured and the data still there.
set -euo pipefail
[[ -n ${CHATLLM_STACK_ENV:-} ]] || { echo "CHATLLM_STACK_ENV is not set: run through scripts/test" >&2; exit 2; }
# shellcheck disable=SC1090
. "$CHATLLM_STACK_ENV"
ROOT=$CHATLLM_ROOT
FAKE_PORT=$CHATLLM_FAKE_LLM_PORT
FAKE_KEY=$CHATLLM_VAR/secrets/fake_llm_key
N=$CHATLLM_VAR/newcomer
fail() { echo "FAIL: $*" >&2; exit 1; }

free_ports() { # free_ports N: N distinct free TCP ports on 127.0.0.1
  /usr/bin/python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}
read -r P_NGINX P_TLS P_APP1 P_APP2 P_A P_B P_C <<<"$(free_ports 7)"
export CHATLLM_VAR=$N CHATLLM_NGINX_PORT=$P_NGINX CHATLLM_TLS_PORT=$P_TLS \
  CHATLLM_APPS="app1:$P_APP1 app2:$P_APP2" CHATLLM_SHARDS="a:$P_A b:$P_B" CHATLLM_SPARE_SHARDS="c:$P_C" \
  CHATLLM_WORKERS=2 CHATLLM_FAKE_LLM_PORT="" CHATLLM_APP_OVERRIDE=$N.override.ini
URL=http://127.0.0.1:$P_NGINX

cleanup() { "$ROOT/scripts/down" >/dev/null 2>&1 || true; rm -rf "$N" "$N.override.ini"; }
cleanup
trap cleanup EXIT

# The user's own settings, as README.md shows them (inline comments too).
cat >"$CHATLLM_APP_OVERRIDE" <<INI
; conf/app.local.ini of a newcomer
[provider]
chain = real, echo

[provider.real]
type         = openai
base_url     = http://127.0.0.1:$FAKE_PORT/v1   ; the "real" server
api_key_file = $FAKE_KEY
model        = real-default                    ; when a turn names none
models       = real-*
INI

echo "== scripts/up"
up=$("$ROOT/scripts/up" 2>&1) || { echo "$up"; fail "scripts/up failed"; }
echo "$up" | tail -n 20
grep -qF "chatllm is running at $URL and https://127.0.0.1:$P_TLS" <<<"$up" || fail "scripts/up does not print the URLs"
# Every command of README.md's first example block, with this stack's ports
# and paths, is in what scripts/up printed.
/usr/bin/python3 - "$ROOT/README.md" "$URL" "https://127.0.0.1:$P_TLS" "$N/" <<'PY' >"$N.readme-lines"
import re, sys
readme, url, tls, var = sys.argv[1:]
lines = open(readme).read().splitlines()
start = lines.index("## Quick start")
blocks, cur = [], None
for line in lines[start + 1:]:
    if re.match(r"^#{2,3} ", line):
        break
    if cur is None and line.strip() == "```sh":
        cur = []
    elif cur is not None and line.strip() == "```":
        blocks.append(cur)
        cur = None
    elif cur is not None:
        cur.append(line)
for line in blocks[1]:  # blocks[0] is scripts/up and scripts/test themselves.
    if line.strip() and not line.strip().startswith("#"):
        print(line.replace("http://127.0.0.1:8080", url).replace("https://127.0.0.1:8443", tls)
              .replace("var/local/", var).strip())
PY
[[ $(wc -l <"$N.readme-lines") -ge 5 ]] || fail "README.md's first example block was not found"
while IFS= read -r line; do
  grep -qxF -- "$line" <(sed 's/^ *//' <<<"$up") || fail "scripts/up does not print the README line: $line"
done <"$N.readme-lines"
rm -f "$N.readme-lines"

K=$(cat "$N/secrets/api_key")
post() { curl -sS -X POST "$URL$1" -H "Authorization: Bearer $K" -H 'Content-Type: application/json' -d "$2"; }
field() { /usr/bin/python3 -c 'import json, sys; d = json.load(sys.stdin); print(eval("d" + sys.argv[1]))' "$1"; }

echo "== the provider from the override file answers"
S=$(post /v1/sessions '{"title":"newcomer"}' | field '["id"]')
turn=$(post "/v1/sessions/$S/messages" '{"content":"hello","model":"real-1"}')
[[ $(field '["assistant"]["provider"]' <<<"$turn") == real ]] || fail "the override's provider did not answer: $turn"
[[ $(field '["assistant"]["content"]' <<<"$turn") == "[real-1|n=1|sys=] hello" ]] || fail "unexpected answer: $turn"
turn=$(post "/v1/sessions/$S/messages" '{"content":"and by default?"}')
[[ $(field '["assistant"]["model"]' <<<"$turn") == real-default ]] || fail "the chain's first provider did not answer: $turn"
echo "== echo answers its own model only"
[[ $(post "/v1/sessions/$S/messages" '{"content":"hi","model":"echo"}' | field '["assistant"]["provider"]') == echo ]] ||
  fail "echo did not answer the model echo"
refused=$(post "/v1/sessions/$S/messages" '{"content":"hi","model":"gpt-4o"}')
[[ $(field '["error"]["code"]' <<<"$refused") == model_not_supported ]] || fail "gpt-4o was not refused: $refused"

echo "== scripts/down"
down=$("$ROOT/scripts/down" 2>&1) || { echo "$down"; fail "scripts/down failed"; }
echo "$down"
for part in nginx "app app1" "app app2" "shard a" "shard b" "shard c"; do
  grep -q "stopping $part" <<<"$down" || fail "scripts/down does not say it stops $part"
done
grep -q "the local stack is stopped" <<<"$down" || fail "scripts/down does not say it is done"
status=$("$ROOT/scripts/stack" --stack local status)
grep -q running <<<"$status" && fail "something still runs after scripts/down: $status"

echo "== scripts/up again: the override and the data survive"
"$ROOT/scripts/up" >/dev/null 2>&1 || fail "scripts/up failed the second time"
[[ $(curl -sS "$URL/v1/sessions/$S" -H "Authorization: Bearer $K" | field '["message_count"]') == 6 ]] ||
  fail "the session's messages did not survive scripts/down and scripts/up"
turn=$(post "/v1/sessions/$S/messages" '{"content":"still there?","model":"real-2"}')
[[ $(field '["assistant"]["provider"]' <<<"$turn") == real ]] || fail "the override did not survive: $turn"
grep -q "from $CHATLLM_APP_OVERRIDE" "$N/app/app1.ini" || fail "the app config does not mark the merged lines"
echo "newcomer path: ok"
