#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "prefork/pool_policy.h"
#include "prefork/scoreboard.h"

namespace chatllm {

// The prefork master, after nginx's ngx_process_cycle.c and php-fpm: it forks
// the workers, then only waits (signalfd + poll, no signal handlers) for
// signals, timers and, in ondemand mode, connections waiting on the listen
// socket; it reaps, respawns and resizes the pool. Signals:
//   SIGTERM, SIGINT, SIGQUIT  graceful stop: workers finish the request in
//                             hand; SIGKILL after shutdown_timeout_s.
//   SIGHUP, SIGUSR2           reload: re-read the config and replace the
//                             workers one by one (a new one is started before
//                             each old one is told to finish), so no request
//                             is refused or cut.
//   SIGUSR1                   reopen the log files, in the master and workers.
// Workers get PR_SET_PDEATHSIG(SIGTERM), so a master killed with SIGKILL
// does not leave orphans serving.
class ProcessManager {
 public:
  // Runs in each forked child with the first of its `threads` scoreboard
  // slots; returns the child's exit status (0 for a planned exit).
  using WorkerMain = std::function<int(int first_slot, int threads)>;
  // Re-reads the configuration for a reload; false (with *error) keeps the
  // running one.
  using Reload = std::function<bool(PoolOptions* options, std::string* error)>;

  // `board` must have room for the pool (Scoreboard(SlotsNeeded(options))).
  ProcessManager(PoolOptions options, Scoreboard* board, int listen_fd, WorkerMain worker_main, Reload reload);
  ProcessManager(const ProcessManager&) = delete;
  ProcessManager& operator=(const ProcessManager&) = delete;

  // Scoreboard slots a pool of `options` needs, with headroom for reloads.
  static int SlotsNeeded(const PoolOptions& options);

  // Runs until stopped; returns the master's exit status. Call once.
  int Run();

 private:
  struct Worker {
    pid_t pid = 0;
    int first_slot = 0;
    int threads = 0;
    uint64_t generation = 0;
    int64_t started_us = 0;
    bool stopping = false;  // Told to finish (SIGTERM sent).
    bool killed = false;    // SIGKILLed for a request timeout.
  };

  pid_t Spawn();
  void Reap();
  void BeginStop(int signo);
  void HandleSignal(int signo);
  // One tick: request times, then the pool's size as PlanPool decides.
  void Maintain(int64_t now);
  // dynamic: retires the ready worker idle the longest, if any.
  void RetireIdlest(int64_t now);
  void MaintainReload(int64_t now);
  void CheckRequestTimes(int64_t now);
  void Retire(Worker& w, const char* why);
  bool WorkerIdle(const Worker& w, int64_t now) const;
  bool WorkerReady(const Worker& w) const;
  int LiveWorkers() const;
  int IdleWorkers(int64_t now) const;
  int AllocateSlots(int n);
  PoolState StateAt(int64_t now) const;

  PoolOptions options_;
  Scoreboard* board_;
  int listen_fd_;
  WorkerMain worker_main_;
  Reload reload_;
  std::map<pid_t, Worker> workers_;
  std::vector<bool> slot_used_;
  uint64_t generation_ = 1;
  pid_t replacement_ = 0;  // New worker a reload is waiting on before retiring an old one.
  CrashBackoff crashes_;
  int64_t next_spawn_us_ = 0;
  int spawn_rate_ = 1;                  // dynamic: workers forked per tick, doubling up to 32.
  int64_t last_retire_us_ = 0;          // dynamic: at most one idle worker retired per second.
  int64_t listen_muted_until_ = 0;      // ondemand: ignore the listen socket until then.
  std::map<int, int64_t> slow_logged_;  // slot -> request start already reported as slow
  bool stopping_ = false;
  int64_t kill_deadline_us_ = 0;
  pid_t master_pid_ = 0;
  int signal_fd_ = -1;
};

}  // namespace chatllm
