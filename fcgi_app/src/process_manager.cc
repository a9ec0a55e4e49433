#include "fcgi_app/process_manager.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "fcgi_app/log.h"
#include "fcgi_app/time_util.h"

namespace chatllm {
namespace {

sigset_t MasterSignals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2}) sigaddset(&set, s);
  return set;
}

}  // namespace

ProcessManager::ProcessManager(ProcessManagerOptions options, std::function<int()> worker_main)
    : options_(options), worker_main_(std::move(worker_main)) {}

pid_t ProcessManager::Spawn() {
  std::fflush(nullptr);  // Or buffered output is duplicated into the child.
  pid_t pid = fork();
  if (pid < 0) {
    LOG_ERROR("master: fork() failed while spawning a worker: %s", std::strerror(errno));
    return -1;
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != master_pid_) _exit(1);  // The master died before prctl.
    for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2}) signal(s, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    int rc = worker_main_();
    std::fflush(nullptr);
    _exit(rc);  // Not exit(): the master's atexit handlers and statics are not ours.
  }
  workers_.insert(pid);
  LOG_INFO("master: started worker %d (%zu/%d)", pid, workers_.size(), options_.workers);
  return pid;
}

int64_t ProcessManager::RespawnDelayMs() {
  int64_t now = MonotonicMicros();
  int64_t window = int64_t{options_.crash_window_s} * 1000000;
  while (!recent_crashes_us_.empty() && now - recent_crashes_us_.front() > window) {
    recent_crashes_us_.pop_front();
  }
  if (static_cast<int>(recent_crashes_us_.size()) <= options_.crash_limit) {
    crash_delay_ms_ = 0;
    return 0;
  }
  crash_delay_ms_ = crash_delay_ms_ == 0 ? 100 : std::min<int64_t>(crash_delay_ms_ * 2, options_.crash_max_delay_ms);
  return crash_delay_ms_;
}

void ProcessManager::ReapChildren() {
  while (true) {
    int status = 0;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) break;
    if (workers_.erase(pid) == 0) continue;
    bool abnormal = true;
    if (WIFEXITED(status)) {
      abnormal = WEXITSTATUS(status) != 0;
      LOG_INFO("master: worker %d exited with status %d", pid, WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
      if (stopping_ && WTERMSIG(status) == SIGKILL) abnormal = false;
      LOG_WARN("master: worker %d killed by signal %d (%s)%s", pid, WTERMSIG(status),
               strsignal(WTERMSIG(status)), WCOREDUMP(status) ? ", core dumped" : "");
    }
    if (abnormal && !stopping_) recent_crashes_us_.push_back(MonotonicMicros());
  }
}

void ProcessManager::BeginStop(int signo) {
  if (stopping_) return;
  stopping_ = true;
  kill_deadline_us_ = MonotonicMicros() + int64_t{options_.shutdown_timeout_s} * 1000000;
  LOG_INFO("master: %s received; stopping %zu workers gracefully (up to %d s)", strsignal(signo),
           workers_.size(), options_.shutdown_timeout_s);
  for (pid_t pid : workers_) kill(pid, SIGTERM);
}

int ProcessManager::Run() {
  master_pid_ = getpid();
  sigset_t set = MasterSignals();
  sigprocmask(SIG_BLOCK, &set, nullptr);
  LOG_INFO("master: starting %d workers", options_.workers);
  for (int i = 0; i < options_.workers; ++i) Spawn();

  while (true) {
    ReapChildren();
    int64_t now = MonotonicMicros();
    if (stopping_) {
      if (workers_.empty()) break;
      if (now >= kill_deadline_us_) {
        LOG_WARN("master: %zu workers still busy after %d s; sending SIGKILL", workers_.size(),
                 options_.shutdown_timeout_s);
        for (pid_t pid : workers_) kill(pid, SIGKILL);
        kill_deadline_us_ = now + 1000000;  // Reap and re-check once a second.
      }
    } else if (static_cast<int>(workers_.size()) < options_.workers && now >= next_spawn_us_) {
      int64_t delay = RespawnDelayMs();
      if (delay > 0 && next_spawn_us_ <= now) {
        LOG_WARN("master: workers are crash-looping (%zu abnormal exits in %d s); next respawn in %lld ms",
                 recent_crashes_us_.size(), options_.crash_window_s, static_cast<long long>(delay));
        next_spawn_us_ = now + delay * 1000;
      } else {
        Spawn();
        next_spawn_us_ = 0;
        continue;  // Spawn the rest of the missing workers right away.
      }
    }

    // Sleep until a signal or the next timer (respawn, kill deadline).
    int64_t wake = now + 1000000;
    if (stopping_) wake = std::min(wake, kill_deadline_us_);
    if (!stopping_ && static_cast<int>(workers_.size()) < options_.workers && next_spawn_us_ > now) {
      wake = std::min(wake, next_spawn_us_);
    }
    int64_t wait_us = std::max<int64_t>(wake - now, 1000);
    timespec ts{static_cast<time_t>(wait_us / 1000000), static_cast<long>(wait_us % 1000000) * 1000};
    siginfo_t info;
    int signo = sigtimedwait(&set, &info, &ts);
    if (signo < 0) continue;  // Timeout or EINTR.
    switch (signo) {
      case SIGCHLD:
        break;  // Reaped at the top of the loop.
      case SIGTERM:
      case SIGINT:
      case SIGQUIT:
        BeginStop(signo);
        break;
      case SIGUSR1: {
        std::string error;
        if (!LogReopen(&error)) LOG_ERROR("master: reopening the log failed: %s", error.c_str());
        else LOG_INFO("master: log reopened");
        for (pid_t pid : workers_) kill(pid, SIGUSR1);
        break;
      }
      default:
        LOG_INFO("master: ignoring %s", strsignal(signo));
        break;
    }
  }
  LOG_INFO("master: all workers stopped; exiting");
  return 0;
}

}  // namespace chatllm
