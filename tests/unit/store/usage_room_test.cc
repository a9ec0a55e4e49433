#include <gtest/gtest.h>

#include "store/records.h"

namespace chatllm {
namespace {

// chat_usage_hold's answer (sql/011_usage.sql) after a hold: the room its
// budgets leave, for the answer's x-ratelimit-* headers.
TEST(UsageRoomTest, ReadsEachKindABudgetLimits) {
  UsageRoom room = ParseUsageRoom("1 t 2600 2548 d;c 5000000000 4999000000 m;n 2 1");
  EXPECT_EQ(room.tokens.limit, 2600);
  EXPECT_EQ(room.tokens.remaining, 2548);
  EXPECT_FALSE(room.tokens.monthly);
  EXPECT_EQ(room.cost_nanos.limit, 5000000000);
  EXPECT_EQ(room.cost_nanos.remaining, 4999000000);
  EXPECT_TRUE(room.cost_nanos.monthly);
  EXPECT_EQ(room.turns.limit, 2);
  EXPECT_EQ(room.turns.remaining, 1);

  room = ParseUsageRoom("1 n 1 0");
  EXPECT_EQ(room.tokens.limit, -1);
  EXPECT_EQ(room.cost_nanos.limit, -1);
  EXPECT_EQ(room.turns.limit, 1);
  EXPECT_EQ(room.turns.remaining, 0);
}

TEST(UsageRoomTest, AnythingElseHasNoFigures) {
  for (const char* text : {"1", "", "4", "-13", "2 t 1 1 d", "1 ", "1 x 5 5 d", "1 t", "1 t abc 3 d", "1 t -1 0 d"}) {
    UsageRoom room = ParseUsageRoom(text);
    EXPECT_EQ(room.tokens.limit, -1) << text;
    EXPECT_EQ(room.cost_nanos.limit, -1) << text;
    EXPECT_EQ(room.turns.limit, -1) << text;
  }
  // A negative remainder (never sent by the home) reads as none left.
  EXPECT_EQ(ParseUsageRoom("1 t 10 -3 d").tokens.remaining, 0);
}

}  // namespace
}  // namespace chatllm
