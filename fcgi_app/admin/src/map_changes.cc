// The map changes of shardctl: add-shard, drain, remove-shard. Each
// publishes the next epoch (cluster_admin.cc); rebalance.cc moves the
// sessions it misplaces.

#include "admin/cluster_admin.h"
#include "failpoint.h"
#include "store/migrator.h"
#include "store/mysql_statement.h"

namespace chatllm {

using shard_router::ShardState;

std::shared_ptr<const ClusterMap> ClusterAdmin::AddShard(const ShardEntry& entry) {
  auto map = LoadMap();
  if (const ShardEntry* existing = map->Find(entry.name)) {
    bool same = existing->host == entry.host && existing->port == entry.port && existing->database == entry.database;
    if (existing->state == ShardState::kJoining && same) {
      RequireSchemas(*map, entry.name);
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
  RequireSchemas(*map);
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
    ExecText(Handle(entry), entry.name, "DELETE FROM sessions WHERE state = 'moved'");
    ExecText(Handle(entry), entry.name, "DELETE FROM messages");
  });
  std::vector<ShardEntry> shards = map->shards();
  ShardEntry joining = entry;
  joining.state = ShardState::kJoining;
  shards.push_back(joining);
  auto next = Next(*map, std::move(shards));
  Publish(*next, map.get());
  // From the publish on, chatllm-admin writes the new shard too; what it
  // wrote before is copied now (revocations and disables are never undone
  // by a copy), and again by the rebalance that makes the shard active.
  // Until then a key lookup whose owner is joining also asks a shard that
  // is not (ShardedStore::LookupApiKey).
  if (FailpointSet("add-shard-after-publish", entry.name)) {
    throw AdminError("failpoint add-shard-after-publish: stopped after publishing " + entry.name + " joining");
  }
  CopyAuth(*next, entry);
  return next;
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
  RequireSchemas(*map);
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

}  // namespace chatllm
