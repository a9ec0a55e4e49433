// Users and API keys across the shards: the ClusterAdmin part behind
// chatllm-admin (docs/security.md).

#include <algorithm>
#include <cstdio>
#include <optional>
#include <set>
#include <tuple>

#include "admin/cluster_admin.h"
#include "base/api_key.h"
#include "base/ids.h"
#include "base/time_util.h"
#include "store/mysql_statement.h"
#include "store/transaction.h"

namespace chatllm {

ClusterAdmin::AuthLock::AuthLock(ClusterAdmin& admin, const ClusterMap& map) : admin_(admin) {
  if (map.homes() || map.shards().empty()) return;
  const ShardEntry* first = &map.shards().front();
  for (const ShardEntry& s : map.shards()) {
    if (s.name < first->name) first = &s;
  }
  const int64_t got = admin_.OnShard(*first, "taking the auth lock", [&] {
    MysqlStatement st(admin_.Handle(*first), "SELECT COALESCE(GET_LOCK('chatllm.auth', 30), 0)");
    st.Execute();
    return st.Int64(0, 0);
  });
  if (got != 1) throw AdminError("users and keys are being merged into their units (shardctl rebalance); retry");
  shard_ = *first;
}

ClusterAdmin::AuthLock::~AuthLock() {
  if (!shard_) return;
  try {
    MysqlStatement st(admin_.Handle(*shard_), "SELECT RELEASE_LOCK('chatllm.auth')");
    st.Execute();
  } catch (const std::exception&) {
    // The lock dies with the connection anyway.
  }
}

std::shared_ptr<const ClusterMap> ClusterAdmin::MapForAuth(std::optional<AuthLock>* lock) {
  auto map = LoadMap();
  if (map->homes()) return map;
  lock->emplace(*this, *map);
  return LoadMap();  // What rebalance published before letting go of the lock.
}

std::vector<ClusterAdmin::UserInfo> ClusterAdmin::UsersNamed(const std::string& name) {
  auto map = LoadMap();
  std::vector<std::vector<UserInfo>> found(map->shards().size());
  const std::vector<std::exception_ptr> errors = InParallel(map->shards(), [&](const ShardEntry& shard) {
    std::vector<UserInfo>& out = found[static_cast<size_t>(&shard - map->shards().data())];
    OnShard(shard, "looking up the user", [&] {
      MysqlStatement st(Handle(shard), "SELECT user_id, created_at FROM users WHERE name = ?");
      st.BindString(0, name);
      st.Execute();
      for (size_t i = 0; i < st.row_count(); ++i) out.push_back(UserInfo{st.Text(i, 0), name, st.DatetimeMicros(i, 1)});
      return 0;
    });
  });
  std::map<std::string, UserInfo> by_id;
  size_t answered = 0;
  for (size_t i = 0; i < found.size(); ++i) {
    if (errors[i]) continue;
    ++answered;
    for (const UserInfo& u : found[i]) by_id.emplace(u.id, u);
  }
  if (answered == 0) throw AdminError("no shard answered to look up user '" + name + "'");
  std::vector<UserInfo> out;
  for (auto& [id, u] : by_id) out.push_back(u);
  return out;
}

void ClusterAdmin::CopiesToo(const char* what, const std::function<void(const ShardEntry&)>& fn) {
  try {
    OnEveryShard(what, fn);
  } catch (const AdminError& e) {
    std::fprintf(stderr, "chatllm-admin: warning: done, but the copies an older release reads: %s\n", e.what());
  }
}

ShardedStore& ClusterAdmin::Units() {
  if (!units_) units_ = std::make_unique<ShardedStore>(config_);
  return *units_;
}

std::vector<ClusterAdmin::KeyInfo> ClusterAdmin::ListKeyUnits(const std::string& user_id) {
  auto map = LoadMap();
  std::vector<std::vector<KeyInfo>> found(map->shards().size());
  const std::vector<std::exception_ptr> errors = InParallel(map->shards(), [&](const ShardEntry& shard) {
    std::vector<KeyInfo>& out = found[static_cast<size_t>(&shard - map->shards().data())];
    OnShard(shard, "listing keys", [&] {
      MysqlStatement st(Handle(shard),
                        "SELECT UNHEX(JSON_VALUE(metadata, '$.key_id')), user_id, COALESCE(title, ''), created_at, "
                        "expires_at, revoked_at FROM sessions WHERE kind = 'key' AND state = 'active' "
                        "AND (? = '' OR user_id = ?)");
      st.BindBytes(0, user_id);
      st.BindBytes(1, user_id);
      st.Execute();
      for (size_t i = 0; i < st.row_count(); ++i) {
        out.push_back(KeyInfo{st.Text(i, 0), st.Text(i, 1), st.Text(i, 2), st.DatetimeMicros(i, 3),
                              st.IsNull(i, 4) ? 0 : st.DatetimeMicros(i, 4),
                              st.IsNull(i, 5) ? 0 : st.DatetimeMicros(i, 5)});
      }
      return 0;
    });
  });
  for (const std::exception_ptr& e : errors) {
    if (e) std::rethrow_exception(e);
  }
  std::vector<KeyInfo> out;
  for (auto& part : found) out.insert(out.end(), part.begin(), part.end());
  return out;
}

std::map<std::string, bool> ClusterAdmin::HomesDisabled() {
  auto map = LoadMap();
  std::vector<std::vector<std::string>> found(map->shards().size());
  const std::vector<std::exception_ptr> errors = InParallel(map->shards(), [&](const ShardEntry& shard) {
    std::vector<std::string>& out = found[static_cast<size_t>(&shard - map->shards().data())];
    OnShard(shard, "reading disabled users", [&] {
      MysqlStatement st(Handle(shard),
                        "SELECT user_id FROM sessions WHERE kind = 'home' AND state = 'active' "
                        "AND disabled_at IS NOT NULL");
      st.Execute();
      for (size_t i = 0; i < st.row_count(); ++i) out.push_back(st.Text(i, 0));
      return 0;
    });
  });
  for (const std::exception_ptr& e : errors) {
    if (e) std::rethrow_exception(e);
  }
  std::map<std::string, bool> out;
  for (const auto& part : found) {
    for (const std::string& id : part) out[id] = true;
  }
  return out;
}

const ShardEntry* ClusterAdmin::FirstActiveShard(const ClusterMap& map, const std::string& except) {
  for (const ShardEntry& s : map.shards()) {
    if (s.name != except && s.state == shard_router::ShardState::kActive) return &s;
  }
  return nullptr;
}

void ClusterAdmin::OnEveryShard(const char* what, const std::function<void(const ShardEntry&)>& fn) {
  // The map is read again after the writes: a shard published meanwhile (by
  // add-shard, whose copy may have read the source before these writes) is
  // written too.
  std::vector<std::string> done, failed;
  std::string first_error;
  for (int round = 0; round < 3; ++round) {
    auto map = LoadMap();
    std::vector<ShardEntry> todo;
    for (const ShardEntry& shard : map->shards()) {
      if (std::find(done.begin(), done.end(), shard.name) == done.end()) todo.push_back(shard);
    }
    if (todo.empty()) break;
    const std::vector<std::exception_ptr> errors = InParallel(todo, [&](const ShardEntry& shard) {
      OnShard(shard, what, [&] {
        fn(shard);
        return 0;
      });
    });
    for (size_t i = 0; i < errors.size(); ++i) {
      done.push_back(todo[i].name);
      if (!errors[i]) continue;
      failed.push_back(todo[i].name);
      try {
        std::rethrow_exception(errors[i]);
      } catch (const std::exception& e) {
        if (first_error.empty()) first_error = e.what();
      }
    }
  }
  if (!failed.empty()) {
    std::string names;
    for (const std::string& n : failed) names += (names.empty() ? "" : ", ") + n;
    throw AdminError(std::string(what) + " failed on shard(s) " + names + " (" + first_error +
                     "); the others are written: run 'chatllm-admin sync' once they are back");
  }
}

ClusterAdmin::UserInfo ClusterAdmin::AddUser(const std::string& name) {
  // Rerunning after a partial failure keeps the user's id: look for it first.
  UserInfo user;
  for (const UserInfo& u : ListUsers()) {
    if (u.name == name) user = u;
  }
  if (user.id.empty()) {
    user.id.resize(16);
    RandomBytes(user.id.data(), user.id.size());
    user.name = name;
    user.created_us = NowMicros();
  }
  OnEveryShard("adding the user", [&](const ShardEntry& shard) {
    MysqlStatement& st = Stmt(shard, "INSERT IGNORE INTO users (user_id, name, created_at) VALUES (?, ?, ?)");
    st.BindBytes(0, user.id);
    st.BindString(1, user.name);
    st.BindDatetime(2, user.created_us);
    st.Execute();
  });
  return user;
}

std::vector<ClusterAdmin::UserInfo> ClusterAdmin::ListUsers() {
  auto map = LoadMap();
  const ShardEntry* shard = FirstActiveShard(*map, "");
  if (!shard) throw AdminError("no active shard in the map");
  std::vector<UserInfo> users = OnShard(*shard, "listing users", [&] {
    MysqlStatement& st = Stmt(*shard,
                              "SELECT u.user_id, u.name, u.created_at, u.disabled_at IS NOT NULL, "
                              "(SELECT COUNT(*) FROM api_keys k WHERE k.user_id = u.user_id AND k.revoked_at IS NULL) "
                              "FROM users u ORDER BY u.name");
    st.Execute();
    std::vector<UserInfo> out;
    for (size_t i = 0; i < st.row_count(); ++i) {
      out.push_back(UserInfo{st.Text(i, 0), st.Text(i, 1), st.DatetimeMicros(i, 2), st.Int64(i, 3) != 0,
                             static_cast<int>(st.Int64(i, 4))});
    }
    return out;
  });
  if (!map->homes()) return users;
  // The homes and the key units say, not these copies.
  const std::map<std::string, bool> disabled = HomesDisabled();
  std::map<std::string, int> keys;
  for (const KeyInfo& k : ListKeyUnits("")) keys[k.user] += k.revoked_us == 0;
  for (UserInfo& u : users) {
    u.disabled = disabled.count(u.id) > 0;
    u.keys = keys[u.id];
  }
  return users;
}

void ClusterAdmin::SetUserDisabled(const std::string& name, bool disabled) {
  std::optional<AuthLock> lock;
  auto map = MapForAuth(&lock);
  // Every id the name has: two concurrent `user add` can leave two.
  const std::vector<UserInfo> users = UsersNamed(name);
  if (users.empty()) throw AdminError("no user named '" + name + "'");
  const char* what = disabled ? "disabling the user" : "enabling the user";
  if (map->homes_written()) {
    // The user's home: the one row the apps read once the homes are complete.
    for (const UserInfo& user : users) {
      try {
        Units().SetUserDisabled(user.id, disabled);
      } catch (const DbError& e) {
        throw AdminError(std::string("the user was not ") + (disabled ? "disabled" : "enabled") +
                         ": the shard of the user's home did not answer (" + e.what() + "); retry when it does");
      }
    }
  }
  auto copies = [&](const ShardEntry& shard) {
    // By name: every id the name has there.
    MysqlStatement& st =
        Stmt(shard, disabled ? "UPDATE users SET disabled_at = COALESCE(disabled_at, UTC_TIMESTAMP(6)) WHERE name = ?"
                             : "UPDATE users SET disabled_at = NULL WHERE name = ?");
    st.BindString(0, name);
    st.Execute();
    if (!disabled) return;
    // A shard the user is not on yet (one joining, before shardctl's copy)
    // gets the row, disabled: a copy that read it enabled before this write
    // keeps the disable (its upsert never undoes one). IGNORE: the row is
    // there already, or another id holds the name there (left as it is).
    MysqlStatement& add = Stmt(shard,
                               "INSERT IGNORE INTO users (user_id, name, created_at, disabled_at) "
                               "VALUES (?, ?, ?, UTC_TIMESTAMP(6))");
    add.BindBytes(0, users.front().id);
    add.BindString(1, name);
    add.BindDatetime(2, users.front().created_us);
    add.Execute();
  };
  if (map->homes())
    CopiesToo(what, copies);
  else
    OnEveryShard(what, copies);
}

std::string ClusterAdmin::CreateKey(const std::string& user, const std::string& label, int64_t expires_us) {
  std::optional<AuthLock> lock;
  auto map = MapForAuth(&lock);
  const std::vector<UserInfo> users = UsersNamed(user);
  if (users.empty()) throw AdminError("no user named '" + user + "' (chatllm-admin user add " + user + ")");
  const std::string user_id = users.front().id;
  const ApiKey key = GenerateApiKey();
  const std::string hash = SecretHash(key.secret);
  const int64_t now = NowMicros();
  std::string text = FormatApiKey(key);
  if (map->homes_written()) {
    // The key's unit, on its owner under the newest map: it works at once,
    // wherever shards join or leave.
    try {
      Units().CreateKeyUnit(key.id, user_id, hash, label, expires_us, now);
    } catch (const DbError& e) {
      throw AdminError(std::string("the key was not created: the shard that would hold it did not answer (") +
                       e.what() + "); retry when it does");
    }
  }
  auto copies = [&](const ShardEntry& shard) {
    MysqlStatement& st = Stmt(shard,
                              "INSERT INTO api_keys (key_id, user_id, secret_sha256, label, created_at, expires_at) "
                              "VALUES (?, ?, ?, ?, ?, ?)");
    st.BindBytes(0, key.id);
    st.BindBytes(1, user_id);
    st.BindBytes(2, hash);
    st.BindString(3, label);
    st.BindDatetime(4, now);
    if (expires_us > 0)
      st.BindDatetime(5, expires_us);
    else
      st.BindNull(5);
    st.Execute();
  };
  if (map->homes()) {
    CopiesToo("storing the key", copies);
    return text;
  }
  try {
    OnEveryShard("storing the key", copies);
  } catch (const AdminError& e) {
    // Stored on some shards: the key works there and will everywhere after a sync.
    throw AdminError(std::string(e.what()) + "\nthe key (shown once): " + text);
  }
  return text;
}

std::vector<ClusterAdmin::KeyInfo> ClusterAdmin::ListKeys(const std::string& user) {
  auto map = LoadMap();
  if (map->homes()) {
    std::map<std::string, std::string> names;  // user id -> name
    std::string user_id;
    for (const UserInfo& u : ListUsers()) {
      names[u.id] = u.name;
      if (u.name == user) user_id = u.id;
    }
    if (!user.empty() && user_id.empty()) return {};
    std::vector<KeyInfo> keys = ListKeyUnits(user_id);
    for (KeyInfo& k : keys) k.user = names.count(k.user) ? names[k.user] : Hex(k.user);
    std::sort(keys.begin(), keys.end(), [](const KeyInfo& a, const KeyInfo& b) {
      return std::tie(a.user, a.created_us) < std::tie(b.user, b.created_us);
    });
    return keys;
  }
  const ShardEntry* shard = FirstActiveShard(*map, "");
  if (!shard) throw AdminError("no active shard in the map");
  return OnShard(*shard, "listing keys", [&] {
    MysqlStatement& st =
        Stmt(*shard,
             "SELECT k.key_id, u.name, k.label, k.created_at, k.expires_at, k.revoked_at FROM api_keys k "
             "JOIN users u ON u.user_id = k.user_id WHERE ? = '' OR u.name = ? ORDER BY u.name, k.created_at");
    st.BindString(0, user);
    st.BindString(1, user);
    st.Execute();
    std::vector<KeyInfo> out;
    for (size_t i = 0; i < st.row_count(); ++i) {
      out.push_back(KeyInfo{st.Text(i, 0), st.Text(i, 1), st.Text(i, 2), st.DatetimeMicros(i, 3),
                            st.IsNull(i, 4) ? 0 : st.DatetimeMicros(i, 4),
                            st.IsNull(i, 5) ? 0 : st.DatetimeMicros(i, 5)});
    }
    return out;
  });
}

void ClusterAdmin::RevokeKey(const std::string& key_id) {
  // The key's whole row, from the first shard that has it: written revoked
  // where it is missing (a shard joining, before shardctl's copy), so that
  // a copy which read it unrevoked before this write keeps the revocation
  // (its upsert never undoes one).
  std::optional<AuthLock> lock;
  auto map = MapForAuth(&lock);
  if (map->homes_written()) {
    // The key's unit: the one row the apps read once the homes are complete.
    // Acknowledged only when it is written (a shard that was down cannot
    // bring the key back: it holds no other copy the apps read).
    bool found = false;
    try {
      found = Units().RevokeKeyUnit(key_id);
    } catch (const DbError& e) {
      throw AdminError(std::string("the key was not revoked: the shard that holds it did not answer (") + e.what() +
                       "); retry when it does (if a rebalance was interrupted while moving it, rerun shardctl "
                       "rebalance first)");
    }
    if (map->homes()) {
      if (!found) throw AdminError("no key with id " + Hex(key_id));
      CopiesToo("revoking the key", [&](const ShardEntry& shard) {
        MysqlStatement& st =
            Stmt(shard, "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, UTC_TIMESTAMP(6)) WHERE key_id = ?");
        st.BindBytes(0, key_id);
        st.Execute();
      });
      return;
    }
    // Before the homes are complete a key may have no unit yet: its copies
    // below are what the apps read (and rebalance merges a revocation into
    // the unit it makes, under the auth lock this holds).
  }
  std::optional<std::vector<std::string>> row;  // user_id, secret_sha256, label
  int64_t created_us = 0, expires_us = 0;
  std::string unread;  // Shards that could not be read.
  for (const ShardEntry& shard : map->shards()) {
    if (row || shard.state == shard_router::ShardState::kJoining) continue;
    try {
      OnShard(shard, "reading the key", [&] {
        MysqlStatement st(
            Handle(shard),
            "SELECT user_id, secret_sha256, label, created_at, expires_at FROM api_keys WHERE key_id = ?");
        st.BindBytes(0, key_id);
        st.Execute();
        if (st.row_count() == 0) return 0;
        row = std::vector<std::string>{st.Text(0, 0), st.Text(0, 1), st.Text(0, 2)};
        created_us = st.DatetimeMicros(0, 3);
        expires_us = st.IsNull(0, 4) ? 0 : st.DatetimeMicros(0, 4);
        return 0;
      });
    } catch (const AdminError&) {
      unread += (unread.empty() ? "" : ", ") + shard.name;  // The next shard may have it.
    }
  }
  if (!row && !unread.empty()) {
    throw AdminError("the key was not revoked: shard(s) " + unread + " could not be read and no other has key " +
                     Hex(key_id) + "; retry when they answer");
  }
  if (!row) throw AdminError("no key with id " + Hex(key_id));
  OnEveryShard("revoking the key", [&](const ShardEntry& shard) {
    MysqlStatement& st = Stmt(shard,
                              "INSERT INTO api_keys (key_id, user_id, secret_sha256, label, created_at, expires_at, "
                              "revoked_at) VALUES (?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE "
                              "revoked_at = COALESCE(api_keys.revoked_at, VALUES(revoked_at))");
    st.BindBytes(0, key_id);
    st.BindBytes(1, (*row)[0]);
    st.BindBytes(2, (*row)[1]);
    st.BindString(3, (*row)[2]);
    st.BindDatetime(4, created_us);
    if (expires_us)
      st.BindDatetime(5, expires_us);
    else
      st.BindNull(5);
    st.Execute();
  });
}

int ClusterAdmin::SyncAuth() {
  // Every shard's rows onto every other shard (upserts; revocations and
  // disabled users win), so a write that reached only some shards spreads.
  auto map = LoadMap();
  int written = 0;
  for (const ShardEntry& to : map->shards()) {
    for (const ShardEntry& from : map->shards()) {
      if (from.name != to.name) CopyAuthBetween(from, to);
    }
    ++written;
  }
  return written;
}

void ClusterAdmin::CopyAuth(const ClusterMap& map, const ShardEntry& to) {
  // From every active shard: a revocation or a disable that reached only
  // some of them (one was down) still reaches the new shard.
  for (const ShardEntry& from : map.shards()) {
    if (from.name != to.name && from.state == shard_router::ShardState::kActive) CopyAuthBetween(from, to);
  }
}

void ClusterAdmin::CopyAuthBetween(const ShardEntry& from_shard, const ShardEntry& to) {
  const ShardEntry* from = &from_shard;
  // Upserts: rows the admin tool wrote to the target meanwhile stay, and
  // a revocation or a disabled user is never undone by the copy.
  OnShard(*from, "reading users and API keys", [&] {
    MysqlStatement users(Handle(*from), "SELECT user_id, name, created_at, disabled_at FROM users");
    users.Execute();
    MysqlStatement keys(
        Handle(*from),
        "SELECT key_id, user_id, secret_sha256, label, created_at, expires_at, revoked_at FROM api_keys");
    keys.Execute();
    OnShard(to, "copying users and API keys", [&] {
      Transaction txn(LinkTo(to));
      MysqlStatement put_user(Handle(to),
                              "INSERT INTO users (user_id, name, created_at, disabled_at) VALUES (?, ?, ?, ?) "
                              "ON DUPLICATE KEY UPDATE disabled_at = COALESCE(users.disabled_at, VALUES(disabled_at))");
      for (size_t i = 0; i < users.row_count(); ++i) {
        put_user.BindBytes(0, users.Text(i, 0));
        put_user.BindString(1, users.Text(i, 1));
        put_user.BindDatetime(2, users.DatetimeMicros(i, 2));
        if (users.IsNull(i, 3))
          put_user.BindNull(3);
        else
          put_user.BindDatetime(3, users.DatetimeMicros(i, 3));
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
        if (keys.IsNull(i, 5))
          put_key.BindNull(5);
        else
          put_key.BindDatetime(5, keys.DatetimeMicros(i, 5));
        if (keys.IsNull(i, 6))
          put_key.BindNull(6);
        else
          put_key.BindDatetime(6, keys.DatetimeMicros(i, 6));
        put_key.Execute();
      }
      txn.Commit();
    });
  });
}

}  // namespace chatllm
