#include "prefork/pool_policy.h"

#include <algorithm>

namespace chatllm {
namespace {

// dynamic: one idle worker retired per second at most, like php-fpm.
constexpr int64_t kRetireIntervalUs = 1000000;
constexpr int kMaxSpawnRate = 32;           // dynamic: forks per tick at most.
constexpr int64_t kKillRepeatUs = 1000000;  // A stop's SIGKILL is repeated this often.
constexpr int64_t kFirstCrashDelayMs = 100;

PoolPlan PlanDynamic(const PoolOptions& o, const PoolState& s) {
  PoolPlan plan;
  if (s.idle > o.max_spare) {
    // Over: shrink slowly, so that a pause between two bursts does not cost
    // the next burst its workers.
    plan.retire_idlest = s.now_us - s.last_retire_us >= kRetireIntervalUs;
    return plan;
  }
  if (s.idle >= o.min_spare) return plan;
  if (s.live >= o.max_children) {
    plan.max_children_reached = true;
    plan.next_spawn_rate = s.spawn_rate;  // Still short: keep the pace for when room appears.
    return plan;
  }
  // Short of spare workers: the batch doubles each tick while the need
  // lasts, so a burst is met in a few ticks without a fork storm for a
  // blip.
  plan.fork = std::min({o.min_spare - s.idle, s.spawn_rate, o.max_children - s.live});
  plan.next_spawn_rate = std::min(s.spawn_rate * 2, kMaxSpawnRate);
  return plan;
}

}  // namespace

const char* PoolModeName(PoolMode mode) {
  switch (mode) {
    case PoolMode::kStatic:
      return "static";
    case PoolMode::kDynamic:
      return "dynamic";
    case PoolMode::kOndemand:
      return "ondemand";
  }
  return "?";
}

int InitialWorkers(const PoolOptions& o) {
  switch (o.mode) {
    case PoolMode::kStatic:
      return o.max_children;
    case PoolMode::kDynamic:
      return std::min(o.start_workers, o.max_children);
    case PoolMode::kOndemand:
      return 0;
  }
  return 0;
}

PoolPlan PlanPool(const PoolOptions& o, const PoolState& s) {
  if (o.mode == PoolMode::kDynamic) return PlanDynamic(o, s);
  PoolPlan plan;
  plan.next_spawn_rate = s.spawn_rate;  // Only the dynamic rule paces its forks.
  if (o.mode == PoolMode::kStatic) {
    plan.fork = std::max(o.max_children - s.live, 0);
    return plan;
  }
  // ondemand: only a waiting connection that no idle worker will take asks
  // for a fork; idle workers retire themselves.
  if (!s.connection_waiting || s.idle > 0) return plan;
  if (s.live < o.max_children) {
    plan.fork = 1;
  } else {
    plan.max_children_reached = true;
  }
  return plan;
}

void CrashBackoff::RecordCrash(int64_t now_us) { recent_us_.push_back(now_us); }

int64_t CrashBackoff::NextDelayMs(const PoolOptions& o, int64_t now_us) {
  const int64_t window = int64_t{o.crash_window_s} * 1000000;
  while (!recent_us_.empty() && now_us - recent_us_.front() > window) recent_us_.pop_front();
  if (static_cast<int>(recent_us_.size()) <= o.crash_limit) {
    delay_ms_ = 0;
    return 0;
  }
  delay_ms_ = delay_ms_ == 0 ? kFirstCrashDelayMs : std::min<int64_t>(delay_ms_ * 2, o.crash_max_delay_ms);
  return delay_ms_;
}

int64_t StopDeadline(const PoolOptions& o, int64_t now_us) { return now_us + int64_t{o.shutdown_timeout_s} * 1000000; }

bool StopEscalates(int64_t now_us, int64_t* deadline_us) {
  if (now_us < *deadline_us) return false;
  *deadline_us = now_us + kKillRepeatUs;
  return true;
}

RequestVerdict JudgeRequest(const PoolOptions& o, int64_t elapsed_us, bool worker_killed, bool slow_logged) {
  auto over = [elapsed_us](int limit_s) { return limit_s > 0 && elapsed_us > int64_t{limit_s} * 1000000; };
  if (over(o.request_timeout_s) && !worker_killed) return RequestVerdict::kKill;
  if (over(o.slowlog_timeout_s) && !slow_logged) return RequestVerdict::kSlowLog;
  return RequestVerdict::kNone;
}

}  // namespace chatllm
