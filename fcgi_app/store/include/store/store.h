#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "store/cluster_map.h"
#include "base/config.h"
#include "store/db_connection.h"
#include "base/ids.h"
#include "base/instance.h"

namespace chatllm {

// What the shards store for one key (Store::LookupApiKey).
struct KeyRecord {
  std::string user_id;        // 16 raw bytes.
  std::string secret_sha256;  // 32 raw bytes.
  int64_t expires_us = 0;     // 0: never.
  bool revoked = false;
  bool user_disabled = false;
};

// A user: 16 raw bytes, or empty when authentication is off ([auth]
// required = false): sessions created then have no owner and are visible
// only to requests made without authentication.
using UserId = std::string;

struct SessionRecord {
  std::optional<std::string> title;
  std::string metadata_json = "{}";  // A compact JSON object.
  int64_t message_count = 0;
  int64_t created_us = 0;  // Unix microseconds, UTC.
  int64_t updated_us = 0;
  std::optional<std::string> model;          // Set at creation; never changes.
  std::optional<std::string> system_prompt;  // Set at creation; never changes.
  UserId user_id;                            // The owner.
};

// A position in a user's session list (newest first).
struct SessionCursor {
  int64_t created_us = INT64_MAX;
  std::string id_bytes;  // Empty: from the newest.
};

struct SessionPage {
  std::vector<std::pair<SessionId, SessionRecord>> sessions;  // Newest first.
  bool has_more = false;
};

// An Idempotency-Key (docs/api.md, "Idempotency"): scoped to the user and
// the request target; `request_sha` tells a retry from a different request.
struct IdempotencyKey {
  std::string key;          // The header's value, 1..255 bytes.
  std::string target_sha;   // 16 bytes: IdempotencyTargetSha(target).
  std::string request_sha;  // 32 bytes: SHA-256 of the target and the body.
};

// The scope of a key: the first 16 bytes of SHA-256 of `target`, which
// names what the request writes ("POST /v1/sessions", "POST
// /v1/sessions/{id}/messages", "POST /v1/chat/completions" and the session).
std::string IdempotencyTargetSha(std::string_view target);
// The target of session creation: a deleted session keeps its create's key.
inline constexpr std::string_view kCreateSessionTarget = "POST /v1/sessions";

enum class IdempotencyOutcome {
  kNew,       // First use: the write goes ahead.
  kReplay,    // Done before: `status`/`response` are what it answered.
  kInFlight,  // The first request is still running: 409.
  kMismatch,  // Used before for a different request: 422.
};

struct IdempotencyResult {
  IdempotencyOutcome outcome = IdempotencyOutcome::kNew;
  int status = 0;
  std::string response;
};

// One message to append (Store::Append).
struct AppendRequest {
  std::string_view role;
  std::string_view content;
  int64_t created_us = 0;
  int64_t reply_to = 0;          // 0: none.
  std::string_view meta_json;    // A JSON object, or "".
  int64_t max_messages = 0;      // Refuse when the session holds this many (0: no limit).
  // A user message: the request's Idempotency-Key, claimed for `attempt`
  // in the same statement that stores the message (sql/007_acknowledged.sql).
  // A key whose earlier request stored its user message and then failed (or
  // ran past idempotency_lease_s) is taken over: nothing is stored and the
  // result names that message (`reused`).
  const IdempotencyKey* claim = nullptr;
  // An answer: the key its turn claimed, completed in the answer's
  // transaction with the status and body `respond` builds from the answer's
  // seq, if `attempt` still holds it; if another attempt took it over,
  // nothing is stored (`taken_over`).
  const IdempotencyKey* complete = nullptr;
  std::function<std::pair<int, std::string>(int64_t seq)> respond;
  int64_t attempt = 0;  // With claim/complete: this request's token (random, not 0).
};

struct AppendResult {
  int64_t seq = 0;      // 0: no such session (for this user).
  bool reused = false;  // `claim` took an earlier attempt over: `seq` is its stored user message.
  bool full = false;    // max_messages reached; nothing stored.
  bool taken_over = false;  // `complete`: another attempt holds the key now; nothing stored.
  IdempotencyResult idempotency;  // For `claim`: not kNew means nothing was stored.
};

struct MessageRecord {
  int64_t seq = 0;
  std::string role;
  std::string content;
  int64_t reply_to = 0;  // 0: none (user messages).
  int64_t created_us = 0;
  std::string meta_json;  // A JSON object, or "" (sql/003_message_meta.sql).
};

// What a turn sends to the provider besides the new message, read in one
// statement (Store::LoadContext).
struct TurnContext {
  std::string model;                    // The session's; "" for none.
  std::string system_prompt;            // "" for none.
  std::vector<MessageRecord> messages;  // Oldest first; seq, role and content only.
};

struct ShardStatus {
  std::string name;
  bool up = false;
  int schema_version = 0;
  std::string error;  // Why it is not up; never contains credentials.
};

// Chat history on the shards. One Store per worker thread: it owns one
// connection per shard and the prepared statements on it (not thread-safe).
//
// Routing: the newest shard map the store has seen (ClusterMap) names each
// session's owner and, during a move, its previous owner; an operation tries
// them in that order. Each shard answers for itself where the session stands
// (sql/002_shard_map.sql): here, absent, moving (a write waits up to
// move_wait_ms and retries), moved or fenced (the map is stale: reload it
// from the shards and retry). Writes carry the map's epoch and run as one
// fenced stored-function call: one round trip, one transaction.
//
// Failures throw DbError. Deadlocks and lock waits are re-run up to
// max_retries; reads are re-run once on a lost connection; writes never are,
// because a lost connection leaves their outcome unknown.
class Store {
 public:
  // Starts from map_file if configured (trusted until the first periodic
  // refresh or a shard's refusal), else from the seed shards (all active,
  // epoch 0), which the first operation replaces with the newest stored map.
  // No I/O here. Throws ConfigError if the seeds or the file are invalid.
  explicit Store(const Config& config);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Every operation on a session takes the caller's UserId: a session of
  // another user is handled exactly like one that does not exist.

  // Creates `session` (owned by session.user_id). With `idem`, the key is
  // recorded in the same transaction, answered by `status`/`response` on a
  // replay; a result other than kNew means nothing was created. A keyed
  // id (derived from the key) is looked for on every shard the map may
  // still hold it on before it is created on its owner: a retry during a
  // move finds the earlier attempt's session instead of making a second.
  IdempotencyResult CreateSession(const SessionId& id, const SessionRecord& session,
                                  const IdempotencyKey* idem = nullptr, int status = 0,
                                  const std::string& response = "");
  std::optional<SessionRecord> GetSession(const SessionId& id, const UserId& user = "");
  // True if the session existed; its messages and keys are deleted in the
  // same transaction. A session created with a key stays as a 'deleted'
  // tombstone holding that key until it expires, so that a late retry of
  // the create is replayed instead of creating it again.
  bool DeleteSession(const SessionId& id, const UserId& user = "");
  // Appends one message under the session's row lock (see AppendRequest):
  // dense seq from 1. Messages with the same content are distinct messages:
  // only an Idempotency-Key makes two requests one.
  AppendResult Append(const SessionId& id, const UserId& user, const AppendRequest& request);
  // Shorthand for tests and tools: Append for no user; returns the seq.
  int64_t AppendMessage(const SessionId& id, std::string_view role, std::string_view content,
                        int64_t created_us, int64_t reply_to, std::string_view meta_json = "");
  // After a keyed turn stored its user message and then failed: marks the
  // key failed, if `attempt` still holds it, so that a retry with the same
  // key and body answers that message instead of storing it again. Best
  // effort: a key left running is taken over after idempotency_lease_s.
  void FailTurnKey(const SessionId& id, const UserId& user, const IdempotencyKey& key, int64_t attempt);
  // Up to `limit` messages with seq > `after`, ascending; nullopt when the
  // session does not exist. One indexed range read, whatever the history length.
  std::optional<std::vector<MessageRecord>> ListMessages(const SessionId& id, int64_t after, int limit,
                                                         const UserId& user = "");
  // The session's model and system prompt, and its newest messages (at most
  // `limit`) whose estimated tokens (EstimateTokens) add up to at most
  // `token_budget`, oldest first: the context of a turn. One statement: a
  // primary-key read and a bounded index range, whatever the history
  // length. nullopt when the session does not exist.
  std::optional<TurnContext> LoadContext(const SessionId& id, int limit, int64_t token_budget,
                                         const UserId& user = "");

  // The user's sessions, newest first, after `cursor`: one index range read
  // (user_id, created_at, session_id) per shard of the map, merged. Its cost
  // grows with the number of shards, not with the number of sessions.
  SessionPage ListSessions(const UserId& user, const SessionCursor& cursor, int limit);
  // How many sessions the user has, over every shard (for max_sessions_per_user).
  int64_t CountSessions(const UserId& user);
  // The stored record of an API key: from the shard its id hashes to, or
  // from any other when that one cannot answer (every shard has a copy).
  // nullopt when no shard knows the key.
  std::optional<KeyRecord> LookupApiKey(const std::string& key_id);

  // Connects to (or pings) every shard of the map and reads its schema version.
  std::vector<ShardStatus> CheckShards();

  // Reads the newest map stored on the reachable shards and adopts it if it
  // is newer. Returns true if the map changed.
  bool RefreshMap();
  // Receives the timing of every statement; may be null. Not owned.
  void SetObserver(Observer* observer) { observer_ = observer; }

  // The map in use, and the epoch the last operation was routed with.
  std::shared_ptr<const ClusterMap> map() const { return map_; }
  uint64_t last_epoch() const { return last_epoch_; }

 private:
  class Shard;
  // kGone: deleted here; no other shard is asked (sql/007_acknowledged.sql).
  // kFrozen: a read found the session frozen here by a move: served, once
  // this shard's fence shows the map used is the newest.
  enum class Placement { kHere, kAbsent, kMoving, kMoved, kStale, kGone, kFrozen };
  template <typename T>
  struct Placed {
    Placement placement;
    T value;
  };

  Shard& ShardNamed(const std::string& name);
  template <typename T, typename Fn>
  std::optional<T> Routed(const SessionId& id, bool is_read, const char* what, Fn&& fn);
  bool FenceAhead(const std::string& shard, uint64_t epoch);
  std::vector<std::string> AllShardNames() const;
  void MaybeRefresh();
  // Now and then, after a keyed claim on `shard`: forgets expired keys
  // there (chat_expire_keys), in a statement of its own whose failure is
  // only logged.
  void MaybeExpireKeys(const std::string& shard);

  const Config config_;  // A copy: callers may pass a temporary.
  DbOptions options_;
  std::shared_ptr<const ClusterMap> map_;
  std::shared_ptr<const ClusterMap> seed_map_;
  std::map<std::string, std::unique_ptr<Shard>> shards_;
  int64_t next_refresh_us_ = 0;  // 0: load the stored map before the first operation.
  Observer* observer_ = nullptr;
  uint64_t last_epoch_ = 0;
  std::string last_shard_;  // Where the last routed operation was served.
  uint32_t claims_ = 0;     // Keyed claims, for MaybeExpireKeys.
};

// Builds the map of the seed shards in `config` (all active, epoch 0).
// Throws ConfigError if they cannot form a ring.
std::shared_ptr<const ClusterMap> SeedMap(const Config& config);

// Schema version this binary expects (the highest migration it embeds).
int ExpectedSchemaVersion();

}  // namespace chatllm
