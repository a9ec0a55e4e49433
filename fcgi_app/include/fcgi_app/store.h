#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fcgi_app/cluster_map.h"
#include "fcgi_app/config.h"
#include "fcgi_app/db_connection.h"
#include "fcgi_app/ids.h"
#include "fcgi_app/observer.h"

namespace chatllm {

struct SessionRecord {
  std::optional<std::string> title;
  std::string metadata_json = "{}";  // A compact JSON object.
  int64_t message_count = 0;
  int64_t created_us = 0;  // Unix microseconds, UTC.
  int64_t updated_us = 0;
  std::optional<std::string> model;          // Set at creation; never changes.
  std::optional<std::string> system_prompt;  // Set at creation; never changes.
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

  void CreateSession(const SessionId& id, const SessionRecord& session);
  std::optional<SessionRecord> GetSession(const SessionId& id);
  // True if the session existed; its messages are deleted in the same transaction.
  bool DeleteSession(const SessionId& id);
  // Appends one message under the session's row lock. Returns its seq (dense
  // from 1), or 0 when the session does not exist. `reply_to` 0 means none;
  // `meta_json` is a JSON object or "". A user message with a
  // `retry_digest` (16 bytes, TurnDigest) that equals the one the session's
  // last, unanswered, user message was stored with is not stored again: its
  // seq is returned and *duplicate set (sql/004_session_model.sql).
  int64_t AppendMessage(const SessionId& id, std::string_view role, std::string_view content,
                        int64_t created_us, int64_t reply_to, std::string_view meta_json = "",
                        std::string_view retry_digest = "", bool* duplicate = nullptr);
  // Up to `limit` messages with seq > `after`, ascending; nullopt when the
  // session does not exist. One indexed range read, whatever the history length.
  std::optional<std::vector<MessageRecord>> ListMessages(const SessionId& id, int64_t after,
                                                         int limit);
  // The session's model and system prompt, and its newest messages (at most
  // `limit`) whose estimated tokens (EstimateTokens) add up to at most
  // `token_budget`, oldest first: the context of a turn. One statement: a
  // primary-key read and a bounded index range, whatever the history
  // length. nullopt when the session does not exist.
  std::optional<TurnContext> LoadContext(const SessionId& id, int limit, int64_t token_budget);

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
  enum class Placement { kHere, kAbsent, kMoving, kMoved, kStale };
  template <typename T>
  struct Placed {
    Placement placement;
    T value;
  };

  Shard& ShardNamed(const std::string& name);
  template <typename T, typename Fn>
  std::optional<T> Routed(const SessionId& id, bool is_read, const char* what, Fn&& fn);
  bool FenceAhead(const std::string& shard, uint64_t epoch);
  void MaybeRefresh();

  const Config config_;  // A copy: callers may pass a temporary.
  DbOptions options_;
  std::shared_ptr<const ClusterMap> map_;
  std::shared_ptr<const ClusterMap> seed_map_;
  std::map<std::string, std::unique_ptr<Shard>> shards_;
  int64_t next_refresh_us_ = 0;  // 0: load the stored map before the first operation.
  Observer* observer_ = nullptr;
  uint64_t last_epoch_ = 0;
};

// Builds the map of the seed shards in `config` (all active, epoch 0).
// Throws ConfigError if they cannot form a ring.
std::shared_ptr<const ClusterMap> SeedMap(const Config& config);

// Test-only: makes every Store in this process append without the session
// row lock (read the counter, INSERT IGNORE, then bump it) — the lost-update
// race of the service chatllm replaced. It exists so the fault suite can show
// that its checker catches that bug; only the chatllm-fcgi-broken-lock test
// binary calls it.
void EnableUnsafeAppendForTesting();

// The digest a user message is stored with for the retry rule: the first 16
// bytes of SHA-256 of its content.
std::string TurnDigest(std::string_view content);

// Schema version this binary expects (the highest migration it embeds).
int ExpectedSchemaVersion();

}  // namespace chatllm
