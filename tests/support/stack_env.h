#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace chatllm::testing {

// The stack that scripts/test started, read from the file named by
// $CHATLLM_STACK_ENV (scripts/stack writes it). Tests that need the stack
// fail, rather than skip, when it is missing: a skipped test proves nothing.
class StackEnv {
 public:
  // Loads the env file or aborts the test binary with instructions.
  static const StackEnv& Get();

  std::string Value(const std::string& key) const;
  std::string url() const { return Value("CHATLLM_URL"); }  // http://127.0.0.1:PORT
  int nginx_port() const { return std::stoi(Value("CHATLLM_NGINX_PORT")); }
  std::string root() const { return Value("CHATLLM_ROOT"); }
  std::string var() const { return Value("CHATLLM_VAR"); }
  std::string build() const { return Value("CHATLLM_BUILD"); }
  // "name:port" pairs.
  std::vector<std::pair<std::string, int>> apps() const { return Pairs("CHATLLM_APPS"); }
  std::vector<std::pair<std::string, int>> shards() const { return Pairs("CHATLLM_SHARDS"); }
  int workers() const { return std::stoi(Value("CHATLLM_WORKERS")); }
  // The stack's API key (user "local"; CHATLLM_API_KEY_FILE).
  std::string api_key() const;

  // Path of the rendered config of app instance `name`.
  std::string AppConfig(const std::string& name) const { return var() + "/app/" + name + ".ini"; }
  // Master pid of app instance `name`, or -1 if it is not running.
  pid_t AppMasterPid(const std::string& name) const;
  // Runs scripts/stack --stack <this stack> ARGS; returns its exit status.
  int Stack(const std::string& args) const;
  // Whether the stack listens on `port` (nginx, TLS, apps, shards, spare
  // shards, fake LLM): a test's own instance must pick another.
  bool UsesPort(int port) const;

 private:
  std::vector<std::pair<std::string, int>> Pairs(const std::string& key) const;
  std::map<std::string, std::string> values_;
};

// The API key tests send by default: $CHATLLM_API_KEY if set, else the
// stack's (when $CHATLLM_STACK_ENV is set), else "".
std::string DefaultApiKey();

// Child pids of `parent` (from /proc), e.g. a master's workers.
std::vector<pid_t> ChildPids(pid_t parent);
bool ProcessAlive(pid_t pid);
// Runs a shell command, returns its exit status and, if `out`, its stdout.
int RunCommand(const std::string& command, std::string* out = nullptr);
// Polls `cond` every 20 ms until it holds or `seconds` pass; returns its last value.
bool WaitFor(double seconds, const std::function<bool()>& cond);

}  // namespace chatllm::testing
