#pragma once

#include <cstdint>
#include <optional>
#include <string>
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

  // Creates `session` (owned by session.user_id). With `idem`, the key is
  // recorded in the same transaction, answered by `status`/`response` on a
  // replay; a result other than kNew means nothing was created.
  virtual IdempotencyResult CreateSession(const SessionId& id, const SessionRecord& session, const IdempotencyKey* idem,
                                          int status, const std::string& response) = 0;
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
  // The user's sessions, newest first, after `cursor`.
  virtual SessionPage ListSessions(const UserId& user, const SessionCursor& cursor, int limit) = 0;
  // How many sessions the user has (for max_sessions_per_user).
  virtual int64_t CountSessions(const UserId& user) = 0;
  // The stored record of an API key; nullopt when it is not known.
  virtual std::optional<KeyRecord> LookupApiKey(const std::string& key_id) = 0;
  // Every shard's state, for /readyz.
  virtual std::vector<ShardStatus> CheckShards() = 0;
  // The shard map epoch the last operation was routed with (X-Shard-Map-Epoch).
  virtual uint64_t last_epoch() const = 0;
};

}  // namespace chatllm
