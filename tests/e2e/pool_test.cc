// The process manager's pool modes and worker lifecycle, on real processes:
// each test runs its own chatllm-fcgi instance (against the test stack's
// shards) and talks FastCGI to it directly.

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "support/fcgi_client.h"
#include "support/instance.h"
#include "support/stack_env.h"
#include "support/worker_status.h"

namespace chatllm::testing {
namespace {

using Clock = std::chrono::steady_clock;

// The `offset`th port past the stack's last app port + 200 that the stack
// does not use (with some port choices its shards sit in that range).
int SparePort(int offset) {
  int port = StackEnv::Get().apps().back().second + 200;
  for (int n = 0;; ++port) {
    if (!StackEnv::Get().UsesPort(port) && n++ == offset) return port;
  }
}

std::string NewSession(int port) {
  FcgiResponse r = FcgiRequest(port, "POST", "/v1/sessions", "{}");
  EXPECT_EQ(r.status, 201) << r.body;
  size_t at = r.body.find("\"id\":\"");
  return at == std::string::npos ? "" : r.body.substr(at + 6, 36);
}

// Sends `n` slow turns at once and waits for them; returns how many got 201.
int Burst(int port, const std::string& session, int n) {
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      FcgiResponse r = FcgiRequest(port, "POST", "/v1/sessions/" + session + "/messages",
                                   "{\"content\":\"burst " + std::to_string(i) + "\"}", {}, 30000);
      if (r.status == 201) ++ok;
    });
  }
  for (auto& t : threads) t.join();
  return ok.load();
}

TEST(PoolTest, DynamicPoolGrowsUnderABurstAndShrinksAfter) {
  Instance app("pool-dynamic", SparePort(0),
               {{"pm", "dynamic"},
                {"workers", "8"},
                {"start_workers", "2"},
                {"min_spare_workers", "1"},
                {"max_spare_workers", "2"},
                {"echo_delay_ms", "1500"}});
  app.Start();
  EXPECT_TRUE(WaitFor(3, [&] { return ChildPids(app.pid()).size() == 2; })) << ChildPids(app.pid()).size();
  std::string session = NewSession(app.port());
  size_t peak = 0;
  std::thread watcher([&] {
    for (int i = 0; i < 150; ++i) {
      peak = std::max(peak, ChildPids(app.pid()).size());
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  EXPECT_EQ(Burst(app.port(), session, 8), 8);
  watcher.join();
  EXPECT_GE(peak, 6u) << "the pool did not grow for 8 concurrent requests";
  EXPECT_LE(peak, 8u) << "the pool grew past workers = 8";
  // Idle again: extra workers are retired (one per second) down to max_spare.
  EXPECT_TRUE(WaitFor(12, [&] { return ChildPids(app.pid()).size() <= 2; })) << ChildPids(app.pid()).size();
  EXPECT_NE(app.log().find("retiring worker"), std::string::npos) << app.log();
}

TEST(PoolTest, OndemandStartsWithNoWorkerServesTheFirstRequestAndRetiresIdleOnes) {
  Instance app("pool-ondemand", SparePort(1), {{"pm", "ondemand"}, {"workers", "4"}, {"idle_timeout", "2"}});
  app.Start();  // Start() itself sends /healthz: let that worker go idle first.
  EXPECT_TRUE(WaitFor(6, [&] { return ChildPids(app.pid()).empty(); })) << "idle workers were not retired";
  auto t0 = Clock::now();
  FcgiResponse r = FcgiRequest(app.port(), "GET", "/healthz");
  double first_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  EXPECT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(ChildPids(app.pid()).size(), 1u);
  EXPECT_LT(first_ms, 1000) << "forking for the first request took " << first_ms << " ms";
  EXPECT_TRUE(WaitFor(6, [&] { return ChildPids(app.pid()).empty(); }));
}

TEST(PoolTest, KilledWorkerIsReplacedWithinOneSecond) {
  Instance app("pool-replace", SparePort(2), {{"workers", "2"}});
  app.Start();
  auto before = ChildPids(app.pid());
  ASSERT_EQ(before.size(), 2u);
  auto t0 = Clock::now();
  kill(before[0], SIGKILL);
  ASSERT_TRUE(WaitFor(1.0, [&] {
    auto now = ChildPids(app.pid());
    return now.size() == 2 && std::find(now.begin(), now.end(), before[0]) == now.end();
  }));
  double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  std::printf("worker replaced in %.1f ms\n", ms);
  EXPECT_EQ(FcgiRequest(app.port(), "GET", "/healthz").status, 200);
}

TEST(PoolTest, CrashLoopBacksOffInsteadOfForkStorming) {
  Instance app("pool-crashloop", SparePort(3), {{"workers", "2"}});
  app.Start();
  // Kill every worker the moment it appears, for 4 seconds.
  int kills = 0;
  auto t0 = Clock::now();
  while (std::chrono::duration<double>(Clock::now() - t0).count() < 4) {
    for (pid_t p : ChildPids(app.pid())) kills += kill(p, SIGKILL) == 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  // Without backoff this loop kills hundreds; with it, the 10 the crash
  // limit allows plus a few delayed respawns.
  EXPECT_LT(kills, 40) << kills << " workers forked and killed in 4 s";
  EXPECT_GT(kills, 10);
  EXPECT_NE(app.log().find("crash-looping"), std::string::npos) << app.log();
  // And it recovers once the deaths stop.
  EXPECT_TRUE(WaitFor(8, [&] { return FcgiRequest(app.port(), "GET", "/healthz", "", {}, 500).status == 200; }));
}

TEST(PoolTest, MaxRequestsRecyclesWorkersWithoutFailingARequest) {
  Instance app("pool-recycle", SparePort(4), {{"workers", "2"}, {"max_requests", "10"}});
  app.Start();
  auto first = ChildPids(app.pid());
  std::atomic<int> failed{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        if (FcgiRequest(app.port(), "GET", "/healthz").status != 200) ++failed;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(failed.load(), 0);
  size_t recycled = 0;
  for (size_t pos = 0; (pos = app.log().find("(max_requests); exiting", pos)) != std::string::npos; ++pos) ++recycled;
  EXPECT_GE(recycled, 15u);  // 200 requests, 10 per worker.
  auto now = ChildPids(app.pid());
  for (pid_t p : first) EXPECT_EQ(std::find(now.begin(), now.end(), p), now.end());
}

TEST(PoolTest, RequestTimeoutKillsTheStuckWorkerAndTheLogNamesTheRequest) {
  Instance app("pool-timeout", SparePort(5),
               {{"workers", "2"}, {"echo_delay_ms", "4000"}, {"request_timeout", "1"}, {"slowlog_timeout", "0"}});
  app.Start();
  std::string session = NewSession(app.port());
  auto t0 = Clock::now();
  FcgiResponse r = FcgiRequest(app.port(), "POST", "/v1/sessions/" + session + "/messages", R"({"content":"stuck"})",
                               {{"HTTP_X_REQUEST_ID", "stuck-request-42"}}, 10000);
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_FALSE(r.ok) << "the stuck request was answered: " << r.status;
  EXPECT_LT(secs, 3.0);
  std::string log = app.log();
  EXPECT_NE(log.find("request timeout"), std::string::npos) << log;
  EXPECT_NE(log.find("POST /v1/sessions/" + session + "/messages id=stuck-request-42"), std::string::npos) << log;
  EXPECT_TRUE(WaitFor(2, [&] { return ChildPids(app.pid()).size() == 2; }));
}

TEST(PoolTest, SlowLogNamesSlowRequests) {
  Instance app("pool-slowlog", SparePort(6), {{"workers", "1"}, {"echo_delay_ms", "1500"}, {"slowlog_timeout", "1"}});
  app.Start();
  std::string session = NewSession(app.port());
  FcgiResponse r = FcgiRequest(app.port(), "POST", "/v1/sessions/" + session + "/messages", R"({"content":"slow"})",
                               {{"HTTP_X_REQUEST_ID", "slow-7"}});
  EXPECT_EQ(r.status, 201);
  EXPECT_NE(app.log().find("slow request"), std::string::npos) << app.log();
  EXPECT_NE(app.log().find("id=slow-7"), std::string::npos) << app.log();
  FcgiResponse status = FcgiRequest(app.port(), "GET", "/status");
  EXPECT_NE(status.body.find("\"slow_requests\":1"), std::string::npos) << status.body;
}

TEST(PoolTest, SigtermUnderLoadFinishesEveryRequestInFlight) {
  // Six turns in flight, and a seventh worker to answer /status meanwhile.
  Instance app("pool-sigterm", SparePort(8), {{"workers", "7"}, {"echo_delay_ms", "1200"}});
  app.Start();
  std::string session = NewSession(app.port());
  std::atomic<int> ok{0}, failed{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < 6; ++i) {
    clients.emplace_back([&, i] {
      FcgiResponse r = FcgiRequest(app.port(), "POST", "/v1/sessions/" + session + "/messages",
                                   "{\"content\":\"in flight " + std::to_string(i) + "\"}", {}, 10000);
      (r.status == 201 ? ok : failed)++;
    });
  }
  // SIGTERM once six workers each have a turn in hand (its 1.2 s in the provider).
  const std::string turn_path = "POST /v1/sessions/" + session + "/messages";
  EXPECT_TRUE(WaitFor(5, [&] { return Handling(WorkerThreadsAt(app.port()), turn_path).size() == 6; }))
      << "the six turns were never all in hand at once";
  EXPECT_EQ(app.Stop(SIGTERM), 0);
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), 6);
  EXPECT_EQ(failed.load(), 0);
  // And every turn it acknowledged is stored: 6 user + 6 assistant messages.
  app.Start();
  FcgiResponse history = FcgiRequest(app.port(), "GET", "/v1/sessions/" + session + "/messages?limit=100", "");
  ASSERT_EQ(history.status, 200) << history.body;
  size_t count = 0;
  for (size_t at = 0; (at = history.body.find("\"seq\":", at)) != std::string::npos; ++at) ++count;
  EXPECT_EQ(count, 12u) << history.body;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(PoolTest, AccessLogHasALinePerRequestAndSigusr1ReopensTheLogs) {
  const std::string dir = StackEnv::Get().var() + "/pool-logs";
  const std::string access = dir + "/access.log", log = dir + "/app.log";
  Instance app("pool-logs", SparePort(9), {{"workers", "2"}, {"access_log", access}});
  std::remove(access.c_str());
  std::remove((access + ".1").c_str());
  std::remove((log + ".1").c_str());
  const std::map<std::string, std::string> traced = {{"HTTP_X_REQUEST_ID", "trace-me-42"}};
  app.Start();
  std::string session = NewSession(app.port());
  FcgiResponse r =
      FcgiRequest(app.port(), "POST", "/v1/sessions/" + session + "/messages", R"({"content":"hi"})", traced);
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(r.headers["X-Request-Id"], "trace-me-42");
  ASSERT_TRUE(WaitFor(2, [&] { return ReadFile(access).find("trace-me-42") != std::string::npos; }))
      << ReadFile(access);
  std::string line = ReadFile(access);
  line = line.substr(line.find("{\"time\"", line.find("trace-me-42") - 80));
  line = line.substr(0, line.find('\n'));
  for (const std::string& want :
       {std::string("\"request_id\":\"trace-me-42\""), std::string("\"method\":\"POST\""),
        std::string("\"route\":\"/v1/sessions/{id}/messages\""), std::string("\"status\":201"),
        "\"session_id\":\"" + session + "\"", std::string("\"shard\":"), std::string("\"provider\":\"echo\""),
        std::string("\"provider_ms\":"), std::string("\"worker_pid\":"), std::string("\"duration_ms\":")}) {
    EXPECT_NE(line.find(want), std::string::npos) << want << " missing from " << line;
  }

  // logrotate: rename both logs, SIGUSR1 the master, and the next lines go to new files.
  ASSERT_EQ(std::rename(access.c_str(), (access + ".1").c_str()), 0);
  ASSERT_EQ(std::rename(log.c_str(), (log + ".1").c_str()), 0);
  ASSERT_EQ(kill(app.pid(), SIGUSR1), 0);
  // The master reopens its log, then signals each worker, which reopens
  // between requests and says so in the new log. Once both have, every
  // request lands in the new access log (before that, a request may still
  // go to the renamed file, as with nginx's USR1).
  auto reopened = [&] {
    std::string text = ReadFile(log);
    size_t workers = 0;
    for (size_t at = text.find("worker: logs reopened"); at != std::string::npos;
         at = text.find("worker: logs reopened", at + 1))
      ++workers;
    return text.find("master: log reopened") != std::string::npos && workers == 2;
  };
  ASSERT_TRUE(WaitFor(2, reopened)) << ReadFile(log) << "\n--- before the rotation:\n" << ReadFile(log + ".1");
  for (int i = 0; i < 6; ++i) {
    std::map<std::string, std::string> params = {{"HTTP_X_REQUEST_ID", "after-rotate-" + std::to_string(i)}};
    EXPECT_EQ(FcgiRequest(app.port(), "GET", "/v1/sessions/" + session, "", params).status, 200);
  }
  ASSERT_TRUE(WaitFor(2, [&] { return ReadFile(access).find("after-rotate-5") != std::string::npos; }))
      << ReadFile(access);
  for (int i = 0; i < 6; ++i) {
    EXPECT_NE(ReadFile(access).find("after-rotate-" + std::to_string(i)), std::string::npos) << i;
    EXPECT_EQ(ReadFile(access + ".1").find("after-rotate-" + std::to_string(i)), std::string::npos) << i;
  }
}

TEST(PoolTest, ThreadedWorkersServeConcurrentRequests) {
  Instance app("pool-threads", SparePort(7), {{"workers", "1"}, {"threads", "8"}, {"echo_delay_ms", "1000"}});
  app.Start();
  std::string session = NewSession(app.port());
  auto t0 = Clock::now();
  EXPECT_EQ(Burst(app.port(), session, 8), 8);
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_LT(secs, 2.5) << "8 one-second turns on 1 process x 8 threads took " << secs << " s";
  EXPECT_EQ(ChildPids(app.pid()).size(), 1u);
  FcgiResponse status = FcgiRequest(app.port(), "GET", "/status");
  EXPECT_NE(status.body.find("\"total_workers\":8"), std::string::npos) << status.body;
}

}  // namespace
}  // namespace chatllm::testing
