#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/ids.h"
#include "store/records.h"

namespace chatllm {

// Chat history, sessions, idempotency keys and API keys, as the API sees
// them: what it asks, not where the rows are. ShardedStore (the shards) is
// the implementation; tests of the API layer use an in-memory one. One per
// worker thread; not thread-safe.
//
// Every operation on a session takes the caller's UserId: a session of
// another user is handled exactly like one that does not exist. Failures
// (a shard down, a broken connection, an SQL error) throw DbError
// (store/db_error.h); expected outcomes are return values.
class Store {
 public:
  virtual ~Store() = default;

  // Creates `session` (owned by session.user_id) and lists it on the
  // user's home. With `idem`, the key is recorded in the same transaction
  // as the session, answered by `status`/`response` on a replay; a result
  // other than kNew means nothing was created. kOverLimit: the user already
  // has `max_sessions` (0: no limit), counted exactly (a retry of a create
  // that was counted is not counted again).
  virtual IdempotencyResult CreateSession(const SessionId& id, const SessionRecord& session, const IdempotencyKey* idem,
                                          int status, const std::string& response, int64_t max_sessions) = 0;
  virtual std::optional<SessionRecord> GetSession(const SessionId& id, const UserId& user) = 0;
  // True if the session existed; its messages and keys are deleted with it.
  // A session created with a key stays gone for good within the key's TTL:
  // a late retry of the create is replayed, not run again.
  virtual bool DeleteSession(const SessionId& id, const UserId& user) = 0;
  // Appends one message under the session's row lock (see AppendRequest):
  // dense seq from 1. Messages with the same content are distinct messages:
  // only an Idempotency-Key makes two requests one.
  virtual AppendResult Append(const SessionId& id, const UserId& user, const AppendRequest& request) = 0;
  // After a keyed turn stored its user message and then failed: marks the
  // key failed, if `attempt` still holds it, so that a retry with the same
  // key and body answers that message instead of storing it again. Best
  // effort (never throws): a key left running is taken over after
  // idempotency_lease_s.
  virtual void FailTurnKey(const SessionId& id, const UserId& user, const IdempotencyKey& key, int64_t attempt) = 0;
  // Up to `limit` messages with seq > `after`, ascending; nullopt when the
  // session does not exist. One indexed range read, whatever the history length.
  virtual std::optional<std::vector<MessageRecord>> ListMessages(const SessionId& id, int64_t after, int limit,
                                                                 const UserId& user) = 0;
  // The messages with these seqs that exist, ascending; nullopt when the
  // session does not exist.
  virtual std::optional<std::vector<MessageRecord>> ReadMessages(const SessionId& id, const std::vector<int64_t>& seqs,
                                                                 const UserId& user) = 0;
  // The session's model and system prompt, and its newest messages (at most
  // `limit`) whose estimated tokens (EstimateTokens) add up to at most
  // `token_budget`, oldest first: the context of a turn. nullopt when the
  // session does not exist.
  virtual std::optional<TurnContext> LoadContext(const SessionId& id, int limit, int64_t token_budget,
                                                 const UserId& user) = 0;
  // The user's sessions, newest first, after `cursor`, with the fields
  // that never change after the create (message_count and updated_at are
  // 0: GetSession has them). A page may hold fewer than `limit` sessions
  // while more follow (entries whose session is not confirmed are left
  // out): has_more says.
  virtual SessionPage ListSessions(const UserId& user, const SessionCursor& cursor, int limit) = 0;
  // Durable turns (sql/010_turns.sql). A producer opens the turn of its
  // stored user message `user_seq`, holding it by the token `producer` for
  // `lease_ms`; false when the session does not exist.
  virtual bool OpenTurn(const SessionId& id, const UserId& user, int64_t turn_id, int64_t user_seq, int64_t producer,
                        int64_t lease_ms) = 0;
  // Stores events first, first + 1, ... (`texts`, in order) and renews the lease.
  virtual TurnWrite FlushTurn(const SessionId& id, const UserId& user, int64_t turn_id, int64_t producer, int64_t first,
                              const std::vector<std::string>& texts, int64_t lease_ms) = 0;
  // Ends a turn with no answer stored ("failed" or "cancelled"); an answer
  // ends it in its own transaction (AppendRequest::close_turn).
  virtual TurnWrite CloseTurn(const SessionId& id, const UserId& user, int64_t turn_id, int64_t producer,
                              std::string_view state) = 0;
  // The turn (turn_id 0 when there is none) and up to `limit` of its events
  // after `after`; nullopt when the session does not exist. A turn whose
  // lease ran out is made 'incomplete' first.
  virtual std::optional<TurnRead> ReadTurn(const SessionId& id, const UserId& user, int64_t turn_id, int64_t after,
                                           int limit) = 0;
  // Asks the turn's producer to stop; false when the session does not exist.
  virtual bool CancelTurn(const SessionId& id, const UserId& user, int64_t turn_id) = 0;
  // The stored record of an API key; nullopt when it is not known.
  virtual std::optional<KeyRecord> LookupApiKey(const std::string& key_id) = 0;
  // Usage and budgets (sql/011_usage.sql), each on the user's home. The
  // defaults keep no ledger (a store without one, as the API's tests use).
  // HoldUsage returns a UsageHoldCode or a refusal (-11..-26); with
  // kUsageHeld, `room` says what the budgets have left.
  virtual int HoldUsage(const UserId& user, const UsageHold& hold, UsageRoom* room) { return kUsageNoHome; }
  // The hold's answer is stored: the ledger counts `used` (once, whoever
  // settles). False when the hold was settled already.
  virtual bool SettleUsage(const UserId& user, const std::string& hold_id, const UsageAmount& used) { return false; }
  virtual void ReleaseUsage(const UserId& user, const std::string& hold_id) {}
  // The answer of a turn that held nothing (kUsageNotHeld): the ledger counts `used`.
  virtual void AddUsage(const UserId& user, const std::string& key_id, const UsageAmount& used) {}
  // Holds whose lease ran out: settled from their stored answer (the
  // session's shard is asked), else released. Returns how many.
  virtual int ReapUsage(const UserId& user) { return 0; }
  // The ledger between two UTC days (YYYY-MM-DD, inclusive).
  virtual std::vector<UsageRow> ReadUsage(const UserId& user, const std::string& from, const std::string& to) {
    return {};
  }
  // The budgets that apply to `key_id` (the user's and the key's), and where they stand.
  virtual UsageState ReadUsageState(const UserId& user, const std::string& key_id) { return {}; }
  // Every shard's state, for /readyz.
  virtual std::vector<ShardStatus> CheckShards() = 0;
  // The shard map epoch the last operation was routed with (X-Shard-Map-Epoch).
  virtual uint64_t last_epoch() const = 0;
};

}  // namespace chatllm
