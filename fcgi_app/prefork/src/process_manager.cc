#include "prefork/process_manager.h"

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "base/log.h"
#include "base/time_util.h"

namespace chatllm {
namespace {

constexpr int64_t kTickUs = 200000;  // Pool maintenance and request-time checks.

sigset_t MasterSignals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2}) sigaddset(&set, s);
  return set;
}

}  // namespace

int ProcessManager::SlotsNeeded(const PoolOptions& o) {
  // Room for one extra worker during a reload, and for reloads that grow the
  // pool up to 1024 worker threads.
  return std::max((o.max_children + 1) * o.threads, 1024);
}

ProcessManager::ProcessManager(PoolOptions options, Scoreboard* board, int listen_fd, WorkerMain worker_main,
                               Reload reload)
    : options_(options),
      board_(board),
      listen_fd_(listen_fd),
      worker_main_(std::move(worker_main)),
      reload_(std::move(reload)),
      slot_used_(static_cast<size_t>(board->slot_count()), false) {}

int ProcessManager::AllocateSlots(int n) {
  int run = 0;
  for (int i = 0; i < static_cast<int>(slot_used_.size()); ++i) {
    run = slot_used_[i] ? 0 : run + 1;
    if (run == n) {
      int first = i - n + 1;
      for (int k = first; k <= i; ++k) slot_used_[k] = true;
      return first;
    }
  }
  return -1;
}

pid_t ProcessManager::Spawn() {
  const int threads = options_.threads;
  const int first = AllocateSlots(threads);
  if (first < 0) {
    LOG_ERROR("master: no scoreboard room for another worker of %d threads", threads);
    return -1;
  }
  std::fflush(nullptr);  // Or buffered output is duplicated into the child.
  pid_t pid = fork();
  if (pid < 0) {
    LOG_ERROR("master: fork() failed while spawning a worker: %s", std::strerror(errno));
    for (int k = first; k < first + threads; ++k) slot_used_[k] = false;
    return -1;
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != master_pid_) _exit(1);  // The master died before prctl.
    ::close(signal_fd_);
    for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2}) signal(s, SIG_DFL);
    int rc = worker_main_(first, threads);
    std::fflush(nullptr);
    _exit(rc);  // Not exit(): the master's atexit handlers and statics are not ours.
  }
  Worker w;
  w.pid = pid;
  w.first_slot = first;
  w.threads = threads;
  w.generation = generation_;
  w.started_us = MonotonicMicros();
  workers_[pid] = w;
  board_->counters().worker_starts.fetch_add(1);
  LOG_INFO("master: started worker %d (%d live, %s pool, max %d)", pid, LiveWorkers(), PoolModeName(options_.mode),
           options_.max_children);
  return pid;
}

int ProcessManager::LiveWorkers() const {
  int n = 0;
  for (const auto& [pid, w] : workers_) n += !w.stopping;
  return n;
}

// A worker counts as ready once one of its threads waits in accept.
bool ProcessManager::WorkerReady(const Worker& w) const {
  for (int s = w.first_slot; s < w.first_slot + w.threads; ++s) {
    const WorkerSlot& slot = board_->slot(s);
    if (slot.pid.load() == w.pid && slot.state.load() == static_cast<uint8_t>(SlotState::kIdle)) return true;
  }
  return false;
}

// Idle: a thread waits in accept, or the worker is still starting (it will
// be idle in a moment: counting it avoids forking twice for one need).
bool ProcessManager::WorkerIdle(const Worker& w, int64_t now) const {
  if (w.stopping) return false;
  if (WorkerReady(w)) return true;
  bool claimed = false;
  for (int s = w.first_slot; s < w.first_slot + w.threads; ++s) claimed |= board_->slot(s).pid.load() == w.pid;
  return !claimed && now - w.started_us < 2000000;
}

int ProcessManager::IdleWorkers(int64_t now) const {
  int n = 0;
  for (const auto& [pid, w] : workers_) n += WorkerIdle(w, now);
  return n;
}

PoolState ProcessManager::StateAt(int64_t now) const {
  PoolState state;
  state.live = LiveWorkers();
  state.idle = IdleWorkers(now);
  state.spawn_rate = spawn_rate_;
  state.now_us = now;
  state.last_retire_us = last_retire_us_;
  return state;
}

void ProcessManager::Reap() {
  while (true) {
    int status = 0;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) break;
    auto it = workers_.find(pid);
    if (it == workers_.end()) continue;
    Worker w = it->second;
    workers_.erase(it);
    for (int s = w.first_slot; s < w.first_slot + w.threads; ++s) {
      if (board_->slot(s).pid.load() == pid) board_->Release(s);
      slot_used_[s] = false;
      slow_logged_.erase(s);
    }
    if (pid == replacement_) replacement_ = 0;
    bool planned = w.stopping || w.killed;
    if (WIFEXITED(status)) {
      int code = WEXITSTATUS(status);
      if (code == 0) {
        if (!w.stopping) board_->counters().worker_recycles.fetch_add(1);
        LOG_INFO("master: worker %d exited%s", pid, w.stopping ? "" : " (recycled)");
        continue;
      }
      LOG_WARN("master: worker %d exited with status %d", pid, code);
    } else if (WIFSIGNALED(status)) {
      if (stopping_ && WTERMSIG(status) == SIGKILL) planned = true;
      LOG_WARN("master: worker %d killed by signal %d (%s)%s", pid, WTERMSIG(status), strsignal(WTERMSIG(status)),
               WCOREDUMP(status) ? ", core dumped" : "");
    }
    if (!planned && !stopping_) {
      board_->counters().worker_crashes.fetch_add(1);
      crashes_.RecordCrash(MonotonicMicros());
    }
  }
}

void ProcessManager::Retire(Worker& w, const char* why) {
  if (w.stopping) return;
  w.stopping = true;
  LOG_INFO("master: retiring worker %d (%s)", w.pid, why);
  kill(w.pid, SIGTERM);
}

void ProcessManager::BeginStop(int signo) {
  if (stopping_) return;
  stopping_ = true;
  kill_deadline_us_ = StopDeadline(options_, MonotonicMicros());
  LOG_INFO("master: %s received; stopping %zu workers gracefully (up to %d s)", strsignal(signo), workers_.size(),
           options_.shutdown_timeout_s);
  for (auto& [pid, w] : workers_) {
    w.stopping = true;
    kill(pid, SIGTERM);
  }
}

void ProcessManager::HandleSignal(int signo) {
  switch (signo) {
    case SIGCHLD:
      break;  // Reaped at the top of the loop.
    case SIGTERM:
    case SIGINT:
    case SIGQUIT:
      BeginStop(signo);
      break;
    case SIGHUP:
    case SIGUSR2: {
      if (stopping_) break;
      PoolOptions next = options_;
      std::string error;
      if (!reload_ || !reload_(&next, &error)) {
        LOG_ERROR("master: reload refused, keeping the running configuration: %s", error.c_str());
        break;
      }
      if ((next.max_children + 1) * next.threads > board_->slot_count()) {
        LOG_ERROR("master: reload refused: %d workers x %d threads exceed the scoreboard (%d slots); restart instead",
                  next.max_children, next.threads, board_->slot_count());
        break;
      }
      options_ = next;
      ++generation_;
      board_->counters().reloads.fetch_add(1);
      LOG_INFO("master: configuration reloaded (%s pool, max %d); replacing %zu workers one by one",
               PoolModeName(options_.mode), options_.max_children, workers_.size());
      break;
    }
    case SIGUSR1: {
      std::string error;
      if (!LogReopen(&error))
        LOG_ERROR("master: reopening the log failed: %s", error.c_str());
      else
        LOG_INFO("master: log reopened");
      for (const auto& [pid, w] : workers_) kill(pid, SIGUSR1);
      break;
    }
    default:
      break;
  }
}

void ProcessManager::MaintainReload(int64_t now) {
  Worker* old = nullptr;
  for (auto& [pid, w] : workers_) {
    if (w.generation < generation_ && !w.stopping && (!old || WorkerIdle(w, now))) old = &w;
  }
  if (!old) return;
  if (replacement_ == 0) {
    // Start the successor first, so capacity never drops.
    replacement_ = Spawn();
    return;
  }
  auto it = workers_.find(replacement_);
  if (it != workers_.end() && !WorkerReady(it->second)) return;  // Still starting.
  replacement_ = 0;
  Retire(*old, "reload");
}

void ProcessManager::RetireIdlest(int64_t now) {
  Worker* pick = nullptr;
  int64_t oldest = INT64_MAX;
  for (auto& [pid, w] : workers_) {
    if (!WorkerReady(w) || w.stopping) continue;
    int64_t since = board_->slot(w.first_slot).state_since_us.load();
    if (since < oldest) {
      oldest = since;
      pick = &w;
    }
  }
  if (pick) {
    Retire(*pick, "more idle workers than max_spare_workers");
    last_retire_us_ = now;
  }
}

void ProcessManager::CheckRequestTimes(int64_t now) {
  for (auto& [pid, w] : workers_) {
    for (int s = w.first_slot; s < w.first_slot + w.threads; ++s) {
      const WorkerSlot& slot = board_->slot(s);
      if (slot.pid.load() != pid) continue;
      int64_t start = slot.request_start_us.load();
      if (start == 0) continue;
      double secs = (now - start) / 1e6;
      auto logged = slow_logged_.find(s);
      const bool slow_logged = logged != slow_logged_.end() && logged->second == start;
      RequestVerdict verdict = JudgeRequest(options_, now - start, w.killed, slow_logged);
      if (verdict == RequestVerdict::kKill) {
        w.killed = true;
        board_->counters().killed_requests.fetch_add(1);
        LOG_ERROR("master: request timeout: worker %d has run \"%s\" for %.1f s (limit %d s); killing it", pid,
                  board_->RequestOf(s).c_str(), secs, options_.request_timeout_s);
        kill(pid, SIGKILL);
      } else if (verdict == RequestVerdict::kSlowLog) {
        slow_logged_[s] = start;
        board_->counters().slow_requests.fetch_add(1);
        LOG_WARN("master: slow request: worker %d has run \"%s\" for %.1f s", pid, board_->RequestOf(s).c_str(), secs);
      }
    }
  }
}

void ProcessManager::Maintain(int64_t now) {
  CheckRequestTimes(now);
  if (stopping_) return;
  bool reloading = std::any_of(workers_.begin(), workers_.end(), [this](const auto& e) {
    return e.second.generation < generation_ && !e.second.stopping;
  });
  if (reloading) {
    MaintainReload(now);
    return;
  }
  if (now < next_spawn_us_) return;
  // ondemand plans nothing on a tick: it forks for waiting connections (Run's poll).
  PoolPlan plan = PlanPool(options_, StateAt(now));
  spawn_rate_ = plan.next_spawn_rate;
  if (plan.max_children_reached) board_->counters().max_children_reached.fetch_add(1);
  if (plan.retire_idlest) RetireIdlest(now);
  const int want = plan.fork;
  if (want <= 0) return;
  int64_t delay = crashes_.NextDelayMs(options_, now);
  if (delay > 0) {
    LOG_WARN("master: workers are crash-looping (%zu abnormal exits in %d s); next respawn in %lld ms",
             crashes_.recent(), options_.crash_window_s, static_cast<long long>(delay));
    next_spawn_us_ = now + delay * 1000;
    Spawn();  // One now; the rest after the delay.
    return;
  }
  for (int i = 0; i < want; ++i) Spawn();
}

int ProcessManager::Run() {
  master_pid_ = getpid();
  sigset_t set = MasterSignals();
  sigprocmask(SIG_BLOCK, &set, nullptr);
  signal_fd_ = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  if (signal_fd_ < 0) {
    LOG_ERROR("master: signalfd() failed: %s", std::strerror(errno));
    return 1;
  }
  LOG_INFO("master: %s pool, max %d workers x %d threads", PoolModeName(options_.mode), options_.max_children,
           options_.threads);
  for (int i = 0, initial = InitialWorkers(options_); i < initial; ++i) Spawn();

  while (true) {
    Reap();
    int64_t now = MonotonicMicros();
    if (stopping_) {
      if (workers_.empty()) break;
      if (StopEscalates(now, &kill_deadline_us_)) {
        LOG_WARN("master: %zu workers still busy after %d s; sending SIGKILL", workers_.size(),
                 options_.shutdown_timeout_s);
        for (const auto& [pid, w] : workers_) kill(pid, SIGKILL);
      }
    }
    Maintain(now);

    pollfd fds[2] = {{signal_fd_, POLLIN, 0}, {listen_fd_, POLLIN, 0}};
    bool watch_listen = !stopping_ && options_.mode == PoolMode::kOndemand && now >= listen_muted_until_;
    int n = ::poll(fds, watch_listen ? 2 : 1, static_cast<int>(kTickUs / 1000));
    if (n < 0 && errno != EINTR) LOG_ERROR("master: poll() failed: %s", std::strerror(errno));
    if (n > 0 && (fds[0].revents & POLLIN)) {
      signalfd_siginfo info;
      while (::read(signal_fd_, &info, sizeof(info)) == sizeof(info)) HandleSignal(static_cast<int>(info.ssi_signo));
    }
    // A reload handled just above may have left ondemand: then the new
    // mode's tick sizes the pool, not this connection.
    if (n > 0 && watch_listen && options_.mode == PoolMode::kOndemand && (fds[1].revents & POLLIN)) {
      int64_t t = MonotonicMicros();
      PoolState state = StateAt(t);
      state.connection_waiting = true;
      PoolPlan plan = PlanPool(options_, state);
      for (int i = 0; i < plan.fork; ++i) Spawn();
      if (plan.max_children_reached) board_->counters().max_children_reached.fetch_add(1);
      listen_muted_until_ = t + 50000;  // Give the worker time to accept.
    }
  }
  ::close(signal_fd_);
  LOG_INFO("master: all workers stopped; exiting");
  return 0;
}

}  // namespace chatllm
