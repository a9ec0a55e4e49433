#include "shard_router/ring.h"

#include <algorithm>
#include <set>

#include "shard_router/hash.h"

namespace shard_router {

bool IsValidShardName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'; });
}

Status Ring::Build(std::vector<ShardWeight> shards, Ring* out) {
  if (shards.empty()) return Status::Invalid("ring needs at least one shard");
  std::set<std::string> seen;
  for (const ShardWeight& s : shards) {
    if (!IsValidShardName(s.name)) {
      return Status::Invalid("shard name '" + s.name + "' must be 1..64 characters of [a-z0-9_-]");
    }
    if (!seen.insert(s.name).second) return Status::Invalid("duplicate shard name '" + s.name + "'");
    if (s.weight < 1 || s.weight > kMaxWeight) {
      return Status::Invalid("shard '" + s.name + "' weight " + std::to_string(s.weight) + " is outside 1.." +
                             std::to_string(kMaxWeight));
    }
  }
  std::sort(shards.begin(), shards.end(), [](const ShardWeight& a, const ShardWeight& b) { return a.name < b.name; });

  Ring ring;
  size_t total = 0;
  for (const ShardWeight& s : shards) total += size_t{s.weight} * kPointsPerWeight;
  ring.points_.reserve(total);
  std::string label;
  for (uint32_t idx = 0; idx < shards.size(); ++idx) {
    const ShardWeight& s = shards[idx];
    for (uint32_t i = 0; i < s.weight * kPointsPerWeight; ++i) {
      label.assign(s.name);
      label.push_back('#');
      label.append(std::to_string(i));
      ring.points_.push_back(Point{Hash64(label), idx});
    }
  }
  // Shards are sorted by name, so comparing indices breaks ties by name.
  std::sort(ring.points_.begin(), ring.points_.end(), [](const Point& a, const Point& b) {
    return a.position != b.position ? a.position < b.position : a.shard < b.shard;
  });
  ring.shards_ = std::move(shards);
  *out = std::move(ring);
  return Status::Ok();
}

const std::string& Ring::Lookup(std::string_view key) const { return LookupHash(Hash64(key)); }

const std::string& Ring::LookupHash(uint64_t h) const {
  auto it =
      std::lower_bound(points_.begin(), points_.end(), h, [](const Point& p, uint64_t v) { return p.position < v; });
  if (it == points_.end()) it = points_.begin();
  return shards_[it->shard].name;
}

std::vector<uint64_t> Ring::Positions() const {
  std::vector<uint64_t> out;
  out.reserve(points_.size());
  for (const Point& p : points_) out.push_back(p.position);
  return out;
}

std::map<std::string, double> Ring::Shares() const {
  std::map<std::string, double> shares;
  for (const ShardWeight& s : shards_) shares[s.name] = 0.0;
  if (points_.empty()) return shares;
  constexpr long double kSpace = 18446744073709551616.0L;  // 2^64
  // Point k owns (position[k-1], position[k]]; the first point also owns the
  // wrap-around arc above the last point. Unsigned subtraction wraps mod 2^64.
  for (size_t k = 0; k < points_.size(); ++k) {
    uint64_t prev = points_[k == 0 ? points_.size() - 1 : k - 1].position;
    uint64_t arc = points_[k].position - prev;
    long double len = (points_.size() == 1) ? kSpace : static_cast<long double>(arc);
    shares[shards_[points_[k].shard].name] += static_cast<double>(len / kSpace);
  }
  return shares;
}

}  // namespace shard_router
