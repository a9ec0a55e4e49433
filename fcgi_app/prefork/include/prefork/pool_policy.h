#pragma once

// The process manager's decisions, apart from the processes they concern:
// how many workers to fork or retire, how long a crash loop delays a respawn,
// when a graceful stop turns into SIGKILL and what to do about a long
// request. Pure functions of the pool's options, counts and times (no
// syscalls, no clock: every time is an argument), so each rule can be tested
// at its edges; ProcessManager gathers the counts, asks, and acts.
// docs/process-manager.md describes the rules for operators.

#include <cstddef>
#include <cstdint>
#include <deque>

namespace chatllm {

enum class PoolMode { kStatic, kDynamic, kOndemand };
// "static", "dynamic", "ondemand" (the [server] pm values).
const char* PoolModeName(PoolMode mode);

// How the master sizes and supervises its pool (docs/process-manager.md).
struct PoolOptions {
  PoolMode mode = PoolMode::kStatic;
  int max_children = 4;       // static: the pool size; dynamic, ondemand: the hard maximum.
  int start_workers = 2;      // dynamic: forked at start.
  int min_spare = 1;          // dynamic: fork when fewer workers are idle.
  int max_spare = 3;          // dynamic: retire idle workers above this.
  int idle_timeout_s = 10;    // ondemand: a worker idle this long exits (the worker enforces it).
  int threads = 1;            // Accept threads per worker.
  int request_timeout_s = 0;  // Kill a worker whose request runs longer (0: never).
  int slowlog_timeout_s = 0;  // Log requests that run longer (0: never).
  int shutdown_timeout_s = 30;
  // Crash-loop guard: more than crash_limit abnormal exits within
  // crash_window_s delay respawns, doubling from 100 ms to crash_max_delay_ms.
  int crash_limit = 10;
  int crash_window_s = 10;
  int crash_max_delay_ms = 5000;
};

// Workers the master forks before its first tick: static `max_children`,
// dynamic `start_workers` (at most `max_children`), ondemand none.
int InitialWorkers(const PoolOptions& options);

// What the master knows of its pool at one moment.
struct PoolState {
  int live = 0;  // Workers not told to stop.
  // Of those, workers with a thread waiting in accept, or forked less than
  // 2 s ago and not yet in the scoreboard (about to be idle).
  int idle = 0;
  // ondemand: a connection waits on the listen socket (the master polls it);
  // false on a timer tick.
  bool connection_waiting = false;
  // dynamic: how many workers this tick may fork at most (1, 2, 4 ... 32);
  // the previous plan's next_spawn_rate, 1 at start.
  int spawn_rate = 1;
  int64_t now_us = 0;          // Monotonic.
  int64_t last_retire_us = 0;  // dynamic: when an idle worker was last retired (0: never).
};

// What the master should do now. At most one of `fork` > 0 and
// `retire_idlest` is set.
struct PoolPlan {
  int fork = 0;  // Workers to fork (before any crash-loop delay).
  // dynamic: retire the worker idle the longest (one per second); the master
  // picks it from the scoreboard and, if it found one, records now as
  // last_retire_us.
  bool retire_idlest = false;
  // The pool wants a worker beyond max_children (counted in
  // max_children_reached: the sign that `workers` is too small).
  bool max_children_reached = false;
  // PoolState::spawn_rate for the next plan (static, ondemand: unchanged).
  int next_spawn_rate = 1;
};

// The pool's sizing rule for `options.mode` (the table in
// docs/process-manager.md): static refills to max_children; dynamic keeps
// min_spare..max_spare idle workers, forking 1, 2, 4 ... up to 32 per tick
// while short and retiring one idle worker per second while over; ondemand
// forks one worker for a waiting connection when none is idle (its idle
// workers leave by themselves after idle_timeout_s). Never plans beyond
// max_children live workers.
PoolPlan PlanPool(const PoolOptions& options, const PoolState& state);

// The crash-loop guard: remembers abnormal exits and says how long to hold
// off the next respawn. Not thread-safe (the master is one thread).
class CrashBackoff {
 public:
  // An abnormal worker exit (not planned, not during a stop) at `now_us`.
  void RecordCrash(int64_t now_us);
  // Called when the pool wants to fork: 0 while at most crash_limit crashes
  // fell within the last crash_window_s (and the delay starts over);
  // otherwise 100 ms, then twice the previous delay at each call, at most
  // crash_max_delay_ms.
  int64_t NextDelayMs(const PoolOptions& options, int64_t now_us);
  // Crashes within the window at the last NextDelayMs call (for the log).
  size_t recent() const { return recent_us_.size(); }

 private:
  std::deque<int64_t> recent_us_;
  int64_t delay_ms_ = 0;
};

// The SIGKILL deadline of a graceful stop that begins at `now_us`.
int64_t StopDeadline(const PoolOptions& options, int64_t now_us);
// During a stop with workers left: true when they must be SIGKILLed now,
// and then *deadline_us moves one second on, so that the KILL is repeated
// (once a second) until every worker is reaped.
bool StopEscalates(int64_t now_us, int64_t* deadline_us);

enum class RequestVerdict {
  kNone,     // Within its limits, or already dealt with.
  kSlowLog,  // Log it (once) and count it in slow_requests.
  kKill,     // SIGKILL its worker (once) and count it in killed_requests.
};
// A request its worker has held for `elapsed_us`: killed once it has run
// longer than request_timeout_s, logged once it has run longer than
// slowlog_timeout_s (0 disables either). `worker_killed`: its worker was
// already SIGKILLed; `slow_logged`: this request was already logged.
RequestVerdict JudgeRequest(const PoolOptions& options, int64_t elapsed_us, bool worker_killed, bool slow_logged);

}  // namespace chatllm
