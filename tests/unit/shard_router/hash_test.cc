#include "shard_router/hash.h"

#include <gtest/gtest.h>

namespace shard_router {
namespace {

// Published FNV-1a 64 test vectors (Fowler/Noll/Vo reference test suite).
TEST(HashTest, Fnv1a64MatchesReferenceVectors) {
  EXPECT_EQ(Fnv1a64(""), 0xcbf29ce484222325ULL);
  EXPECT_EQ(Fnv1a64("a"), 0xaf63dc4c8601ec8cULL);
  EXPECT_EQ(Fnv1a64("foobar"), 0x85944171f73967e8ULL);
}

// Values from tests/unit/shard_router/ring_reference.py --print, an
// independent implementation of the documented algorithm. These are the
// placement contract: if they change, every stored session moves.
TEST(HashTest, Hash64IsPinned) {
  EXPECT_EQ(Hash64(""), 0xefd01f60ba992926ULL);
  EXPECT_EQ(Hash64("a"), 0x82a2a958a9bece5bULL);
  EXPECT_EQ(Hash64("foobar"), 0x2c22194922d1672bULL);
  EXPECT_EQ(Hash64("a#0"), 0x1d08f3cbebddf3a9ULL);
  EXPECT_EQ(Hash64("s1#999"), 0x0435054318892d4aULL);
}

TEST(HashTest, Mix64SpreadsNeighbours) {
  EXPECT_EQ(Mix64(0), 0u);  // fmix64 fixes zero; Fnv1a64 never returns it for short keys.
  // Keys differing in their last byte must differ in about half their bits.
  int bits = __builtin_popcountll(Hash64("session-1") ^ Hash64("session-2"));
  EXPECT_GT(bits, 16);
  EXPECT_LT(bits, 48);
}

}  // namespace
}  // namespace shard_router
