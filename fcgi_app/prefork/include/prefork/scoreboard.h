#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace chatllm {

// What one worker thread is doing (php-fpm's scoreboard states).
enum class SlotState : uint8_t {
  kFree = 0,  // No thread owns the slot.
  kIdle,      // Waiting in accept.
  kReading,   // Reading the request from nginx.
  kHandling,  // Running the request (database, provider).
  kWriting,   // Writing the response.
};
const char* SlotStateName(SlotState s);

// A latency histogram in shared memory (Prometheus buckets, seconds).
struct SharedHistogram {
  static constexpr int kBuckets = 14;
  static const double kBounds[kBuckets];   // Upper bounds; the last is +Inf.
  std::atomic<uint64_t> counts[kBuckets];  // Per bucket (not cumulative).
  std::atomic<uint64_t> sum_us;
  std::atomic<uint64_t> count;
  void Observe(int64_t micros);
};

// Routes and statuses the request counters are kept for (fixed, so the
// shared memory has a fixed layout).
constexpr int kMetricRoutes = 32;  // At least the number of RouteId values (router.h; main.cc checks).
constexpr int kMetricStatuses = 18;
const int kMetricStatusCodes[kMetricStatuses] = {200, 201, 204, 400, 401, 404, 405, 409, 413,
                                                 415, 422, 429, 500, 502, 503, 504, 0,   -1};
// Index of `status` in kMetricStatusCodes (the last entry, -1, is "other").
int StatusIndex(int status);

// Per-name series (shards, providers) live in fixed slots claimed by name.
struct NamedSeries {
  // Shard and provider names have up to 64 characters, plus the NUL. A
  // longer name is kept, and looked up, as its first 64.
  static constexpr int kNameLen = 65;
  std::atomic<uint32_t> claimed;  // 0 free, 1 being written, 2 ready.
  char name[kNameLen];
  std::atomic<uint64_t> calls;
  std::atomic<uint64_t> errors;
  SharedHistogram latency;
};

// Tokens and cost by provider and model (Observer::OnTokens), claimed by
// name like NamedSeries; the name is "PROVIDER\tMODEL".
struct UsageSeries {
  static constexpr int kNameLen = 65 + 129;  // A provider name, a tab, a model name of up to 128.
  std::atomic<uint32_t> claimed;
  char name[kNameLen];
  std::atomic<uint64_t> answers;
  std::atomic<uint64_t> prompt_tokens;
  std::atomic<uint64_t> cached_tokens;
  std::atomic<uint64_t> completion_tokens;
  std::atomic<uint64_t> cost_nanos;  // Priced answers only.
};

// One worker thread's row of the scoreboard. Written by that thread only;
// the request text is guarded by a sequence counter so readers never see
// half of it.
struct WorkerSlot {
  static constexpr int kRequestLen = 192;
  std::atomic<pid_t> pid;
  std::atomic<uint8_t> state;
  std::atomic<uint32_t> seq;              // Odd while `request` is being written.
  std::atomic<int64_t> request_start_us;  // Monotonic; 0 between requests.
  std::atomic<int64_t> state_since_us;    // Monotonic time of the last state change.
  std::atomic<uint64_t> requests;         // Served by this thread.
  std::atomic<uint64_t> turn_user;        // UserKey() of the turn in progress; 0: none.
  char request[kRequestLen];              // "POST /v1/sessions/{id}/messages id=<request id>"
};

// Per-user request rate of one instance (user_requests_per_second): a small
// table in the shared memory. Lock-free (a process killed at any instruction
// leaves nothing locked): the bucket is one atomic, a GCRA "theoretical
// arrival time" (the generic cell rate algorithm, as in ATM and redis-cell).
struct UserSlot {
  std::atomic<uint64_t> key;    // UserKey(); 0: free.
  std::atomic<int64_t> tat_ns;  // Theoretical arrival time, monotonic ns.
};

// Shared memory between the master and its workers: the scoreboard and every
// metric, mapped before fork (MAP_SHARED) so one scrape of any worker shows
// the whole instance. Lock-free: counters are atomics; slots have one writer.
class Scoreboard {
 public:
  static constexpr int kMaxShards = 64;
  static constexpr int kMaxProviders = 16;
  static constexpr int kMaxUsage = 128;  // Provider and model pairs; more are not counted.
  static constexpr int kUserSlots = 4096;

  // Maps a region for `slots` worker threads. Aborts if mmap fails (at start-up only).
  explicit Scoreboard(int slots);
  ~Scoreboard();
  Scoreboard(const Scoreboard&) = delete;
  Scoreboard& operator=(const Scoreboard&) = delete;

  int slot_count() const { return slots_; }
  WorkerSlot& slot(int i);
  const WorkerSlot& slot(int i) const;

  // Slot use from a worker thread.
  void Claim(int i, pid_t pid);
  void SetState(int i, SlotState s);
  void BeginRequest(int i, std::string_view description);
  void EndRequest(int i);
  // A consistent copy of slot i's request text (or "" if it changed while read).
  std::string RequestOf(int i) const;
  void Release(int i);

  // Counters. Thread- and process-safe.
  void CountRequest(int route, int status, int64_t micros);
  NamedSeries* Shard(std::string_view name) { return Series(shards_, kMaxShards, name); }
  NamedSeries* Provider(std::string_view name) { return Series(providers_, kMaxProviders, name); }
  UsageSeries* Usage(std::string_view provider, std::string_view model);

  struct Counters {
    std::atomic<uint64_t> accepted;  // Connections accepted by workers.
    std::atomic<uint64_t> worker_starts;
    std::atomic<uint64_t> worker_crashes;   // Abnormal exits.
    std::atomic<uint64_t> worker_recycles;  // Exits after max_requests / idle timeout.
    std::atomic<uint64_t> max_children_reached;
    std::atomic<uint64_t> slow_requests;
    std::atomic<uint64_t> killed_requests;  // Workers killed by request_timeout.
    std::atomic<uint64_t> reloads;
    std::atomic<int64_t> started_unix;  // Master start time.
    // Turns a budget refused: [0] the user's, [1] a key's; by kind 1..6
    // (Observer::OnBudgetRefusal).
    std::atomic<uint64_t> budget_refusals[2][7];
  };
  Counters& counters();

  std::atomic<uint64_t>& requests(int route, int status);
  SharedHistogram& request_latency(int route);
  NamedSeries* shards() { return shards_; }
  NamedSeries* providers() { return providers_; }
  UsageSeries* usage() { return usage_; }

  // Per-user limits across this instance's workers.
  // TryBeginTurn marks slot `i` (the calling thread's) as running a turn of
  // `user` unless `max_active` turns of that user already run (0: no limit);
  // EndTurn clears it. The mark lives in the worker's own slot, so a worker
  // that dies mid-turn leaks nothing: the master frees its slot.
  bool TryBeginTurn(int i, std::string_view user, int max_active);
  void EndTurn(int i);
  // Spends one request of the user's budget: `per_second` on average, up to
  // `burst` at once (per_second 0: no limit; burst 0 counts as 1). Fails
  // open when the table is full. A refused request spends nothing.
  bool TakeToken(std::string_view user, int per_second, int burst);
  // The same at monotonic time `now_us` (MonotonicMicros()), so that a test
  // can pin the clock.
  bool TakeToken(std::string_view user, int per_second, int burst, int64_t now_us);
  static uint64_t UserKey(std::string_view user);

 private:
  struct Layout;
  static NamedSeries* Series(NamedSeries* table, int n, std::string_view name);
  template <class T>
  static T* Claim(T* table, int n, std::string_view name);

  int slots_;
  size_t bytes_;
  Layout* layout_;
  WorkerSlot* slot_array_;
  NamedSeries* shards_;
  NamedSeries* providers_;
  UsageSeries* usage_;
};

}  // namespace chatllm
