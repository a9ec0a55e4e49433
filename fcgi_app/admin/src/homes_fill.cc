// Filling the users' homes (sql/009_homes.sql) from the sessions of a
// deployment that ran a release without them: the upgrade path of
// docs/operations.md. Runs at the end of `shardctl rebalance`, with every
// session on its owner and the rebalance lock held; the app instances (all
// of this release by then) keep the homes up to date meanwhile, and list
// every shard until the map this publishes says homes are complete.

#include <map>
#include <set>

#include "admin/cluster_admin.h"
#include "base/ids.h"
#include "base/log.h"
#include "store/mysql_statement.h"
#include "store/transaction.h"

namespace chatllm {
namespace {

constexpr int kScanBatch = 500;

// "(?, ?, ...)" with `n` placeholders.
std::string Marks(size_t n) {
  std::string s = "(";
  for (size_t i = 0; i < n; ++i) s += i ? ", ?" : "?";
  return s + ")";
}

void BindOptional(MysqlStatement& st, int pos, const MysqlStatement& from, size_t row, int col) {
  if (from.IsNull(row, col))
    st.BindNull(pos);
  else
    st.BindString(pos, from.Text(row, col));
}

}  // namespace

int64_t ClusterAdmin::FillHomes(const ClusterMap& map) {
  int64_t listed = 0;
  for (const ShardEntry& source : map.shards()) {
    if (source.state != shard_router::ShardState::kActive) continue;
    // Statements here are constant text and placeholder lists; every value is bound.
    MysqlStatement scan(Handle(source),
                        "SELECT session_id, COALESCE(user_id, ''), created_at, title, metadata, model, system_prompt "
                        "FROM sessions WHERE session_id > ? AND kind = 'session' AND state = 'active' "
                        "AND user_id IS NOT NULL "
                        "ORDER BY session_id LIMIT ?");
    for (std::string after;;) {
      OnShard(source, "reading sessions to list", [&] {
        scan.BindBytes(0, after);
        scan.BindInt64(1, kScanBatch);
        scan.Execute();
      });
      if (scan.row_count() == 0) break;
      std::map<std::string, std::vector<size_t>> by_home;  // home id -> rows
      for (size_t i = 0; i < scan.row_count(); ++i) by_home[SessionId::HomeOf(scan.Text(i, 1)).bytes()].push_back(i);
      for (const auto& [home, rows] : by_home) listed += ListOnHome(map, home, scan, rows);
      // The entries go in 'pending' (a session deleted since the scan must
      // not be listed as live); the ones whose session is still here go live.
      std::vector<std::string> ids;
      for (size_t i = 0; i < scan.row_count(); ++i) ids.push_back(scan.Text(i, 0));
      std::set<std::string> present;
      OnShard(source, "checking listed sessions", [&] {
        MysqlStatement st(Handle(source), "SELECT session_id FROM sessions WHERE state = 'active' AND session_id IN " +
                                              Marks(ids.size()));
        for (size_t i = 0; i < ids.size(); ++i) st.BindBytes(static_cast<int>(i), ids[i]);
        st.Execute();
        for (size_t i = 0; i < st.row_count(); ++i) present.insert(st.Text(i, 0));
      });
      for (const auto& by : by_home) {
        // Named, not bound: lambdas below use them (clang before 16 cannot
        // capture a structured binding).
        const auto& home = by.first;
        const auto& rows = by.second;
        std::vector<std::string> live;
        for (size_t i : rows) {
          if (present.count(scan.Text(i, 0))) live.push_back(scan.Text(i, 0));
        }
        if (live.empty()) continue;
        const ShardEntry& owner = *map.Find(map.router().Owner(SessionId::FromBytes(home).text()));
        OnShard(owner, "confirming list entries", [&] {
          MysqlStatement st(Handle(owner),
                            "UPDATE session_list SET state = 'live', changed_at = UTC_TIMESTAMP(6) "
                            "WHERE state = 'pending' AND home_id = ? AND session_id IN " +
                                Marks(live.size()));
          st.BindBytes(0, home);
          for (size_t i = 0; i < live.size(); ++i) st.BindBytes(static_cast<int>(i + 1), live[i]);
          st.Execute();
        });
      }
      after = scan.Text(scan.row_count() - 1, 0);
    }
  }
  return listed;
}

int64_t ClusterAdmin::FillKeys(const ClusterMap& map) {
  struct Merged {
    std::string user, secret, label;
    int64_t created_us = 0, expires_us = 0, revoked_us = 0;  // 0: none.
  };
  std::map<std::string, Merged> keys;  // key id -> the copies merged
  std::set<std::string> disabled;      // user ids disabled on any copy
  for (const ShardEntry& shard : map.shards()) {
    if (shard.state != shard_router::ShardState::kActive) continue;
    OnShard(shard, "reading the copies of keys and users", [&] {
      MysqlStatement st(
          Handle(shard),
          "SELECT key_id, user_id, secret_sha256, label, created_at, expires_at, revoked_at FROM api_keys");
      st.Execute();
      for (size_t i = 0; i < st.row_count(); ++i) {
        Merged& k = keys[st.Text(i, 0)];
        k.user = st.Text(i, 1);
        k.secret = st.Text(i, 2);
        k.label = st.Text(i, 3);
        k.created_us = st.DatetimeMicros(i, 4);
        // The strictest copy wins: the earliest expiry and revocation.
        const int64_t expires = st.IsNull(i, 5) ? 0 : st.DatetimeMicros(i, 5);
        if (expires && (!k.expires_us || expires < k.expires_us)) k.expires_us = expires;
        const int64_t revoked = st.IsNull(i, 6) ? 0 : st.DatetimeMicros(i, 6);
        if (revoked && (!k.revoked_us || revoked < k.revoked_us)) k.revoked_us = revoked;
      }
      MysqlStatement users(Handle(shard), "SELECT user_id FROM users WHERE disabled_at IS NOT NULL");
      users.Execute();
      for (size_t i = 0; i < users.row_count(); ++i) disabled.insert(users.Text(i, 0));
      return 0;
    });
  }
  for (const auto& entry : keys) {
    const auto& key_id = entry.first;  // Named, not bound: the lambda below uses them.
    const auto& k = entry.second;
    const SessionId unit = SessionId::KeyUnitOf(key_id);
    const ShardEntry& owner = *map.Find(map.router().Owner(unit.text()));
    OnShard(owner, "making a key's unit", [&] {
      MysqlStatement& add = Stmt(owner,
                                 "INSERT IGNORE INTO sessions (session_id, kind, user_id, title, metadata, "
                                 "message_count, created_at, updated_at, state, secret_sha256, expires_at) VALUES "
                                 "(?, 'key', ?, ?, CONCAT('{\"key_id\":\"', LOWER(HEX(?)), '\"}'), 0, ?, ?, "
                                 "'active', ?, ?)");
      add.BindBytes(0, unit.bytes());
      add.BindBytes(1, k.user);
      add.BindString(2, k.label);
      add.BindBytes(3, key_id);
      add.BindDatetime(4, k.created_us);
      add.BindDatetime(5, k.created_us);
      add.BindBytes(6, k.secret);
      if (k.expires_us)
        add.BindDatetime(7, k.expires_us);
      else
        add.BindNull(7);
      add.Execute();
      if (k.revoked_us) {
        MysqlStatement& revoke = Stmt(owner,
                                      "UPDATE sessions SET revoked_at = COALESCE(revoked_at, ?) "
                                      "WHERE session_id = ? AND kind = 'key'");
        revoke.BindDatetime(0, k.revoked_us);
        revoke.BindBytes(1, unit.bytes());
        revoke.Execute();
      }
      return 0;
    });
  }
  for (const std::string& user : disabled) {
    const SessionId home = SessionId::HomeOf(user);
    const ShardEntry& owner = *map.Find(map.router().Owner(home.text()));
    OnShard(owner, "disabling a user on the home", [&] {
      MysqlStatement& add = Stmt(owner,
                                 "INSERT IGNORE INTO sessions (session_id, kind, user_id, title, metadata, "
                                 "message_count, listed, created_at, updated_at, state) VALUES (?, 'home', ?, NULL, "
                                 "'{}', 0, 0, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6), 'active')");
      add.BindBytes(0, home.bytes());
      add.BindBytes(1, user);
      add.Execute();
      MysqlStatement& off = Stmt(owner,
                                 "UPDATE sessions SET disabled_at = COALESCE(disabled_at, UTC_TIMESTAMP(6)) "
                                 "WHERE session_id = ? AND kind = 'home'");
      off.BindBytes(0, home.bytes());
      off.Execute();
      return 0;
    });
  }
  return static_cast<int64_t>(keys.size());
}

int64_t ClusterAdmin::MarkPhantoms(const ClusterMap& map) {
  int64_t marked = 0;
  for (const ShardEntry& home_shard : map.shards()) {
    if (home_shard.state != shard_router::ShardState::kActive) continue;
    MysqlStatement scan(Handle(home_shard),
                        "SELECT home_id, session_id FROM session_list WHERE state = 'live' AND (home_id, session_id) > "
                        "(?, ?) ORDER BY home_id, session_id LIMIT ?");
    for (std::string home_after, id_after;;) {
      OnShard(home_shard, "reading list entries", [&] {
        scan.BindBytes(0, home_after);
        scan.BindBytes(1, id_after);
        scan.BindInt64(2, kScanBatch);
        scan.Execute();
      });
      if (scan.row_count() == 0) break;
      // Each entry's session, looked for where the map may hold it.
      std::map<std::string, std::vector<size_t>> by_shard;
      for (size_t i = 0; i < scan.row_count(); ++i) {
        for (const std::string& name : map.router().Candidates(SessionId::FromBytes(scan.Text(i, 1)).text())) {
          by_shard[name].push_back(i);
        }
      }
      std::set<std::string> held;
      for (const auto& entry : by_shard) {
        const auto& rows = entry.second;  // Named, not bound: the lambda below uses it.
        const ShardEntry& shard = *map.Find(entry.first);
        OnShard(shard, "looking for listed sessions", [&] {
          MysqlStatement st(Handle(shard),
                            "SELECT session_id FROM sessions WHERE state IN ('active', 'moving') "
                            "AND session_id IN " +
                                Marks(rows.size()));
          for (size_t r = 0; r < rows.size(); ++r) st.BindBytes(static_cast<int>(r), scan.Text(rows[r], 1));
          st.Execute();
          for (size_t i = 0; i < st.row_count(); ++i) held.insert(st.Text(i, 0));
        });
      }
      for (size_t i = 0; i < scan.row_count(); ++i) {
        if (held.count(scan.Text(i, 1))) continue;
        // 'pending' and old: the app's next read asks the session's shard
        // and removes the entry (ShardedStore::SettleEntry).
        OnShard(home_shard, "marking a list entry for repair", [&] {
          MysqlStatement& st = Stmt(home_shard,
                                    "UPDATE session_list SET state = 'pending', changed_at = '2000-01-01' "
                                    "WHERE home_id = ? AND session_id = ? AND state = 'live'");
          st.BindBytes(0, scan.Text(i, 0));
          st.BindBytes(1, scan.Text(i, 1));
          st.Execute();
          marked += static_cast<int64_t>(st.affected_rows());
        });
      }
      home_after = scan.Text(scan.row_count() - 1, 0);
      id_after = scan.Text(scan.row_count() - 1, 1);
    }
  }
  return marked;
}

RelistResult ClusterAdmin::Relist() {
  auto map = LoadMap();
  LockAll(*map);
  RequireSchemas(*map);
  if (map->router().moving()) {
    UnlockAll(*map);
    throw AdminError("shards are joining or draining: run shardctl rebalance first");
  }
  if (!map->homes_written()) {
    UnlockAll(*map);
    throw AdminError("the users' homes are not in use yet: shardctl rebalance fills them");
  }
  RelistResult r;
  r.listed = FillHomes(*map);
  r.marked = MarkPhantoms(*map);
  UnlockAll(*map);
  return r;
}

std::shared_ptr<const ClusterMap> ClusterAdmin::PublishHomes(const ClusterMap& map, ClusterMap::Homes homes) {
  auto next = ClusterMap::Build(map.epoch() + 1, map.shards(), homes);
  if (!next.ok()) throw AdminError("the new map would be invalid: " + next.status().message());
  Publish(**next, &map);
  return *next;
}

int64_t ClusterAdmin::ListOnHome(const ClusterMap& map, const std::string& home, const MysqlStatement& scan,
                                 const std::vector<size_t>& rows) {
  const std::string text = SessionId::FromBytes(home).text();
  const ShardEntry& owner = *map.Find(map.router().Owner(text));
  return OnShard(owner, "listing sessions on their home", [&]() -> int64_t {
    Transaction txn(LinkTo(owner));
    // The home, if the app has not made it yet (the map is settled: its
    // owner is the only shard that can hold it).
    MysqlStatement create(Handle(owner),
                          "INSERT IGNORE INTO sessions (session_id, kind, user_id, title, metadata, message_count, "
                          "listed, created_at, updated_at, state) VALUES (?, 'home', ?, NULL, '{}', 0, 0, "
                          "UTC_TIMESTAMP(6), UTC_TIMESTAMP(6), 'active')");
    create.BindBytes(0, home);
    create.BindBytes(1, scan.Text(rows.front(), 1));
    create.Execute();
    MysqlStatement lock(Handle(owner), "SELECT state FROM sessions WHERE session_id = ? AND kind = 'home' FOR UPDATE");
    lock.BindBytes(0, home);
    lock.Execute();
    if (lock.row_count() != 1 || lock.Text(0, 0) != "active") {
      throw AdminError("home " + text + " is not active on its owner " + owner.name + "; rerun shardctl rebalance");
    }
    std::string sql =
        "INSERT IGNORE INTO session_list (home_id, session_id, created_at, state, changed_at, title, metadata, model, "
        "system_prompt) VALUES ";
    for (size_t r = 0; r < rows.size(); ++r)
      sql += r ? ", (?, ?, ?, 'pending', UTC_TIMESTAMP(6), ?, ?, ?, ?)"
               : "(?, ?, ?, 'pending', UTC_TIMESTAMP(6), ?, ?, ?, ?)";
    MysqlStatement insert(Handle(owner), sql);
    for (size_t r = 0; r < rows.size(); ++r) {
      const size_t i = rows[r];
      const int p = static_cast<int>(r) * 7;
      insert.BindBytes(p, home);
      insert.BindBytes(p + 1, scan.Text(i, 0));
      insert.BindDatetime(p + 2, scan.DatetimeMicros(i, 2));
      BindOptional(insert, p + 3, scan, i, 3);
      insert.BindString(p + 4, scan.Text(i, 4));
      BindOptional(insert, p + 5, scan, i, 5);
      BindOptional(insert, p + 6, scan, i, 6);
    }
    insert.Execute();
    const int64_t added = static_cast<int64_t>(insert.affected_rows());
    // The count as the entries are, under the home's lock (every write of an
    // entry takes it first): right whatever an older release or a crash left.
    MysqlStatement count(Handle(owner),
                         "UPDATE sessions SET listed = (SELECT COUNT(*) FROM session_list WHERE home_id = ?) "
                         "WHERE session_id = ?");
    count.BindBytes(0, home);
    count.BindBytes(1, home);
    count.Execute();
    txn.Commit();
    return added;
  });
}

}  // namespace chatllm
