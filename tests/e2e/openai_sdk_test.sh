#!/usr/bin/env bash
# The official openai npm package (pinned in openai_sdk/package-lock.json,
# installed from the npm registry into the build directory) as a client of
# the test stack through nginx: tests/e2e/openai_sdk/sdk_test.mjs.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/common.sh"
[[ -n ${CHATLLM_STACK_ENV:-} && -f $CHATLLM_STACK_ENV ]] || die "CHATLLM_STACK_ENV does not name a stack env file (scripts/test sets it)"
set -a
. "$CHATLLM_STACK_ENV"
set +a
command -v node >/dev/null && command -v npm >/dev/null || die "node and npm are needed (scripts/test installs them)"

src=$CHATLLM_ROOT/tests/e2e/openai_sdk
dir=$CHATLLM_BUILD/openai_sdk
mkdir -p "$dir"
# Install once per lock file.
if ! cmp -s "$src/package-lock.json" "$dir/package-lock.json" || [[ ! -d $dir/node_modules/openai ]]; then
  cp "$src/package.json" "$src/package-lock.json" "$dir/"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
fi
CHATLLM_API_KEY=$(<"$CHATLLM_API_KEY_FILE")
export CHATLLM_API_KEY
cp "$src/sdk_test.mjs" "$dir/"
node "$dir/sdk_test.mjs"
