#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "shard_router/status.h"

namespace shard_router {

// A shard as the ring sees it: a stable name and a relative weight. The name,
// not the host:port, is hashed, so a shard can move host without moving keys.
struct ShardWeight {
  std::string name;     // [a-z0-9_-], 1..64 bytes.
  uint32_t weight = 0;  // 1..Ring::kMaxWeight; 100 is the conventional default.
};

// Weighted consistent-hash ring with virtual nodes. Immutable once built;
// Lookup() is const and safe to call from any number of threads.
//
// The algorithm, precisely enough to reimplement (the contract for every
// process and host that routes keys):
//   1. Shards are ordered by name (bytewise). Shard s with weight w gets
//      w * kPointsPerWeight points; point i (0-based) sits at position
//      Hash64(s.name + "#" + decimal(i)), e.g. "a#0", "a#1", ... (hash.h).
//   2. Points are sorted by (position, shard name).
//   3. A key k hashes to h = Hash64(k). Its owner is the shard of the first
//      point whose position is >= h; if there is none, the first point
//      (the ring wraps around).
// Adding a shard only inserts points, so a key either keeps its owner or moves
// to the new shard; removing one only reassigns that shard's keys.
class Ring {
 public:
  static constexpr uint32_t kPointsPerWeight = 10;
  static constexpr uint32_t kMaxWeight = 1000;

  // An empty ring; Lookup() must not be called on it.
  Ring() = default;

  // Builds a ring from a non-empty list of shards with unique valid names and
  // weights in 1..kMaxWeight. On failure *out is left unchanged.
  static Status Build(std::vector<ShardWeight> shards, Ring* out);

  // Name of the shard that owns `key`. Requires !empty().
  const std::string& Lookup(std::string_view key) const;
  // Owner of hash position `h` (step 3 above without the hashing).
  const std::string& LookupHash(uint64_t h) const;

  // Fraction of the hash space each shard owns; the values sum to 1.
  std::map<std::string, double> Shares() const;

  bool empty() const { return points_.empty(); }
  // Positions of all points, ascending.
  std::vector<uint64_t> Positions() const;
  // The shards, ordered by name.
  const std::vector<ShardWeight>& shards() const { return shards_; }
  size_t point_count() const { return points_.size(); }

 private:
  struct Point {
    uint64_t position;
    uint32_t shard;  // Index into shards_.
  };
  std::vector<ShardWeight> shards_;
  std::vector<Point> points_;
};

// True if `name` is a valid shard name: 1..64 bytes of [a-z0-9_-].
bool IsValidShardName(std::string_view name);

}  // namespace shard_router
