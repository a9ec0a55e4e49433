#include "shard_router/router.h"

#include <gtest/gtest.h>

#include <cinttypes>
#include <cstdio>
#include <map>
#include <random>

namespace shard_router {
namespace {

Router MustBuild(uint64_t epoch, std::vector<MapShard> shards) {
  Router r;
  Status st = Router::Build(epoch, std::move(shards), &r);
  EXPECT_TRUE(st.ok()) << st.message();
  return r;
}

std::vector<std::string> Keys(size_t n) {
  std::mt19937_64 rng(7);
  std::vector<std::string> out;
  char buf[40];
  for (size_t i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof(buf), "%016" PRIx64 "%016" PRIx64, static_cast<uint64_t>(rng()),
                  static_cast<uint64_t>(rng()));
    out.emplace_back(buf);
  }
  return out;
}

constexpr ShardState kActive = ShardState::kActive;
constexpr ShardState kJoining = ShardState::kJoining;
constexpr ShardState kDraining = ShardState::kDraining;
constexpr ShardState kDrained = ShardState::kDrained;

TEST(RouterTest, StatesRoundTrip) {
  for (ShardState s : {kActive, kJoining, kDraining, kDrained}) {
    ShardState back;
    ASSERT_TRUE(ParseShardState(ShardStateName(s), &back));
    EXPECT_EQ(back, s);
  }
  ShardState x;
  EXPECT_FALSE(ParseShardState("removed", &x));
}

TEST(RouterTest, RejectsMapsWithoutOwners) {
  Router r;
  EXPECT_EQ(Router::Build(1, {{"a", 100, kJoining}}, &r).message(),
            "no active or draining shard: nothing holds the data");
  EXPECT_EQ(Router::Build(1, {{"a", 100, kDraining}}, &r).message(),
            "no active or joining shard: nothing could own the data");
  EXPECT_EQ(Router::Build(1, {{"a", 100, kActive}, {"a", 100, kJoining}}, &r).message(), "duplicate shard name 'a'");
}

TEST(RouterTest, OutsideAMoveBothRingsAgree) {
  Router r = MustBuild(3, {{"a", 100, kActive}, {"b", 100, kActive}, {"old", 100, kDrained}});
  EXPECT_FALSE(r.moving());
  EXPECT_EQ(r.epoch(), 3u);
  for (const std::string& k : Keys(2000)) {
    EXPECT_EQ(r.Owner(k), r.PreviousOwner(k));
    EXPECT_FALSE(r.NeedsMove(k));
    EXPECT_EQ(r.Candidates(k).size(), 1u);
    EXPECT_NE(r.Owner(k), "old");
  }
}

// Adding a shard: exactly the keys whose owner changes are listed to move,
// and every one of them moves onto the new shard.
TEST(RouterTest, JoiningShardReceivesExactlyTheKeysThatMove) {
  Router before = MustBuild(1, {{"a", 100, kActive}, {"b", 100, kActive}});
  Router during = MustBuild(2, {{"a", 100, kActive}, {"b", 100, kActive}, {"c", 100, kJoining}});
  Router after = MustBuild(3, {{"a", 100, kActive}, {"b", 100, kActive}, {"c", 100, kActive}});
  ASSERT_TRUE(during.moving());
  size_t moving = 0;
  const auto keys = Keys(30000);
  for (const std::string& k : keys) {
    EXPECT_EQ(during.PreviousOwner(k), before.Owner(k));  // Data is where the old map put it.
    EXPECT_EQ(during.Owner(k), after.Owner(k));           // And goes where the new map wants it.
    if (during.NeedsMove(k)) {
      ++moving;
      EXPECT_EQ(during.Owner(k), "c");
      EXPECT_EQ(during.Candidates(k), (std::vector<std::string>{"c", before.Owner(k)}));
    } else {
      EXPECT_EQ(during.Owner(k), before.Owner(k));
    }
  }
  double fraction = static_cast<double>(moving) / static_cast<double>(keys.size());
  EXPECT_NEAR(fraction, 1.0 / 3, 0.03);
  EXPECT_NEAR(MovedFraction(before.to_ring(), after.to_ring()), fraction, 0.01);
}

TEST(RouterTest, DrainingShardGivesAllItsKeysAwayAndNothingElseMoves) {
  Router during = MustBuild(5, {{"a", 100, kActive}, {"b", 100, kActive}, {"c", 100, kDraining}});
  for (const std::string& k : Keys(20000)) {
    EXPECT_NE(during.Owner(k), "c");
    EXPECT_EQ(during.NeedsMove(k), during.PreviousOwner(k) == "c");
  }
}

TEST(RouterTest, MovedFractionIsExact) {
  Ring one, same, other;
  ASSERT_TRUE(Ring::Build({{"a", 100}, {"b", 100}}, &one).ok());
  ASSERT_TRUE(Ring::Build({{"b", 100}, {"a", 100}}, &same).ok());
  ASSERT_TRUE(Ring::Build({{"a", 100}, {"b", 100}, {"c", 100}, {"d", 100}}, &other).ok());
  EXPECT_DOUBLE_EQ(MovedFraction(one, same), 0.0);
  // Doubling from 2 to 4 equal shards moves what c and d come to own.
  auto shares = other.Shares();
  EXPECT_NEAR(MovedFraction(one, other), shares["c"] + shares["d"], 1e-9);
}

}  // namespace
}  // namespace shard_router
