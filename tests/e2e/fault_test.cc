// Faults the core must survive: a worker killed mid-request, a shard down.

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <thread>

#include "base/ids.h"
#include "support/api_client.h"
#include "support/stack_env.h"
#include "support/worker_status.h"

namespace chatllm::testing {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Every acknowledged append is present exactly once; an append whose outcome
// the client could not know (5xx from a killed worker, or no response) is
// present at most once; nothing else is present.
void VerifyAppends(ApiClient& api, const std::string& id, const std::map<std::string, int>& sent) {
  std::vector<StoredMessage> history;
  ASSERT_TRUE(ReadHistory(api, id, &history));
  EXPECT_EQ(CheckHistoryShape(history), "") << id;
  std::map<std::string, int> found;
  for (const auto& m : history) {
    if (m.role == "user") ++found[m.content];
  }
  for (const auto& [content, status] : sent) {
    int n = found.count(content) ? found[content] : 0;
    if (status == 201)
      EXPECT_EQ(n, 1) << "acknowledged " << content << " found " << n << " times";
    else
      EXPECT_LE(n, 1) << "unacknowledged " << content << " (status " << status << ") found " << n << " times";
  }
  for (const auto& [content, n] : found) EXPECT_TRUE(sent.count(content)) << "never sent: " << content;
}

TEST(FaultTest, KilledWorkersLoseNoAcknowledgedMessageAndAreReplaced) {
  const StackEnv& env = StackEnv::Get();
  const std::string app = env.apps()[0].first;
  pid_t master = env.AppMasterPid(app);
  ASSERT_GT(master, 0);
  ASSERT_EQ(ChildPids(master).size(), static_cast<size_t>(env.workers()));

  constexpr int kClients = 8;
  std::atomic<bool> stop{false};
  std::atomic<int> acks{0};
  std::vector<std::string> ids(kClients);
  std::vector<std::map<std::string, int>> sent(kClients);
  ApiClient setup(env.url());
  for (auto& id : ids) ASSERT_FALSE((id = setup.CreateSession()).empty());
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      ApiClient api(env.url(), 10);
      for (int i = 0; !stop.load(); ++i) {
        std::string content = "c" + std::to_string(c) + "-" + std::to_string(i);
        const int status = api.Append(ids[c], content).status;
        sent[c][content] = status;
        if (status == 201) ++acks;
      }
    });
  }
  // Under load before the first kill: appends are being acknowledged.
  EXPECT_TRUE(WaitFor(10, [&] { return acks.load() >= 100; })) << acks.load() << " appends acknowledged";
  // A worker of the app with an append in hand, as its scoreboard shows it.
  auto busy_worker = [&] {
    for (const WorkerThread& t : WorkerThreadsOf(app)) {
      for (const std::string& id : ids) {
        if (!Handling({t}, "POST /v1/sessions/" + id + "/messages").empty()) return t.pid;
      }
    }
    return pid_t{0};
  };
  int killed = 0;
  for (int round = 0; round < 3; ++round) {
    std::vector<pid_t> workers = ChildPids(master);
    ASSERT_FALSE(workers.empty());
    pid_t victim = 0;
    EXPECT_TRUE(WaitFor(5, [&] { return (victim = busy_worker()) != 0; })) << "no worker had an append in hand";
    if (std::find(workers.begin(), workers.end(), victim) == workers.end()) {
      victim = workers[round % workers.size()];  // Gone meanwhile, or none found.
    }
    ASSERT_EQ(kill(victim, SIGKILL), 0);
    ++killed;
    auto t0 = Clock::now();
    bool replaced = WaitFor(1.0, [&] {
      auto now = ChildPids(master);
      return now.size() == static_cast<size_t>(env.workers()) && std::find(now.begin(), now.end(), victim) == now.end();
    });
    EXPECT_TRUE(replaced) << "worker " << victim << " not replaced within 1 s";
    EXPECT_LT(SecondsSince(t0), 1.0);
  }
  // And the appends go on after the last kill.
  const int acks_after_kills = acks.load();
  EXPECT_TRUE(WaitFor(10, [&] { return acks.load() >= acks_after_kills + kClients; }))
      << "no appends acknowledged after the last kill";
  stop = true;
  for (auto& t : clients) t.join();

  EXPECT_EQ(env.AppMasterPid(app), master);  // The master itself never restarted.
  int acked = 0, unknown = 0;
  for (int c = 0; c < kClients; ++c) {
    for (const auto& [content, status] : sent[c]) (status == 201 ? acked : unknown)++;
    VerifyAppends(setup, ids[c], sent[c]);
  }
  EXPECT_GT(acked, 100);
  EXPECT_LE(unknown, killed * 2) << "only requests in flight on a killed worker may fail";
}

class ShardFaultTest : public ::testing::Test {
 protected:
  void TearDown() override {
    // Leave the stack as we found it, even if the test failed halfway.
    StackEnv::Get().Stack("start-db " + victim_);
    ApiClient api(StackEnv::Get().url());
    WaitFor(20, [&] { return api.Get("/readyz").status == 200; });
  }

  // Creates sessions until it has one owned by `shard`.
  std::string SessionOn(ApiClient& api, const std::string& shard) {
    const StackEnv& env = StackEnv::Get();
    for (int i = 0; i < 64; ++i) {
      std::string id = api.CreateSession();
      std::string owner;
      RunCommand(env.build() + "/shardctl --config " + env.AppConfig(env.apps()[0].first) + " locate " + id, &owner);
      if (owner == shard + "\n") return id;
    }
    ADD_FAILURE() << "no session landed on shard " << shard;
    return "";
  }

  // The shard that would own `id` (any unit's id, as text).
  static std::string OwnerOf(const std::string& id) {
    const StackEnv& env = StackEnv::Get();
    std::string out;
    RunCommand(
        env.build() + "/shardctl --config " + env.AppConfig(env.apps()[0].first) + " locate " + id + " 2>/dev/null",
        &out);
    return out.substr(0, out.find('\n'));
  }

  // A new user and API key whose key unit and home are both on `keep`:
  // authentication reads the two (docs/architecture.md, "Per-user data"),
  // so with either on the shard this test kills, every request of that user
  // would need it. Returns the key ("" if none of 30 tries fit).
  std::string KeyOn(const std::string& keep) {
    const StackEnv& env = StackEnv::Get();
    const std::string admin = env.build() + "/chatllm-admin --config " + env.AppConfig(env.apps()[0].first);
    for (int i = 0; i < 30; ++i) {
      const std::string name = "shard-fault-" + std::to_string(getpid()) + "-" + std::to_string(i);
      std::string added, key;
      RunCommand(admin + " user add " + name, &added);
      RunCommand(admin + " key create " + name + " 2>/dev/null", &key);
      const size_t at = added.find("(id "), ck = key.find("ck_");
      if (at == std::string::npos || ck == std::string::npos || key.size() < ck + 19) continue;
      key = key.substr(ck, key.find('\n', ck) - ck);
      auto unhex = [](const std::string& hex) {
        std::string raw;
        for (size_t j = 0; j + 1 < hex.size(); j += 2)
          raw.push_back(static_cast<char>(std::stoi(hex.substr(j, 2), nullptr, 16)));
        return raw;
      };
      const std::string user = unhex(added.substr(at + 4, 32));
      const std::string key_id = unhex(key.substr(3, 16));
      if (OwnerOf(SessionId::HomeOf(user).text()) == keep && OwnerOf(SessionId::KeyUnitOf(key_id).text()) == keep) {
        return key;
      }
    }
    return "";
  }

  std::string victim_ = "a";
};

TEST_F(ShardFaultTest, DownShardFailsOnlyItsSessionsFastAndRecoversWithoutRestart) {
  const StackEnv& env = StackEnv::Get();
  const std::string key = KeyOn("b");
  ASSERT_FALSE(key.empty()) << "no user of 30 had its home and key on shard b";
  ApiClient api(env.url(), key, 10);
  const std::string on_a = SessionOn(api, "a");
  const std::string on_b = SessionOn(api, "b");
  ASSERT_FALSE(on_a.empty());
  ASSERT_FALSE(on_b.empty());
  ASSERT_EQ(api.Append(on_a, "before the crash").status, 201);
  std::vector<pid_t> masters;
  for (const auto& [name, port] : env.apps()) masters.push_back(env.AppMasterPid(name));

  ASSERT_EQ(env.Stack("kill-db a"), 0);

  // Enough requests that every worker of every instance meets the dead shard.
  for (int i = 0; i < 3 * env.workers() * static_cast<int>(env.apps().size()); ++i) {
    auto t0 = Clock::now();
    ApiResponse a = api.Append(on_a, "while down " + std::to_string(i));
    double elapsed = SecondsSince(t0);
    EXPECT_EQ(a.status, 503) << a.body;
    EXPECT_EQ(a.ErrorCode(), "shard_unavailable") << a.body;
    EXPECT_EQ(a.Header("Retry-After"), "1");
    EXPECT_LT(elapsed, 2.0) << "503 took " << elapsed << " s";
    EXPECT_EQ(api.Get("/v1/sessions/" + on_a).status, 503);
    ApiResponse b = api.Append(on_b, "other shard " + std::to_string(i));
    EXPECT_EQ(b.status, 201) << b.body;
  }
  ApiResponse ready = api.Get("/readyz");
  EXPECT_EQ(ready.status, 503);
  EXPECT_EQ(ready.ErrorCode(), "not_ready");

  ASSERT_EQ(env.Stack("start-db a"), 0);
  EXPECT_TRUE(WaitFor(10, [&] { return api.Append(on_a, "after restart").status == 201; }));
  // Every worker recovers, not just one: a run of successes in a row.
  for (int i = 0; i < 2 * env.workers() * static_cast<int>(env.apps().size()); ++i) {
    EXPECT_EQ(api.Append(on_a, "recovered " + std::to_string(i)).status, 201);
  }
  std::vector<StoredMessage> history;
  ASSERT_TRUE(ReadHistory(api, on_a, &history));
  EXPECT_EQ(CheckHistoryShape(history), "");
  ASSERT_FALSE(history.empty());
  EXPECT_EQ(history[0].content, "before the crash");  // Durable across SIGKILL.
  for (const auto& m : history) EXPECT_EQ(m.content.rfind("while down", 0), std::string::npos);

  for (size_t i = 0; i < masters.size(); ++i) {
    EXPECT_EQ(env.AppMasterPid(env.apps()[i].first), masters[i]) << "app instance restarted";
  }
}

}  // namespace
}  // namespace chatllm::testing
