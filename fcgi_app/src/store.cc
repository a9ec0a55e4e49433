#include "fcgi_app/store.h"

#include <unistd.h>

#include <algorithm>

#include "fcgi_app/log.h"
#include "fcgi_app/migrator.h"
#include "fcgi_app/mysql_statement.h"
#include "fcgi_app/time_util.h"

namespace chatllm {

int ExpectedSchemaVersion() { return LatestMigrationVersion(); }

namespace {
bool g_unsafe_append = false;
}  // namespace

void EnableUnsafeAppendForTesting() { g_unsafe_append = true; }

// The statements of EnableUnsafeAppendForTesting(), prepared only when used.
struct UnsafeAppend {
  explicit UnsafeAppend(MYSQL* c)
      : read(c, "SELECT message_count FROM sessions WHERE session_id = ?"),
        insert(c,
               "INSERT IGNORE INTO messages (session_id, seq, role, content, reply_to, created_at) "
               "VALUES (?, ?, ?, ?, NULLIF(?, 0), ?)"),
        bump(c, "UPDATE sessions SET message_count = GREATEST(message_count, ?) WHERE session_id = ?") {}
  MysqlStatement read, insert, bump;
};

// The statements of one connection, prepared once and re-executed.
struct Prepared {
  explicit Prepared(MYSQL* c)
      : create(c,
               "INSERT INTO sessions (session_id, title, metadata, message_count, created_at, updated_at) "
               "VALUES (?, ?, ?, 0, ?, ?)"),
        get(c, "SELECT title, metadata, message_count, created_at, updated_at FROM sessions WHERE session_id = ?"),
        del(c, "SELECT chat_delete_session(?)"),
        append(c, "SELECT chat_append(?, ?, ?, ?, ?)"),
        // One round trip answers "does the session exist" (the seq-0 row from
        // sessions) and "which messages follow the cursor" (an index range on
        // (session_id, seq) that stops at the LIMIT, whatever the history
        // length). A LEFT JOIN would sort every later message first.
        list(c,
             "(SELECT 0, NULL, NULL, NULL, created_at FROM sessions WHERE session_id = ?) UNION ALL "
             "(SELECT seq, role, content, COALESCE(reply_to, 0), created_at FROM messages "
             "WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?)"),
        recent(c,
               "SELECT seq, role, content, COALESCE(reply_to, 0), created_at FROM messages "
               "WHERE session_id = ? AND seq <= ? ORDER BY seq DESC LIMIT ?"),
        schema(c, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"),
        unsafe(g_unsafe_append ? std::make_unique<UnsafeAppend>(c) : nullptr) {}

  MysqlStatement create, get, del, append, list, recent, schema;
  std::unique_ptr<UnsafeAppend> unsafe;
};

namespace {

MessageRecord RowToMessage(const MysqlStatement& st, size_t row) {
  return MessageRecord{st.Int64(row, 0), st.Text(row, 1), st.Text(row, 2), st.Int64(row, 3),
                       st.DatetimeMicros(row, 4)};
}

}  // namespace

class Store::Shard {
 public:
  Shard(DbEndpoint endpoint, DbOptions options) : conn_(std::move(endpoint), options) {}

  const std::string& name() const { return conn_.endpoint().shard; }

  // Statements on a live connection, rebuilt after a reconnect.
  Prepared& Ready() {
    conn_.Get();
    if (!prepared_ || prepared_generation_ != conn_.generation()) {
      prepared_.reset();
      prepared_ = std::make_unique<Prepared>(conn_.handle());
      prepared_generation_ = conn_.generation();
    }
    return *prepared_;
  }

  // After a failed statement: drop the statements (a failed one may be left
  // mid-result); on connection-level failures, the connection too.
  void AfterError(const DbError& err, int64_t elapsed_us) {
    prepared_.reset();
    if (err.kind() == DbErrorKind::kConnectionLost || err.kind() == DbErrorKind::kUnavailable) {
      conn_.NoteFailure(elapsed_us);
      conn_.Reset();
    }
  }

 private:
  DbConnection conn_;  // Declared first: statements die before their connection.
  std::unique_ptr<Prepared> prepared_;
  uint64_t prepared_generation_ = 0;
};

namespace {

// Runs `fn` against the shard's prepared statements with the retry policy of
// Store (see store.h). `is_read`: the statement changes nothing, so a lost
// connection can be retried.
template <typename Shard, typename Fn>
auto RunOnShard(Shard& shard, int max_retries, bool is_read, const char* what, Fn&& fn)
    -> decltype(fn(std::declval<Prepared&>())) {
  for (int attempt = 0;; ++attempt) {
    int64_t start = MonotonicMicros();
    try {
      Prepared& p = shard.Ready();
      return fn(p);
    } catch (const MysqlError& e) {
      DbError err(ClassifyMysqlErrno(e.code()), e.code(), shard.name(), e.what());
      shard.AfterError(err, MonotonicMicros() - start);
      bool retry = (err.kind() == DbErrorKind::kRetryable && attempt < max_retries) ||
                   (err.kind() == DbErrorKind::kConnectionLost && is_read && attempt == 0);
      LOG_WARN("shard %s: %s failed (%s, errno %d)%s: %s", shard.name().c_str(), what,
               DbErrorKindName(err.kind()), err.mysql_errno(), retry ? ", retrying" : "",
               err.what());
      if (!retry) throw err;
      if (err.kind() == DbErrorKind::kRetryable) {
        // Jittered backoff so that the transactions that deadlocked do not
        // collide again in lockstep.
        unsigned spread = 1000u << std::min(attempt, 5);
        ::usleep(500 + static_cast<unsigned>(MonotonicMicros()) % spread);
      }
    }
  }
}

}  // namespace

Store::Store(const Config& config) : max_retries_(config.max_retries) {
  std::vector<shard_router::ShardWeight> weights;
  DbOptions options;
  options.connect_timeout_s = config.connect_timeout_s;
  options.read_timeout_s = config.read_timeout_s;
  options.write_timeout_s = config.write_timeout_s;
  options.statement_timeout_s = config.statement_timeout_s;
  options.lock_wait_timeout_s = config.lock_wait_timeout_s;
  options.down_backoff_ms = config.down_backoff_ms;
  for (const ShardConfig& sc : config.shards) {
    weights.push_back({sc.name, sc.weight});
    DbEndpoint ep{sc.name, sc.host, sc.port, sc.database, sc.user, sc.password};
    shards_[sc.name] = std::make_unique<Shard>(std::move(ep), options);
  }
  shard_router::Status st = shard_router::Ring::Build(std::move(weights), &ring_);
  if (!st.ok()) throw ConfigError(config.path + ": shards: " + st.message());
}

Store::~Store() = default;

const std::string& Store::ShardFor(const SessionId& id) const { return ring_.Lookup(id.text()); }

Store::Shard& Store::ShardOf(const SessionId& id) { return *shards_.at(ShardFor(id)); }

void Store::CreateSession(const SessionId& id, const SessionRecord& session) {
  RunOnShard(ShardOf(id), max_retries_, false, "create session", [&](Prepared& p) {
    MysqlStatement& st = p.create;
    st.BindBytes(0, id.bytes());
    if (session.title) st.BindString(1, *session.title);
    else st.BindNull(1);
    st.BindString(2, session.metadata_json);
    st.BindDatetime(3, session.created_us);
    st.BindDatetime(4, session.updated_us);
    st.Execute();
    return 0;
  });
}

std::optional<SessionRecord> Store::GetSession(const SessionId& id) {
  return RunOnShard(ShardOf(id), max_retries_, true, "get session",
                    [&](Prepared& p) -> std::optional<SessionRecord> {
                      MysqlStatement& st = p.get;
                      st.BindBytes(0, id.bytes());
                      st.Execute();
                      if (st.row_count() == 0) return std::nullopt;
                      SessionRecord r;
                      if (!st.IsNull(0, 0)) r.title = st.Text(0, 0);
                      r.metadata_json = st.Text(0, 1);
                      r.message_count = st.Int64(0, 2);
                      r.created_us = st.DatetimeMicros(0, 3);
                      r.updated_us = st.DatetimeMicros(0, 4);
                      return r;
                    });
}

bool Store::DeleteSession(const SessionId& id) {
  return RunOnShard(ShardOf(id), max_retries_, false, "delete session", [&](Prepared& p) {
    p.del.BindBytes(0, id.bytes());
    p.del.Execute();
    return p.del.row_count() == 1 && p.del.Int64(0, 0) > 0;
  });
}

int64_t Store::AppendMessage(const SessionId& id, std::string_view role, std::string_view content,
                             int64_t created_us, int64_t reply_to) {
  return RunOnShard(ShardOf(id), max_retries_, false, "append message", [&](Prepared& p) {
    if (p.unsafe) {
      UnsafeAppend& u = *p.unsafe;
      u.read.BindBytes(0, id.bytes());
      u.read.Execute();
      if (u.read.row_count() == 0) return int64_t{0};
      int64_t seq = u.read.Int64(0, 0) + 1;
      u.insert.BindBytes(0, id.bytes());
      u.insert.BindInt64(1, seq);
      u.insert.BindString(2, role);
      u.insert.BindString(3, content);
      u.insert.BindInt64(4, reply_to);
      u.insert.BindDatetime(5, created_us);
      u.insert.Execute();
      u.bump.BindInt64(0, seq);
      u.bump.BindBytes(1, id.bytes());
      u.bump.Execute();
      return seq;
    }
    MysqlStatement& st = p.append;
    st.BindBytes(0, id.bytes());
    st.BindString(1, role);
    st.BindString(2, content);
    st.BindDatetime(3, created_us);
    st.BindInt64(4, reply_to);
    st.Execute();
    return st.row_count() == 1 ? st.Int64(0, 0) : int64_t{0};
  });
}

std::optional<std::vector<MessageRecord>> Store::ListMessages(const SessionId& id, int64_t after,
                                                              int limit) {
  return RunOnShard(ShardOf(id), max_retries_, true, "list messages",
                    [&](Prepared& p) -> std::optional<std::vector<MessageRecord>> {
                      MysqlStatement& st = p.list;
                      st.BindBytes(0, id.bytes());
                      st.BindBytes(1, id.bytes());
                      st.BindInt64(2, after);
                      st.BindInt64(3, limit);
                      st.Execute();
                      bool exists = false;
                      std::vector<MessageRecord> out;
                      out.reserve(st.row_count());
                      for (size_t i = 0; i < st.row_count(); ++i) {
                        if (st.Int64(i, 0) == 0) exists = true;  // The sessions row.
                        else out.push_back(RowToMessage(st, i));
                      }
                      if (!exists) return std::nullopt;
                      // UNION ALL keeps each part's order in MariaDB, but SQL
                      // does not promise it; sorting sorted input is linear.
                      std::sort(out.begin(), out.end(),
                                [](const MessageRecord& a, const MessageRecord& b) { return a.seq < b.seq; });
                      return out;
                    });
}

std::vector<MessageRecord> Store::RecentMessages(const SessionId& id, int64_t upto, int limit) {
  return RunOnShard(ShardOf(id), max_retries_, true, "recent messages", [&](Prepared& p) {
    MysqlStatement& st = p.recent;
    st.BindBytes(0, id.bytes());
    st.BindInt64(1, upto);
    st.BindInt64(2, limit);
    st.Execute();
    std::vector<MessageRecord> out;
    out.reserve(st.row_count());
    for (size_t i = st.row_count(); i-- > 0;) out.push_back(RowToMessage(st, i));
    return out;
  });
}

std::vector<ShardStatus> Store::CheckShards() {
  std::vector<ShardStatus> out;
  for (auto& [name, shard] : shards_) {
    ShardStatus st;
    st.name = name;
    try {
      st.schema_version = RunOnShard(*shard, 0, true, "schema version", [](Prepared& p) {
        p.schema.Execute();
        return p.schema.row_count() == 1 ? static_cast<int>(p.schema.Int64(0, 0)) : 0;
      });
      st.up = st.schema_version >= ExpectedSchemaVersion();
      if (!st.up) {
        st.error = "schema version " + std::to_string(st.schema_version) + ", need " +
                   std::to_string(ExpectedSchemaVersion()) + " (run shardctl migrate)";
      }
    } catch (const DbError& e) {
      st.error = std::string(DbErrorKindName(e.kind())) +
                 (e.mysql_errno() ? " (errno " + std::to_string(e.mysql_errno()) + ")" : "");
    }
    out.push_back(std::move(st));
  }
  return out;
}

}  // namespace chatllm
