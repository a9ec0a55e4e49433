// The chatllm-fcgi command line (fcgi_app/main.cc calls RunServer).

#include "prefork/server_main.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "base/config.h"
#include "base/log.h"
#include "base/options.h"
#include "prefork/fcgi_worker.h"
#include "prefork/process_manager.h"
#include "prefork/scoreboard.h"

namespace {

// Holds an exclusive flock on the pid file for the master's lifetime, so a
// second master with the same pid file refuses to start.
int LockPidFile(const std::string& path, std::string* error) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    *error = "open(\"" + path + "\") failed: " + std::strerror(errno);
    return -1;
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {0};
    ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
    (void)n;
    *error = "another chatllm-fcgi holds " + path + " (pid " + std::string(buf, std::strcspn(buf, "\n")) + ")";
    ::close(fd);
    return -1;
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    *error = "writing " + path + " failed: " + std::strerror(errno);
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

namespace chatllm {

PoolOptions PoolOptionsOf(const Config& c) {
  PoolOptions o;
  o.mode = c.pm == "dynamic" ? PoolMode::kDynamic : c.pm == "ondemand" ? PoolMode::kOndemand : PoolMode::kStatic;
  o.max_children = c.workers;
  o.start_workers = c.start_workers;
  o.min_spare = c.min_spare_workers;
  o.max_spare = c.max_spare_workers;
  o.idle_timeout_s = c.idle_timeout_s;
  o.threads = c.threads;
  o.request_timeout_s = c.request_timeout_s;
  o.slowlog_timeout_s = c.slowlog_timeout_s;
  o.shutdown_timeout_s = c.shutdown_timeout_s;
  return o;
}

namespace {

// Loads the config at `config_path` and, unless `check`, serves `app` until
// the master is stopped.
int Serve(const std::string& config_path, bool check, const Application& app) {
  Config config;
  try {
    config = LoadConfig(config_path);
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "chatllm-fcgi: config error: %s\n", e.what());
    return 2;
  }
  if (check) {
    std::printf("%s: ok (instance %s, listen %s, %d workers, %zu shards)\n", config_path.c_str(),
                config.instance_name.c_str(), config.listen.c_str(), config.workers, config.shards.size());
    return 0;
  }

  std::string error;
  if (!LogOpen(config.log_file, &error)) {
    std::fprintf(stderr, "chatllm-fcgi: %s\n", error.c_str());
    return 1;
  }
  LogSetLevel(config.log_level);

  int pid_fd = -1;
  if (!config.pid_file.empty()) {
    pid_fd = LockPidFile(config.pid_file, &error);
    if (pid_fd < 0) {
      LOG_ERROR("%s", error.c_str());
      std::fprintf(stderr, "chatllm-fcgi: %s\n", error.c_str());
      return 1;
    }
  }
  int listen_fd = OpenListenSocket(config.listen, config.backlog, &error);
  if (listen_fd < 0) {
    LOG_ERROR("%s", error.c_str());
    std::fprintf(stderr, "chatllm-fcgi: %s\n", error.c_str());
    return 1;
  }
  LOG_INFO("master: chatllm-fcgi %s listening on %s", config.instance_name.c_str(), config.listen.c_str());

  auto current = std::make_shared<Config>(config);
  Scoreboard board(ProcessManager::SlotsNeeded(PoolOptionsOf(config)));
  ProcessManager manager(
      PoolOptionsOf(config), &board, listen_fd,
      [&current, &board, &app, listen_fd](int first_slot, int threads) {
        std::shared_ptr<Config> cfg = current;  // The configuration this worker was forked with.
        return RunWorker(*cfg, listen_fd, &board, first_slot, threads, app);
      },
      [&current, config_path](PoolOptions* options, std::string* error) {
        Config next;
        try {
          next = LoadConfig(config_path);
        } catch (const ConfigError& e) {
          *error = e.what();
          return false;
        }
        if (next.listen != current->listen) {
          *error = "[server] listen changed (" + current->listen + " -> " + next.listen + "): restart to apply";
          return false;
        }
        LogSetLevel(next.log_level);
        current = std::make_shared<Config>(std::move(next));
        *options = PoolOptionsOf(*current);
        return true;
      });
  int rc = manager.Run();
  ::close(listen_fd);
  if (pid_fd >= 0) {
    ::unlink(config.pid_file.c_str());
    ::close(pid_fd);
  }
  return rc;
}

}  // namespace

int RunServer(int argc, char** argv, const Application& app) {
  const CommandSpec command{
      .name = "chatllm-fcgi",
      .description =
          "Runs the chatllm FastCGI server in the foreground: a master process that listens on "
          "[server] listen and supervises [server] workers processes.",
      .options = {{"config", "FILE", "configuration file (docs/config.md)", true},
                  {"check", "", "validate the configuration, print a summary, exit 0 if valid"}},
      .run = [&app](const ParsedArgs& args) { return Serve(args.Value("config"), args.Has("check"), app); },
      .notes =
          "Signals: TERM/INT/QUIT stop gracefully, HUP/USR2 reload the configuration (replacing "
          "workers one by one), USR1 reopens the log files.",
      .version = "chatllm-fcgi 0.1.0",
  };
  return RunCommandLine(command, argc, argv);
}

}  // namespace chatllm
