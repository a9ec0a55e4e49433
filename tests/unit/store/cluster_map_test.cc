// The cluster map: its JSON form (what shards store and shardctl prints),
// validation, and the seed map an app starts from.

#include "store/cluster_map.h"

#include <gtest/gtest.h>

namespace chatllm {
namespace {

using shard_router::ShardState;

std::vector<ShardEntry> TwoShards() {
  return {ShardEntry{"a", "10.0.0.1", 3306, "chatllm", 100, ShardState::kActive, {}, 0},
          ShardEntry{"b", "10.0.0.2", 3307, "chat", 50, ShardState::kJoining, {}, 0}};
}

TEST(ClusterMapTest, JsonRoundTrips) {
  auto map = ClusterMap::Build(7, TwoShards());
  ASSERT_TRUE(map.ok()) << map.status().message();
  const std::string json = (*map)->ToJson();
  EXPECT_EQ(json, R"({"epoch":7,"shards":[{"name":"a","host":"10.0.0.1","port":3306,"database":"chatllm","weight":100,)"
                  R"("state":"active"},{"name":"b","host":"10.0.0.2","port":3307,"database":"chat","weight":50,)"
                  R"("state":"joining"}]})");
  auto back = ClusterMap::FromJson(json);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ((*back)->epoch(), 7u);
  EXPECT_EQ((*back)->ToJson(), json);
  ASSERT_NE((*back)->Find("b"), nullptr);
  EXPECT_EQ((*back)->Find("b")->port, 3307);
  EXPECT_EQ((*back)->Find("c"), nullptr);
  // The parsed map routes as the one it came from.
  for (const char* id : {"0f1e2d3c4b5a69788796a5b4c3d2e1f0", "00000000000000000000000000000000"}) {
    EXPECT_EQ((*back)->router().Owner(id), (*map)->router().Owner(id)) << id;
  }
}

// A shard's replicas and the time of its last change of primary: written
// only when there are some (a map without them reads as it was written
// before them), read back as they were.
TEST(ClusterMapTest, ReplicasAndPromotionRoundTrip) {
  std::vector<ShardEntry> shards = TwoShards();
  shards[0].replicas = {{"10.0.0.11", 3306}, {"fd00::1", 3316}};
  shards[0].promoted_at = 1764633600;
  auto map = ClusterMap::Build(8, shards);
  ASSERT_TRUE(map.ok()) << map.status().message();
  const std::string json = (*map)->ToJson();
  EXPECT_NE(json.find(R"("replicas":[{"host":"10.0.0.11","port":3306},{"host":"fd00::1","port":3316}])"),
            std::string::npos)
      << json;
  EXPECT_NE(json.find(R"("promoted_at":1764633600)"), std::string::npos) << json;
  auto back = ClusterMap::FromJson(json);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ((*back)->ToJson(), json);
  const ShardEntry* a = (*back)->Find("a");
  ASSERT_EQ(a->replicas.size(), 2u);
  EXPECT_EQ(a->replicas[1].host, "fd00::1");
  EXPECT_EQ(a->promoted_at, 1764633600);
  EXPECT_TRUE((*back)->Find("b")->replicas.empty());
  EXPECT_EQ((*back)->Find("b")->promoted_at, 0);
  for (const char* bad :
       {R"({"epoch":1,"shards":[{"name":"a","host":"h","port":1,"database":"d","weight":1,"state":"active",)"
        R"("replicas":{}}]})",
        R"({"epoch":1,"shards":[{"name":"a","host":"h","port":1,"database":"d","weight":1,"state":"active",)"
        R"("replicas":[{"host":"r"}]}]})",
        R"({"epoch":1,"shards":[{"name":"a","host":"h","port":1,"database":"d","weight":1,"state":"active",)"
        R"("promoted_at":"x"}]})"}) {
    EXPECT_FALSE(ClusterMap::FromJson(bad).ok()) << bad;
  }
}

TEST(ClusterMapTest, RefusesWhatIsNotAMap) {
  for (const char* bad :
       {"", "[]", R"({"epoch":1})", R"({"epoch":-1,"shards":[]})", R"({"epoch":1,"shards":[{"name":"a"}]})",
        R"({"epoch":1,"shards":[{"name":"a","host":"h","port":1,"database":"d","weight":1,"state":"x"}]})"}) {
    auto map = ClusterMap::FromJson(bad);
    EXPECT_FALSE(map.ok()) << bad;
    EXPECT_FALSE(map.status().message().empty()) << bad;
  }
}

TEST(ClusterMapTest, RefusesAnInvalidRing) {
  std::vector<ShardEntry> twice = TwoShards();
  twice[1].name = "a";
  EXPECT_FALSE(ClusterMap::Build(1, twice).ok());
  EXPECT_FALSE(ClusterMap::Build(1, {}).ok());
}

TEST(ClusterMapTest, SeedMapIsTheConfiguredShardsAtEpochZero) {
  Config config;
  config.path = "test.ini";
  config.shards = {ShardConfig{"x", "127.0.0.1", 13307, "chatllm", 100, {}},
                   ShardConfig{"y", "127.0.0.1", 13308, "chatllm", 100, {{"127.0.0.1", 13318}}}};
  auto map = SeedMap(config);
  EXPECT_EQ(map->epoch(), 0u);
  ASSERT_EQ(map->shards().size(), 2u);
  EXPECT_EQ(map->shards()[1].port, 13308);
  EXPECT_TRUE(map->shards()[0].replicas.empty());
  ASSERT_EQ(map->shards()[1].replicas.size(), 1u);
  EXPECT_EQ(map->shards()[1].replicas[0].port, 13318);
  config.shards[1].name = "x";
  EXPECT_THROW(SeedMap(config), ConfigError);
}

}  // namespace
}  // namespace chatllm
