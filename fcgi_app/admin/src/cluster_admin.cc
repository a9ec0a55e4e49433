// The cluster's maps: loading the newest, publishing the next (add-shard,
// drain, remove-shard), the rebalance lock, and what each shard reports.
// Moves are in session_move.cc and rebalance.cc, checks in inspect.cc,
// users and keys in auth_admin.cc.

#include "admin/cluster_admin.h"

#include <algorithm>
#include <set>
#include <thread>

#include "store/migrator.h"
#include "store/mysql_statement.h"

namespace chatllm {

using shard_router::ShardState;

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

std::vector<std::exception_ptr> ClusterAdmin::InParallel(const std::vector<ShardEntry>& shards,
                                                         const std::function<void(const ShardEntry&)>& fn) {
  for (const ShardEntry& shard : shards) LinkTo(shard);
  std::vector<std::exception_ptr> errors(shards.size());
  std::vector<std::thread> threads;
  try {
    for (size_t i = 0; i < shards.size(); ++i) {
      threads.emplace_back([&, i] {
        try {
          fn(shards[i]);
        } catch (...) {
          errors[i] = std::current_exception();
        }
      });
    }
  } catch (...) {
    for (std::thread& t : threads) t.join();  // Those started, before giving up.
    throw;
  }
  for (std::thread& t : threads) t.join();
  return errors;
}

ShardLink& ClusterAdmin::LinkTo(const ShardEntry& e) {
  // Found without inserting (InParallel's threads only get here), else made.
  if (auto it = links_.find(e.name); it != links_.end() && it->second) {
    const DbEndpoint& ep = it->second->endpoint();
    if (ep.host == e.host && ep.port == e.port && ep.database == e.database) return *it->second;
  }
  std::unique_ptr<ShardLink>& link = links_[e.name];
  if (link) {
    const DbEndpoint& ep = link->endpoint();
    if (ep.host != e.host || ep.port != e.port || ep.database != e.database) link.reset();
  }
  if (!link) {
    link = std::make_unique<ShardLink>(
        DbEndpoint{e.name, e.host, e.port, e.database, config_.migrate_user, config_.migrate_password}, options_);
  }
  return *link;
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
      // The primary and each replica: after a failover of the only shard
      // the promoted replica has the newest map, and an old primary that
      // restarted answers with the one it had.
      std::vector<DbMember> members{e.primary()};
      members.insert(members.end(), e.replicas.begin(), e.replicas.end());
      for (const DbMember& m : members) {
        ShardEntry at = e;
        at.host = m.host;
        at.port = m.port;
        try {
          MysqlStatement st(Handle(at), "SELECT epoch, map FROM shard_map ORDER BY epoch DESC LIMIT 1");
          st.Execute();
          if (st.row_count() > 0 && static_cast<uint64_t>(st.Int64(0, 0)) > newest->epoch()) {
            auto map = ClusterMap::FromJson(st.Text(0, 1));
            if (!map.ok()) throw AdminError("shard " + e.name + " stores an invalid map: " + map.status().message());
            newest = *map;
            grew = true;
          }
        } catch (const MysqlError&) {
          // Not migrated yet (no shard_map): it holds no map.
        } catch (const DbError&) {
          // Unreachable: its replicas, and the other shards, still tell.
        }
      }
    }
  }
  return newest;
}

void ClusterAdmin::RequireSchemas(const ClusterMap& map, const std::string& except) {
  for (const ShardReport& r : Status(map)) {
    if (r.name == except) continue;
    if (!r.reachable || !r.error.empty()) {
      throw AdminError("shard " + r.name + " is unreachable; every shard must be up for this command");
    }
    if (r.schema_version < ExpectedSchemaVersion()) {
      throw AdminError("shard " + r.name + " is at schema " + std::to_string(r.schema_version) +
                       "; this shardctl needs " + std::to_string(ExpectedSchemaVersion()) +
                       ": run 'shardctl migrate' first");
    }
    if (r.schema_version > ExpectedSchemaVersion()) {
      throw AdminError("shard " + r.name + " is at schema " + std::to_string(r.schema_version) +
                       ", newer than this shardctl knows (" + std::to_string(ExpectedSchemaVersion()) +
                       "): use the shardctl of that release");
    }
  }
}

std::shared_ptr<const ClusterMap> ClusterAdmin::Next(const ClusterMap& map, std::vector<ShardEntry> shards) {
  auto next = ClusterMap::Build(map.epoch() + 1, std::move(shards), map.homes_state());
  if (!next.ok()) throw AdminError("the new map would be invalid: " + next.status().message());
  return *next;
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
        throw AdminError("shard " + e.name + " already holds a different map for epoch " + std::to_string(map.epoch()) +
                         ": did another shardctl run at the same time?");
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

std::vector<std::string> ClusterAdmin::PublishWhereReachable(const ClusterMap& map, const std::string& required,
                                                             const std::string& except) {
  std::vector<std::string> skipped;
  std::vector<ShardEntry> written;
  const std::string json = map.ToJson();  // Bound by reference: must outlive the statements.
  for (const ShardEntry& e : map.shards()) {
    if (e.name == except) continue;
    try {
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
      written.push_back(e);
    } catch (const AdminError& err) {
      if (e.name == required || std::string(err.what()).find("different map") != std::string::npos) throw;
      skipped.push_back(e.name);
    }
  }
  for (const ShardEntry& e : written) {
    try {
      OnShard(e, "raising the fence", [&] {
        MysqlStatement fence(Handle(e), "UPDATE shard_fence SET epoch = ? WHERE id = 1 AND epoch < ?");
        fence.BindInt64(0, static_cast<int64_t>(map.epoch()));
        fence.BindInt64(1, static_cast<int64_t>(map.epoch()));
        fence.Execute();
      });
    } catch (const AdminError&) {
      if (e.name == required) throw;
      skipped.push_back(e.name);
    }
  }
  return skipped;
}

std::vector<ShardReport> ClusterAdmin::Status(const ClusterMap& map) {
  std::vector<ShardReport> out(map.shards().size());
  InParallel(map.shards(), [&](const ShardEntry& e) {
    ShardReport& r = out[static_cast<size_t>(&e - map.shards().data())];
    r.name = e.name;
    try {
      MYSQL* h = Handle(e);
      MysqlStatement schema(h, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
      schema.Execute();
      r.schema_version = static_cast<int>(schema.Int64(0, 0));
      MysqlStatement fence(h, "SELECT epoch FROM shard_fence WHERE id = 1");
      fence.Execute();
      r.fence = fence.row_count() ? fence.Int64(0, 0) : 0;
      MysqlStatement counts(
          h,
          "SELECT COALESCE(SUM(state = 'active' AND kind = 'session'), 0), COALESCE(SUM(IF(state = 'active', "
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
  });
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

void ClusterAdmin::LockAll(const ClusterMap& map) {
  // Waits a while: a shardctl killed mid-statement holds the lock until the
  // server finishes that statement (a batch's INSERT, a copy's commit), and
  // what it was writing must land before this run reads the shards. Taken
  // in map order, so two runs cannot each hold a part.
  for (const ShardEntry& e : map.shards()) {
    int64_t got = OnShard(e, "taking the rebalance lock", [&] {
      MysqlStatement st(Handle(e), "SELECT COALESCE(GET_LOCK('chatllm.rebalance', 15), 0)");
      st.Execute();
      return st.Int64(0, 0);
    });
    if (got != 1) throw AdminError("another shardctl rebalance is running (lock held on shard " + e.name + ")");
  }
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
