#include "prefork/scoreboard.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "base/time_util.h"

namespace chatllm {

const double SharedHistogram::kBounds[kBuckets] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                   0.25,  0.5,    1,     2.5,  5,     10,   1e300};

const char* SlotStateName(SlotState s) {
  switch (s) {
    case SlotState::kFree:
      return "free";
    case SlotState::kIdle:
      return "idle";
    case SlotState::kReading:
      return "reading";
    case SlotState::kHandling:
      return "handling";
    case SlotState::kWriting:
      return "writing";
  }
  return "?";
}

void SharedHistogram::Observe(int64_t micros) {
  double seconds = static_cast<double>(micros) / 1e6;
  int b = 0;
  while (b < kBuckets - 1 && seconds > kBounds[b]) ++b;
  counts[b].fetch_add(1, std::memory_order_relaxed);
  sum_us.fetch_add(static_cast<uint64_t>(micros < 0 ? 0 : micros), std::memory_order_relaxed);
  count.fetch_add(1, std::memory_order_relaxed);
}

int StatusIndex(int status) {
  for (int i = 0; i < kMetricStatuses - 1; ++i) {
    if (kMetricStatusCodes[i] == status) return i;
  }
  return kMetricStatuses - 1;
}

// The mapped region. Zero-filled by mmap: every atomic starts at 0.
struct Scoreboard::Layout {
  Counters counters;
  std::atomic<uint64_t> requests[kMetricRoutes][kMetricStatuses];
  SharedHistogram request_latency[kMetricRoutes];
  NamedSeries shards[kMaxShards];
  NamedSeries providers[kMaxProviders];
  UsageSeries usage[kMaxUsage];
  UserSlot users[kUserSlots];
  // WorkerSlot slots[] follow.
};

Scoreboard::Scoreboard(int slots) : slots_(slots) {
  bytes_ = sizeof(Layout) + sizeof(WorkerSlot) * static_cast<size_t>(slots);
  void* p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    std::perror("mmap(scoreboard)");
    std::abort();
  }
  // std::atomic of integral types is trivially zero-initializable; mmap gave zeros.
  layout_ = static_cast<Layout*>(p);
  slot_array_ = reinterpret_cast<WorkerSlot*>(static_cast<char*>(p) + sizeof(Layout));
  shards_ = layout_->shards;
  providers_ = layout_->providers;
  usage_ = layout_->usage;
  layout_->counters.started_unix.store(NowMicros() / 1000000);
}

Scoreboard::~Scoreboard() { munmap(layout_, bytes_); }

WorkerSlot& Scoreboard::slot(int i) { return slot_array_[i]; }

uint64_t Scoreboard::UserKey(std::string_view user) {
  uint64_t key = 0;
  std::memcpy(&key, user.data(), std::min<size_t>(user.size(), sizeof(key)));
  return key | 1;  // 0 marks "none".
}

bool Scoreboard::TryBeginTurn(int i, std::string_view user, int max_active) {
  if (max_active <= 0) return true;
  const uint64_t key = UserKey(user);
  WorkerSlot& mine = slot(i);
  // Announce first, then count (sequentially consistent): of two threads
  // racing for the last place at least one sees the other, so the limit is
  // never exceeded (both may back off; the client retries after Retry-After).
  mine.turn_user.store(key);
  int active = 0;
  for (int s = 0; s < slots_; ++s) {
    if (slot_array_[s].turn_user.load() == key) ++active;
  }
  if (active <= max_active) return true;
  mine.turn_user.store(0);
  return false;
}

void Scoreboard::EndTurn(int i) { slot(i).turn_user.store(0); }

bool Scoreboard::TakeToken(std::string_view user, int per_second, int burst) {
  if (per_second <= 0) return true;  // No clock read on the common path.
  return TakeToken(user, per_second, burst, MonotonicMicros());
}

bool Scoreboard::TakeToken(std::string_view user, int per_second, int burst, int64_t now_us) {
  if (per_second <= 0) return true;
  const uint64_t key = UserKey(user);
  const int64_t now = now_us * 1000;
  const int64_t interval = 1000000000LL / per_second;
  const int64_t tolerance = interval * std::max(burst - 1, 0);
  constexpr int64_t kIdleNs = 60LL * 1000000000;  // A slot idle this long may be taken over.
  for (int probe = 0; probe < 16; ++probe) {
    UserSlot& u = layout_->users[(key + static_cast<uint64_t>(probe)) % kUserSlots];
    uint64_t owner = u.key.load();
    if (owner != key) {
      const bool stale = owner != 0 && u.tat_ns.load() < now - kIdleNs;
      if ((owner != 0 && !stale) || !u.key.compare_exchange_strong(owner, key)) continue;
      u.tat_ns.store(0);
    }
    int64_t tat = u.tat_ns.load();
    for (;;) {
      const int64_t start = std::max(tat, now);
      if (start - now > tolerance) return false;
      if (u.tat_ns.compare_exchange_weak(tat, start + interval)) return true;
    }
  }
  return true;
}
const WorkerSlot& Scoreboard::slot(int i) const { return slot_array_[i]; }
Scoreboard::Counters& Scoreboard::counters() { return layout_->counters; }
std::atomic<uint64_t>& Scoreboard::requests(int route, int status) { return layout_->requests[route][status]; }
SharedHistogram& Scoreboard::request_latency(int route) { return layout_->request_latency[route]; }

void Scoreboard::Claim(int i, pid_t pid) {
  WorkerSlot& s = slot(i);
  s.pid.store(pid);
  s.requests.store(0);
  s.request_start_us.store(0);
  s.turn_user.store(0);
  SetState(i, SlotState::kIdle);
}

void Scoreboard::SetState(int i, SlotState st) {
  WorkerSlot& s = slot(i);
  s.state.store(static_cast<uint8_t>(st), std::memory_order_release);
  s.state_since_us.store(MonotonicMicros(), std::memory_order_relaxed);
}

void Scoreboard::BeginRequest(int i, std::string_view description) {
  WorkerSlot& s = slot(i);
  s.seq.fetch_add(1, std::memory_order_acq_rel);  // Odd: writing.
  size_t n = std::min(description.size(), sizeof(s.request) - 1);
  std::memcpy(s.request, description.data(), n);
  s.request[n] = '\0';
  s.seq.fetch_add(1, std::memory_order_acq_rel);  // Even: stable.
  s.request_start_us.store(MonotonicMicros(), std::memory_order_release);
}

void Scoreboard::EndRequest(int i) {
  WorkerSlot& s = slot(i);
  s.request_start_us.store(0, std::memory_order_release);
  s.requests.fetch_add(1, std::memory_order_relaxed);
}

std::string Scoreboard::RequestOf(int i) const {
  const WorkerSlot& s = slot(i);
  for (int attempt = 0; attempt < 4; ++attempt) {
    uint32_t before = s.seq.load(std::memory_order_acquire);
    if (before & 1) continue;
    char copy[WorkerSlot::kRequestLen];
    std::memcpy(copy, s.request, sizeof(copy));
    std::atomic_thread_fence(std::memory_order_acquire);
    if (s.seq.load(std::memory_order_acquire) == before) {
      copy[sizeof(copy) - 1] = '\0';
      return copy;
    }
  }
  return "";
}

void Scoreboard::Release(int i) {
  WorkerSlot& s = slot(i);
  s.request_start_us.store(0);
  s.turn_user.store(0);
  s.state.store(static_cast<uint8_t>(SlotState::kFree));
  s.pid.store(0);
}

void Scoreboard::CountRequest(int route, int status, int64_t micros) {
  if (route < 0 || route >= kMetricRoutes) return;
  layout_->requests[route][StatusIndex(status)].fetch_add(1, std::memory_order_relaxed);
  layout_->request_latency[route].Observe(micros);
}

template <class T>
T* Scoreboard::Claim(T* table, int n, std::string_view name) {
  if (name.empty()) return nullptr;
  // Compare what fits in a slot: a longer name compared whole would never
  // match its stored copy and claim a new slot at each call.
  name = name.substr(0, sizeof(T::name) - 1);
  for (int i = 0; i < n; ++i) {
    T& s = table[i];
    uint32_t state = s.claimed.load(std::memory_order_acquire);
    if (state == 2 && name == s.name) return &s;
    if (state == 0) {
      uint32_t expected = 0;
      if (s.claimed.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) {
        std::memcpy(s.name, name.data(), name.size());
        s.name[name.size()] = '\0';
        s.claimed.store(2, std::memory_order_release);
        return &s;
      }
    }
    // Another writer is naming this slot: wait for it, then compare.
    while (s.claimed.load(std::memory_order_acquire) == 1) {
    }
    if (name == s.name) return &s;
  }
  return nullptr;  // Table full: not counted.
}

NamedSeries* Scoreboard::Series(NamedSeries* table, int n, std::string_view name) { return Claim(table, n, name); }

UsageSeries* Scoreboard::Usage(std::string_view provider, std::string_view model) {
  std::string name(provider.substr(0, 64));
  name += '\t';
  name += model.substr(0, 128);
  return Claim(usage_, kMaxUsage, name);
}

}  // namespace chatllm
