#include "shard_router/router.h"

#include <algorithm>

namespace shard_router {

const char* ShardStateName(ShardState state) {
  switch (state) {
    case ShardState::kActive:
      return "active";
    case ShardState::kJoining:
      return "joining";
    case ShardState::kDraining:
      return "draining";
    case ShardState::kDrained:
      return "drained";
  }
  return "?";
}

bool ParseShardState(std::string_view text, ShardState* state) {
  for (ShardState s : {ShardState::kActive, ShardState::kJoining, ShardState::kDraining, ShardState::kDrained}) {
    if (text == ShardStateName(s)) {
      *state = s;
      return true;
    }
  }
  return false;
}

Status Router::Build(uint64_t epoch, std::vector<MapShard> shards, Router* out) {
  std::vector<ShardWeight> from, to;
  bool moving = false;
  for (const MapShard& s : shards) {
    if (s.state == ShardState::kActive || s.state == ShardState::kDraining) from.push_back({s.name, s.weight});
    if (s.state == ShardState::kActive || s.state == ShardState::kJoining) to.push_back({s.name, s.weight});
    moving |= s.state == ShardState::kJoining || s.state == ShardState::kDraining;
  }
  // Validate names and weights once, over all shards (drained ones included).
  std::vector<ShardWeight> all;
  for (const MapShard& s : shards) all.push_back({s.name, s.weight});
  Ring check;
  Status st = Ring::Build(all, &check);
  if (!st.ok()) return st;
  if (from.empty()) return Status::Invalid("no active or draining shard: nothing holds the data");
  if (to.empty()) return Status::Invalid("no active or joining shard: nothing could own the data");
  Router r;
  if (!(st = Ring::Build(std::move(from), &r.from_)).ok()) return st;
  if (!(st = Ring::Build(std::move(to), &r.to_)).ok()) return st;
  r.epoch_ = epoch;
  r.moving_ = moving;
  r.shards_ = std::move(shards);
  *out = std::move(r);
  return Status::Ok();
}

std::vector<std::string> Router::Candidates(std::string_view key) const {
  std::vector<std::string> out{Owner(key)};
  if (moving_ && PreviousOwner(key) != out[0]) out.push_back(PreviousOwner(key));
  return out;
}

double MovedFraction(const Ring& from, const Ring& to) {
  // Every arc between consecutive points of either ring has one owner under
  // each ring: the owner of the point that ends it.
  std::vector<uint64_t> positions;
  for (const Ring* ring : {&from, &to}) {
    for (uint64_t p : ring->Positions()) positions.push_back(p);
  }
  std::sort(positions.begin(), positions.end());
  positions.erase(std::unique(positions.begin(), positions.end()), positions.end());
  if (positions.empty()) return 0;
  constexpr long double kSpace = 18446744073709551616.0L;  // 2^64
  long double moved = 0;
  for (size_t i = 0; i < positions.size(); ++i) {
    uint64_t end = positions[i];
    uint64_t start = positions[i == 0 ? positions.size() - 1 : i - 1];
    long double len = positions.size() == 1 ? kSpace : static_cast<long double>(end - start);
    if (from.LookupHash(end) != to.LookupHash(end)) moved += len;
  }
  return static_cast<double>(moved / kSpace);
}

}  // namespace shard_router
