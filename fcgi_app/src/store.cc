#include "fcgi_app/store.h"

#include <Poco/Data/LOB.h>
#include <Poco/Data/MySQL/SessionImpl.h>
#include <Poco/Data/Statement.h>
#include <Poco/DateTime.h>
#include <Poco/Nullable.h>
#include <Poco/Timestamp.h>
#include <unistd.h>

#include <algorithm>

#include "fcgi_app/log.h"
#include "fcgi_app/migrator.h"
#include "fcgi_app/time_util.h"

namespace chatllm {

using Poco::Data::Statement;
using Poco::Data::Keywords::into;
using Poco::Data::Keywords::now;
using Poco::Data::Keywords::use;

namespace {

Poco::DateTime ToDateTime(int64_t unix_micros) {
  return Poco::DateTime(Poco::Timestamp(static_cast<Poco::Timestamp::TimeVal>(unix_micros)));
}

int64_t ToMicros(const Poco::DateTime& dt) { return dt.timestamp().epochMicroseconds(); }

}  // namespace

int ExpectedSchemaVersion() { return LatestMigrationVersion(); }

// Prepared statements of one connection, with the variables they are bound
// to by reference: assigning a variable and calling execute() re-runs the
// statement without preparing it again.
struct Prepared {
  explicit Prepared(Poco::Data::Session& s)
      : create(s), get(s), del(s), append(s), list(s), recent(s), schema(s) {
    create << "INSERT INTO sessions (id, title, metadata, message_count, created_at, updated_at) "
              "VALUES (?, ?, ?, 0, ?, ?)",
        use(id), use(title), use(text), use(at), use(at);
    get << "SELECT title, metadata, message_count, created_at, updated_at "
           "FROM sessions WHERE id = ?",
        use(id), into(title), into(text), into(count), into(at), into(at2);
    del << "SELECT chat_delete_session(?)", use(id), into(result);
    append << "SELECT chat_append(?, ?, ?, ?, ?)", use(id), use(role), use(text), use(at),
        use(number), into(result);
    // One round trip answers both "does the session exist" (a row at all)
    // and "which messages follow the cursor"; the session row is found by
    // primary key, the messages by a range on (session_id, seq).
    list << "SELECT s.message_count, COALESCE(m.seq, 0), COALESCE(m.role, ''), "
            "COALESCE(m.content, ''), COALESCE(m.reply_to, 0), COALESCE(m.created_at, s.created_at) "
            "FROM sessions s LEFT JOIN messages m ON m.session_id = s.id AND m.seq > ? "
            "WHERE s.id = ? ORDER BY m.seq LIMIT ?",
        use(number), use(id), use(limit), into(v_count), into(v_seq), into(v_role), into(v_content),
        into(v_reply), into(v_at);
    recent << "SELECT seq, role, content, COALESCE(reply_to, 0), created_at FROM messages "
              "WHERE session_id = ? AND seq <= ? ORDER BY seq DESC LIMIT ?",
        use(id), use(number), use(limit), into(v_seq), into(v_role), into(v_content), into(v_reply),
        into(v_at);
    schema << "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", into(result);
  }

  void ClearRows() {
    v_count.clear();
    v_seq.clear();
    v_role.clear();
    v_content.clear();
    v_reply.clear();
    v_at.clear();
  }

  // Bound variables (inputs and outputs share them where types allow).
  Poco::Data::BLOB id;  // Session id, 16 raw bytes, bound as binary.
  Poco::Nullable<std::string> title;
  std::string role;
  std::string text;  // Message content or session metadata.
  Poco::DateTime at;
  Poco::DateTime at2;
  Poco::Int64 number = 0;  // seq cursor / upper bound / reply_to.
  Poco::Int64 count = 0;
  Poco::Int64 result = 0;
  int limit = 0;
  std::vector<Poco::Int64> v_count, v_seq, v_reply;
  std::vector<std::string> v_role, v_content;
  std::vector<Poco::DateTime> v_at;

  Statement create, get, del, append, list, recent, schema;
};

class Store::Shard {
 public:
  Shard(DbEndpoint endpoint, DbOptions options) : conn_(std::move(endpoint), options) {}

  const std::string& name() const { return conn_.endpoint().shard; }

  // Statements on a live connection, rebuilt after a reconnect.
  Prepared& Ready() {
    Poco::Data::Session& s = conn_.Get();
    if (!prepared_ || prepared_generation_ != conn_.generation()) {
      prepared_.reset();
      prepared_ = std::make_unique<Prepared>(s);
      prepared_generation_ = conn_.generation();
    }
    return *prepared_;
  }

  // After a failed statement, Poco's statement objects can be left mid-state
  // ("Statement still executing"): rebuild them; on connection-level
  // failures, reconnect too.
  void AfterError(const DbError& err, int64_t elapsed_us) {
    prepared_.reset();
    if (err.kind() == DbErrorKind::kConnectionLost || err.kind() == DbErrorKind::kUnavailable) {
      conn_.NoteFailure(elapsed_us);
      conn_.Reset();
    }
  }

  DbConnection& conn() { return conn_; }

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
    } catch (const Poco::Exception& e) {
      DbError err = ClassifyDbException(e, shard.name());
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

static void SetId(Prepared& p, const SessionId& id) {
  p.id = Poco::Data::BLOB(reinterpret_cast<const unsigned char*>(id.bytes().data()), id.bytes().size());
}

void Store::CreateSession(const SessionId& id, const SessionRecord& session) {
  RunOnShard(ShardOf(id), max_retries_, false, "create session", [&](Prepared& p) {
    SetId(p, id);
    if (session.title) p.title = *session.title;
    else p.title.clear();
    p.text = session.metadata_json;
    p.at = ToDateTime(session.created_us);
    p.create.execute();
    return 0;
  });
}

std::optional<SessionRecord> Store::GetSession(const SessionId& id) {
  return RunOnShard(ShardOf(id), max_retries_, true, "get session",
                    [&](Prepared& p) -> std::optional<SessionRecord> {
                      SetId(p, id);
                      if (p.get.execute() == 0) return std::nullopt;
                      SessionRecord r;
                      if (!p.title.isNull()) r.title = p.title.value();
                      r.metadata_json = p.text;
                      r.message_count = p.count;
                      r.created_us = ToMicros(p.at);
                      r.updated_us = ToMicros(p.at2);
                      return r;
                    });
}

bool Store::DeleteSession(const SessionId& id) {
  return RunOnShard(ShardOf(id), max_retries_, false, "delete session", [&](Prepared& p) {
    SetId(p, id);
    p.result = 0;
    p.del.execute();
    return p.result > 0;
  });
}

int64_t Store::AppendMessage(const SessionId& id, std::string_view role, std::string_view content,
                             int64_t created_us, int64_t reply_to) {
  return RunOnShard(ShardOf(id), max_retries_, false, "append message", [&](Prepared& p) {
    SetId(p, id);
    p.role.assign(role);
    p.text.assign(content);
    p.at = ToDateTime(created_us);
    p.number = reply_to;
    p.result = 0;
    p.append.execute();
    return static_cast<int64_t>(p.result);
  });
}

std::optional<std::vector<MessageRecord>> Store::ListMessages(const SessionId& id, int64_t after,
                                                              int limit) {
  return RunOnShard(ShardOf(id), max_retries_, true, "list messages",
                    [&](Prepared& p) -> std::optional<std::vector<MessageRecord>> {
                      SetId(p, id);
                      p.number = after;
                      p.limit = limit;
                      p.ClearRows();
                      p.list.execute();
                      if (p.v_count.empty()) return std::nullopt;
                      std::vector<MessageRecord> out;
                      out.reserve(p.v_seq.size());
                      for (size_t i = 0; i < p.v_seq.size(); ++i) {
                        if (p.v_seq[i] == 0) continue;  // The LEFT JOIN's empty row.
                        out.push_back(MessageRecord{p.v_seq[i], std::move(p.v_role[i]),
                                                    std::move(p.v_content[i]), p.v_reply[i],
                                                    ToMicros(p.v_at[i])});
                      }
                      return out;
                    });
}

std::vector<MessageRecord> Store::RecentMessages(const SessionId& id, int64_t upto, int limit) {
  return RunOnShard(ShardOf(id), max_retries_, true, "recent messages", [&](Prepared& p) {
    SetId(p, id);
    p.number = upto;
    p.limit = limit;
    p.ClearRows();
    p.recent.execute();
    std::vector<MessageRecord> out;
    out.reserve(p.v_seq.size());
    for (size_t i = p.v_seq.size(); i-- > 0;) {
      out.push_back(MessageRecord{p.v_seq[i], std::move(p.v_role[i]), std::move(p.v_content[i]),
                                  p.v_reply[i], ToMicros(p.v_at[i])});
    }
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
        p.result = 0;
        p.schema.execute();
        return static_cast<int>(p.result);
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
