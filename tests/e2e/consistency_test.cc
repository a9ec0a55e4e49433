// Concurrent writers and several app instances see one dense history.

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <set>
#include <thread>

#include "support/api_client.h"
#include "support/stack_env.h"

namespace chatllm::testing {
namespace {

// The lost-update bug of the service this replaces: two requests for one
// session raced and one message vanished. 64 at once must all be kept.
TEST(ConsistencyTest, SixtyFourConcurrentAppendsToOneSessionAreAllKept) {
  const std::string url = StackEnv::Get().url();
  ApiClient setup(url);
  std::string id = setup.CreateSession();
  ASSERT_FALSE(id.empty());

  constexpr int kWriters = 64;
  std::atomic<int> ready{0};
  std::vector<int> status(kWriters, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < kWriters; ++i) {
    threads.emplace_back([&, i] {
      ApiClient api(url, 30);
      ready.fetch_add(1);
      while (ready.load() < kWriters) std::this_thread::yield();  // Start together.
      status[i] = api.Append(id, "writer-" + std::to_string(i)).status;
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kWriters; ++i) EXPECT_EQ(status[i], 201) << "writer " << i;

  std::vector<StoredMessage> history;
  ASSERT_TRUE(ReadHistory(setup, id, &history));
  ASSERT_EQ(history.size(), 2u * kWriters);
  EXPECT_EQ(CheckHistoryShape(history), "");
  std::map<std::string, int> user_contents;
  for (const auto& m : history) {
    if (m.role == "user") ++user_contents[m.content];
  }
  EXPECT_EQ(user_contents.size(), static_cast<size_t>(kWriters));
  for (const auto& [content, n] : user_contents) EXPECT_EQ(n, 1) << content;
}

// Stateless instances: nginx spreads one session's requests over both app
// instances, and every one of them sees the same history.
TEST(ConsistencyTest, RequestsSpreadOverInstancesSeeOneHistory) {
  ApiClient api(StackEnv::Get().url());
  std::string id = api.CreateSession();
  ASSERT_FALSE(id.empty());
  std::set<std::string> served_by;
  for (int i = 0; i < 12; ++i) {
    ApiResponse r = api.Append(id, "turn " + std::to_string(i));
    ASSERT_EQ(r.status, 201) << r.body;
    served_by.insert(r.Header("X-Served-By"));
    EXPECT_EQ(r["user"]["seq"].GetInt64(), 2 * i + 1);  // Each instance saw all previous turns.
    ApiResponse g = api.Get("/v1/sessions/" + id);
    served_by.insert(g.Header("X-Served-By"));
    EXPECT_EQ(g["message_count"].GetInt64(), 2 * (i + 1));
  }
  std::set<std::string> expected;
  for (const auto& [name, port] : StackEnv::Get().apps()) expected.insert(name);
  EXPECT_EQ(served_by, expected);
  std::vector<StoredMessage> history;
  ASSERT_TRUE(ReadHistory(api, id, &history));
  EXPECT_EQ(history.size(), 24u);
  EXPECT_EQ(CheckHistoryShape(history), "");
}

}  // namespace
}  // namespace chatllm::testing
