#include "api/key_cache.h"

#include <gtest/gtest.h>

namespace chatllm {
namespace {

TEST(KeyCacheTest, EntriesExpireAfterTheTtlAndTheLeastRecentLeaveFirst) {
  KeyCache cache(1000, 2);
  KeyRecord a;
  a.user_id = "user-a";
  cache.Put("a", a, 0);
  ASSERT_NE(cache.Find("a", 999), nullptr);
  EXPECT_EQ(cache.Find("a", 999)->user_id, "user-a");
  EXPECT_EQ(cache.Find("a", 1001), nullptr);  // Older than the TTL.

  cache.Put("a", a, 2000);
  cache.Put("b", a, 2000);
  ASSERT_NE(cache.Find("a", 2001), nullptr);  // "a" is now the most recent.
  cache.Put("c", a, 2002);                    // Evicts "b".
  EXPECT_NE(cache.Find("a", 2003), nullptr);
  EXPECT_EQ(cache.Find("b", 2003), nullptr);
  EXPECT_NE(cache.Find("c", 2003), nullptr);
}

}  // namespace
}  // namespace chatllm
