// The producer of a durable turn (durable_turn.h).

#include "durable_turn.h"

#include <cstdio>

#include "base/log.h"
#include "base/time_util.h"
#include "store/db_error.h"

namespace chatllm {
namespace {

// A random positive 63-bit number (a turn id, a producer token).
int64_t RandomPositive() {
  int64_t v = 0;
  while (v == 0) {
    RandomBytes(&v, sizeof(v));
    v &= INT64_MAX;
  }
  return v;
}

}  // namespace

std::string TurnIdText(int64_t turn_id) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(turn_id));
  return buf;
}

std::optional<int64_t> ParseTurnId(std::string_view text) {
  if (text.size() != 16) return std::nullopt;
  uint64_t v = 0;
  for (char c : text) {
    int d;
    if (c >= '0' && c <= '9')
      d = c - '0';
    else if (c >= 'a' && c <= 'f')
      d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
      d = c - 'A' + 10;
    else
      return std::nullopt;
    v = v << 4 | static_cast<uint64_t>(d);
  }
  if (v == 0 || v > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
  return static_cast<int64_t>(v);
}

std::string TurnPath(const SessionId& session, int64_t turn_id) {
  return "/v1/sessions/" + session.text() + "/turns/" + TurnIdText(turn_id);
}

DurableTurn::DurableTurn(const Config& config, Store* store, const SessionId& id, const UserId& user,
                         TurnProgress& progress, DeltaSink* client)
    : config_(config), store_(store), id_(id), user_(user), progress_(progress), client_(client) {}

int64_t DurableTurn::NewToken() { return RandomPositive(); }

bool DurableTurn::Open(int64_t user_seq) {
  turn_id_ = RandomPositive();
  producer_ = RandomPositive();
  last_flush_us_ = MonotonicMicros();
  return store_->OpenTurn(id_, user_, turn_id_, user_seq, producer_, config_.turn_lease_ms);
}

void DurableTurn::Adopt(int64_t turn_id, int64_t producer) {
  turn_id_ = turn_id;
  producer_ = producer;
  last_flush_us_ = MonotonicMicros();
}

bool DurableTurn::OnDelta(std::string_view text) {
  if (client_ && !client_gone_) {
    progress_.NextEventId(next_event_ + static_cast<int64_t>(pending_.size()));
    // A client that left does not stop the turn: it can read it again.
    if (!client_->OnDelta(text)) client_gone_ = true;
  }
  text_.append(text);
  pending_.emplace_back(text);
  if (static_cast<int>(pending_.size()) >= config_.turn_flush_events ||
      MonotonicMicros() - last_flush_us_ >= int64_t{config_.turn_flush_ms} * 1000) {
    return Flush() && !cancel_;
  }
  return true;
}

void KeepLease::OnProviderCall(const std::string& provider, int64_t micros, bool ok) {
  if (next_) next_->OnProviderCall(provider, micros, ok);
  if (!ok) turn_->Heartbeat();
}

bool DurableTurn::Write(bool even_none) {
  last_flush_us_ = MonotonicMicros();
  if ((pending_.empty() && !even_none) || lost_ || failed_) return !lost_ && !failed_;
  TurnWrite w;
  try {
    w = store_->FlushTurn(id_, user_, turn_id_, producer_, next_event_, pending_, config_.turn_lease_ms);
  } catch (const DbError& e) {
    LOG_WARN("session %s: turn %016llx: storing its events failed; stopping it: %s", id_.text().c_str(),
             static_cast<unsigned long long>(turn_id_), e.what());
    failed_ = e;
    return false;
  }
  if (w == TurnWrite::kLost) {
    LOG_WARN("session %s: turn %016llx is no longer this worker's (its lease ran out); stopping it", id_.text().c_str(),
             static_cast<unsigned long long>(turn_id_));
    lost_ = true;
    return false;
  }
  next_event_ += static_cast<int64_t>(pending_.size());
  pending_.clear();
  if (w == TurnWrite::kCancelRequested) cancel_ = true;
  return true;
}

const char* DurableTurn::stop_reason() const { return cancel_ ? "cancelled" : "provider_error"; }

}  // namespace chatllm
