#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fcgi_app/config.h"
#include "fcgi_app/db_connection.h"
#include "fcgi_app/ids.h"
#include "shard_router/ring.h"

namespace chatllm {

struct SessionRecord {
  std::optional<std::string> title;
  std::string metadata_json = "{}";  // A compact JSON object.
  int64_t message_count = 0;
  int64_t created_us = 0;  // Unix microseconds, UTC.
  int64_t updated_us = 0;
};

struct MessageRecord {
  int64_t seq = 0;
  std::string role;
  std::string content;
  int64_t reply_to = 0;  // 0: none (user messages).
  int64_t created_us = 0;
};

struct ShardStatus {
  std::string name;
  bool up = false;
  int schema_version = 0;
  std::string error;  // Why it is not up; never contains credentials.
};

// Chat history on the shards. One Store per worker thread: it owns one
// connection per shard and the prepared statements on it (not thread-safe).
// Every method routes by session id through the ring, runs one autocommit
// statement on the owning shard, and throws DbError on failure:
//   - kRetryable errors (deadlock, lock wait) are re-run up to max_retries;
//   - reads are re-run once on a lost connection; writes never are, because
//     a lost connection leaves their outcome unknown.
// The write protocol lives in sql/ (chat_append, chat_delete_session): each
// is a stored function, so a write is one round trip and one transaction.
class Store {
 public:
  // Builds the ring and the (not yet connected) shard connections. Throws
  // ConfigError if the shard list cannot form a ring.
  explicit Store(const Config& config);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Name of the shard that owns `id`.
  const std::string& ShardFor(const SessionId& id) const;
  const shard_router::Ring& ring() const { return ring_; }

  void CreateSession(const SessionId& id, const SessionRecord& session);
  std::optional<SessionRecord> GetSession(const SessionId& id);
  // True if the session existed; its messages are deleted in the same transaction.
  bool DeleteSession(const SessionId& id);
  // Appends one message under the session's row lock. Returns its seq (dense
  // from 1), or 0 when the session does not exist. `reply_to` 0 means none.
  int64_t AppendMessage(const SessionId& id, std::string_view role, std::string_view content,
                        int64_t created_us, int64_t reply_to);
  // Up to `limit` messages with seq > `after`, ascending; nullopt when the
  // session does not exist. One indexed range read, whatever the history length.
  std::optional<std::vector<MessageRecord>> ListMessages(const SessionId& id, int64_t after,
                                                         int limit);
  // The newest `limit` messages with seq <= `upto`, oldest first: the bounded
  // context for a provider call.
  std::vector<MessageRecord> RecentMessages(const SessionId& id, int64_t upto, int limit);

  // Connects to (or pings) every shard and reads its schema version.
  std::vector<ShardStatus> CheckShards();

 private:
  class Shard;
  Shard& ShardOf(const SessionId& id);

  int max_retries_;
  shard_router::Ring ring_;
  std::map<std::string, std::unique_ptr<Shard>> shards_;
};

// Test-only: makes every Store in this process append without the session
// row lock (read the counter, INSERT IGNORE, then bump it) — the lost-update
// race of the service chatllm replaced. It exists so the fault suite can show
// that its checker catches that bug; only the chatllm-fcgi-broken-lock test
// binary calls it.
void EnableUnsafeAppendForTesting();

// Schema version this binary expects (the highest migration it embeds).
int ExpectedSchemaVersion();

}  // namespace chatllm
