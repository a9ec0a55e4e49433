# Shared helpers for scripts/up, scripts/down, scripts/test and scripts/stack.
# Sourced, not executed. Requires bash.

CHATLLM_ROOT=${CHATLLM_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
CHATLLM_BUILD=${CHATLLM_BUILD:-$CHATLLM_ROOT/build}

# Debian 12 packages the project needs, by purpose.
CHATLLM_BUILD_PACKAGES="g++ make cmake pkg-config libfcgi-dev libpoco-dev libmariadb-dev
  rapidjson-dev libcpp-httplib-dev libssl-dev googletest libgtest-dev python3"
CHATLLM_RUNTIME_PACKAGES="mariadb-server mariadb-client nginx-light curl procps openssl python3-jinja2"
CHATLLM_TEST_PACKAGES="wrk sysbench prometheus clang clang-format libclang-rt-14-dev
  ansible ansible-lint yamllint python3-pymysql openssh-server dpkg-dev iproute2"

# Bash 5.2 expands '&' in ${var//pattern/replacement}; we want it literal.
shopt -u patsub_replacement 2>/dev/null || true

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# ensure_packages PKG...: installs the packages that are missing. Fast (one
# dpkg-query) when everything is present; runs apt-get update only if the
# first install attempt fails (fresh machines have no package lists).
ensure_packages() {
  local missing=() p status
  for p in "$@"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  [[ $(id -u) -eq 0 ]] || die "missing packages (${missing[*]}); run as root to install them"
  say "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/chatllm-apt.log 2>&1; then
    apt-get update -q >>/tmp/chatllm-apt.log 2>&1 || true
    apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/chatllm-apt.log 2>&1 ||
      { tail -n 30 /tmp/chatllm-apt.log >&2; die "apt-get install failed (log: /tmp/chatllm-apt.log)"; }
  fi
}

# ensure_node: Node.js and npm (the OpenAI SDK test): Debian's packages,
# unless a node with its npm is already installed (NodeSource's nodejs
# bundles npm and conflicts with Debian's npm package).
ensure_node() {
  command -v node >/dev/null && command -v npm >/dev/null && return 0
  ensure_packages nodejs npm
}

# build [CMAKE_ARGS...]: configures (once) and builds in $CHATLLM_BUILD.
# sanitized_build DIR TARGET...: clang with ASan+UBSan and the libFuzzer
# targets (CHATLLM_SANITIZE, CHATLLM_FUZZ), only the targets named.
sanitized_build() {
  local dir=$1
  shift
  if [[ ! -f $dir/CMakeCache.txt ]]; then
    say "configuring $dir (clang, ASan+UBSan, fuzz targets)"
    cmake -S "$CHATLLM_ROOT" -B "$dir" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCHATLLM_SANITIZE=ON -DCHATLLM_FUZZ=ON >/dev/null
  fi
  say "building $* in $dir"
  # Niced: scripts/test builds it beside the fleet test, whose deadlines matter more.
  nice -n 10 cmake --build "$dir" -j "$(nproc 2>/dev/null || echo 2)" --target "$@" -- --no-print-directory \
    >/tmp/chatllm-sanitized-build.log 2>&1 ||
    { grep -E -A5 'error|Error' /tmp/chatllm-sanitized-build.log | head -n 60 >&2; die "sanitized build failed (log: /tmp/chatllm-sanitized-build.log)"; }
}

# The sanitizers' runtime settings (suppressions name third-party code only).
sanitizer_env() {
  local sup=$CHATLLM_ROOT/tests/sanitizers
  export UBSAN_OPTIONS="suppressions=$sup/ubsan.supp:print_stacktrace=1:halt_on_error=1"
  export LSAN_OPTIONS="suppressions=$sup/lsan.supp"
  export ASAN_OPTIONS="allocator_may_return_null=1:detect_stack_use_after_return=1"
}

build() {
  local jobs
  jobs=$(nproc 2>/dev/null || echo 2)
  if [[ ! -f $CHATLLM_BUILD/CMakeCache.txt ]]; then
    say "configuring $CHATLLM_BUILD"
    cmake -S "$CHATLLM_ROOT" -B "$CHATLLM_BUILD" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
  fi
  say "building ($jobs jobs)"
  cmake --build "$CHATLLM_BUILD" -j "$jobs" -- --no-print-directory >/tmp/chatllm-build.log 2>&1 ||
    { grep -E -A5 'error|Error' /tmp/chatllm-build.log | head -n 60 >&2; die "build failed (log: /tmp/chatllm-build.log)"; }
}
