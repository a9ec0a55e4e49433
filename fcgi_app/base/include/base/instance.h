#pragma once

// What an app instance offers the request handlers of its workers: hooks for
// its metrics, its per-user limits and its status. The instance (prefork)
// implements them; the handlers (api) use them; neither knows the other.

#include <cstdint>
#include <string>
#include <string_view>

namespace chatllm {

// Receives the timing of every database statement and provider call. The
// worker implements it to feed the shared-memory metrics and the current
// RequestTrace. Called on the thread doing the work.
class Observer {
 public:
  virtual ~Observer() = default;
  virtual void OnQuery(const std::string& shard, int64_t micros, bool ok) = 0;
  virtual void OnProviderCall(const std::string& provider, int64_t micros, bool ok) = 0;
  // An answer's tokens (-1: not reported) and cost in nano-USD (-1: no
  // [price.NAME] matched), by the provider and model that answered.
  virtual void OnTokens(const std::string& provider, const std::string& model, int64_t prompt, int64_t cached,
                        int64_t completion, int64_t cost_nanos) {}
  // A budget refused a turn: the user's or the key's (`of_key`), which one
  // (`kind` 1..6: tokens a day, a month, cost a day, a month, concurrent
  // turns, no price).
  virtual void OnBudgetRefusal(bool of_key, int kind) {}
};

// Per-user limits that hold across the threads and processes of one app
// instance (prefork's shared scoreboard implements them). Thread-safe.
class UserLimits {
 public:
  virtual ~UserLimits() = default;
  // Takes a place among the user's turns running at once on this instance,
  // unless `max_active` are already running; EndTurn gives it back. One turn
  // at a time per caller thread.
  virtual bool TryBeginTurn(std::string_view user, int max_active) = 0;
  virtual void EndTurn() = 0;
  // One token of the user's request-rate bucket (GCRA: `per_second`, bursts
  // of `burst`); false when empty.
  virtual bool TakeToken(std::string_view user, int per_second, int burst) = 0;
};

// The instance's own state, for its operator routes (/status, /metrics).
class InstanceReport {
 public:
  virtual ~InstanceReport() = default;
  // docs/process-manager.md: the pool and, with `full`, every worker thread.
  virtual std::string StatusJson(bool full) const = 0;
  // Prometheus text exposition format (docs/metrics.md).
  virtual std::string Metrics() const = 0;
};

}  // namespace chatllm
