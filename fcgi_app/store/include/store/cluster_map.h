#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/config.h"
#include "base/status.h"
#include "shard_router/router.h"

namespace chatllm {

// A shard as the cluster map records it: where it is, its weight and state.
struct ShardEntry {
  std::string name;
  std::string host = "127.0.0.1";
  int port = 3306;
  std::string database = "chatllm";
  uint32_t weight = 100;
  shard_router::ShardState state = shard_router::ShardState::kActive;
};

// One epoch of the versioned shard map: which shards exist, how to reach them
// and their state. Every shard stores every epoch in its shard_map table (the
// operator tool writes them); app instances load the newest one they can read.
// Immutable once built; share it by shared_ptr<const ClusterMap>.
class ClusterMap {
 public:
  // Validates the shards (see shard_router::Router::Build) and builds the
  // rings; 400 invalid_request on invalid input.
  static StatusOr<std::shared_ptr<const ClusterMap>> Build(uint64_t epoch, std::vector<ShardEntry> shards);
  // Parses the JSON form (ToJson).
  static StatusOr<std::shared_ptr<const ClusterMap>> FromJson(const std::string& json);

  // {"epoch":N,"shards":[{"name":..,"host":..,"port":..,"database":..,"weight":..,"state":..}]}
  std::string ToJson() const;

  uint64_t epoch() const { return router_.epoch(); }
  const std::vector<ShardEntry>& shards() const { return shards_; }
  const shard_router::Router& router() const { return router_; }
  // The entry named `name`, or null.
  const ShardEntry* Find(const std::string& name) const;

 private:
  std::vector<ShardEntry> shards_;
  shard_router::Router router_;
};

// The map of the seed shards in `config` (all active, epoch 0): where a
// store or shardctl starts before it reads the newest stored map. Throws
// ConfigError if they cannot form a ring.
std::shared_ptr<const ClusterMap> SeedMap(const Config& config);

}  // namespace chatllm
