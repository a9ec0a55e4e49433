#include "support/stack_env.h"

#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

namespace chatllm::testing {

const StackEnv& StackEnv::Get() {
  static const StackEnv* env = [] {
    const char* path = std::getenv("CHATLLM_STACK_ENV");
    if (path == nullptr || *path == '\0') {
      std::cerr << "CHATLLM_STACK_ENV is not set. Integration and e2e tests need the stack that "
                   "scripts/test starts; run them through scripts/test.\n";
      std::exit(1);
    }
    std::ifstream in(path);
    if (!in) {
      std::cerr << "cannot read CHATLLM_STACK_ENV=" << path << "\n";
      std::exit(1);
    }
    auto* e = new StackEnv;
    std::string line;
    while (std::getline(in, line)) {
      size_t eq = line.find('=');
      if (eq == std::string::npos) continue;
      std::string value = line.substr(eq + 1);
      if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
        value = value.substr(1, value.size() - 2);
      }
      e->values_[line.substr(0, eq)] = value;
    }
    return e;
  }();
  return *env;
}

std::string StackEnv::Value(const std::string& key) const {
  auto it = values_.find(key);
  if (it == values_.end()) {
    std::cerr << "stack env has no " << key << "\n";
    std::exit(1);
  }
  return it->second;
}

std::vector<std::pair<std::string, int>> StackEnv::Pairs(const std::string& key) const {
  std::vector<std::pair<std::string, int>> out;
  std::istringstream in(Value(key));
  std::string item;
  while (in >> item) {
    size_t colon = item.find(':');
    out.emplace_back(item.substr(0, colon), std::stoi(item.substr(colon + 1)));
  }
  return out;
}

bool StackEnv::UsesPort(int port) const {
  for (const char* key : {"CHATLLM_APPS", "CHATLLM_SHARDS", "CHATLLM_SPARE_SHARDS"}) {
    if (values_.count(key) == 0) continue;
    for (const auto& [name, p] : Pairs(key)) {
      if (p == port) return true;
    }
  }
  for (const char* key : {"CHATLLM_NGINX_PORT", "CHATLLM_FAKE_LLM_PORT"}) {
    auto it = values_.find(key);
    if (it != values_.end() && !it->second.empty() && std::atoi(it->second.c_str()) == port) return true;
  }
  auto tls = values_.find("CHATLLM_TLS_URL");  // https://127.0.0.1:PORT
  return tls != values_.end() && std::atoi(tls->second.substr(tls->second.rfind(':') + 1).c_str()) == port;
}

std::string StackEnv::api_key() const {
  std::ifstream in(Value("CHATLLM_API_KEY_FILE"));
  std::string key;
  if (!(in >> key)) {
    std::cerr << "cannot read the stack's API key from " << Value("CHATLLM_API_KEY_FILE") << "\n";
    std::exit(1);
  }
  return key;
}

std::string DefaultApiKey() {
  static const std::string key = [] {
    const char* k = std::getenv("CHATLLM_API_KEY");
    if (k != nullptr && *k != '\0') return std::string(k);
    const char* env = std::getenv("CHATLLM_STACK_ENV");
    if (env == nullptr || *env == '\0') return std::string();
    return StackEnv::Get().api_key();
  }();
  return key;
}

pid_t StackEnv::AppMasterPid(const std::string& name) const {
  std::ifstream in(var() + "/run/" + name + ".pid");
  pid_t pid = -1;
  if (!(in >> pid) || !ProcessAlive(pid)) return -1;
  return pid;
}

int StackEnv::Stack(const std::string& args) const {
  return RunCommand(root() + "/scripts/stack --stack " + Value("CHATLLM_STACK") + " " + args + " >/dev/null 2>&1");
}

std::vector<pid_t> ChildPids(pid_t parent) {
  std::vector<pid_t> out;
  DIR* dir = opendir("/proc");
  if (!dir) return out;
  while (dirent* ent = readdir(dir)) {
    pid_t pid = std::atoi(ent->d_name);
    if (pid <= 0) continue;
    std::ifstream stat("/proc/" + std::string(ent->d_name) + "/stat");
    std::string content;
    std::getline(stat, content);
    // Fields after "(comm)": state ppid ...
    size_t close = content.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(content.substr(close + 2));
    char state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == parent && state != 'Z') out.push_back(pid);
  }
  closedir(dir);
  return out;
}

bool ProcessAlive(pid_t pid) {
  if (pid <= 0 || kill(pid, 0) != 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string content;
  std::getline(stat, content);
  size_t close = content.rfind(')');
  return close != std::string::npos && content.size() > close + 2 && content[close + 2] != 'Z';
}

int RunCommand(const std::string& command, std::string* out) {
  FILE* p = popen(command.c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) {
    if (out) out->append(buf, n);
  }
  int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

bool WaitFor(double seconds, const std::function<bool()>& cond) {
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < seconds) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return cond();
}

}  // namespace chatllm::testing
