#pragma once

// Private to the api room: the producer of a durable turn (sql/010_turns.sql,
// docs/architecture.md "Durable turns"). It sits between the provider and
// the client's stream: every delta goes to the client (while it is there)
// and into the turn's events, written in batches ([turns] flush_ms,
// flush_events) that also renew the producer's lease and tell it whether a
// cancel was asked for. A client that leaves does not stop it.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "api/turn.h"
#include "base/config.h"
#include "base/ids.h"
#include "providers/provider.h"
#include "store/db_error.h"
#include "store/store.h"

namespace chatllm {

// A turn id as the API spells it: 16 lowercase hex digits.
std::string TurnIdText(int64_t turn_id);
// nullopt unless `text` is 16 hex digits of a positive id.
std::optional<int64_t> ParseTurnId(std::string_view text);
// "/v1/sessions/{id}/turns/{turn}" (+ "/events" for the stream).
std::string TurnPath(const SessionId& session, int64_t turn_id);

// Sends through `stream` the events of `read` (a turn and its events after
// event `next`), then follows the live ones until the turn has ended and
// every event is out: each event as `frame(event)`, a keep-alive comment
// each second while none comes, a poll every [turns] poll_ms. Returns the
// turn's final row; nullopt when the client left, or the turn could no
// longer be read (then `fail(code, message)` was sent).
std::optional<TurnRecord> FollowTurn(const Config& config, Store* store, const SessionId& id, const UserId& user,
                                     TurnRead read, int64_t next, ResponseStream* stream,
                                     const std::function<std::string(const TurnEvent&)>& frame,
                                     const std::function<std::string(const Status&)>& fail);

// The observer of a durable turn's provider calls: passes each on to
// `next` (may be null) and, after a failed attempt, renews the turn's lease.
// A live producer so never goes longer than one attempt (the longest
// read_timeout_ms) and its backoff without renewing it.
class KeepLease : public Observer {
 public:
  KeepLease(Observer* next, DurableTurn* turn) : next_(next), turn_(turn) {}
  void OnQuery(const std::string& shard, int64_t micros, bool ok) override {
    if (next_) next_->OnQuery(shard, micros, ok);
  }
  void OnProviderCall(const std::string& provider, int64_t micros, bool ok) override;
  void OnTokens(const std::string& provider, const std::string& model, int64_t prompt, int64_t cached,
                int64_t completion, int64_t cost_nanos) override {
    if (next_) next_->OnTokens(provider, model, prompt, cached, completion, cost_nanos);
  }

 private:
  Observer* next_;
  DurableTurn* turn_;
};

class DurableTurn : public DeltaSink {
 public:
  // `client`: the presenter's sink (the live stream), may be null.
  DurableTurn(const Config& config, Store* store, const SessionId& id, const UserId& user, TurnProgress& progress,
              DeltaSink* client);

  // A random positive 63-bit number: a turn id, a producer's token.
  static int64_t NewToken();
  // Opens the turn of stored user message `user_seq` (throws DbError).
  // False when the session is gone.
  bool Open(int64_t user_seq);
  // Takes on the turn `turn_id` that opened with its user message (held by
  // `producer`: AppendRequest::open_turn).
  void Adopt(int64_t turn_id, int64_t producer);
  // Each delta: to the client, and into the events. False stops the
  // provider: a cancel was asked for, the turn was lost, or its events
  // could not be written.
  bool OnDelta(std::string_view text) override;
  // Writes the events still waiting. False as OnDelta (cancel_requested()
  // alone does not make it false: the text is whole).
  bool Flush() { return Write(false); }
  // Renews the lease (and learns of a cancel) with no event to write:
  // after each failed provider attempt, so that a retry or the next provider
  // of the chain starts with a whole lease (KeepLease).
  bool Heartbeat() { return Write(true); }

  // The events not yet written and the number of the first: the answer's
  // transaction writes them (AppendRequest::turn_events).
  const std::vector<std::string>& pending() const { return pending_; }
  int64_t next_event() const { return next_event_; }
  int64_t turn_id() const { return turn_id_; }
  int64_t producer() const { return producer_; }
  // Everything the provider sent, whether or not the client saw it.
  const std::string& text() const { return text_; }
  bool cancel_requested() const { return cancel_; }
  bool lost() const { return lost_; }
  // The events could not be written (a shard down): the error.
  const std::optional<DbError>& failed() const { return failed_; }
  // Why the provider was stopped, as the answer's finish_reason.
  const char* stop_reason() const;

 private:
  bool Write(bool even_none);

  const Config& config_;
  Store* store_;
  SessionId id_;
  UserId user_;
  TurnProgress& progress_;
  DeltaSink* client_;
  bool client_gone_ = false;
  int64_t turn_id_ = 0;
  int64_t producer_ = 0;
  int64_t next_event_ = 1;  // The number of the next event.
  std::vector<std::string> pending_;
  int64_t last_flush_us_ = 0;
  std::string text_;
  bool cancel_ = false;
  bool lost_ = false;
  std::optional<DbError> failed_;
};

}  // namespace chatllm
