#include "prefork/scoreboard.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>

namespace chatllm {
namespace {

constexpr int64_t kSecond = 1000000;
constexpr int64_t kT0 = 1000 * kSecond;  // Any monotonic time well past zero.

// An 8-byte user whose UserKey() is `key` (which must be odd: UserKey sets
// the low bit).
std::string UserWithKey(uint64_t key) {
  std::string user(sizeof(key), '\0');
  std::memcpy(user.data(), &key, sizeof(key));
  return user;
}

// A user id as the API passes it: 16 bytes (random in production).
std::string User(char fill) { return std::string(16, fill); }

TEST(ScoreboardTest, UserKeyIsTheFirstEightBytesWithTheLowBitSet) {
  EXPECT_EQ(Scoreboard::UserKey(""), 1u) << "0 means no user";
  EXPECT_EQ(Scoreboard::UserKey(std::string(1, '\0')), 1u);
  EXPECT_EQ(Scoreboard::UserKey("ab"), 0x6261u);  // Little-endian, 'a' = 0x61 is odd already.
  EXPECT_EQ(Scoreboard::UserKey("b"), 0x63u);     // 'b' = 0x62, low bit set.
  EXPECT_EQ(Scoreboard::UserKey(UserWithKey(0x0123456789abcdefULL)), 0x0123456789abcdefULL);
  // User ids are 16 random bytes: the first 8 are plenty to tell them apart.
  EXPECT_EQ(Scoreboard::UserKey(std::string(8, 'x') + "AAAAAAAA"),
            Scoreboard::UserKey(std::string(8, 'x') + "BBBBBBBB"));
}

TEST(ScoreboardTest, TakeTokenAllowsTheBurstThenOnePerInterval) {
  Scoreboard board(4);
  const std::string alice = User('a');
  // 10 per second, bursts of 3: three at once, then one every 100 ms.
  EXPECT_TRUE(board.TakeToken(alice, 10, 3, kT0));
  EXPECT_TRUE(board.TakeToken(alice, 10, 3, kT0));
  EXPECT_TRUE(board.TakeToken(alice, 10, 3, kT0));
  EXPECT_FALSE(board.TakeToken(alice, 10, 3, kT0));
  EXPECT_FALSE(board.TakeToken(alice, 10, 3, kT0 + 100000 - 1));
  EXPECT_TRUE(board.TakeToken(alice, 10, 3, kT0 + 100000));
  EXPECT_FALSE(board.TakeToken(alice, 10, 3, kT0 + 100000));
  EXPECT_TRUE(board.TakeToken(alice, 10, 3, kT0 + 200000));
  EXPECT_FALSE(board.TakeToken(alice, 10, 3, kT0 + 200000));
}

TEST(ScoreboardTest, ARefusedRequestSpendsNothing) {
  Scoreboard board(4);
  const std::string alice = User('a');
  EXPECT_TRUE(board.TakeToken(alice, 1, 1, kT0));
  // Hammering while refused does not push the next token further away.
  for (int i = 0; i < 100; ++i) EXPECT_FALSE(board.TakeToken(alice, 1, 1, kT0 + i * 9000));
  EXPECT_TRUE(board.TakeToken(alice, 1, 1, kT0 + kSecond));
}

TEST(ScoreboardTest, AnIdleUserRefillsToTheBurstAndNoMore) {
  Scoreboard board(4);
  const std::string alice = User('a');
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(board.TakeToken(alice, 10, 3, kT0));
  const int64_t later = kT0 + 30 * kSecond;  // Long enough for 300 tokens.
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(board.TakeToken(alice, 10, 3, later)) << i;
  EXPECT_FALSE(board.TakeToken(alice, 10, 3, later));
}

TEST(ScoreboardTest, BurstZeroActsAsOneAndRateZeroMeansNoLimit) {
  Scoreboard board(4);
  const std::string alice = User('a'), bob = User('b');
  EXPECT_TRUE(board.TakeToken(alice, 4, 0, kT0));
  EXPECT_FALSE(board.TakeToken(alice, 4, 0, kT0));
  EXPECT_FALSE(board.TakeToken(alice, 4, 0, kT0 + 250000 - 1));
  EXPECT_TRUE(board.TakeToken(alice, 4, 0, kT0 + 250000));
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(board.TakeToken(bob, 0, 0, kT0)) << i;
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(board.TakeToken(bob, -1, 1)) << i;  // The clock-reading overload too.
}

TEST(ScoreboardTest, EachUserHasABucketOfItsOwn) {
  Scoreboard board(4);
  const std::string alice = User('a'), bob = User('b');
  EXPECT_TRUE(board.TakeToken(alice, 1, 2, kT0));
  EXPECT_TRUE(board.TakeToken(alice, 1, 2, kT0));
  EXPECT_FALSE(board.TakeToken(alice, 1, 2, kT0));
  EXPECT_TRUE(board.TakeToken(bob, 1, 2, kT0));
  EXPECT_TRUE(board.TakeToken(bob, 1, 2, kT0));
  EXPECT_FALSE(board.TakeToken(bob, 1, 2, kT0));
}

TEST(ScoreboardTest, TheBucketIsSharedAcrossProcesses) {
  // The region is mapped before fork, as the server does: a child's tokens
  // are spent from the same bucket.
  Scoreboard board(4);
  const std::string alice = User('a');
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(board.TakeToken(alice, 1, 2, kT0) && board.TakeToken(alice, 1, 2, kT0) ? 0 : 1);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_FALSE(board.TakeToken(alice, 1, 2, kT0)) << "the child's two tokens were not seen";
}

TEST(ScoreboardTest, AFullTableFailsOpenUntilASlotGoesStale) {
  Scoreboard board(4);
  // Users whose keys are equal modulo the table size probe the same 16
  // slots: 16 of them fill those slots.
  const uint64_t base = 0x777001;
  for (uint64_t j = 0; j < 16; ++j) {
    const std::string u = UserWithKey(base + j * Scoreboard::kUserSlots);
    EXPECT_TRUE(board.TakeToken(u, 1, 1, kT0)) << j;
    EXPECT_FALSE(board.TakeToken(u, 1, 1, kT0)) << j << " is limited";
  }
  const std::string late = UserWithKey(base + 16 * Scoreboard::kUserSlots);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(board.TakeToken(late, 1, 1, kT0)) << "no slot: not limited";
  // A minute after its owner last spent a token, a slot may be taken over.
  const int64_t stale = kT0 + 62 * kSecond;
  EXPECT_TRUE(board.TakeToken(late, 1, 1, stale));
  EXPECT_FALSE(board.TakeToken(late, 1, 1, stale)) << "it has a bucket now";
}

TEST(ScoreboardTest, ConcurrentTurnsOfAUserAreCountedAcrossSlots) {
  Scoreboard board(5);
  const std::string alice = User('a'), bob = User('b');
  EXPECT_TRUE(board.TryBeginTurn(0, alice, 2));
  EXPECT_TRUE(board.TryBeginTurn(1, alice, 2));
  EXPECT_FALSE(board.TryBeginTurn(2, alice, 2)) << "a third turn at max 2";
  EXPECT_EQ(board.slot(2).turn_user.load(), 0u) << "a refused turn leaves no mark";
  EXPECT_TRUE(board.TryBeginTurn(3, bob, 2)) << "another user's turns do not count";
  EXPECT_EQ(board.slot(0).turn_user.load(), Scoreboard::UserKey(alice));
  board.EndTurn(0);
  EXPECT_EQ(board.slot(0).turn_user.load(), 0u);
  EXPECT_TRUE(board.TryBeginTurn(2, alice, 2)) << "the ended turn gave its place back";
  EXPECT_FALSE(board.TryBeginTurn(4, alice, 2));
  EXPECT_TRUE(board.TryBeginTurn(4, alice, 3)) << "the maximum is the caller's";
}

TEST(ScoreboardTest, NoMaximumMeansNoMarkAndAReleasedSlotFreesItsTurn) {
  Scoreboard board(3);
  const std::string alice = User('a');
  for (int s = 0; s < 3; ++s) EXPECT_TRUE(board.TryBeginTurn(s, alice, 0));
  EXPECT_EQ(board.slot(0).turn_user.load(), 0u) << "max 0: nothing counted";
  // The worker owning slot 0 dies mid-turn: the master releases its slot.
  board.Claim(0, 4242);
  EXPECT_TRUE(board.TryBeginTurn(0, alice, 1));
  EXPECT_FALSE(board.TryBeginTurn(1, alice, 1));
  board.Release(0);
  EXPECT_TRUE(board.TryBeginTurn(1, alice, 1)) << "a dead worker's turn leaked";
  // A slot claimed by a new worker starts without a turn.
  board.Claim(1, 4343);
  EXPECT_EQ(board.slot(1).turn_user.load(), 0u);
}

TEST(ScoreboardTest, SlotLifecycle) {
  Scoreboard board(2);
  EXPECT_EQ(board.slot_count(), 2);
  EXPECT_EQ(board.slot(1).pid.load(), 0);
  board.Claim(1, 777);
  EXPECT_EQ(board.slot(1).pid.load(), 777);
  EXPECT_EQ(board.slot(1).state.load(), static_cast<uint8_t>(SlotState::kIdle));
  board.SetState(1, SlotState::kHandling);
  EXPECT_STREQ(SlotStateName(static_cast<SlotState>(board.slot(1).state.load())), "handling");
  board.BeginRequest(1, "POST /v1/sessions/x/messages id=req-1");
  EXPECT_EQ(board.RequestOf(1), "POST /v1/sessions/x/messages id=req-1");
  EXPECT_NE(board.slot(1).request_start_us.load(), 0);
  board.EndRequest(1);
  EXPECT_EQ(board.slot(1).request_start_us.load(), 0);
  EXPECT_EQ(board.slot(1).requests.load(), 1u);
  // A long description is cut to the slot's buffer, with its terminator.
  board.BeginRequest(1, std::string(500, 'r'));
  EXPECT_EQ(board.RequestOf(1), std::string(WorkerSlot::kRequestLen - 1, 'r'));
  board.Release(1);
  EXPECT_EQ(board.slot(1).pid.load(), 0);
  EXPECT_EQ(board.slot(1).state.load(), static_cast<uint8_t>(SlotState::kFree));
  EXPECT_EQ(board.slot(1).request_start_us.load(), 0);
}

TEST(ScoreboardTest, StatusIndexPlacesKnownCodesAndTheRestInOther) {
  EXPECT_EQ(StatusIndex(200), 0);
  EXPECT_EQ(StatusIndex(201), 1);
  EXPECT_EQ(StatusIndex(429), 11);
  EXPECT_EQ(StatusIndex(504), 15);
  EXPECT_EQ(StatusIndex(0), 16);
  EXPECT_EQ(StatusIndex(418), kMetricStatuses - 1);
  EXPECT_EQ(StatusIndex(-1), kMetricStatuses - 1);
  EXPECT_EQ(kMetricStatusCodes[kMetricStatuses - 1], -1);
}

// The bucket each latency lands in; bounds are inclusive (Prometheus "le").
int BucketOf(int64_t micros) {
  Scoreboard board(1);
  SharedHistogram& h = board.request_latency(0);
  h.Observe(micros);
  for (int b = 0; b < SharedHistogram::kBuckets; ++b) {
    if (h.counts[b].load() == 1) return b;
  }
  return -1;
}

TEST(ScoreboardTest, HistogramBucketEdges) {
  EXPECT_EQ(BucketOf(0), 0);
  EXPECT_EQ(BucketOf(-5), 0);
  EXPECT_EQ(BucketOf(1000), 0);  // 0.001 s: le="0.001".
  EXPECT_EQ(BucketOf(1001), 1);
  EXPECT_EQ(BucketOf(2500), 1);  // le="0.0025".
  EXPECT_EQ(BucketOf(2501), 2);
  EXPECT_EQ(BucketOf(100000), 6);     // le="0.1".
  EXPECT_EQ(BucketOf(1000000), 9);    // le="1".
  EXPECT_EQ(BucketOf(10000000), 12);  // le="10".
  EXPECT_EQ(BucketOf(10000001), 13);  // +Inf.
  EXPECT_EQ(BucketOf(int64_t{1} << 50), 13);
}

TEST(ScoreboardTest, HistogramSumsAndCounts) {
  Scoreboard board(1);
  SharedHistogram& h = board.request_latency(3);
  h.Observe(1500);
  h.Observe(-20);  // A clock step: counted, adds nothing to the sum.
  h.Observe(2000000);
  EXPECT_EQ(h.count.load(), 3u);
  EXPECT_EQ(h.sum_us.load(), 2001500u);
  EXPECT_EQ(h.counts[0].load(), 1u);
  EXPECT_EQ(h.counts[1].load(), 1u);
  EXPECT_EQ(h.counts[10].load(), 1u);  // le="2.5".
}

TEST(ScoreboardTest, CountRequestKeepsOneCounterPerRouteAndStatus) {
  Scoreboard board(1);
  board.CountRequest(2, 201, 1500);
  board.CountRequest(2, 201, 3000);
  board.CountRequest(2, 418, 10);
  board.CountRequest(5, 404, 10);
  board.CountRequest(kMetricRoutes, 200, 10);  // Out of range: ignored.
  board.CountRequest(-1, 200, 10);
  EXPECT_EQ(board.requests(2, StatusIndex(201)).load(), 2u);
  EXPECT_EQ(board.requests(2, kMetricStatuses - 1).load(), 1u);
  EXPECT_EQ(board.requests(5, StatusIndex(404)).load(), 1u);
  uint64_t total = 0;
  for (int r = 0; r < kMetricRoutes; ++r) {
    for (int s = 0; s < kMetricStatuses; ++s) total += board.requests(r, s).load();
  }
  EXPECT_EQ(total, 4u);
  EXPECT_EQ(board.request_latency(2).count.load(), 3u);
  EXPECT_EQ(board.request_latency(2).counts[1].load(), 1u);  // 1.5 ms
  EXPECT_EQ(board.request_latency(2).counts[2].load(), 1u);  // 3 ms
  EXPECT_EQ(board.request_latency(0).count.load(), 0u);
}

TEST(ScoreboardTest, NamedSeriesAreClaimedOncePerName) {
  Scoreboard board(1);
  NamedSeries* a = board.Shard("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(board.Shard("a"), a);
  EXPECT_NE(board.Shard("b"), a);
  EXPECT_STREQ(a->name, "a");
  EXPECT_EQ(board.Shard(""), nullptr);
  EXPECT_NE(board.Provider("a"), a) << "shards and providers are separate tables";
  for (int i = 2; i < Scoreboard::kMaxShards; ++i) EXPECT_NE(board.Shard("s" + std::to_string(i)), nullptr);
  EXPECT_EQ(board.Shard("one-too-many"), nullptr);
  EXPECT_EQ(board.Shard("a"), a);
}

TEST(ScoreboardTest, ALongestValidNameIsOneSeries) {
  // Shard and provider names may have 64 characters (shard_router's
  // IsValidShardName, [provider.NAME] in the config).
  Scoreboard board(1);
  const std::string name(64, 'n');
  NamedSeries* s = board.Shard(name);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(board.Shard(name), s);
  EXPECT_EQ(std::string(s->name), name);
  EXPECT_EQ(board.Provider(name), board.Provider(name));
  // Anything longer is one series too, under its first 64 characters.
  NamedSeries* longer = board.Shard(std::string(70, 'm'));
  ASSERT_NE(longer, nullptr);
  EXPECT_EQ(board.Shard(std::string(70, 'm')), longer);
  EXPECT_EQ(std::string(longer->name), std::string(64, 'm'));
}

}  // namespace
}  // namespace chatllm
