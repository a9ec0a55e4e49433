#include "store/store.h"

#include "base/api_key.h"

#include <openssl/sha.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "base/log.h"
#include "store/migrator.h"
#include "store/mysql_statement.h"
#include "base/tokens.h"
#include "base/time_util.h"

namespace chatllm {

int ExpectedSchemaVersion() { return LatestMigrationVersion(); }

std::string IdempotencyTargetSha(std::string_view target) {
  unsigned char sha[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(target.data()), target.size(), sha);
  return std::string(reinterpret_cast<const char*>(sha), 16);
}

// The statements of one connection, prepared once and re-executed. Every
// statement on a session carries the caller (`user_id <=> ?`): another
// user's session reads exactly like a missing one.
struct Prepared {
  explicit Prepared(MYSQL* c)
      : conn(c),
        create(c, "SELECT chat_create_session_v3(?, ?, ?, ?, ?, ?, ?, ?)"),
        // Where a keyed create's session may already be (CreateSession):
        // this shard's fence and the session's state here, in one read.
        presence(c,
                 "SELECT f.epoch, COALESCE(s.state, '') FROM shard_fence f "
                 "LEFT JOIN sessions s ON s.session_id = ? WHERE f.id = 1"),
        lock(c, "SELECT state FROM sessions WHERE session_id = ? FOR UPDATE"),
        get(c,
            "SELECT title, metadata, message_count, created_at, updated_at, state, model, system_prompt "
            "FROM sessions WHERE session_id = ? AND user_id <=> ?"),
        del(c, "SELECT chat_delete_session_v3(?, ?, ?, ?, ?)"),
        append(c, "SELECT chat_append_v5(?, ?, ?, ?, ?, ?, ?, ?, ?)"),
        turn_begin(c, "SELECT chat_turn_begin(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
        turn_fail(c, "SELECT chat_turn_fail(?, ?, ?, ?, ?, ?, ?)"),
        // Messages come with their session's state (a primary-key lookup
        // joined to an index range on (session_id, seq) that stops at the
        // LIMIT, whatever the history length). Only an empty page needs the
        // second statement, `place`, to tell "no session" from "no messages".
        list(c,
             "SELECT m.seq, m.role, m.content, COALESCE(m.reply_to, 0), m.created_at, s.state, "
             "COALESCE(m.meta, '') FROM messages m JOIN sessions s ON s.session_id = m.session_id "
             "WHERE m.session_id = ? AND s.user_id <=> ? AND m.seq > ? ORDER BY m.seq LIMIT ?"),
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
                "WHERE m.session_id = ? AND s.user_id <=> ? ORDER BY m.seq DESC LIMIT ?"),
        session(c,
                "SELECT state, COALESCE(model, ''), COALESCE(system_prompt, '') FROM sessions "
                "WHERE session_id = ? AND user_id <=> ?"),
        place(c, "SELECT state FROM sessions WHERE session_id = ? AND user_id <=> ?"),
        // A user's sessions after a cursor, newest first (index sessions_by_user).
        // 'incoming' copies are included: the caller merges shards and keeps
        // one row per id, so a session being moved is never missed.
        sessions(c,
                 "SELECT session_id, title, metadata, message_count, created_at, updated_at, model, system_prompt, "
                 "state FROM sessions WHERE user_id <=> ? AND state IN ('active', 'moving', 'incoming') "
                 "AND (created_at < ? OR (created_at = ? AND session_id < ?)) "
                 "ORDER BY created_at DESC, session_id DESC LIMIT ?"),
        count(c, "SELECT COUNT(*) FROM sessions WHERE user_id <=> ? AND state IN ('active', 'moving')"),
        key(c,
            "SELECT k.user_id, k.secret_sha256, k.expires_at, k.revoked_at IS NOT NULL, u.disabled_at IS NOT NULL "
            "FROM api_keys k JOIN users u ON u.user_id = k.user_id WHERE k.key_id = ?"),
        idem_insert(c,
                    "INSERT IGNORE INTO idempotency_keys (user_id, target_sha, idem_key, session_id, request_sha, "
                    "state, status, response, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
                    "UTC_TIMESTAMP(6), UTC_TIMESTAMP(6) + INTERVAL ? SECOND)"),
        idem_select(c,
                    "SELECT request_sha, state, status, COALESCE(response, ''), "
                    "TIMESTAMPDIFF(SECOND, created_at, UTC_TIMESTAMP(6)), expires_at < UTC_TIMESTAMP(6) "
                    "FROM idempotency_keys WHERE user_id = ? AND target_sha = ? AND idem_key = ? FOR UPDATE"),
        idem_reset(c,
                   "UPDATE idempotency_keys SET session_id = ?, request_sha = ?, state = ?, status = ?, "
                   "response = ?, created_at = UTC_TIMESTAMP(6), expires_at = UTC_TIMESTAMP(6) + INTERVAL ? SECOND "
                   "WHERE user_id = ? AND target_sha = ? AND idem_key = ?"),
        // Only the attempt that holds the key completes it: one taken over
        // by a retry (after idempotency_lease_s) no longer matches. The key
        // is kept a whole TTL from its answer.
        idem_complete(c,
                      "UPDATE idempotency_keys SET state = 'done', status = ?, response = ?, "
                      "expires_at = GREATEST(expires_at, UTC_TIMESTAMP(6) + INTERVAL ? SECOND) "
                      "WHERE user_id = ? AND target_sha = ? AND idem_key = ? AND state = 'running' AND attempt = ?"),
        idem_response(c,
                      "SELECT status, COALESCE(response, '') FROM idempotency_keys "
                      "WHERE user_id = ? AND target_sha = ? AND idem_key = ? AND state = 'done'"),
        idem_expire(c, "SELECT chat_expire_keys()"),
        schema(c, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"),
        fence(c, "SELECT epoch FROM shard_fence WHERE id = 1") {}

  MYSQL* conn;
  MysqlStatement create, presence, lock, get, del, append, turn_begin, turn_fail, list, context, session, place, sessions,
      count, key, idem_insert, idem_select, idem_reset, idem_complete, idem_response, idem_expire, schema, fence;
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
      if (r.placement == Placement::kFrozen && FenceAhead(name, epoch)) {
        // A frozen copy (a move in progress) is current only under the
        // newest map: under a newer one its move may have made another copy
        // authoritative (which may have taken writes, or been deleted, since
        // a rebalance stopped mid-move). Read again under that map.
        if (++refreshes > 8 || !RefreshMap()) {
          throw DbError(DbErrorKind::kUnavailable, 0, name, "shard map keeps changing; retry");
        }
        retry = true;
        break;
      }
      if (r.placement == Placement::kHere || r.placement == Placement::kFrozen) {
        last_epoch_ = epoch;
        last_shard_ = name;
        return std::move(r.value);
      }
      if (r.placement == Placement::kGone) {
        // Deleted: whatever another shard still holds of it (a frozen copy
        // an interrupted move left behind) is not the session any more.
        last_epoch_ = epoch;
        return std::nullopt;
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
    case -5: return P::kGone;
    default: return P::kHere;
  }
}

}  // namespace

namespace {

// The owner column: NULL for no user.
void BindUser(MysqlStatement& st, int pos, const UserId& user) {
  if (user.empty()) st.BindNull(pos);
  else st.BindBytes(pos, user);
}

// idempotency_keys.user_id is NOT NULL (part of the primary key): no user is 16 zero bytes.
std::string IdemUser(const UserId& user) { return user.empty() ? std::string(16, '\0') : user; }

// Runs `fn(&commit)` inside START TRANSACTION ... COMMIT on `conn`; rolls
// back instead when `fn` sets commit to false or throws.
template <typename Fn>
auto InTransaction(MYSQL* conn, Fn&& fn) -> decltype(fn(std::declval<bool*>())) {
  auto exec = [conn](const char* sql) {
    if (mysql_query(conn, sql) != 0) {
      throw MysqlError(static_cast<int>(mysql_errno(conn)), std::string(sql) + ": " + mysql_error(conn));
    }
  };
  exec("START TRANSACTION");
  try {
    bool commit = true;
    auto result = fn(&commit);
    exec(commit ? "COMMIT" : "ROLLBACK");
    return result;
  } catch (...) {
    mysql_query(conn, "ROLLBACK");  // Best effort: the connection may be gone.
    throw;
  }
}

// Claims `key` for a create inside the caller's transaction: a new row
// (state 'done', answered by `status`/`response`), or what an earlier
// request with the same key left. A key that expired is claimed anew.
IdempotencyResult ClaimKey(Prepared& p, const UserId& user, const SessionId& session, const IdempotencyKey& key,
                           int status, const std::string& response, int ttl_s) {
  const std::string idem_user = IdemUser(user);
  p.idem_insert.BindBytes(0, idem_user);
  p.idem_insert.BindBytes(1, key.target_sha);
  p.idem_insert.BindBytes(2, key.key);
  p.idem_insert.BindBytes(3, session.bytes());
  p.idem_insert.BindBytes(4, key.request_sha);
  p.idem_insert.BindString(5, "done");
  p.idem_insert.BindInt64(6, status);
  p.idem_insert.BindString(7, response);
  p.idem_insert.BindInt64(8, ttl_s);
  p.idem_insert.Execute();
  if (p.idem_insert.affected_rows() == 1) return IdempotencyResult{};
  MysqlStatement& st = p.idem_select;
  st.BindBytes(0, idem_user);
  st.BindBytes(1, key.target_sha);
  st.BindBytes(2, key.key);
  st.Execute();
  if (st.row_count() == 1 && st.Int64(0, 5) == 0) {
    if (!SameBytes(st.Text(0, 0), key.request_sha)) return IdempotencyResult{IdempotencyOutcome::kMismatch, 0, ""};
    // A create's key is written 'done' with its session; never 'running'.
    return IdempotencyResult{IdempotencyOutcome::kReplay, static_cast<int>(st.Int64(0, 2)), st.Text(0, 3)};
  }
  MysqlStatement& reset = p.idem_reset;
  reset.BindBytes(0, session.bytes());
  reset.BindBytes(1, key.request_sha);
  reset.BindString(2, "done");
  reset.BindInt64(3, status);
  reset.BindString(4, response);
  reset.BindInt64(5, ttl_s);
  reset.BindBytes(6, idem_user);
  reset.BindBytes(7, key.target_sha);
  reset.BindBytes(8, key.key);
  reset.Execute();
  return IdempotencyResult{};
}

// The response a finished keyed request left (chat_turn_begin said -10).
IdempotencyResult StoredResponse(Prepared& p, const UserId& user, const IdempotencyKey& key) {
  const std::string idem_user = IdemUser(user);
  MysqlStatement& st = p.idem_response;
  st.BindBytes(0, idem_user);
  st.BindBytes(1, key.target_sha);
  st.BindBytes(2, key.key);
  st.Execute();
  if (st.row_count() != 1) {
    // Expired between the two statements (a day after it was written).
    return IdempotencyResult{IdempotencyOutcome::kInFlight, 0, ""};
  }
  return IdempotencyResult{IdempotencyOutcome::kReplay, static_cast<int>(st.Int64(0, 0)), st.Text(0, 1)};
}

// A read is answered from a session that is active here, or frozen here by
// a move (Routed checks that the frozen copy is still current).
template <typename P>
bool ServesRead(P placement) {
  return placement == P::kHere || placement == P::kFrozen;
}

template <typename P>
P StatePlacement(const std::string& state) {
  if (state == "active") return P::kHere;
  if (state == "moving") return P::kFrozen;
  if (state == "moved") return P::kMoved;
  if (state == "deleted") return P::kGone;
  return P::kAbsent;  // incoming: being copied here, not yet ours.
}

// Reads a list/recent result (messages with their session's state); an
// empty one is placed by the session row alone.
template <typename P>
P MessagesPlacement(MysqlStatement& st, MysqlStatement& place, const SessionId& id, const UserId& user,
                    std::vector<MessageRecord>* out) {
  out->clear();
  if (st.row_count() == 0) {
    place.BindBytes(0, id.bytes());
    BindUser(place, 1, user);
    place.Execute();
    return place.row_count() == 0 ? P::kAbsent : StatePlacement<P>(place.Text(0, 0));
  }
  out->reserve(st.row_count());
  for (size_t i = 0; i < st.row_count(); ++i) out->push_back(RowToMessage(st, i));
  return StatePlacement<P>(st.Text(0, 5));
}

}  // namespace

IdempotencyResult Store::CreateSession(const SessionId& id, const SessionRecord& session, const IdempotencyKey* idem,
                                       int status, const std::string& response) {
  // Created only on the owner under the newest map: a session created while
  // a move is in progress already lands on its new shard.
  MaybeRefresh();
  const int64_t deadline = MonotonicMicros() + int64_t{config_.move_wait_ms} * 1000;
  int64_t backoff_us = 1000;
  bool refreshed_after_failure = false;
  for (int attempt = 0;; ++attempt) {
    std::shared_ptr<const ClusterMap> map = map_;
    const uint64_t epoch = map->epoch();
    const std::string& owner = map->router().Owner(id.text());
    try {
      if (idem) {
        // A keyed id is derived from the key: an earlier attempt of this
        // request, routed by an older map, may have created the session on
        // a shard it is moving away from. Its key row is there with it.
        bool wait = false;
        for (const std::string& name : map->router().Candidates(id.text())) {
          if (name == owner) continue;
          std::optional<IdempotencyResult> earlier =
              RunOnShard(ShardNamed(name), config_.max_retries, false, "look for an earlier create",
                         [&](Prepared& p) -> std::optional<IdempotencyResult> {
                           p.presence.BindBytes(0, id.bytes());
                           p.presence.Execute();
                           // Until this shard's fence reaches our epoch, a
                           // request routed by the older map may still
                           // create the session here: wait for the fence.
                           if (static_cast<uint64_t>(p.presence.Int64(0, 0)) < epoch) wait = true;
                           const std::string& state = p.presence.Text(0, 1);
                           if (state == "moving") wait = true;
                           if (state != "active" && state != "deleted") return std::nullopt;
                           return InTransaction(p.conn, [&](bool* commit) -> std::optional<IdempotencyResult> {
                             // Under the session row lock: a move cannot
                             // take the session and its key away meanwhile.
                             p.lock.BindBytes(0, id.bytes());
                             p.lock.Execute();
                             const std::string now = p.lock.row_count() ? p.lock.Text(0, 0) : "";
                             if (now != "active" && now != "deleted") {
                               *commit = false;
                               return std::nullopt;  // Moved on: ask the owner.
                             }
                             IdempotencyResult r =
                                 ClaimKey(p, session.user_id, id, *idem, status, response, config_.idempotency_ttl_s);
                             if (r.outcome == IdempotencyOutcome::kNew) {
                               // The session is here but its key expired: a
                               // different request, not a second session.
                               *commit = false;
                               r.outcome = IdempotencyOutcome::kMismatch;
                             }
                             return r;
                           });
                         }, observer_);
          if (earlier) {
            last_epoch_ = epoch;
            return *earlier;
          }
        }
        if (wait) {
          if (MonotonicMicros() + backoff_us > deadline) {
            throw DbError(DbErrorKind::kUnavailable, 0, owner, "the shard map is still being published; retry");
          }
          ::usleep(static_cast<useconds_t>(backoff_us));
          backoff_us = std::min<int64_t>(backoff_us * 2, 20000);
          if (attempt % 4 == 3) RefreshMap();
          continue;
        }
      }
      // 1: created; -3: fenced (our map is stale); else the key's outcome.
      std::pair<int64_t, IdempotencyResult> out =
          RunOnShard(ShardNamed(owner), config_.max_retries, false, "create session", [&](Prepared& p) {
            auto create = [&](bool* commit) -> std::pair<int64_t, IdempotencyResult> {
              if (idem) {
                IdempotencyResult claimed =
                    ClaimKey(p, session.user_id, id, *idem, status, response, config_.idempotency_ttl_s);
                if (claimed.outcome != IdempotencyOutcome::kNew) return {1, claimed};
              }
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
              BindUser(st, 7, session.user_id);
              st.Execute();
              if (st.Int64(0, 0) == 1) return {1, IdempotencyResult{}};
              *commit = false;  // Fenced: the key goes with the create.
              return {-3, IdempotencyResult{}};
            };
            try {
              if (idem) return InTransaction(p.conn, create);
              bool unused = true;
              return create(&unused);
            } catch (const MysqlError& e) {
              // The key's session exists (its key row expired and was
              // claimed again): a mismatch, not a second session.
              if (idem && e.code() == 1062) {
                return std::pair<int64_t, IdempotencyResult>{1, {IdempotencyOutcome::kMismatch, 0, ""}};
              }
              throw;
            }
          }, observer_);
      if (out.first == 1) {
        last_epoch_ = epoch;
        return out.second;
      }
    } catch (const DbError& e) {
      // A shard is unreachable: perhaps it left the map. Look once.
      if (e.kind() != DbErrorKind::kUnavailable || refreshed_after_failure || !RefreshMap()) throw;
      refreshed_after_failure = true;
      continue;
    }
    if (attempt >= 5) throw DbError(DbErrorKind::kUnavailable, 0, owner, "shard map keeps changing; retry");
    RefreshMap();  // Fenced: our map is stale.
  }
}

std::optional<SessionRecord> Store::GetSession(const SessionId& id, const UserId& user) {
  return Routed<SessionRecord>(id, true, "get session", [&](Prepared& p, uint64_t) {
    MysqlStatement& st = p.get;
    st.BindBytes(0, id.bytes());
    BindUser(st, 1, user);
    st.Execute();
    Placed<SessionRecord> out{Placement::kAbsent, {}};
    if (st.row_count() == 0) return out;
    out.placement = StatePlacement<Placement>(st.Text(0, 5));
    if (!ServesRead(out.placement)) return out;
    if (!st.IsNull(0, 0)) out.value.title = st.Text(0, 0);
    out.value.metadata_json = st.Text(0, 1);
    out.value.message_count = st.Int64(0, 2);
    out.value.created_us = st.DatetimeMicros(0, 3);
    out.value.updated_us = st.DatetimeMicros(0, 4);
    if (!st.IsNull(0, 6)) out.value.model = st.Text(0, 6);
    if (!st.IsNull(0, 7)) out.value.system_prompt = st.Text(0, 7);
    out.value.user_id = user;
    return out;
  });
}

bool Store::DeleteSession(const SessionId& id, const UserId& user) {
  static const std::string create_target = IdempotencyTargetSha(kCreateSessionTarget);
  return Routed<bool>(id, false, "delete session", [&](Prepared& p, uint64_t epoch) {
           p.del.BindBytes(0, id.bytes());
           p.del.BindInt64(1, static_cast<int64_t>(epoch));
           BindUser(p.del, 2, user);
           p.del.BindBytes(3, create_target);
           p.del.BindDatetime(4, NowMicros());
           p.del.Execute();
           return Placed<bool>{CodePlacement<Placement>(p.del.Int64(0, 0)), true};
         }).has_value();
}

namespace {

constexpr int64_t kTakenOver = int64_t{1} << 40;  // chat_turn_begin: 2^40 + the stored user seq.

// chat_turn_begin's codes for a key that stops the turn (nothing stored).
std::optional<IdempotencyOutcome> KeyOutcome(int64_t code) {
  switch (code) {
    case -10: return IdempotencyOutcome::kReplay;
    case -11: return IdempotencyOutcome::kInFlight;
    case -12: return IdempotencyOutcome::kMismatch;
    default: return std::nullopt;
  }
}

}  // namespace

AppendResult Store::Append(const SessionId& id, const UserId& user, const AppendRequest& req) {
  constexpr int64_t kFull = -4;  // sql/006_auth.sql
  const std::string idem_user = IdemUser(user);
  auto result = Routed<AppendResult>(id, false, "append message", [&](Prepared& p, uint64_t epoch) {
    AppendResult r;
    if (req.claim) {
      // The key and the user message in one statement (autocommit: atomic).
      MysqlStatement& st = p.turn_begin;
      st.BindBytes(0, id.bytes());
      st.BindString(1, req.content);
      st.BindDatetime(2, req.created_us);
      st.BindInt64(3, static_cast<int64_t>(epoch));
      st.BindString(4, req.meta_json);
      BindUser(st, 5, user);
      st.BindInt64(6, req.max_messages);
      st.BindBytes(7, idem_user);
      st.BindBytes(8, req.claim->target_sha);
      st.BindBytes(9, req.claim->key);
      st.BindBytes(10, req.claim->request_sha);
      st.BindInt64(11, config_.idempotency_ttl_s);
      st.BindInt64(12, config_.idempotency_lease_s);
      st.BindInt64(13, req.attempt);
      st.Execute();
      const int64_t code = st.Int64(0, 0);
      if (std::optional<IdempotencyOutcome> outcome = KeyOutcome(code)) {
        r.idempotency.outcome = *outcome;
        if (*outcome == IdempotencyOutcome::kReplay) r.idempotency = StoredResponse(p, user, *req.claim);
        return Placed<AppendResult>{Placement::kHere, r};
      }
      if (code == kFull) {
        r.full = true;
        return Placed<AppendResult>{Placement::kHere, r};
      }
      const Placement placement = CodePlacement<Placement>(code);
      if (placement != Placement::kHere) return Placed<AppendResult>{placement, r};
      r.reused = code > kTakenOver;
      r.seq = r.reused ? code - kTakenOver : code;
      return Placed<AppendResult>{Placement::kHere, r};
    }
    auto append = [&](bool* commit) -> Placed<AppendResult> {
      MysqlStatement& st = p.append;
      st.BindBytes(0, id.bytes());
      st.BindString(1, req.role);
      st.BindString(2, req.content);
      st.BindDatetime(3, req.created_us);
      st.BindInt64(4, req.reply_to);
      st.BindInt64(5, static_cast<int64_t>(epoch));
      st.BindString(6, req.meta_json);
      BindUser(st, 7, user);
      st.BindInt64(8, req.max_messages);
      st.Execute();
      const int64_t code = st.Int64(0, 0);
      if (code == kFull) {
        r.full = true;
        *commit = false;
        return Placed<AppendResult>{Placement::kHere, r};
      }
      const Placement placement = CodePlacement<Placement>(code);
      if (placement != Placement::kHere) {
        *commit = false;
        return Placed<AppendResult>{placement, r};
      }
      r.seq = code;
      if (req.complete) {
        auto [status, body] = req.respond(r.seq);
        MysqlStatement& done = p.idem_complete;
        done.BindInt64(0, status);
        done.BindString(1, body);
        done.BindInt64(2, config_.idempotency_ttl_s);
        done.BindBytes(3, idem_user);
        done.BindBytes(4, req.complete->target_sha);
        done.BindBytes(5, req.complete->key);
        done.BindInt64(6, req.attempt);
        done.Execute();
        if (done.affected_rows() != 1) {
          // A retry took the key over (this attempt outlived its lease): its
          // answer is the one kept, not this one.
          *commit = false;
          r = AppendResult{};
          r.taken_over = true;
        }
      }
      return Placed<AppendResult>{Placement::kHere, r};
    };
    if (!req.complete) {
      bool unused = true;
      return append(&unused);
    }
    return InTransaction(p.conn, append);
  });
  if (req.claim && result && result->seq != 0) MaybeExpireKeys(last_shard_);
  return result.value_or(AppendResult{});
}

void Store::MaybeExpireKeys(const std::string& shard) {
  // Each run forgets up to 200 keys; one in 16 claims runs it, so keys are
  // forgotten faster than turns make them.
  if (++claims_ % 16 != 0) return;
  try {
    RunOnShard(ShardNamed(shard), 0, false, "expire idempotency keys", [](Prepared& p) {
      p.idem_expire.Execute();
      return 0;
    }, observer_);
  } catch (const DbError& e) {
    LOG_WARN("shard %s: expiring idempotency keys failed (the next claims try again): %s", shard.c_str(), e.what());
  }
}

int64_t Store::AppendMessage(const SessionId& id, std::string_view role, std::string_view content,
                             int64_t created_us, int64_t reply_to, std::string_view meta_json) {
  AppendRequest req;
  req.role = role;
  req.content = content;
  req.created_us = created_us;
  req.reply_to = reply_to;
  req.meta_json = meta_json;
  return Append(id, "", req).seq;
}

void Store::FailTurnKey(const SessionId& id, const UserId& user, const IdempotencyKey& key, int64_t attempt) {
  try {
    const std::string idem_user = IdemUser(user);
    Routed<bool>(id, false, "mark an idempotency key failed", [&](Prepared& p, uint64_t epoch) {
      MysqlStatement& st = p.turn_fail;
      st.BindBytes(0, id.bytes());
      st.BindInt64(1, static_cast<int64_t>(epoch));
      BindUser(st, 2, user);
      st.BindBytes(3, idem_user);
      st.BindBytes(4, key.target_sha);
      st.BindBytes(5, key.key);
      st.BindInt64(6, attempt);
      st.Execute();
      return Placed<bool>{CodePlacement<Placement>(st.Int64(0, 0)), true};
    });
  } catch (const DbError& e) {
    LOG_WARN("session %s: marking an idempotency key failed did not work (a retry takes it over after %d s): %s",
             id.text().c_str(), config_.idempotency_lease_s, e.what());
  }
}

std::optional<std::vector<MessageRecord>> Store::ListMessages(const SessionId& id, int64_t after, int limit,
                                                              const UserId& user) {
  return Routed<std::vector<MessageRecord>>(id, true, "list messages", [&](Prepared& p, uint64_t) {
    MysqlStatement& st = p.list;
    st.BindBytes(0, id.bytes());
    BindUser(st, 1, user);
    st.BindInt64(2, after);
    st.BindInt64(3, limit);
    st.Execute();
    Placed<std::vector<MessageRecord>> out{Placement::kAbsent, {}};
    out.placement = MessagesPlacement<Placement>(st, p.place, id, user, &out.value);
    return out;
  });
}

std::optional<TurnContext> Store::LoadContext(const SessionId& id, int limit, int64_t token_budget,
                                              const UserId& user) {
  return Routed<TurnContext>(id, true, "load context", [&](Prepared& p, uint64_t) {
    Placed<TurnContext> out{Placement::kAbsent, {}};
    MysqlStatement& st = p.context;
    st.BindBytes(0, id.bytes());
    BindUser(st, 1, user);
    st.BindInt64(2, limit);
    st.Execute();
    if (st.row_count() == 0) {  // No message yet, or no session.
      MysqlStatement& s = p.session;
      s.BindBytes(0, id.bytes());
      BindUser(s, 1, user);
      s.Execute();
      if (s.row_count() == 0) return out;
      out.placement = StatePlacement<Placement>(s.Text(0, 0));
      out.value.model = s.Text(0, 1);
      out.value.system_prompt = s.Text(0, 2);
      return out;
    }
    out.placement = StatePlacement<Placement>(st.Text(0, 3));
    if (!ServesRead(out.placement)) return out;
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

std::vector<std::string> Store::AllShardNames() const {
  std::vector<std::string> names;
  for (const ShardEntry& s : map_->shards()) names.push_back(s.name);
  return names;
}

SessionPage Store::ListSessions(const UserId& user, const SessionCursor& cursor, int limit) {
  MaybeRefresh();
  // Each shard's newest `limit + 1` after the cursor; the merge keeps one
  // row per id (a session being moved can be on two shards at once).
  std::map<std::pair<int64_t, std::string>, std::pair<SessionId, SessionRecord>, std::greater<>> merged;
  std::map<std::string, bool> frozen_only;  // id -> seen only as a 'moving' (frozen) copy
  for (const std::string& name : AllShardNames()) {
    RunOnShard(ShardNamed(name), config_.max_retries, true, "list sessions", [&](Prepared& p) {
      MysqlStatement& st = p.sessions;
      BindUser(st, 0, user);
      st.BindDatetime(1, cursor.created_us == INT64_MAX ? UnixMicrosFromCivil(9999, 12, 31, 23, 59, 59, 0)
                                                        : cursor.created_us);
      st.BindDatetime(2, cursor.created_us == INT64_MAX ? UnixMicrosFromCivil(9999, 12, 31, 23, 59, 59, 0)
                                                        : cursor.created_us);
      const std::string top(16, '\xff');
      st.BindBytes(3, cursor.id_bytes.empty() ? std::string_view(top) : std::string_view(cursor.id_bytes));
      st.BindInt64(4, limit + 1);
      st.Execute();
      for (size_t i = 0; i < st.row_count(); ++i) {
        SessionRecord r;
        if (!st.IsNull(i, 1)) r.title = st.Text(i, 1);
        r.metadata_json = st.Text(i, 2);
        r.message_count = st.Int64(i, 3);
        r.created_us = st.DatetimeMicros(i, 4);
        r.updated_us = st.DatetimeMicros(i, 5);
        if (!st.IsNull(i, 6)) r.model = st.Text(i, 6);
        if (!st.IsNull(i, 7)) r.system_prompt = st.Text(i, 7);
        r.user_id = user;
        auto key = std::make_pair(r.created_us, st.Text(i, 0));
        auto seen = frozen_only.emplace(st.Text(i, 0), true).first;
        seen->second = seen->second && st.Text(i, 8) == "moving";
        auto it = merged.find(key);
        if (it == merged.end() || r.message_count > it->second.second.message_count) {
          merged.insert_or_assign(key, std::make_pair(SessionId::FromBytes(st.Text(i, 0)), std::move(r)));
        }
      }
      return 0;
    }, observer_);
  }
  // A frozen copy is the session only if its new owner has not deleted it
  // meanwhile (a move interrupted after activating the copy): ask where it
  // stands (rare: only while sessions move).
  for (auto it = merged.begin(); it != merged.end();) {
    if (frozen_only[it->first.second] && !GetSession(it->second.first, user)) it = merged.erase(it);
    else ++it;
  }
  SessionPage page;
  for (auto& [key, value] : merged) {
    if (static_cast<int>(page.sessions.size()) == limit) {
      page.has_more = true;
      break;
    }
    page.sessions.push_back(std::move(value));
  }
  return page;
}

int64_t Store::CountSessions(const UserId& user) {
  MaybeRefresh();
  int64_t total = 0;
  for (const std::string& name : AllShardNames()) {
    total += RunOnShard(ShardNamed(name), config_.max_retries, true, "count sessions", [&](Prepared& p) {
      BindUser(p.count, 0, user);
      p.count.Execute();
      return p.count.Int64(0, 0);
    }, observer_);
  }
  return total;
}

std::optional<KeyRecord> Store::LookupApiKey(const std::string& key_id) {
  MaybeRefresh();
  // The shard the key id hashes to first (its rows stay warm there), then the others.
  std::vector<std::string> order = AllShardNames();
  const std::string first = map_->router().Owner(Hex(key_id));
  std::stable_partition(order.begin(), order.end(), [&](const std::string& n) { return n == first; });
  std::optional<DbError> last_error;
  for (const std::string& name : order) {
    try {
      return RunOnShard(ShardNamed(name), 0, true, "look up API key", [&](Prepared& p) -> std::optional<KeyRecord> {
        MysqlStatement& st = p.key;
        st.BindBytes(0, key_id);
        st.Execute();
        if (st.row_count() == 0) return std::nullopt;
        KeyRecord k;
        k.user_id = st.Text(0, 0);
        k.secret_sha256 = st.Text(0, 1);
        k.expires_us = st.IsNull(0, 2) ? 0 : st.DatetimeMicros(0, 2);
        k.revoked = st.Int64(0, 3) != 0;
        k.user_disabled = st.Int64(0, 4) != 0;
        return k;
      }, observer_);
    } catch (const DbError& e) {
      last_error = e;  // This copy is unreachable: ask the next shard.
    }
  }
  throw *last_error;
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
