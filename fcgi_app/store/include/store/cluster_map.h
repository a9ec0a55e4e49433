#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/config.h"
#include "base/status.h"
#include "shard_router/router.h"

namespace chatllm {

// A shard as the cluster map records it: where it is (host and port: its
// primary, the only member the apps and shardctl read and write), its
// weight and state, and its replicas (shardctl switchover and failover
// promote one of them; docs/architecture.md, "Shard high availability").
struct ShardEntry {
  std::string name;
  std::string host = "127.0.0.1";
  int port = 3306;
  std::string database = "chatllm";
  uint32_t weight = 100;
  shard_router::ShardState state = shard_router::ShardState::kActive;
  std::vector<DbMember> replicas;
  // Unix seconds when the primary was last changed by a switchover or
  // failover (0: never); the monitor's anti-flap window counts from it.
  int64_t promoted_at = 0;
  DbMember primary() const { return DbMember{host, port}; }
};

// One epoch of the versioned shard map: which shards exist, how to reach them
// and their state. Every shard stores every epoch in its shard_map table (the
// operator tool writes them); app instances load the newest one they can read.
// Immutable once built; share it by shared_ptr<const ClusterMap>.
class ClusterMap {
 public:
  // Validates the shards (see shard_router::Router::Build) and builds the
  // rings; 400 invalid_request on invalid input.
  // How far the users' homes are (sql/009_homes.sql): a deployment upgraded
  // from a release without them goes from kNone through kWriting (every app
  // of this release keeps the homes up to date; `shardctl rebalance` fills
  // them with the older sessions) to kComplete (lists and the session limit
  // come from the homes). A new deployment's first rebalance goes straight
  // through.
  enum class Homes { kNone = 0, kWriting = 1, kComplete = 2 };
  static StatusOr<std::shared_ptr<const ClusterMap>> Build(uint64_t epoch, std::vector<ShardEntry> shards,
                                                           Homes homes = Homes::kNone);
  // Parses the JSON form (ToJson).
  static StatusOr<std::shared_ptr<const ClusterMap>> FromJson(const std::string& json);

  // {"epoch":N,"homes":"complete","shards":[{"name":..,"host":..,"port":..,"database":..,"weight":..,"state":..,
  //  "replicas":[{"host":..,"port":..}],"promoted_at":N}]}
  // ("homes" is "writing" or "complete"; absent: none. "replicas" and
  // "promoted_at" are left out when empty, as a map without replicas was
  // written before them.)
  std::string ToJson() const;

  uint64_t epoch() const { return router_.epoch(); }
  const std::vector<ShardEntry>& shards() const { return shards_; }
  const shard_router::Router& router() const { return router_; }
  Homes homes_state() const { return homes_; }
  // Apps create homes and keep their entries up to date (kWriting on).
  bool homes_written() const { return homes_ != Homes::kNone; }
  // Every session is listed on its user's home: lists and the session limit
  // come from the homes. Until then the app lists and counts every shard,
  // as the release before homes did.
  bool homes() const { return homes_ == Homes::kComplete; }
  // The entry named `name`, or null.
  const ShardEntry* Find(const std::string& name) const;

 private:
  std::vector<ShardEntry> shards_;
  shard_router::Router router_;
  Homes homes_ = Homes::kNone;
};

// The map of the seed shards in `config` (all active, epoch 0): where a
// store or shardctl starts before it reads the newest stored map. Throws
// ConfigError if they cannot form a ring.
std::shared_ptr<const ClusterMap> SeedMap(const Config& config);

}  // namespace chatllm
