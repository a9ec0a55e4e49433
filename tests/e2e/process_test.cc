// The prefork master as a process: config errors, graceful stop, respawn.
// Each test runs its own chatllm-fcgi instance on a spare port, against the
// test stack's shards, and talks FastCGI to it directly.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "support/fcgi_client.h"
#include "support/instance.h"
#include "support/stack_env.h"
#include "support/worker_status.h"

namespace chatllm::testing {
namespace {

using Clock = std::chrono::steady_clock;

int SparePort(int offset) { return StackEnv::Get().apps().back().second + 100 + offset; }

TEST(ProcessTest, BadConfigExitsNonZeroNamingTheKey) {
  Instance bad("bad-config", SparePort(0), {{"workers", "lots"}});
  std::string out;
  int rc = RunCommand(StackEnv::Get().build() + "/chatllm-fcgi --config " + bad.config() + " 2>&1", &out);
  EXPECT_EQ(rc, 2);
  EXPECT_NE(out.find("[server] workers: 'lots' is not an integer in 1..1024"), std::string::npos) << out;
  rc = RunCommand(StackEnv::Get().build() + "/chatllm-fcgi --config /nonexistent.ini 2>&1", &out);
  EXPECT_EQ(rc, 2);
}

TEST(ProcessTest, SigtermLetsTheRequestInHandFinish) {
  Instance app("graceful", SparePort(1), {{"workers", "2"}, {"echo_delay_ms", "1500"}});
  app.Start();
  FcgiResponse created = FcgiRequest(app.port(), "POST", "/v1/sessions", "{}");
  ASSERT_EQ(created.status, 201) << created.body;
  std::string id = created.body.substr(created.body.find("\"id\":\"") + 6, 36);

  FcgiResponse turn;
  std::thread client(
      [&] { turn = FcgiRequest(app.port(), "POST", "/v1/sessions/" + id + "/messages", R"({"content":"slow"})"); });
  // SIGTERM only once a worker has the turn in hand (its 1.5 s in the
  // provider), as the instance's scoreboard shows it.
  const std::string turn_path = "POST /v1/sessions/" + id + "/messages";
  const bool in_hand = WaitFor(5, [&] { return Handling(WorkerThreadsAt(app.port()), turn_path).size() == 1; });
  EXPECT_TRUE(in_hand) << "no worker took the turn";
  auto t0 = Clock::now();
  EXPECT_EQ(app.Stop(SIGTERM), 0);
  double took = std::chrono::duration<double>(Clock::now() - t0).count();
  client.join();
  EXPECT_TRUE(turn.ok) << turn.error;
  EXPECT_EQ(turn.status, 201) << turn.body;
  EXPECT_GT(took, 0.8);  // It waited for the request...
  EXPECT_LT(took, 5.0);  // ...not for the shutdown timeout.
  EXPECT_NE(app.log().find("all workers stopped"), std::string::npos) << app.log();
}

TEST(ProcessTest, MasterRefusesASecondInstanceOnItsPidFile) {
  Instance app("pidlock", SparePort(2), {{"workers", "1"}});
  app.Start();
  std::string out;
  int rc = RunCommand(StackEnv::Get().build() + "/chatllm-fcgi --config " + app.config() + " 2>&1", &out);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("another chatllm-fcgi holds"), std::string::npos) << out;
  EXPECT_EQ(app.Stop(SIGTERM), 0);
}

TEST(ProcessTest, WorkersDieWithAKilledMaster) {
  Instance app("orphans", SparePort(3), {{"workers", "3"}});
  app.Start();
  std::vector<pid_t> workers = ChildPids(app.pid());
  ASSERT_EQ(workers.size(), 3u);
  EXPECT_EQ(app.Stop(SIGKILL), 128 + SIGKILL);
  WaitFor(2, [&] { return std::none_of(workers.begin(), workers.end(), ProcessAlive); });
  for (pid_t w : workers) EXPECT_FALSE(ProcessAlive(w)) << "worker " << w << " outlived its master";
  EXPECT_FALSE(FcgiRequest(app.port(), "GET", "/healthz", "", {}, 500).ok);
}

}  // namespace
}  // namespace chatllm::testing
