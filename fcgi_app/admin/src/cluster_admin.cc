#include "admin/cluster_admin.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <thread>

#include "base/ids.h"
#include "store/migrator.h"
#include "store/mysql_statement.h"
#include "store/store.h"
#include "base/time_util.h"

namespace chatllm {
namespace {

using shard_router::ShardState;

void Exec(MYSQL* h, const std::string& sql) {
  if (mysql_real_query(h, sql.data(), sql.size()) != 0) {
    throw MysqlError(static_cast<int>(mysql_errno(h)), sql + ": " + mysql_error(h));
  }
}

constexpr int kCopyBatch = 500;   // Messages read from the source per query.
constexpr int kInsertRows = 100;  // Messages written per multi-row INSERT.

std::string InsertMessagesSql(int rows) {
  std::string sql = "INSERT INTO messages (session_id, seq, role, content, reply_to, created_at, meta) VALUES ";
  for (int i = 0; i < rows; ++i) sql += i ? ",(?, ?, ?, ?, ?, ?, ?)" : "(?, ?, ?, ?, ?, ?, ?)";
  return sql;
}

}  // namespace

ClusterAdmin::ClusterAdmin(const Config& config) : config_(config) {
  // An operator tool can wait for a busy shard longer than a request can.
  options_.connect_timeout_s = std::max(config.connect_timeout_s, 10);
  options_.read_timeout_s = 120;
  options_.write_timeout_s = 120;
  options_.statement_timeout_s = 0;
  options_.lock_wait_timeout_s = 60;  // Freezing a session waits for appends in flight.
  options_.down_backoff_ms = 0;
}

ClusterAdmin::~ClusterAdmin() = default;

ClusterAdmin::Link& ClusterAdmin::LinkTo(const ShardEntry& e) {
  Link& link = links_[e.name];
  if (link.conn) {
    const DbEndpoint& ep = link.conn->endpoint();
    if (ep.host != e.host || ep.port != e.port || ep.database != e.database) {
      link.statements.clear();
      link.conn.reset();
    }
  }
  if (!link.conn) {
    link.conn = std::make_unique<DbConnection>(
        DbEndpoint{e.name, e.host, e.port, e.database, config_.migrate_user, config_.migrate_password}, options_);
  }
  link.conn->Get();
  if (link.generation != link.conn->generation()) {
    link.statements.clear();  // Prepared on a connection that is gone.
    link.generation = link.conn->generation();
  }
  return link;
}

MYSQL* ClusterAdmin::Handle(const ShardEntry& e) { return LinkTo(e).conn->handle(); }

MysqlStatement& ClusterAdmin::Stmt(const ShardEntry& e, const std::string& sql) {
  Link& link = LinkTo(e);
  std::unique_ptr<MysqlStatement>& st = link.statements[sql];
  if (!st) st = std::make_unique<MysqlStatement>(link.conn->handle(), sql);
  return *st;
}

std::shared_ptr<const ClusterMap> ClusterAdmin::LoadMap() {
  std::shared_ptr<const ClusterMap> seeds = SeedMap(config_);
  std::shared_ptr<const ClusterMap> newest = seeds;
  std::set<std::string> asked;
  // Ask every seed, then every shard the newest map found so far names.
  for (bool grew = true; grew;) {
    grew = false;
    std::vector<ShardEntry> pending;
    for (const ClusterMap* m : {seeds.get(), newest.get()}) {
      for (const ShardEntry& e : m->shards()) {
        if (asked.insert(e.name).second) pending.push_back(e);
      }
    }
    for (const ShardEntry& e : pending) {
      try {
        MysqlStatement st(Handle(e), "SELECT epoch, map FROM shard_map ORDER BY epoch DESC LIMIT 1");
        st.Execute();
        if (st.row_count() == 0 || static_cast<uint64_t>(st.Int64(0, 0)) <= newest->epoch()) continue;
        std::string error;
        auto map = ClusterMap::FromJson(st.Text(0, 1), &error);
        if (!map) throw AdminError("shard " + e.name + " stores an invalid map: " + error);
        newest = map;
        grew = true;
      } catch (const MysqlError&) {
        // Not migrated yet (no shard_map): it holds no map.
      } catch (const DbError&) {
        // Unreachable: the others still tell the newest map.
      }
    }
  }
  return newest;
}

std::shared_ptr<const ClusterMap> ClusterAdmin::Next(const ClusterMap& map, std::vector<ShardEntry> shards) {
  std::string error;
  auto next = ClusterMap::Build(map.epoch() + 1, std::move(shards), &error);
  if (!next) throw AdminError("the new map would be invalid: " + error);
  return next;
}

void ClusterAdmin::Publish(const ClusterMap& map, const ClusterMap* previous) {
  std::vector<ShardEntry> targets = map.shards();
  if (previous) {
    for (const ShardEntry& e : previous->shards()) {
      if (!map.Find(e.name)) targets.push_back(e);
    }
  }
  const std::string json = map.ToJson();
  // Every shard gets the map before any fence moves, so an app refused by a
  // fence always finds the new map wherever it looks.
  for (const ShardEntry& e : targets) {
    OnShard(e, "publishing the map", [&] {
      MysqlStatement put(Handle(e),
                         "INSERT INTO shard_map (epoch, map, created_at) VALUES (?, ?, UTC_TIMESTAMP(6)) "
                         "ON DUPLICATE KEY UPDATE epoch = epoch");
      put.BindInt64(0, static_cast<int64_t>(map.epoch()));
      put.BindString(1, json);
      put.Execute();
      MysqlStatement get(Handle(e), "SELECT map FROM shard_map WHERE epoch = ?");
      get.BindInt64(0, static_cast<int64_t>(map.epoch()));
      get.Execute();
      if (get.row_count() != 1 || get.Text(0, 0) != json) {
        throw AdminError("shard " + e.name + " already holds a different map for epoch " +
                         std::to_string(map.epoch()) + ": did another shardctl run at the same time?");
      }
    });
  }
  for (const ShardEntry& e : targets) {
    OnShard(e, "raising the fence", [&] {
      MysqlStatement fence(Handle(e), "UPDATE shard_fence SET epoch = ? WHERE id = 1 AND epoch < ?");
      fence.BindInt64(0, static_cast<int64_t>(map.epoch()));
      fence.BindInt64(1, static_cast<int64_t>(map.epoch()));
      fence.Execute();
    });
  }
}

std::vector<ShardReport> ClusterAdmin::Status(const ClusterMap& map) {
  std::vector<ShardReport> out;
  for (const ShardEntry& e : map.shards()) {
    ShardReport r;
    r.name = e.name;
    try {
      MYSQL* h = Handle(e);
      MysqlStatement schema(h, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
      schema.Execute();
      r.schema_version = static_cast<int>(schema.Int64(0, 0));
      MysqlStatement fence(h, "SELECT epoch FROM shard_fence WHERE id = 1");
      fence.Execute();
      r.fence = fence.row_count() ? fence.Int64(0, 0) : 0;
      MysqlStatement counts(h,
                            "SELECT COALESCE(SUM(state = 'active'), 0), COALESCE(SUM(IF(state = 'active', "
                            "message_count, 0)), 0), COALESCE(SUM(state IN ('moving', 'incoming')), 0) FROM sessions");
      counts.Execute();
      r.sessions = counts.Int64(0, 0);
      r.messages = counts.Int64(0, 1);
      r.in_transit = counts.Int64(0, 2);
      r.reachable = true;
    } catch (const MysqlError& e) {
      r.reachable = true;
      r.error = e.what();
    } catch (const DbError& e) {
      r.error = "unreachable";
    }
    out.push_back(std::move(r));
  }
  return out;
}

void ClusterAdmin::Migrate(const ShardEntry& e) {
  DbEndpoint ep{e.name, e.host, e.port, e.database, config_.migrate_user, config_.migrate_password};
  try {
    MigrateShard(ep, options_);
  } catch (const MigrationError& err) {
    throw AdminError(err.what());
  } catch (const DbError& err) {
    throw AdminError("shard " + e.name + " is unreachable: " + err.what());
  }
}

std::shared_ptr<const ClusterMap> ClusterAdmin::AddShard(const ShardEntry& entry) {
  auto map = LoadMap();
  if (const ShardEntry* existing = map->Find(entry.name)) {
    bool same = existing->host == entry.host && existing->port == entry.port && existing->database == entry.database;
    if (existing->state == ShardState::kJoining && same) {
      Migrate(entry);
      Publish(*map, nullptr);  // Finish an earlier attempt.
      CopyAuth(*map, entry);
      return map;
    }
    throw AdminError("shard " + entry.name + " is already in the map (state " +
                     shard_router::ShardStateName(existing->state) + ")");
  }
  if (map->router().moving()) {
    throw AdminError("epoch " + std::to_string(map->epoch()) +
                     " still has shards joining or draining: run shardctl rebalance first");
  }
  Migrate(entry);
  int64_t held = OnShard(entry, "counting sessions", [&] {
    MysqlStatement st(Handle(entry), "SELECT COUNT(*) FROM sessions WHERE state <> 'moved'");
    st.Execute();
    return st.Int64(0, 0);
  });
  if (held != 0) {
    throw AdminError("shard " + entry.name + " already holds " + std::to_string(held) +
                     " sessions; a new shard must be empty");
  }
  // A shard that was drained and removed before keeps tombstones pointing
  // elsewhere; they would only send readers on a detour.
  OnShard(entry, "clearing old tombstones", [&] {
    Exec(Handle(entry), "DELETE FROM sessions WHERE state = 'moved'");
    Exec(Handle(entry), "DELETE FROM messages");
  });
  std::vector<ShardEntry> shards = map->shards();
  ShardEntry joining = entry;
  joining.state = ShardState::kJoining;
  shards.push_back(joining);
  auto next = Next(*map, std::move(shards));
  Publish(*next, map.get());
  // After the publish: from now on chatllm-admin writes the new shard too.
  CopyAuth(*next, entry);
  return next;
}

void ClusterAdmin::CopyAuth(const ClusterMap& map, const ShardEntry& to) {
  if (const ShardEntry* from = FirstActiveShard(map, to.name)) CopyAuthBetween(*from, to);
}

void ClusterAdmin::CopyAuthBetween(const ShardEntry& from_shard, const ShardEntry& to) {
  const ShardEntry* from = &from_shard;
  // Upserts: rows the admin tool wrote to the target meanwhile stay, and
  // a revocation or a disabled user is never undone by the copy.
  OnShard(*from, "reading users and API keys", [&] {
    MysqlStatement users(Handle(*from), "SELECT user_id, name, created_at, disabled_at FROM users");
    users.Execute();
    MysqlStatement keys(Handle(*from),
                        "SELECT key_id, user_id, secret_sha256, label, created_at, expires_at, revoked_at FROM api_keys");
    keys.Execute();
    OnShard(to, "copying users and API keys", [&] {
      Exec(Handle(to), "START TRANSACTION");
      MysqlStatement put_user(Handle(to),
                              "INSERT INTO users (user_id, name, created_at, disabled_at) VALUES (?, ?, ?, ?) "
                              "ON DUPLICATE KEY UPDATE disabled_at = COALESCE(users.disabled_at, VALUES(disabled_at))");
      for (size_t i = 0; i < users.row_count(); ++i) {
        put_user.BindBytes(0, users.Text(i, 0));
        put_user.BindString(1, users.Text(i, 1));
        put_user.BindDatetime(2, users.DatetimeMicros(i, 2));
        if (users.IsNull(i, 3)) put_user.BindNull(3);
        else put_user.BindDatetime(3, users.DatetimeMicros(i, 3));
        put_user.Execute();
      }
      MysqlStatement put_key(Handle(to),
                             "INSERT INTO api_keys (key_id, user_id, secret_sha256, label, created_at, expires_at, "
                             "revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE "
                             "revoked_at = COALESCE(api_keys.revoked_at, VALUES(revoked_at))");
      for (size_t i = 0; i < keys.row_count(); ++i) {
        put_key.BindBytes(0, keys.Text(i, 0));
        put_key.BindBytes(1, keys.Text(i, 1));
        put_key.BindBytes(2, keys.Text(i, 2));
        put_key.BindString(3, keys.Text(i, 3));
        put_key.BindDatetime(4, keys.DatetimeMicros(i, 4));
        if (keys.IsNull(i, 5)) put_key.BindNull(5);
        else put_key.BindDatetime(5, keys.DatetimeMicros(i, 5));
        if (keys.IsNull(i, 6)) put_key.BindNull(6);
        else put_key.BindDatetime(6, keys.DatetimeMicros(i, 6));
        put_key.Execute();
      }
      Exec(Handle(to), "COMMIT");
    });
  });
}

std::shared_ptr<const ClusterMap> ClusterAdmin::Drain(const std::string& name) {
  auto map = LoadMap();
  const ShardEntry* e = map->Find(name);
  if (!e) throw AdminError("no shard named " + name + " in map epoch " + std::to_string(map->epoch()));
  if (e->state == ShardState::kDraining) {
    Publish(*map, nullptr);
    return map;
  }
  if (map->router().moving()) {
    throw AdminError("epoch " + std::to_string(map->epoch()) +
                     " still has shards joining or draining: run shardctl rebalance first");
  }
  if (e->state != ShardState::kActive) {
    throw AdminError("shard " + name + " is " + shard_router::ShardStateName(e->state) + ", not active");
  }
  std::vector<ShardEntry> shards = map->shards();
  for (ShardEntry& s : shards) {
    if (s.name == name) s.state = ShardState::kDraining;
  }
  auto next = Next(*map, std::move(shards));
  Publish(*next, map.get());
  return next;
}

std::shared_ptr<const ClusterMap> ClusterAdmin::RemoveShard(const std::string& name) {
  auto map = LoadMap();
  const ShardEntry* e = map->Find(name);
  if (!e) throw AdminError("no shard named " + name + " in map epoch " + std::to_string(map->epoch()));
  if (e->state != ShardState::kDrained) {
    throw AdminError("shard " + name + " is " + shard_router::ShardStateName(e->state) +
                     "; drain it first (shardctl drain " + name + ")");
  }
  int64_t left = OnShard(*e, "counting sessions", [&] {
    MysqlStatement st(Handle(*e), "SELECT COUNT(*) FROM sessions WHERE state <> 'moved'");
    st.Execute();
    return st.Int64(0, 0);
  });
  if (left != 0) throw AdminError("shard " + name + " still holds " + std::to_string(left) + " sessions");
  std::vector<ShardEntry> shards;
  for (const ShardEntry& s : map->shards()) {
    if (s.name != name) shards.push_back(s);
  }
  auto next = Next(*map, std::move(shards));
  Publish(*next, map.get());  // The removed shard gets it too, for apps that still ask it.
  return next;
}

void ClusterAdmin::LockAll(const ClusterMap& map) {
  for (const ShardEntry& e : map.shards()) {
    int64_t got = OnShard(e, "taking the rebalance lock", [&] {
      MysqlStatement st(Handle(e), "SELECT COALESCE(GET_LOCK('chatllm.rebalance', 0), 0)");
      st.Execute();
      return st.Int64(0, 0);
    });
    if (got != 1) throw AdminError("another shardctl rebalance is running (lock held on shard " + e.name + ")");
  }
}

ClusterAdmin::Fingerprint ClusterAdmin::FingerprintOf(const ShardEntry& shard, const std::string& id,
                                                      int64_t up_to_seq) {
  return OnShard(shard, "checksumming", [&] {
    MysqlStatement& st = Stmt(
        shard,
        "SELECT COUNT(*), COALESCE(MAX(seq), 0), HEX(COALESCE(BIT_XOR(CAST(CONV(LEFT(MD5(CONCAT_WS(0x1f, seq, role, "
        "content, COALESCE(reply_to, 0), created_at, COALESCE(meta, ''))), 16), 16, 10) AS UNSIGNED)), 0)), "
        "(SELECT message_count FROM sessions WHERE session_id = ?), "
        "(SELECT MD5(CONCAT_WS(0x1f, HEX(COALESCE(user_id, '')), created_at, COALESCE(title, ''), metadata, "
        "COALESCE(model, ''), COALESCE(system_prompt, ''))) FROM sessions WHERE session_id = ?) "
        "FROM messages WHERE session_id = ? AND seq <= ?");
    st.BindBytes(0, id);
    st.BindBytes(1, id);
    st.BindBytes(2, id);
    st.BindInt64(3, up_to_seq);
    st.Execute();
    Fingerprint f;
    f.messages = st.Int64(0, 0);
    f.max_seq = st.Int64(0, 1);
    f.digest = st.Text(0, 2);
    f.message_count = st.Int64(0, 3);
    f.row = st.Text(0, 4);
    return f;
  });
}

ClusterAdmin::MoveOutcome ClusterAdmin::MoveSession(const std::string& id, const ShardEntry& from,
                                                    const ShardEntry& to, uint64_t epoch) {
  const std::string id_text = SessionId::FromBytes(id).text();
  auto state_on = [&](const ShardEntry& shard) {
    return OnShard(shard, "reading session state", [&] {
      MysqlStatement& st = Stmt(shard, "SELECT state FROM sessions WHERE session_id = ?");
      st.BindBytes(0, id);
      st.Execute();
      return st.row_count() ? st.Text(0, 0) : std::string("absent");
    });
  };
  // Drops whatever an earlier attempt (or an earlier move the other way)
  // left of this session on the target: never a copy that was made active,
  // which may hold writes of its own, nor (unless `tombstone_too`) a
  // 'deleted' one, which says the session was deleted after it arrived
  // (checked under the target's row lock).
  auto clear_target = [&](bool tombstone_too) {
    OnShard(to, "clearing leftovers", [&] {
      Exec(Handle(to), "START TRANSACTION");
      MysqlStatement& lock = Stmt(to, "SELECT state FROM sessions WHERE session_id = ? FOR UPDATE");
      lock.BindBytes(0, id);
      lock.Execute();
      const std::string there = lock.row_count() == 1 ? lock.Text(0, 0) : "absent";
      if (there == "active" || (there == "deleted" && !tombstone_too)) {
        Exec(Handle(to), "ROLLBACK");
        throw AdminError("session " + id_text + " is " + there + " on " + to.name + " while " + from.name +
                         " still holds it; left both for an operator (shardctl verify shows them)");
      }
      MysqlStatement& s = Stmt(to, "DELETE FROM sessions WHERE session_id = ?");
      s.BindBytes(0, id);
      s.Execute();
      MysqlStatement& m = Stmt(to, "DELETE FROM messages WHERE session_id = ?");
      m.BindBytes(0, id);
      m.Execute();
      MysqlStatement& k = Stmt(to, "DELETE FROM idempotency_keys WHERE session_id = ?");
      k.BindBytes(0, id);
      k.Execute();
      Exec(Handle(to), "COMMIT");
    });
  };
  auto set_state = [&](const ShardEntry& shard, const char* sql, const char* what) {
    return OnShard(shard, what, [&] {
      MysqlStatement& st = Stmt(shard, sql);
      st.BindBytes(0, id);
      st.Execute();
      return st.affected_rows();
    });
  };
  // The session row (as `state`: 'incoming', invisible to the app, or
  // 'deleted' for a tombstone), its messages and its idempotency keys, from
  // the source to the target.
  auto copy = [&](const char* state) {
    OnShard(to, "copying the session", [&] {
      MysqlStatement& read =
          Stmt(from,
               "SELECT title, metadata, message_count, created_at, updated_at, model, system_prompt, last_user_digest, "
               "user_id FROM sessions WHERE session_id = ?");
      read.BindBytes(0, id);
      read.Execute();
      if (read.row_count() != 1) throw AdminError("shard " + from.name + ": session " + id_text + " vanished while frozen");
      MysqlStatement& write = Stmt(to,
                                   "INSERT INTO sessions (session_id, title, metadata, message_count, created_at, "
                                   "updated_at, model, system_prompt, last_user_digest, user_id, state) "
                                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
      write.BindBytes(0, id);
      if (read.IsNull(0, 0)) write.BindNull(1);
      else write.BindString(1, read.Text(0, 0));
      write.BindString(2, read.Text(0, 1));
      write.BindInt64(3, read.Int64(0, 2));
      write.BindDatetime(4, read.DatetimeMicros(0, 3));
      write.BindDatetime(5, read.DatetimeMicros(0, 4));
      for (int c = 5; c <= 8; ++c) {  // model, system_prompt, last_user_digest, user_id: nullable.
        if (read.IsNull(0, c)) write.BindNull(c + 1);
        else if (c >= 7) write.BindBytes(c + 1, read.Text(0, c));
        else write.BindString(c + 1, read.Text(0, c));
      }
      write.BindString(10, state);
      write.Execute();
      MysqlStatement& batch = Stmt(from,
                                   "SELECT seq, role, content, reply_to, created_at, meta FROM messages "
                                   "WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?");
      for (int64_t after = 0;;) {
        batch.BindBytes(0, id);
        batch.BindInt64(1, after);
        batch.BindInt64(2, kCopyBatch);
        batch.Execute();
        const size_t n = batch.row_count();
        if (n == 0) break;
        Exec(Handle(to), "START TRANSACTION");
        for (size_t first = 0; first < n; first += kInsertRows) {
          int rows = static_cast<int>(std::min<size_t>(kInsertRows, n - first));
          MysqlStatement& insert = Stmt(to, InsertMessagesSql(rows));
          for (int r = 0; r < rows; ++r) {
            size_t i = first + static_cast<size_t>(r);
            int p = r * 7;
            insert.BindBytes(p, id);
            insert.BindInt64(p + 1, batch.Int64(i, 0));
            insert.BindString(p + 2, batch.Text(i, 1));
            insert.BindString(p + 3, batch.Text(i, 2));
            if (batch.IsNull(i, 3)) insert.BindNull(p + 4);
            else insert.BindInt64(p + 4, batch.Int64(i, 3));
            insert.BindDatetime(p + 5, batch.DatetimeMicros(i, 4));
            if (batch.IsNull(i, 5)) insert.BindNull(p + 6);
            else insert.BindString(p + 6, batch.Text(i, 5));
          }
          insert.Execute();
        }
        Exec(Handle(to), "COMMIT");
        after = batch.Int64(n - 1, 0);
      }
      // Its idempotency keys go with it (a retry after the move must still
      // find them). A plain INSERT: a key row of another session with the
      // same primary key would be a bug to stop at, not a row to drop.
      MysqlStatement& keys = Stmt(from,
                                  "SELECT user_id, target_sha, idem_key, request_sha, state, status, response, "
                                  "created_at, expires_at, user_seq, attempt FROM idempotency_keys WHERE session_id = ?");
      keys.BindBytes(0, id);
      keys.Execute();
      for (size_t i = 0; i < keys.row_count(); ++i) {
        MysqlStatement& put = Stmt(to,
                                   "INSERT INTO idempotency_keys (user_id, target_sha, idem_key, session_id, "
                                   "request_sha, state, status, response, created_at, expires_at, user_seq, attempt) "
                                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
        put.BindBytes(0, keys.Text(i, 0));
        put.BindBytes(1, keys.Text(i, 1));
        put.BindBytes(2, keys.Text(i, 2));
        put.BindBytes(3, id);
        put.BindBytes(4, keys.Text(i, 3));
        put.BindString(5, keys.Text(i, 4));
        put.BindInt64(6, keys.Int64(i, 5));
        if (keys.IsNull(i, 6)) put.BindNull(7);
        else put.BindString(7, keys.Text(i, 6));
        put.BindDatetime(8, keys.DatetimeMicros(i, 7));
        put.BindDatetime(9, keys.DatetimeMicros(i, 8));
        for (int c = 9; c <= 10; ++c) {  // user_seq, attempt: nullable.
          if (keys.IsNull(i, c)) put.BindNull(c + 1);
          else put.BindInt64(c + 1, keys.Int64(i, c));
        }
        put.Execute();
      }
    });
  };
  // The source becomes a tombstone naming the target, and loses its rows,
  // in one transaction; only from `expected` (the state this move left it in).
  auto tombstone = [&](const char* expected) {
    OnShard(from, "tombstoning the source", [&] {
      Exec(Handle(from), "START TRANSACTION");
      MysqlStatement& s = Stmt(from,
                               "UPDATE sessions SET state = 'moved', moved_to = ?, moved_epoch = ?, title = NULL, "
                               "metadata = '{}' WHERE session_id = ? AND state = ?");
      s.BindString(0, to.name);
      s.BindInt64(1, static_cast<int64_t>(epoch));
      s.BindBytes(2, id);
      s.BindString(3, expected);
      s.Execute();
      if (s.affected_rows() != 1) {
        Exec(Handle(from), "ROLLBACK");
        return;  // Changed under us (a tombstone that expired): nothing left to delete.
      }
      MysqlStatement& m = Stmt(from, "DELETE FROM messages WHERE session_id = ?");
      m.BindBytes(0, id);
      m.Execute();
      MysqlStatement& k = Stmt(from, "DELETE FROM idempotency_keys WHERE session_id = ?");
      k.BindBytes(0, id);
      k.Execute();
      Exec(Handle(from), "COMMIT");
    });
  };

  // After the source is tombstoned: the target's copy no longer needs its
  // arrival marker, and a tombstone it got only because of the marker (a
  // delete while the source still held a frozen copy) is not needed either.
  auto finish_arrival = [&] {
    OnShard(to, "finishing the arrival", [&] {
      Exec(Handle(to), "START TRANSACTION");
      MysqlStatement& drop = Stmt(to,
                                  "DELETE FROM sessions WHERE session_id = ? AND state = 'deleted' AND NOT EXISTS "
                                  "(SELECT 1 FROM idempotency_keys k WHERE k.session_id = sessions.session_id)");
      drop.BindBytes(0, id);
      drop.Execute();
      MysqlStatement& clear = Stmt(to, "UPDATE sessions SET arrived_from = NULL WHERE session_id = ?");
      clear.BindBytes(0, id);
      clear.Execute();
      Exec(Handle(to), "COMMIT");
    });
  };

  std::string on_a = state_on(from);
  if (on_a == "deleted") {
    // A tombstone kept for a create's key: it moves with the ring like a
    // session, so that a late retry of the create finds it on the new owner.
    // It takes no writes; a retry that reads it on the source meanwhile
    // finds it there (its key row is copied before the source lets go).
    clear_target(/*tombstone_too=*/true);
    copy("deleted");
    tombstone("deleted");
    return MoveOutcome::kMoved;
  }

  // 1. Freeze on the source.
  set_state(from, "UPDATE sessions SET state = 'moving' WHERE session_id = ? AND state = 'active'",
            "freezing the session");
  on_a = state_on(from);
  if (on_a == "absent" || on_a == "moved") {
    if (state_on(to) == "incoming") clear_target(false);
    return on_a == "absent" ? MoveOutcome::kGone : MoveOutcome::kMoved;
  }
  if (on_a == "deleted") return MoveSession(id, from, to, epoch);  // Deleted between the scan and the freeze.
  if (on_a != "moving") throw AdminError("shard " + from.name + ": session " + id_text + " in unexpected state " + on_a);

  const std::string on_b = state_on(to);
  if (on_b == "deleted") {
    // An earlier run activated the copy (step 4) and stopped before step 5;
    // the session was deleted on its new shard since. The frozen source is
    // history of a deleted session: it goes, and is never copied again.
    tombstone("moving");
    finish_arrival();
    return MoveOutcome::kGone;
  }
  const Fingerprint source = FingerprintOf(from, id, INT64_MAX);
  if (on_b != "active") {
    // 2. Copy. 3. Verify: the same rows on both sides.
    clear_target(false);
    copy("incoming");
    const Fingerprint target = FingerprintOf(to, id, INT64_MAX);
    if (!(target == source) || source.messages != source.message_count || source.max_seq != source.message_count) {
      clear_target(false);
      set_state(from, "UPDATE sessions SET state = 'active' WHERE session_id = ? AND state = 'moving'", "unfreezing");
      throw AdminError("session " + id_text + ": copy on " + to.name + " (" + target.Text() + ") does not match " +
                       from.name + " (" + source.Text() + "); left it on " + from.name);
    }
    // 4. Make the copy authoritative, marked as arrived from the source
    // until step 5 is done (chat_delete_session_v3 keeps a tombstone then).
    OnShard(to, "activating the copy", [&] {
      MysqlStatement& st = Stmt(to,
                                "UPDATE sessions SET state = 'active', arrived_from = ? "
                                "WHERE session_id = ? AND state = 'incoming'");
      st.BindString(0, from.name);
      st.BindBytes(1, id);
      st.Execute();
    });
    // Test-only (tests/e2e/reshard_test.cc): stops here, as a crash between
    // steps 4 and 5 would, for the session named.
    if (const char* fp = std::getenv("CHATLLM_FAILPOINT"); fp && fp == "move-after-activate:" + id_text) {
      throw AdminError("failpoint move-after-activate: stopped after activating session " + id_text);
    }
  } else {
    // An earlier run activated the copy (step 4) and stopped before step 5.
    // The copy has served writes since, so its history must begin with the
    // frozen source's, row for row; otherwise (a second session made under
    // the same id) the source is not deleted: both stay for an operator.
    Fingerprint target = FingerprintOf(to, id, source.max_seq);
    if (target.messages != source.messages || target.digest != source.digest || target.row != source.row ||
        target.message_count < source.message_count) {
      throw AdminError("session " + id_text + " is active on " + to.name + " with a history that does not continue " +
                       "the one frozen on " + from.name + " (" + target.Text() + " vs " + source.Text() +
                       "); left both for an operator");
    }
  }
  // 5. Tombstone the source, then drop the target's arrival marker.
  tombstone("moving");
  finish_arrival();
  return MoveOutcome::kMoved;
}

void ClusterAdmin::FinishArrivals(const ClusterMap& map) {
  // Markers left by a run that stopped between tombstoning a source and
  // clearing its target's marker: the source no longer holds the session
  // (moved or absent), so nothing is left to finish but the marker.
  for (const ShardEntry& shard : map.shards()) {
    std::vector<std::pair<std::string, std::string>> marked;  // (id, from)
    OnShard(shard, "reading arrival markers", [&] {
      MysqlStatement scan(Handle(shard), "SELECT session_id, arrived_from FROM sessions WHERE arrived_from IS NOT NULL");
      scan.Execute();
      for (size_t i = 0; i < scan.row_count(); ++i) marked.emplace_back(scan.Text(i, 0), scan.Text(i, 1));
    });
    for (const auto& mark : marked) {
      const std::string& id = mark.first;  // Not a structured binding: lambdas below capture it.
      const ShardEntry* from = map.Find(mark.second);
      if (from) {
        const std::string there = OnShard(*from, "reading session state", [&] {
          MysqlStatement& st = Stmt(*from, "SELECT state FROM sessions WHERE session_id = ?");
          st.BindBytes(0, id);
          st.Execute();
          return st.row_count() ? st.Text(0, 0) : std::string("absent");
        });
        if (there != "absent" && there != "moved") continue;  // Still held there: MoveSession finishes it.
      }
      OnShard(shard, "finishing an arrival", [&] {
        Exec(Handle(shard), "START TRANSACTION");
        MysqlStatement drop(Handle(shard),
                            "DELETE FROM sessions WHERE session_id = ? AND state = 'deleted' AND NOT EXISTS "
                            "(SELECT 1 FROM idempotency_keys k WHERE k.session_id = sessions.session_id)");
        drop.BindBytes(0, id);
        drop.Execute();
        MysqlStatement clear(Handle(shard), "UPDATE sessions SET arrived_from = NULL WHERE session_id = ?");
        clear.BindBytes(0, id);
        clear.Execute();
        Exec(Handle(shard), "COMMIT");
      });
    }
  }
}

RebalanceResult ClusterAdmin::Rebalance(const RebalanceOptions& opt) {
  RebalanceResult result;
  const int64_t start = MonotonicMicros();
  auto map = LoadMap();
  LockAll(*map);
  // Every fence must be at this epoch before the scan: otherwise an app with
  // an older map could still create a session on an old owner behind it.
  bool fenced = true;
  for (const ShardReport& r : Status(*map)) {
    if (!r.reachable) throw AdminError("shard " + r.name + " is unreachable; every shard must be up to rebalance");
    fenced &= static_cast<uint64_t>(r.fence) >= map->epoch();
  }
  if (!fenced && !opt.dry_run) Publish(*map, nullptr);

  struct Pending {
    std::string id;
    const ShardEntry* from;
    const ShardEntry* to;
  };
  std::vector<Pending> pending;
  for (const ShardEntry& shard : map->shards()) {
    OnShard(shard, "scanning sessions", [&] {
      MysqlStatement scan(Handle(shard),
                          "SELECT session_id, state FROM sessions WHERE session_id > ? AND state IN "
                          "('active', 'moving', 'deleted') ORDER BY session_id LIMIT ?");
      std::string after;
      while (true) {
        scan.BindBytes(0, after);
        scan.BindInt64(1, opt.batch);
        scan.Execute();
        if (scan.row_count() == 0) break;
        for (size_t i = 0; i < scan.row_count(); ++i) {
          const std::string& id = scan.Text(i, 0);
          const std::string& owner = map->router().Owner(SessionId::FromBytes(id).text());
          if (owner != shard.name) {
            pending.push_back({id, &shard, map->Find(owner)});
          } else if (scan.Text(i, 1) == "moving" && !opt.dry_run) {
            // Frozen by an interrupted move under another map; it belongs here.
            MysqlStatement thaw(Handle(shard), "UPDATE sessions SET state = 'active' WHERE session_id = ? AND state = 'moving'");
            thaw.BindBytes(0, id);
            thaw.Execute();
          }
        }
        after = scan.Text(scan.row_count() - 1, 0);
      }
    });
  }
  result.misplaced = static_cast<int64_t>(pending.size());
  if (opt.progress) opt.progress(0, result.misplaced);
  if (opt.dry_run) {
    result.seconds = (MonotonicMicros() - start) / 1e6;
    return result;
  }
  const int64_t move_start = MonotonicMicros();
  for (const Pending& p : pending) {
    if (MoveSession(p.id, *p.from, *p.to, map->epoch()) == MoveOutcome::kGone) ++result.gone;
    else ++result.moved;
    if (opt.progress) opt.progress(result.moved + result.gone, result.misplaced);
    if (opt.rate > 0) {
      int64_t due = move_start + static_cast<int64_t>((result.moved + result.gone) * 1e6 / opt.rate);
      int64_t wait = due - MonotonicMicros();
      if (wait > 0) std::this_thread::sleep_for(std::chrono::microseconds(wait));
    }
  }
  FinishArrivals(*map);
  if (map->router().moving()) {
    // Everything is in place: joining shards become active, draining ones drained.
    std::vector<ShardEntry> shards = map->shards();
    for (ShardEntry& s : shards) {
      if (s.state == ShardState::kJoining) s.state = ShardState::kActive;
      if (s.state == ShardState::kDraining) s.state = ShardState::kDrained;
    }
    auto next = Next(*map, std::move(shards));
    Publish(*next, map.get());
    result.final_epoch = next->epoch();
  }
  UnlockAll(*map);
  result.seconds = (MonotonicMicros() - start) / 1e6;
  return result;
}

VerifyReport ClusterAdmin::Verify() {
  VerifyReport report;
  auto map = LoadMap();
  // A rebalance running meanwhile would make the shards' answers disagree
  // (each shard is read at a different moment): exclude it.
  LockAll(*map);
  if (map->router().moving()) {
    report.problems.push_back("map epoch " + std::to_string(map->epoch()) +
                              " has shards joining or draining: rebalance has not finished");
  }
  std::map<std::string, std::vector<std::pair<std::string, std::string>>> where;  // id -> (shard, state)
  for (const ShardEntry& shard : map->shards()) {
    try {
      MYSQL* h = Handle(shard);
      MysqlStatement scan(h, "SELECT session_id, state FROM sessions WHERE session_id > ? ORDER BY session_id LIMIT 1000");
      std::string after;
      while (true) {
        scan.BindBytes(0, after);
        scan.Execute();
        if (scan.row_count() == 0) break;
        for (size_t i = 0; i < scan.row_count(); ++i) where[scan.Text(i, 0)].emplace_back(shard.name, scan.Text(i, 1));
        after = scan.Text(scan.row_count() - 1, 0);
      }
      MysqlStatement counts(h,
                            "SELECT COUNT(*) FROM sessions s WHERE s.state = 'active' AND (s.message_count <> "
                            "(SELECT COUNT(*) FROM messages m WHERE m.session_id = s.session_id) OR s.message_count <> "
                            "(SELECT COALESCE(MAX(seq), 0) FROM messages m WHERE m.session_id = s.session_id))");
      counts.Execute();
      if (counts.Int64(0, 0) != 0) {
        report.problems.push_back("shard " + shard.name + ": " + std::to_string(counts.Int64(0, 0)) +
                                  " sessions whose message_count does not match their messages");
      }
      MysqlStatement orphans(h,
                             "SELECT COUNT(*) FROM messages m WHERE NOT EXISTS (SELECT 1 FROM sessions s "
                             "WHERE s.session_id = m.session_id AND s.state IN ('active', 'moving'))");
      orphans.Execute();
      if (orphans.Int64(0, 0) != 0) {
        report.problems.push_back("shard " + shard.name + ": " + std::to_string(orphans.Int64(0, 0)) +
                                  " messages belong to no session held here");
      }
      MysqlStatement total(h, "SELECT COUNT(*) FROM messages");
      total.Execute();
      report.messages += total.Int64(0, 0);
      MysqlStatement marked(h, "SELECT COUNT(*) FROM sessions WHERE arrived_from IS NOT NULL");
      marked.Execute();
      report.in_transit += marked.Int64(0, 0);  // A move stopped before its last step.
    } catch (const std::exception& e) {
      report.problems.push_back("shard " + shard.name + ": " + e.what());
    }
  }
  const bool moving = map->router().moving();
  for (const auto& [id, places] : where) {
    const std::string text = SessionId::FromBytes(id).text();
    std::vector<std::string> active, kept;  // kept: active or a 'deleted' tombstone.
    for (const auto& [shard, state] : places) {
      if (state == "active") active.push_back(shard);
      if (state == "active" || state == "deleted") kept.push_back(shard);
      if (state == "moving" || state == "incoming") {
        // Left by an interrupted move: the next rebalance finishes or undoes it.
        ++report.in_transit;
      }
    }
    if (!active.empty()) ++report.sessions;
    if (active.size() > 1) {
      // Never right, whatever the map: say whether the copies even agree.
      std::string detail;
      for (const std::string& shard : active) {
        detail += (detail.empty() ? "" : "; ") + shard + ": " + FingerprintOf(*map->Find(shard), id, INT64_MAX).Text();
      }
      report.problems.push_back("session " + text + " is active on " + std::to_string(active.size()) + " shards (" +
                                detail + ")");
      continue;
    }
    if (kept.size() > 1) {
      report.problems.push_back("session " + text + " is held on " + std::to_string(kept.size()) + " shards");
      continue;
    }
    if (kept.empty()) continue;  // Deleted after a move: only tombstones remain.
    const std::string& owner = map->router().Owner(text);
    if (kept[0] == owner) continue;
    if (moving && map->router().PreviousOwner(text) == kept[0]) {
      ++report.to_move;  // Expected until rebalance moves it.
    } else {
      report.problems.push_back("session " + text + " is on " + kept[0] + ", its owner is " + owner);
    }
  }
  if (report.in_transit > 0) {
    report.problems.push_back(std::to_string(report.in_transit) +
                              " sessions are frozen or half-copied by an interrupted move (rerun shardctl rebalance)");
  }
  UnlockAll(*map);
  return report;
}

std::vector<std::string> ClusterAdmin::Audit(int64_t* sessions) {
  auto map = LoadMap();
  std::map<std::string, std::vector<const ShardEntry*>> held;  // id -> shards, in read order
  for (const ShardEntry& shard : map->shards()) {
    OnShard(shard, "scanning sessions", [&] {
      MysqlStatement scan(Handle(shard),
                          "SELECT session_id FROM sessions WHERE session_id > ? AND state = 'active' "
                          "ORDER BY session_id LIMIT 1000");
      std::string after;
      while (true) {
        scan.BindBytes(0, after);
        scan.Execute();
        if (scan.row_count() == 0) break;
        for (size_t i = 0; i < scan.row_count(); ++i) held[scan.Text(i, 0)].push_back(&shard);
        after = scan.Text(scan.row_count() - 1, 0);
      }
    });
  }
  *sessions = static_cast<int64_t>(held.size());
  auto holds = [&](const ShardEntry& shard, const std::string& id) {
    return OnShard(shard, "reading session state", [&] {
      MysqlStatement& st = Stmt(shard, "SELECT state = 'active' FROM sessions WHERE session_id = ?");
      st.BindBytes(0, id);
      st.Execute();
      return st.row_count() == 1 && st.Int64(0, 0) == 1;
    });
  };
  std::vector<std::string> doubled;
  for (const auto& [id, shards] : held) {
    if (shards.size() < 2) continue;
    // X, then each other Y, then X again: held on X before and after Y.
    const ShardEntry& x = *shards[0];
    if (!holds(x, id)) continue;
    bool twice = false;
    for (size_t i = 1; i < shards.size() && !twice; ++i) twice = holds(*shards[i], id) && holds(x, id);
    if (twice) doubled.push_back(SessionId::FromBytes(id).text());
  }
  return doubled;
}

void ClusterAdmin::UnlockAll(const ClusterMap& map) {
  for (const ShardEntry& e : map.shards()) {
    try {
      MysqlStatement st(Handle(e), "SELECT RELEASE_LOCK('chatllm.rebalance')");
      st.Execute();
    } catch (const std::exception&) {
      // The lock dies with the connection anyway.
    }
  }
}

std::map<std::string, std::string> ClusterAdmin::Locate(const std::string& text, const std::string& bytes) {
  auto map = LoadMap();
  std::map<std::string, std::string> out;
  for (const std::string& name : map->router().Candidates(text)) {
    const ShardEntry* e = map->Find(name);
    try {
      MysqlStatement st(Handle(*e), "SELECT state FROM sessions WHERE session_id = ?");
      st.BindBytes(0, bytes);
      st.Execute();
      out[name] = st.row_count() ? st.Text(0, 0) : "absent";
    } catch (const std::exception&) {
      out[name] = "unreachable";
    }
  }
  return out;
}

}  // namespace chatllm
