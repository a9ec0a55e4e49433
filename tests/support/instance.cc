#include "support/instance.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "support/fcgi_client.h"
#include "support/stack_env.h"

namespace chatllm::testing {

using Clock = std::chrono::steady_clock;

Instance::Instance(const std::string& name, int port, const std::map<std::string, std::string>& overrides) {
  const StackEnv& env = StackEnv::Get();
  dir_ = env.var() + "/" + name;
  RunCommand("mkdir -p " + dir_);
  config_ = dir_ + "/" + name + ".ini";
  port_ = port;
  std::map<std::string, std::string> keys = overrides;
  keys["instance_name"] = name;
  keys["listen"] = "127.0.0.1:" + std::to_string(port);
  keys["pid_file"] = dir_ + "/master.pid";
  keys["log_file"] = dir_ + "/app.log";
  // Keys app1's config lacks, by section.
  const std::map<std::string, std::string> section_of = {
      {"echo_delay_ms", "[provider]"},   {"map_file", "[cluster]"},
      {"move_wait_ms", "[cluster]"},     {"pm", "[server]"},
      {"start_workers", "[server]"},     {"min_spare_workers", "[server]"},
      {"max_spare_workers", "[server]"}, {"idle_timeout", "[server]"},
      {"max_requests", "[server]"},      {"threads", "[server]"},
      {"request_timeout", "[server]"},   {"slowlog_timeout", "[server]"},
      {"access_log", "[server]"},        {"map_refresh_ms", "[cluster]"}};
  std::ifstream in(env.AppConfig(env.apps()[0].first));
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  auto key_of = [](const std::string& line) { return line.substr(0, line.find_first_of(" =")); };
  // Keys app1's config has are replaced in place; the others are added
  // under their section's header.
  std::map<std::string, std::string> added;
  for (const auto& [k, v] : keys) {
    bool present = false;
    for (const auto& line : lines) present = present || key_of(line) == k;
    if (!present) added[k] = v;
  }
  std::ostringstream out;
  for (const auto& line : lines) {
    auto it = keys.find(key_of(line));
    if (it != keys.end())
      out << it->first << " = " << it->second << "\n";
    else
      out << line << "\n";
    for (const auto& [k, section] : section_of) {
      if (line == section && added.count(k)) out << k << " = " << added[k] << "\n";
    }
  }
  std::ofstream(config_) << out.str();
}

Instance::~Instance() { Stop(SIGKILL); }

std::string Instance::log() const {
  std::ifstream in(dir_ + "/app.log");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void Instance::Start() {
  pid_ = fork();
  if (pid_ == 0) {
    std::string bin = StackEnv::Get().build() + "/chatllm-fcgi";
    execl(bin.c_str(), bin.c_str(), "--config", config_.c_str(), nullptr);
    _exit(127);
  }
  for (int i = 0; i < 200; ++i) {
    if (FcgiRequest(port_, "GET", "/healthz").ok) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  ADD_FAILURE() << "instance on port " << port_ << " did not start:\n" << log();
}

int Instance::Stop(int signo, double timeout_s) {
  if (pid_ <= 0) return -1;
  kill(pid_, signo);
  auto start = Clock::now();
  int status = 0;
  while (std::chrono::duration<double>(Clock::now() - start).count() < timeout_s) {
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return -1;
}

}  // namespace chatllm::testing
