#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "shard_router/ring.h"
#include "shard_router/status.h"

namespace shard_router {

// Where a shard stands in the cluster's life cycle.
enum class ShardState {
  kActive,    // Owns keys; in both rings.
  kJoining,   // Added; keys are moving onto it: in the "to" ring only.
  kDraining,  // Being emptied: in the "from" ring only.
  kDrained,   // Empty, in neither ring; can be removed from the map.
};

const char* ShardStateName(ShardState state);
// "active", "joining", "draining", "drained"; false for anything else.
bool ParseShardState(std::string_view text, ShardState* state);

struct MapShard {
  std::string name;
  uint32_t weight = 100;
  ShardState state = ShardState::kActive;
};

// One epoch of the shard map, reduced to what routing needs: two rings.
//   from ring: active + draining shards — where keys live until moved;
//   to ring:   active + joining shards  — where keys belong.
// Outside a move (no joining or draining shard) the two are the same ring.
// A key's owner is its to-ring shard; while a move is in progress it may
// still live on its from-ring shard. Immutable; const methods are thread-safe.
class Router {
 public:
  Router() = default;
  // Fails unless shard names are unique and valid, weights valid, and each
  // ring has at least one shard.
  static Status Build(uint64_t epoch, std::vector<MapShard> shards, Router* out);

  uint64_t epoch() const { return epoch_; }
  const std::vector<MapShard>& shards() const { return shards_; }
  const Ring& from_ring() const { return from_; }
  const Ring& to_ring() const { return to_; }
  // True while some shard is joining or draining.
  bool moving() const { return moving_; }

  // The shard `key` belongs on (to ring).
  const std::string& Owner(std::string_view key) const { return to_.Lookup(key); }
  // The shard `key` lived on before the move in progress (from ring).
  const std::string& PreviousOwner(std::string_view key) const { return from_.Lookup(key); }
  // True if the key's shard changes with the move in progress.
  bool NeedsMove(std::string_view key) const { return moving_ && Owner(key) != PreviousOwner(key); }
  // Shards to look for `key` on, in order: its owner, then, if different,
  // its previous owner.
  std::vector<std::string> Candidates(std::string_view key) const;

 private:
  uint64_t epoch_ = 0;
  std::vector<MapShard> shards_;
  Ring from_, to_;
  bool moving_ = false;
};

// Exact fraction of the hash space whose owner differs between two rings,
// computed from their points (no sampling).
double MovedFraction(const Ring& from, const Ring& to);

}  // namespace shard_router
