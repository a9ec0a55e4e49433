#include "prefork/pool_policy.h"

#include <gtest/gtest.h>

#include <vector>

namespace chatllm {
namespace {

constexpr int64_t kSecond = 1000000;
constexpr int64_t kT0 = 5000 * kSecond;  // Any monotonic time well past zero.

PoolOptions Dynamic() {
  PoolOptions o;
  o.mode = PoolMode::kDynamic;
  o.max_children = 10;
  o.start_workers = 3;
  o.min_spare = 2;
  o.max_spare = 4;
  return o;
}

PoolState State(int live, int idle, int spawn_rate = 1) {
  PoolState s;
  s.live = live;
  s.idle = idle;
  s.spawn_rate = spawn_rate;
  s.now_us = kT0;
  s.last_retire_us = 0;
  return s;
}

TEST(PoolPolicyTest, ModeNames) {
  EXPECT_STREQ(PoolModeName(PoolMode::kStatic), "static");
  EXPECT_STREQ(PoolModeName(PoolMode::kDynamic), "dynamic");
  EXPECT_STREQ(PoolModeName(PoolMode::kOndemand), "ondemand");
}

TEST(PoolPolicyTest, InitialWorkersPerMode) {
  PoolOptions o;
  o.max_children = 4;
  o.start_workers = 2;
  o.mode = PoolMode::kStatic;
  EXPECT_EQ(InitialWorkers(o), 4);
  o.mode = PoolMode::kDynamic;
  EXPECT_EQ(InitialWorkers(o), 2);
  o.start_workers = 6;  // Never beyond the maximum.
  EXPECT_EQ(InitialWorkers(o), 4);
  o.mode = PoolMode::kOndemand;
  EXPECT_EQ(InitialWorkers(o), 0);
}

TEST(PoolPolicyTest, StaticRefillsToMaxChildrenAndNeverRetires) {
  PoolOptions o;
  o.max_children = 4;
  EXPECT_EQ(PlanPool(o, State(4, 0)).fork, 0);
  EXPECT_EQ(PlanPool(o, State(1, 1)).fork, 3);
  EXPECT_EQ(PlanPool(o, State(0, 0)).fork, 4);
  PoolPlan all_idle = PlanPool(o, State(4, 4));
  EXPECT_EQ(all_idle.fork, 0);
  EXPECT_FALSE(all_idle.retire_idlest);
  EXPECT_FALSE(all_idle.max_children_reached);
  // After a reload that lowered max_children, more are live: no negative fork.
  EXPECT_EQ(PlanPool(o, State(6, 0)).fork, 0);
  EXPECT_EQ(PlanPool(o, State(1, 0, 8)).next_spawn_rate, 8) << "static does not touch the rate";
}

TEST(PoolPolicyTest, DynamicHoldsStillBetweenMinAndMaxSpare) {
  const PoolOptions o = Dynamic();
  for (int idle : {2, 3, 4}) {
    SCOPED_TRACE(idle);
    PoolPlan plan = PlanPool(o, State(6, idle, 8));
    EXPECT_EQ(plan.fork, 0);
    EXPECT_FALSE(plan.retire_idlest);
    EXPECT_FALSE(plan.max_children_reached);
    EXPECT_EQ(plan.next_spawn_rate, 1) << "the shortage is over: the next one starts slow";
  }
}

TEST(PoolPolicyTest, DynamicRetiresOneIdleWorkerPerSecondAboveMaxSpare) {
  const PoolOptions o = Dynamic();
  PoolState s = State(8, 5, 4);  // One idle worker over max_spare (4).
  s.last_retire_us = kT0 - kSecond;
  PoolPlan plan = PlanPool(o, s);
  EXPECT_TRUE(plan.retire_idlest);
  EXPECT_EQ(plan.fork, 0);
  EXPECT_EQ(plan.next_spawn_rate, 1);
  s.last_retire_us = kT0 - kSecond + 1;  // The last one is less than a second old.
  plan = PlanPool(o, s);
  EXPECT_FALSE(plan.retire_idlest);
  EXPECT_EQ(plan.fork, 0);
  EXPECT_EQ(plan.next_spawn_rate, 1);
  s.last_retire_us = 0;  // Never retired one.
  EXPECT_TRUE(PlanPool(o, s).retire_idlest);
}

TEST(PoolPolicyTest, DynamicForksTheShortfallDoublingTheBatchEachTick) {
  const PoolOptions o = Dynamic();  // min_spare 2.
  PoolPlan plan = PlanPool(o, State(3, 1, 1));
  EXPECT_EQ(plan.fork, 1);  // One short.
  EXPECT_EQ(plan.next_spawn_rate, 2);
  plan = PlanPool(o, State(3, 0, 1));
  EXPECT_EQ(plan.fork, 1) << "limited by the batch of this tick";
  plan = PlanPool(o, State(3, 0, 2));
  EXPECT_EQ(plan.fork, 2);
  EXPECT_EQ(plan.next_spawn_rate, 4);

  // A long shortage (min_spare 40, room for 100): 1, 2, 4 ... capped at 32.
  PoolOptions big = o;
  big.min_spare = 40;
  big.max_spare = 50;
  big.max_children = 100;
  std::vector<int> forks, rates;
  int rate = 1;
  for (int tick = 0; tick < 7; ++tick) {
    plan = PlanPool(big, State(10, 0, rate));
    forks.push_back(plan.fork);
    rate = plan.next_spawn_rate;
    rates.push_back(rate);
  }
  EXPECT_EQ(forks, (std::vector<int>{1, 2, 4, 8, 16, 32, 32}));
  EXPECT_EQ(rates, (std::vector<int>{2, 4, 8, 16, 32, 32, 32}));
}

TEST(PoolPolicyTest, DynamicNeverPlansBeyondMaxChildren) {
  const PoolOptions o = Dynamic();  // max_children 10.
  PoolPlan plan = PlanPool(o, State(9, 0, 8));
  EXPECT_EQ(plan.fork, 1) << "only the room left";
  EXPECT_FALSE(plan.max_children_reached);
  plan = PlanPool(o, State(10, 0, 8));
  EXPECT_EQ(plan.fork, 0);
  EXPECT_TRUE(plan.max_children_reached);
  EXPECT_EQ(plan.next_spawn_rate, 8) << "still short: the pace is kept";
  plan = PlanPool(o, State(10, 1, 8));
  EXPECT_EQ(plan.fork, 0);
  EXPECT_TRUE(plan.max_children_reached) << "one idle is still short of min_spare 2";
  plan = PlanPool(o, State(10, 2, 8));
  EXPECT_FALSE(plan.max_children_reached) << "not short: the limit was not in the way";
}

TEST(PoolPolicyTest, DynamicIgnoresTheListenSocket) {
  PoolState s = State(6, 3);
  s.connection_waiting = true;
  PoolPlan plan = PlanPool(Dynamic(), s);
  EXPECT_EQ(plan.fork, 0);
  EXPECT_FALSE(plan.retire_idlest);
}

TEST(PoolPolicyTest, OndemandForksOnlyForAWaitingConnectionNoIdleWorkerTakes) {
  PoolOptions o;
  o.mode = PoolMode::kOndemand;
  o.max_children = 3;
  PoolState s = State(0, 0, 4);
  PoolPlan plan = PlanPool(o, s);  // A timer tick with an empty pool.
  EXPECT_EQ(plan.fork, 0);
  EXPECT_FALSE(plan.max_children_reached);
  EXPECT_EQ(plan.next_spawn_rate, 4) << "ondemand does not touch the rate";

  s.connection_waiting = true;
  EXPECT_EQ(PlanPool(o, s).fork, 1);
  s.live = 2;
  EXPECT_EQ(PlanPool(o, s).fork, 1) << "one at a time, however many wait";
  s.idle = 1;  // An idle worker will take the connection.
  plan = PlanPool(o, s);
  EXPECT_EQ(plan.fork, 0);
  EXPECT_FALSE(plan.max_children_reached);
  s.idle = 0;
  s.live = 3;
  plan = PlanPool(o, s);
  EXPECT_EQ(plan.fork, 0);
  EXPECT_TRUE(plan.max_children_reached);
}

TEST(PoolPolicyTest, OndemandLeavesIdleWorkersToTheirOwnTimeout) {
  PoolOptions o;
  o.mode = PoolMode::kOndemand;
  o.max_children = 3;
  o.max_spare = 0;  // A dynamic-only setting: no effect here.
  PoolPlan plan = PlanPool(o, State(3, 3));
  EXPECT_FALSE(plan.retire_idlest);
  EXPECT_EQ(plan.fork, 0);
}

TEST(PoolPolicyTest, CrashBackoffStartsAfterTheLimitAndDoublesUpToTheMaximum) {
  PoolOptions o;  // crash_limit 10 in crash_window_s 10, up to 5000 ms.
  CrashBackoff b;
  for (int i = 0; i < 10; ++i) b.RecordCrash(kT0 + i * 1000);
  EXPECT_EQ(b.NextDelayMs(o, kT0 + 10000), 0) << "10 crashes are within the limit";
  b.RecordCrash(kT0 + 10000);
  std::vector<int64_t> delays;
  for (int i = 0; i < 8; ++i) delays.push_back(b.NextDelayMs(o, kT0 + 20000));
  EXPECT_EQ(delays, (std::vector<int64_t>{100, 200, 400, 800, 1600, 3200, 5000, 5000}));
  EXPECT_EQ(b.recent(), 11u);
}

TEST(PoolPolicyTest, CrashBackoffForgetsCrashesOlderThanTheWindowAndStartsOver) {
  PoolOptions o;
  CrashBackoff b;
  for (int i = 0; i <= 10; ++i) b.RecordCrash(kT0 + i * 1000);  // 11 crashes, 1 ms apart.
  EXPECT_EQ(b.NextDelayMs(o, kT0 + 10000), 100);
  EXPECT_EQ(b.NextDelayMs(o, kT0 + 10000), 200);
  // Exactly one window after the first crash it still counts...
  EXPECT_EQ(b.NextDelayMs(o, kT0 + 10 * kSecond), 400);
  EXPECT_EQ(b.recent(), 11u);
  // ...a microsecond later it does not: 10 left, no delay.
  EXPECT_EQ(b.NextDelayMs(o, kT0 + 10 * kSecond + 1), 0);
  EXPECT_EQ(b.recent(), 10u);
  // The next loop starts from 100 ms again, not from where the last one stopped.
  b.RecordCrash(kT0 + 10 * kSecond + 2);
  EXPECT_EQ(b.NextDelayMs(o, kT0 + 10 * kSecond + 3), 100);
}

TEST(PoolPolicyTest, CrashBackoffFollowsReloadedLimits) {
  PoolOptions o;
  o.crash_limit = 2;
  o.crash_max_delay_ms = 150;
  CrashBackoff b;
  for (int i = 0; i < 3; ++i) b.RecordCrash(kT0 + i);
  EXPECT_EQ(b.NextDelayMs(o, kT0 + 3), 100);
  EXPECT_EQ(b.NextDelayMs(o, kT0 + 3), 150);
  EXPECT_EQ(b.NextDelayMs(o, kT0 + 3), 150);
  o.crash_limit = 3;
  EXPECT_EQ(b.NextDelayMs(o, kT0 + 3), 0);
}

TEST(PoolPolicyTest, AStopEscalatesToKillAtTheDeadlineThenEverySecond) {
  PoolOptions o;
  o.shutdown_timeout_s = 30;
  int64_t deadline = StopDeadline(o, kT0);
  EXPECT_EQ(deadline, kT0 + 30 * kSecond);
  EXPECT_FALSE(StopEscalates(kT0 + 30 * kSecond - 1, &deadline));
  EXPECT_EQ(deadline, kT0 + 30 * kSecond);
  EXPECT_TRUE(StopEscalates(kT0 + 30 * kSecond, &deadline));
  EXPECT_EQ(deadline, kT0 + 31 * kSecond);
  EXPECT_FALSE(StopEscalates(kT0 + 30 * kSecond + 200000, &deadline));
  EXPECT_TRUE(StopEscalates(kT0 + 31 * kSecond + 5, &deadline));
  EXPECT_EQ(deadline, kT0 + 32 * kSecond + 5);
  o.shutdown_timeout_s = 0;  // No grace at all: KILL on the first tick.
  deadline = StopDeadline(o, kT0);
  EXPECT_TRUE(StopEscalates(kT0, &deadline));
}

TEST(PoolPolicyTest, ARequestIsLoggedOnceAfterSlowlogAndKilledOnceAfterTheTimeout) {
  PoolOptions o;
  o.slowlog_timeout_s = 5;
  o.request_timeout_s = 30;
  EXPECT_EQ(JudgeRequest(o, 5 * kSecond, false, false), RequestVerdict::kNone);
  EXPECT_EQ(JudgeRequest(o, 5 * kSecond + 1, false, false), RequestVerdict::kSlowLog);
  EXPECT_EQ(JudgeRequest(o, 5 * kSecond + 1, false, true), RequestVerdict::kNone);
  EXPECT_EQ(JudgeRequest(o, 30 * kSecond, false, true), RequestVerdict::kNone);
  EXPECT_EQ(JudgeRequest(o, 30 * kSecond + 1, false, true), RequestVerdict::kKill);
  EXPECT_EQ(JudgeRequest(o, 30 * kSecond + 1, false, false), RequestVerdict::kKill)
      << "the kill wins over a slow-log line not yet written";
  EXPECT_EQ(JudgeRequest(o, 30 * kSecond + 1, true, true), RequestVerdict::kNone);
  // A killed worker's request not yet logged as slow is still logged once.
  EXPECT_EQ(JudgeRequest(o, 30 * kSecond + 1, true, false), RequestVerdict::kSlowLog);
}

TEST(PoolPolicyTest, ZeroTimeoutsNeverJudgeARequest) {
  PoolOptions o;
  o.slowlog_timeout_s = 0;
  o.request_timeout_s = 0;
  EXPECT_EQ(JudgeRequest(o, 3600 * kSecond, false, false), RequestVerdict::kNone);
  o.request_timeout_s = 1;  // Only the timeout.
  EXPECT_EQ(JudgeRequest(o, kSecond + 1, false, false), RequestVerdict::kKill);
  EXPECT_EQ(JudgeRequest(o, kSecond + 1, true, false), RequestVerdict::kNone);
}

}  // namespace
}  // namespace chatllm
