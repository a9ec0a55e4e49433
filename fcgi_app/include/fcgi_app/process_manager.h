#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <set>

namespace chatllm {

struct ProcessManagerOptions {
  int workers = 4;
  int shutdown_timeout_s = 30;  // After SIGTERM, workers get this long before SIGKILL.
  // Crash-loop guard: when more than crash_limit workers die abnormally
  // within crash_window_s, respawns are delayed, doubling from 100 ms up to
  // crash_max_delay_ms, instead of forking as fast as they die.
  int crash_limit = 10;
  int crash_window_s = 10;
  int crash_max_delay_ms = 5000;
};

// The prefork master, after nginx's ngx_process_cycle.c: it forks the
// workers, then only waits for signals (sigtimedwait, no handlers), reaps and
// respawns. Signals:
//   SIGTERM, SIGINT, SIGQUIT  graceful stop: workers finish the request in
//                             hand; SIGKILL after shutdown_timeout_s.
//   SIGUSR1                   reopen the log file (logrotate), in the master
//                             and every worker.
//   SIGCHLD                   reap; respawn unless stopping.
// Workers get PR_SET_PDEATHSIG(SIGTERM), so a master killed with SIGKILL
// does not leave orphans serving.
class ProcessManager {
 public:
  // `worker_main` runs in each forked child; its return value is the child's
  // exit status.
  ProcessManager(ProcessManagerOptions options, std::function<int()> worker_main);
  ProcessManager(const ProcessManager&) = delete;
  ProcessManager& operator=(const ProcessManager&) = delete;

  // Runs until stopped; returns the master's exit status. Call once.
  int Run();

 private:
  pid_t Spawn();
  void ReapChildren();
  void BeginStop(int signo);
  int64_t RespawnDelayMs();

  ProcessManagerOptions options_;
  std::function<int()> worker_main_;
  std::set<pid_t> workers_;
  std::deque<int64_t> recent_crashes_us_;  // Monotonic times of abnormal exits.
  int64_t crash_delay_ms_ = 0;
  int64_t next_spawn_us_ = 0;  // Earliest time the next respawn may happen.
  bool stopping_ = false;
  int64_t kill_deadline_us_ = 0;
  pid_t master_pid_ = 0;
};

}  // namespace chatllm
