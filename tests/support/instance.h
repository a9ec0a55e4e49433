#pragma once

#include <sys/types.h>

#include <map>
#include <string>

namespace chatllm::testing {

// An extra chatllm-fcgi instance for one test: its config is app1's with
// some keys changed (instance_name, listen, pid_file and log_file always;
// keys app1's config lacks are added to their section), its files under
// var/<stack>/<name>/. Killed with SIGKILL on destruction if still running.
class Instance {
 public:
  // `overrides`: key -> value; a key is replaced wherever it appears.
  Instance(const std::string& name, int port, const std::map<std::string, std::string>& overrides);
  ~Instance();

  const std::string& config() const { return config_; }
  std::string log() const;
  const std::string& dir() const { return dir_; }

  // Forks and execs the server; returns once it answers /healthz (test
  // failure after 5 s).
  void Start();
  // Signals the master; returns its exit status once it exits (128+signal
  // when killed), or -1 after `timeout_s`.
  int Stop(int signo, double timeout_s = 10);

  pid_t pid() const { return pid_; }
  int port() const { return port_; }

 private:
  std::string dir_, config_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace chatllm::testing
