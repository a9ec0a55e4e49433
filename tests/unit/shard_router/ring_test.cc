#include "shard_router/ring.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "shard_router/hash.h"

namespace shard_router {
namespace {

Ring MustBuild(std::vector<ShardWeight> shards) {
  Ring ring;
  Status st = Ring::Build(std::move(shards), &ring);
  EXPECT_TRUE(st.ok()) << st.message();
  return ring;
}

// Random version-4 UUIDs in canonical text form, reproducibly.
std::vector<std::string> RandomIds(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::string> ids;
  ids.reserve(n);
  char buf[40];
  for (size_t i = 0; i < n; ++i) {
    uint64_t hi = rng(), lo = rng();
    hi = (hi & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;
    lo = (lo & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;
    std::snprintf(buf, sizeof(buf), "%08" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%012" PRIx64, hi >> 32,
                  (hi >> 16) & 0xffff, hi & 0xffff, lo >> 48, lo & uint64_t{0xffffffffffff});
    ids.emplace_back(buf);
  }
  return ids;
}

TEST(RingTest, RejectsBadShardLists) {
  Ring ring;
  EXPECT_EQ(Ring::Build({}, &ring).message(), "ring needs at least one shard");
  EXPECT_EQ(Ring::Build({{"a", 1}, {"a", 2}}, &ring).message(), "duplicate shard name 'a'");
  EXPECT_EQ(Ring::Build({{"a", 0}}, &ring).message(), "shard 'a' weight 0 is outside 1..1000");
  EXPECT_EQ(Ring::Build({{"a", 1001}}, &ring).message(), "shard 'a' weight 1001 is outside 1..1000");
  EXPECT_EQ(Ring::Build({{"A", 1}}, &ring).message(), "shard name 'A' must be 1..64 characters of [a-z0-9_-]");
  EXPECT_EQ(Ring::Build({{"", 1}}, &ring).message(), "shard name '' must be 1..64 characters of [a-z0-9_-]");
  EXPECT_TRUE(ring.empty());  // Failed builds leave the ring untouched.
}

// Owners pinned from ring_reference.py --print (independent implementation).
TEST(RingTest, LookupIsPinned) {
  Ring ring = MustBuild({{"a", 100}, {"b", 100}});
  EXPECT_EQ(ring.point_count(), 2000u);
  EXPECT_EQ(ring.Lookup("00000000-0000-4000-8000-000000000000"), "a");
  EXPECT_EQ(ring.Lookup("00000000-0000-4000-8000-000000000001"), "a");
  EXPECT_EQ(ring.Lookup("00000000-0000-4000-8000-000000000002"), "b");
  EXPECT_EQ(ring.Lookup("00000000-0000-4000-8000-000000000003"), "b");
  EXPECT_EQ(ring.Lookup("00000000-0000-4000-8000-000000000004"), "b");
  EXPECT_EQ(ring.Lookup("00000000-0000-4000-8000-000000000005"), "b");
}

TEST(RingTest, WrapsAroundAtBothEdges) {
  Ring ring = MustBuild({{"a", 100}, {"b", 100}});
  const uint64_t first = 0x1c2a4fffadd098ULL;   // Lowest point: b.
  const uint64_t last = 0xfffc3983cae55eecULL;  // Highest point: a.
  EXPECT_EQ(ring.LookupHash(0), "b");           // Below the first point.
  EXPECT_EQ(ring.LookupHash(first), "b");       // Exactly on it.
  EXPECT_EQ(ring.LookupHash(last), "a");        // Exactly on the last point.
  EXPECT_EQ(ring.LookupHash(last + 1), "b");    // Past it: wraps to the first.
  EXPECT_EQ(ring.LookupHash(UINT64_MAX), "b");
}

TEST(RingTest, SameAnswerWhateverTheInputOrder) {
  Ring x = MustBuild({{"s1", 100}, {"s2", 50}, {"s3", 7}});
  Ring y = MustBuild({{"s3", 7}, {"s1", 100}, {"s2", 50}});
  for (const std::string& id : RandomIds(2000, 7)) EXPECT_EQ(x.Lookup(id), y.Lookup(id));
}

TEST(RingTest, FourEqualShardsAreBalancedWithinTenPercent) {
  Ring ring = MustBuild({{"s1", 100}, {"s2", 100}, {"s3", 100}, {"s4", 100}});
  std::map<std::string, int> counts;
  const int n = 100000;
  for (const std::string& id : RandomIds(n, 42)) ++counts[ring.Lookup(id)];
  ASSERT_EQ(counts.size(), 4u);
  for (const auto& [name, count] : counts) {
    double share = static_cast<double>(count) / n;
    EXPECT_NEAR(share, 0.25, 0.025) << name << " holds " << count << " of " << n;
  }
}

TEST(RingTest, AddingAFifthShardMovesAFifthAndOnlyOntoIt) {
  Ring before = MustBuild({{"s1", 100}, {"s2", 100}, {"s3", 100}, {"s4", 100}});
  Ring after = MustBuild({{"s1", 100}, {"s2", 100}, {"s3", 100}, {"s4", 100}, {"s5", 100}});
  const int n = 100000;
  int moved = 0;
  for (const std::string& id : RandomIds(n, 43)) {
    const std::string& from = before.Lookup(id);
    const std::string& to = after.Lookup(id);
    if (from == to) continue;
    ++moved;
    EXPECT_EQ(to, "s5") << id << " moved from " << from << " to " << to;
  }
  EXPECT_LE(moved, n * (1.0 / 5 + 0.03));
  EXPECT_GE(moved, n * (1.0 / 5 - 0.03));
}

TEST(RingTest, RemovingAShardMovesOnlyItsKeys) {
  Ring before = MustBuild({{"s1", 100}, {"s2", 100}, {"s3", 100}});
  Ring after = MustBuild({{"s1", 100}, {"s3", 100}});
  for (const std::string& id : RandomIds(20000, 44)) {
    if (before.Lookup(id) != "s2") {
      EXPECT_EQ(after.Lookup(id), before.Lookup(id)) << id;
    }
  }
}

TEST(RingTest, SharesFollowWeights) {
  Ring ring = MustBuild({{"big", 300}, {"small", 100}});
  auto shares = ring.Shares();
  EXPECT_NEAR(shares["big"] + shares["small"], 1.0, 1e-9);
  EXPECT_NEAR(shares["big"], 0.75, 0.03);
  Ring single = MustBuild({{"only", 1}});
  EXPECT_NEAR(single.Shares()["only"], 1.0, 1e-9);
}

}  // namespace
}  // namespace shard_router
