#include "fcgi_app/store.h"

#include <openssl/sha.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "fcgi_app/log.h"
#include "fcgi_app/migrator.h"
#include "fcgi_app/mysql_statement.h"
#include "fcgi_app/provider.h"
#include "fcgi_app/time_util.h"

namespace chatllm {

int ExpectedSchemaVersion() { return LatestMigrationVersion(); }

std::string TurnDigest(std::string_view content) {
  unsigned char sha[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(content.data()), content.size(), sha);
  return std::string(reinterpret_cast<const char*>(sha), 16);
}

namespace {
bool g_unsafe_append = false;
}  // namespace

void EnableUnsafeAppendForTesting() { g_unsafe_append = true; }

// The statements of EnableUnsafeAppendForTesting(), prepared only when used.
struct UnsafeAppend {
  explicit UnsafeAppend(MYSQL* c)
      : read(c, "SELECT message_count FROM sessions WHERE session_id = ? AND state = 'active'"),
        insert(c,
               "INSERT IGNORE INTO messages (session_id, seq, role, content, reply_to, created_at) "
               "VALUES (?, ?, ?, ?, NULLIF(?, 0), ?)"),
        bump(c, "UPDATE sessions SET message_count = GREATEST(message_count, ?) WHERE session_id = ?") {}
  MysqlStatement read, insert, bump;
};

// The statements of one connection, prepared once and re-executed.
struct Prepared {
  explicit Prepared(MYSQL* c)
      : create(c, "SELECT chat_create_session_v2(?, ?, ?, ?, ?, ?, ?)"),
        get(c,
            "SELECT title, metadata, message_count, created_at, updated_at, state, model, system_prompt "
            "FROM sessions WHERE session_id = ?"),
        del(c, "SELECT chat_delete_session_fenced(?, ?)"),
        append(c, "SELECT chat_append_v3(?, ?, ?, ?, ?, ?, ?, ?)"),
        // Messages come with their session's state (a primary-key lookup
        // joined to an index range on (session_id, seq) that stops at the
        // LIMIT, whatever the history length). Only an empty page needs the
        // second statement, `place`, to tell "no session" from "no messages".
        list(c,
             "SELECT m.seq, m.role, m.content, COALESCE(m.reply_to, 0), m.created_at, s.state, "
             "COALESCE(m.meta, '') FROM messages m JOIN sessions s ON s.session_id = m.session_id "
             "WHERE m.session_id = ? AND m.seq > ? ORDER BY m.seq LIMIT ?"),
        // The newest messages (an index range stopping at the LIMIT) with
        // their session's state and model, and its system prompt on the
        // newest row only (seq = message_count: seqs are dense). A window
        // function summing tokens in SQL cost ~6x the MariaDB CPU of this
        // (derived tables, a temporary table); the budget is applied by the
        // caller instead. `session` answers for a session with no message.
        context(c,
                "SELECT m.seq, m.role, m.content, s.state, COALESCE(s.model, ''), "
                "IF(m.seq = s.message_count, COALESCE(s.system_prompt, ''), '') "
                "FROM messages m JOIN sessions s ON s.session_id = m.session_id "
                "WHERE m.session_id = ? ORDER BY m.seq DESC LIMIT ?"),
        session(c, "SELECT state, COALESCE(model, ''), COALESCE(system_prompt, '') FROM sessions WHERE session_id = ?"),
        place(c, "SELECT state FROM sessions WHERE session_id = ?"),
        schema(c, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"),
        fence(c, "SELECT epoch FROM shard_fence WHERE id = 1"),
        unsafe(g_unsafe_append ? std::make_unique<UnsafeAppend>(c) : nullptr) {}

  MysqlStatement create, get, del, append, list, context, session, place, schema, fence;
  std::unique_ptr<UnsafeAppend> unsafe;
};

class Store::Shard {
 public:
  Shard(DbEndpoint endpoint, DbOptions options) : conn_(std::move(endpoint), options) {}

  const std::string& name() const { return conn_.endpoint().shard; }
  const DbEndpoint& endpoint() const { return conn_.endpoint(); }

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

  // A one-off statement on this connection (map reads: rare, and the table
  // may not exist on a shard that is not migrated yet).
  MYSQL* Handle() {
    conn_.Get();
    return conn_.handle();
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
auto RunOnShard(Shard& shard, int max_retries, bool is_read, const char* what, Fn&& fn, Observer* observer = nullptr)
    -> decltype(fn(std::declval<Prepared&>())) {
  for (int attempt = 0;; ++attempt) {
    int64_t start = MonotonicMicros();
    try {
      Prepared& p = shard.Ready();
      auto result = fn(p);
      if (observer) observer->OnQuery(shard.name(), MonotonicMicros() - start, true);
      return result;
    } catch (const DbError& e) {
      if (observer) observer->OnQuery(shard.name(), MonotonicMicros() - start, false);
      throw;
    } catch (const MysqlError& e) {
      if (observer) observer->OnQuery(shard.name(), MonotonicMicros() - start, false);
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

// Columns: seq, role, content, reply_to, created_at, state, meta.
MessageRecord RowToMessage(const MysqlStatement& st, size_t row) {
  return MessageRecord{st.Int64(row, 0), st.Text(row, 1),         st.Text(row, 2), st.Int64(row, 3),
                       st.DatetimeMicros(row, 4), st.Text(row, 6)};
}

}  // namespace

std::shared_ptr<const ClusterMap> SeedMap(const Config& config) {
  std::vector<ShardEntry> entries;
  for (const ShardConfig& s : config.shards) {
    entries.push_back(ShardEntry{s.name, s.host, s.port, s.database, s.weight, shard_router::ShardState::kActive});
  }
  std::string error;
  auto map = ClusterMap::Build(0, std::move(entries), &error);
  if (!map) throw ConfigError(config.path + ": shards: " + error);
  return map;
}

Store::Store(const Config& config) : config_(config) {
  options_.connect_timeout_s = config.connect_timeout_s;
  options_.read_timeout_s = config.read_timeout_s;
  options_.write_timeout_s = config.write_timeout_s;
  options_.statement_timeout_s = config.statement_timeout_s;
  options_.lock_wait_timeout_s = config.lock_wait_timeout_s;
  options_.down_backoff_ms = config.down_backoff_ms;
  seed_map_ = SeedMap(config);
  map_ = seed_map_;
  if (!config.map_file.empty()) {
    std::ifstream in(config.map_file);
    std::stringstream text;
    text << in.rdbuf();
    std::string error;
    auto from_file = in ? ClusterMap::FromJson(text.str(), &error) : nullptr;
    if (!from_file) {
      throw ConfigError(config.path + ": [cluster] map_file: '" + config.map_file + "': " +
                        (in ? error : "cannot read"));
    }
    map_ = from_file;
    // Trust the file until the first periodic refresh (or until a shard
    // says it is stale); without one, the seed map is read over at once.
    next_refresh_us_ = MonotonicMicros() + int64_t{config.map_refresh_ms} * 1000;
  }
  last_epoch_ = map_->epoch();
}

Store::~Store() = default;

Store::Shard& Store::ShardNamed(const std::string& name) {
  const ShardEntry* entry = map_->Find(name);
  if (!entry) entry = seed_map_->Find(name);
  if (!entry) throw DbError(DbErrorKind::kUnavailable, 0, name, "shard " + name + " is not in the shard map");
  DbEndpoint ep{name, entry->host, entry->port, entry->database, config_.db_user, config_.db_password};
  auto it = shards_.find(name);
  if (it != shards_.end()) {
    const DbEndpoint& old = it->second->endpoint();
    if (old.host == ep.host && old.port == ep.port && old.database == ep.database) return *it->second;
    LOG_INFO("shard %s moved from %s:%d to %s:%d", name.c_str(), old.host.c_str(), old.port, ep.host.c_str(), ep.port);
  }
  auto shard = std::make_unique<Shard>(std::move(ep), options_);
  Shard& ref = *shard;
  shards_[name] = std::move(shard);
  return ref;
}

bool Store::RefreshMap() {
  next_refresh_us_ = MonotonicMicros() + int64_t{config_.map_refresh_ms} * 1000;
  std::vector<std::string> names;
  for (const auto* m : {map_.get(), seed_map_.get()}) {
    for (const ShardEntry& s : m->shards()) {
      if (std::find(names.begin(), names.end(), s.name) == names.end()) names.push_back(s.name);
    }
  }
  std::shared_ptr<const ClusterMap> newest = map_;
  for (const std::string& name : names) {
    try {
      MysqlStatement st(ShardNamed(name).Handle(), "SELECT epoch, map FROM shard_map ORDER BY epoch DESC LIMIT 1");
      st.Execute();
      if (st.row_count() == 0 || static_cast<uint64_t>(st.Int64(0, 0)) <= newest->epoch()) continue;
      std::string error;
      auto candidate = ClusterMap::FromJson(st.Text(0, 1), &error);
      if (!candidate) {
        LOG_ERROR("shard %s: stored shard map epoch %lld is invalid: %s", name.c_str(),
                  static_cast<long long>(st.Int64(0, 0)), error.c_str());
        continue;
      }
      newest = candidate;
    } catch (const MysqlError& e) {
      // 1146: no shard_map table yet (schema 1). Other errors: unreachable
      // shards are skipped; the others still answer.
      if (e.code() != 1146) LOG_WARN("shard %s: reading the shard map failed: %s", name.c_str(), e.what());
      if (ClassifyMysqlErrno(e.code()) == DbErrorKind::kConnectionLost) shards_.erase(name);
    } catch (const DbError& e) {
      LOG_WARN("shard %s: reading the shard map failed: %s", name.c_str(), e.what());
    }
  }
  if (newest == map_) return false;
  LOG_INFO("shard map: epoch %llu -> %llu", static_cast<unsigned long long>(map_->epoch()),
           static_cast<unsigned long long>(newest->epoch()));
  map_ = newest;
  for (auto it = shards_.begin(); it != shards_.end();) {
    if (!map_->Find(it->first) && !seed_map_->Find(it->first)) it = shards_.erase(it);
    else ++it;
  }
  return true;
}

void Store::MaybeRefresh() {
  if (MonotonicMicros() >= next_refresh_us_) RefreshMap();
}

bool Store::FenceAhead(const std::string& shard, uint64_t epoch) {
  try {
    return RunOnShard(ShardNamed(shard), config_.max_retries, true, "read fence", [&](Prepared& p) {
      p.fence.Execute();
      return p.fence.row_count() == 1 && static_cast<uint64_t>(p.fence.Int64(0, 0)) > epoch;
    });
  } catch (const DbError&) {
    return false;
  }
}

template <typename T, typename Fn>
std::optional<T> Store::Routed(const SessionId& id, bool is_read, const char* what, Fn&& fn) {
  MaybeRefresh();
  const int64_t deadline = MonotonicMicros() + int64_t{config_.move_wait_ms} * 1000;
  // Moving one session takes milliseconds: poll for it often.
  int64_t backoff_us = 1000;
  int refreshes = 0;
  int tombstone_rounds = 0;
  bool fence_checked = false;
  bool refreshed_after_failure = false;
  while (true) {
    std::shared_ptr<const ClusterMap> map = map_;
    const uint64_t epoch = map->epoch();
    bool retry = false;
    for (const std::string& name : map->router().Candidates(id.text())) {
      std::optional<Placed<T>> placed;
      try {
        placed.emplace(RunOnShard(ShardNamed(name), config_.max_retries, is_read, what,
                                  [&](Prepared& p) { return fn(p, epoch); }, observer_));
      } catch (const DbError& e) {
        // Unreachable (the statement never ran): perhaps the shard left the
        // map since we read it (drained, removed, stopped). Look once.
        if (e.kind() != DbErrorKind::kUnavailable || refreshed_after_failure) throw;
        refreshed_after_failure = true;
        if (!RefreshMap()) throw;
        retry = true;
        break;
      }
      Placed<T>& r = *placed;
      if (r.placement == Placement::kHere) {
        last_epoch_ = epoch;
        return std::move(r.value);
      }
      if (r.placement == Placement::kAbsent) continue;
      if (r.placement == Placement::kMoving) {
        // A write to a session being copied waits until it is made active
        // on its new shard (milliseconds for ordinary sessions).
        if (MonotonicMicros() + backoff_us > deadline) {
          throw DbError(DbErrorKind::kUnavailable, 0, name,
                        "session " + id.text() + " is still being moved to another shard");
        }
        ::usleep(static_cast<useconds_t>(backoff_us));
        backoff_us = std::min<int64_t>(backoff_us * 2, 20000);
      } else {  // kMoved or kStale: our map is out of date.
        if (++refreshes > 8) {
          throw DbError(DbErrorKind::kUnavailable, 0, name, "shard map keeps changing; retry");
        }
        bool changed = RefreshMap();
        if (!changed && r.placement == Placement::kMoved) {
          // Our map is the newest. Either the move finished between our look
          // at its new shard and this one (look again), or the session was
          // moved and later deleted (then it stays absent: 404).
          if (++tombstone_rounds > 3) continue;
        }
        if (!changed) ::usleep(static_cast<useconds_t>(backoff_us));
      }
      retry = true;
      break;
    }
    if (retry) continue;
    // Absent everywhere. Before answering "no such session", make sure a
    // newer map does not put it somewhere else.
    if (!fence_checked) {
      fence_checked = true;
      if (FenceAhead(map->router().Owner(id.text()), epoch) && RefreshMap()) continue;
    }
    last_epoch_ = epoch;
    return std::nullopt;
  }
}

namespace {

// What a fenced function's result code says about placement.
template <typename P>
P CodePlacement(int64_t code) {
  switch (code) {
    case 0: return P::kAbsent;
    case -1: return P::kMoving;
    case -2: return P::kMoved;
    case -3: return P::kStale;
    default: return P::kHere;
  }
}

}  // namespace

namespace {

template <typename P>
P StatePlacement(const std::string& state) {
  if (state == "active" || state == "moving") return P::kHere;
  if (state == "moved") return P::kMoved;
  return P::kAbsent;  // incoming: being copied here, not yet ours.
}

// Reads a list/recent result (messages with their session's state); an
// empty one is placed by the session row alone.
template <typename P>
P MessagesPlacement(MysqlStatement& st, MysqlStatement& place, const SessionId& id,
                    std::vector<MessageRecord>* out) {
  out->clear();
  if (st.row_count() == 0) {
    place.BindBytes(0, id.bytes());
    place.Execute();
    return place.row_count() == 0 ? P::kAbsent : StatePlacement<P>(place.Text(0, 0));
  }
  out->reserve(st.row_count());
  for (size_t i = 0; i < st.row_count(); ++i) out->push_back(RowToMessage(st, i));
  return StatePlacement<P>(st.Text(0, 5));
}

}  // namespace

void Store::CreateSession(const SessionId& id, const SessionRecord& session) {
  // Created only on the owner under the newest map: a session created while
  // a move is in progress already lands on its new shard.
  MaybeRefresh();
  bool refreshed_after_failure = false;
  for (int attempt = 0;; ++attempt) {
    std::shared_ptr<const ClusterMap> map = map_;
    const uint64_t epoch = map->epoch();
    const std::string& owner = map->router().Owner(id.text());
    int64_t code = 0;
    try {
      code = RunOnShard(ShardNamed(owner), config_.max_retries, false, "create session", [&](Prepared& p) {
        MysqlStatement& st = p.create;
        st.BindBytes(0, id.bytes());
        if (session.title) st.BindString(1, *session.title);
        else st.BindNull(1);
        st.BindString(2, session.metadata_json);
        st.BindDatetime(3, session.created_us);
        st.BindInt64(4, static_cast<int64_t>(epoch));
        if (session.model) st.BindString(5, *session.model);
        else st.BindNull(5);
        if (session.system_prompt) st.BindString(6, *session.system_prompt);
        else st.BindNull(6);
        st.Execute();
        return st.Int64(0, 0);
      }, observer_);
    } catch (const DbError& e) {
      // The owner is unreachable: perhaps it left the map. Look once.
      if (e.kind() != DbErrorKind::kUnavailable || refreshed_after_failure || !RefreshMap()) throw;
      refreshed_after_failure = true;
      continue;
    }
    if (code == 1) {
      last_epoch_ = epoch;
      return;
    }
    if (attempt >= 5) throw DbError(DbErrorKind::kUnavailable, 0, owner, "shard map keeps changing; retry");
    RefreshMap();  // -3: fenced, our map is stale.
  }
}

std::optional<SessionRecord> Store::GetSession(const SessionId& id) {
  return Routed<SessionRecord>(id, true, "get session", [&](Prepared& p, uint64_t) {
    MysqlStatement& st = p.get;
    st.BindBytes(0, id.bytes());
    st.Execute();
    Placed<SessionRecord> out{Placement::kAbsent, {}};
    if (st.row_count() == 0) return out;
    out.placement = StatePlacement<Placement>(st.Text(0, 5));
    if (out.placement != Placement::kHere) return out;
    if (!st.IsNull(0, 0)) out.value.title = st.Text(0, 0);
    out.value.metadata_json = st.Text(0, 1);
    out.value.message_count = st.Int64(0, 2);
    out.value.created_us = st.DatetimeMicros(0, 3);
    out.value.updated_us = st.DatetimeMicros(0, 4);
    if (!st.IsNull(0, 6)) out.value.model = st.Text(0, 6);
    if (!st.IsNull(0, 7)) out.value.system_prompt = st.Text(0, 7);
    return out;
  });
}

bool Store::DeleteSession(const SessionId& id) {
  return Routed<bool>(id, false, "delete session", [&](Prepared& p, uint64_t epoch) {
           p.del.BindBytes(0, id.bytes());
           p.del.BindInt64(1, static_cast<int64_t>(epoch));
           p.del.Execute();
           return Placed<bool>{CodePlacement<Placement>(p.del.Int64(0, 0)), true};
         }).has_value();
}

int64_t Store::AppendMessage(const SessionId& id, std::string_view role, std::string_view content,
                             int64_t created_us, int64_t reply_to, std::string_view meta_json,
                             std::string_view retry_digest, bool* duplicate) {
  constexpr int64_t kRetryBase = int64_t{1} << 40;  // sql/004_session_model.sql
  if (duplicate) *duplicate = false;
  auto seq = Routed<int64_t>(id, false, "append message", [&](Prepared& p, uint64_t epoch) {
    if (p.unsafe) {
      UnsafeAppend& u = *p.unsafe;
      u.read.BindBytes(0, id.bytes());
      u.read.Execute();
      if (u.read.row_count() == 0) return Placed<int64_t>{Placement::kAbsent, 0};
      int64_t next = u.read.Int64(0, 0) + 1;
      u.insert.BindBytes(0, id.bytes());
      u.insert.BindInt64(1, next);
      u.insert.BindString(2, role);
      u.insert.BindString(3, content);
      u.insert.BindInt64(4, reply_to);
      u.insert.BindDatetime(5, created_us);
      u.insert.Execute();
      u.bump.BindInt64(0, next);
      u.bump.BindBytes(1, id.bytes());
      u.bump.Execute();
      return Placed<int64_t>{Placement::kHere, next};
    }
    MysqlStatement& st = p.append;
    st.BindBytes(0, id.bytes());
    st.BindString(1, role);
    st.BindString(2, content);
    st.BindDatetime(3, created_us);
    st.BindInt64(4, reply_to);
    st.BindInt64(5, static_cast<int64_t>(epoch));
    st.BindString(6, meta_json);
    if (retry_digest.empty()) st.BindNull(7);
    else st.BindBytes(7, retry_digest);
    st.Execute();
    int64_t code = st.Int64(0, 0);
    return Placed<int64_t>{CodePlacement<Placement>(code), code};
  });
  if (seq && *seq > kRetryBase) {
    if (duplicate) *duplicate = true;
    return *seq - kRetryBase;
  }
  return seq.value_or(0);
}

std::optional<std::vector<MessageRecord>> Store::ListMessages(const SessionId& id, int64_t after,
                                                              int limit) {
  return Routed<std::vector<MessageRecord>>(id, true, "list messages", [&](Prepared& p, uint64_t) {
    MysqlStatement& st = p.list;
    st.BindBytes(0, id.bytes());
    st.BindInt64(1, after);
    st.BindInt64(2, limit);
    st.Execute();
    Placed<std::vector<MessageRecord>> out{Placement::kAbsent, {}};
    out.placement = MessagesPlacement<Placement>(st, p.place, id, &out.value);
    return out;
  });
}

std::optional<TurnContext> Store::LoadContext(const SessionId& id, int limit, int64_t token_budget) {
  return Routed<TurnContext>(id, true, "load context", [&](Prepared& p, uint64_t) {
    Placed<TurnContext> out{Placement::kAbsent, {}};
    MysqlStatement& st = p.context;
    st.BindBytes(0, id.bytes());
    st.BindInt64(1, limit);
    st.Execute();
    if (st.row_count() == 0) {  // No message yet, or no session.
      MysqlStatement& s = p.session;
      s.BindBytes(0, id.bytes());
      s.Execute();
      if (s.row_count() == 0) return out;
      out.placement = StatePlacement<Placement>(s.Text(0, 0));
      out.value.model = s.Text(0, 1);
      out.value.system_prompt = s.Text(0, 2);
      return out;
    }
    out.placement = StatePlacement<Placement>(st.Text(0, 3));
    if (out.placement != Placement::kHere) return out;
    out.value.model = st.Text(0, 4);
    out.value.system_prompt = st.Text(0, 5);
    // Newest first: keep messages while the estimate fits the budget.
    int64_t spent = 0;
    size_t keep = 0;
    for (; keep < st.row_count(); ++keep) {
      spent += EstimateTokens(st.Text(keep, 2));
      if (spent > token_budget) break;
    }
    out.value.messages.resize(keep);
    for (size_t i = 0; i < keep; ++i) {
      MessageRecord& m = out.value.messages[keep - 1 - i];  // Oldest first.
      m.seq = st.Int64(i, 0);
      m.role = st.Text(i, 1);
      m.content = st.Text(i, 2);
    }
    return out;
  });
}

std::vector<ShardStatus> Store::CheckShards() {
  MaybeRefresh();
  std::vector<ShardStatus> out;
  for (const ShardEntry& entry : map_->shards()) {
    ShardStatus st;
    st.name = entry.name;
    try {
      st.schema_version = RunOnShard(ShardNamed(entry.name), 0, true, "schema version", [](Prepared& p) {
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
    } catch (const MysqlError& e) {
      st.error = "schema not migrated (errno " + std::to_string(e.code()) + ")";  // Prepare failed.
    }
    out.push_back(std::move(st));
  }
  return out;
}

}  // namespace chatllm
