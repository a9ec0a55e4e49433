// Store against the real MariaDB shards of the test stack.

#include "fcgi_app/store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>

#include "fcgi_app/config.h"
#include "fcgi_app/migrator.h"
#include "fcgi_app/provider.h"
#include "fcgi_app/time_util.h"
#include "support/stack_env.h"

namespace chatllm {
namespace {

using testing::RunCommand;
using testing::StackEnv;

Config TestConfig() { return LoadConfig(StackEnv::Get().AppConfig(StackEnv::Get().apps()[0].first)); }

SessionId NewSession(Store& store) {
  SessionId id = SessionId::Generate();
  SessionRecord s;
  s.created_us = s.updated_us = NowMicros();
  store.CreateSession(id, s);
  return id;
}

TEST(StoreTest, SessionsRoundTrip) {
  Config config = TestConfig();
  Store store(config);
  SessionId id = SessionId::Generate();
  SessionRecord s;
  s.title = "título 😀";
  s.metadata_json = R"({"a":1})";
  s.created_us = s.updated_us = 1795770653123456;
  store.CreateSession(id, s);
  auto got = store.GetSession(id);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(*got->title, "título 😀");
  EXPECT_EQ(got->metadata_json, R"({"a":1})");
  EXPECT_EQ(got->created_us, 1795770653123456);  // Microseconds survive DATETIME(6).
  EXPECT_EQ(got->message_count, 0);

  SessionId untitled = NewSession(store);
  EXPECT_FALSE(store.GetSession(untitled)->title.has_value());
  EXPECT_FALSE(store.GetSession(SessionId::Generate()).has_value());
}

TEST(StoreTest, IdsWithEveryByteValueRoundTrip) {
  Store store(TestConfig());
  // Bytes that are invalid UTF-8 must reach the BINARY(16) column unchanged.
  for (int start : {0x00, 0x80, 0xf0}) {
    std::string raw;
    for (int i = 0; i < 16; ++i) raw.push_back(static_cast<char>(start + i));
    SessionId id = SessionId::FromBytes(raw);
    SessionRecord s;
    s.created_us = s.updated_us = NowMicros();
    store.CreateSession(id, s);
    EXPECT_EQ(store.AppendMessage(id, "user", "x", NowMicros(), 0), 1);
    EXPECT_TRUE(store.GetSession(id).has_value());
    EXPECT_TRUE(store.DeleteSession(id));
  }
}

TEST(StoreTest, AppendsAreDenseAndListable) {
  Store store(TestConfig());
  SessionId id = NewSession(store);
  for (int i = 1; i <= 7; ++i) {
    EXPECT_EQ(store.AppendMessage(id, i % 2 ? "user" : "assistant", "m" + std::to_string(i),
                                  NowMicros(), i % 2 ? 0 : i - 1),
              i);
  }
  auto page = store.ListMessages(id, 2, 3);
  ASSERT_TRUE(page.has_value());
  ASSERT_EQ(page->size(), 3u);
  EXPECT_EQ((*page)[0].seq, 3);
  EXPECT_EQ((*page)[0].content, "m3");
  EXPECT_EQ((*page)[1].reply_to, 3);
  EXPECT_EQ((*page)[0].reply_to, 0);
  auto empty = store.ListMessages(id, 7, 10);
  ASSERT_TRUE(empty.has_value());
  EXPECT_TRUE(empty->empty());
  EXPECT_FALSE(store.ListMessages(SessionId::Generate(), 0, 10).has_value());

  auto context = store.LoadContext(id, 3, 1000);  // The newest 3, oldest first.
  ASSERT_TRUE(context.has_value());
  ASSERT_EQ(context->messages.size(), 3u);
  EXPECT_EQ(context->messages[0].seq, 5);
  EXPECT_EQ(context->messages[2].seq, 7);
  EXPECT_EQ(context->messages[2].content, "m7");
  EXPECT_EQ(store.GetSession(id)->message_count, 7);
  EXPECT_EQ(store.AppendMessage(SessionId::Generate(), "user", "x", NowMicros(), 0), 0);
}

// Regression: with Poco Data's statements, re-running the list query with
// longer rows than the first run crashed the worker (SIGSEGV in
// Extractor::extract), and every text column cost a 64 MiB buffer.
TEST(StoreTest, ReexecutedStatementsReturnLongerRowsWhole) {
  Store store(TestConfig());
  SessionId id = NewSession(store);
  std::vector<std::string> contents;
  for (int i = 1; i <= 120; ++i) {
    // Lengths from 1 byte to well past the 1 KiB first-fetch buffer.
    contents.push_back(std::string(static_cast<size_t>(i) * i * 3, static_cast<char>('a' + i % 26)));
    ASSERT_EQ(store.AppendMessage(id, "user", contents.back(), NowMicros(), 0), i);
  }
  for (int limit : {5, 51, 101, 121, 3}) {
    auto page = store.ListMessages(id, 0, limit);
    ASSERT_TRUE(page.has_value());
    ASSERT_EQ(page->size(), static_cast<size_t>(std::min(limit, 120)));
    for (const auto& m : *page) ASSERT_EQ(m.content, contents[m.seq - 1]) << "seq " << m.seq;
    auto context = store.LoadContext(id, limit, 10000000);
    ASSERT_TRUE(context.has_value());
    ASSERT_EQ(context->messages.size(), static_cast<size_t>(std::min(limit, 120)));
    for (const auto& m : context->messages) ASSERT_EQ(m.content, contents[m.seq - 1]) << "seq " << m.seq;
  }
}

TEST(StoreTest, DeleteRemovesTheSessionAndItsMessages) {
  Store store(TestConfig());
  SessionId id = NewSession(store);
  store.AppendMessage(id, "user", "x", NowMicros(), 0);
  EXPECT_TRUE(store.DeleteSession(id));
  EXPECT_FALSE(store.DeleteSession(id));
  EXPECT_FALSE(store.ListMessages(id, 0, 10).has_value());
  EXPECT_FALSE(store.LoadContext(id, 10, 1000).has_value());
}

TEST(StoreTest, ContextIsTheNewestMessagesThatFitTheTokenBudget) {
  Store store(TestConfig());
  SessionRecord s;
  s.created_us = s.updated_us = NowMicros();
  s.model = "gpt-x";
  s.system_prompt = "be brief";
  SessionId id = SessionId::Generate();
  store.CreateSession(id, s);
  auto empty = store.LoadContext(id, 10, 1000);
  ASSERT_TRUE(empty.has_value());
  EXPECT_EQ(empty->model, "gpt-x");
  EXPECT_EQ(empty->system_prompt, "be brief");
  EXPECT_TRUE(empty->messages.empty());
  // Ten messages of 40 bytes: 10 + 4 = 14 estimated tokens each.
  for (int i = 1; i <= 10; ++i) store.AppendMessage(id, "user", std::string(40, static_cast<char>('a' + i)), NowMicros(), 0);
  for (int64_t budget : {0, 13, 14, 27, 28, 70, 1000}) {
    auto c = store.LoadContext(id, 50, budget);
    ASSERT_TRUE(c.has_value());
    const size_t want = std::min<size_t>(static_cast<size_t>(budget / 14), 10);
    ASSERT_EQ(c->messages.size(), want) << "budget " << budget;
    for (size_t i = 0; i < want; ++i) EXPECT_EQ(c->messages[i].seq, static_cast<int64_t>(11 - want + i));
    int64_t spent = 0;
    for (const auto& m : c->messages) spent += EstimateTokens(m.content);
    EXPECT_LE(spent, budget);
  }
  EXPECT_EQ(store.LoadContext(id, 4, 1000)->messages.size(), 4u);  // The row limit holds too.
  EXPECT_FALSE(store.LoadContext(SessionId::Generate(), 10, 1000).has_value());
}

TEST(StoreTest, ARetriedUserMessageIsStoredOnce) {
  Store store(TestConfig());
  SessionId id = NewSession(store);
  bool duplicate = true;
  const std::string digest = TurnDigest("hello");
  EXPECT_EQ(store.AppendMessage(id, "user", "hello", NowMicros(), 0, "", digest, &duplicate), 1);
  EXPECT_FALSE(duplicate);
  // Sent again before any answer: the stored one.
  EXPECT_EQ(store.AppendMessage(id, "user", "hello", NowMicros(), 0, "", digest, &duplicate), 1);
  EXPECT_TRUE(duplicate);
  // Another text is another turn.
  EXPECT_EQ(store.AppendMessage(id, "user", "other", NowMicros(), 0, "", TurnDigest("other"), &duplicate), 2);
  EXPECT_FALSE(duplicate);
  // Once answered, the same text again is a new turn.
  EXPECT_EQ(store.AppendMessage(id, "assistant", "answer", NowMicros(), 2), 3);
  EXPECT_EQ(store.AppendMessage(id, "user", "other", NowMicros(), 0, "", TurnDigest("other"), &duplicate), 4);
  EXPECT_FALSE(duplicate);
  EXPECT_EQ(store.GetSession(id)->message_count, 4);
  auto page = store.ListMessages(id, 0, 10);
  ASSERT_EQ(page->size(), 4u);
}

// Dense seq under contention, below the HTTP layer: 16 connections append to
// one session at once.
TEST(StoreTest, ConcurrentAppendsGetDistinctDenseSeqs) {
  Config config = TestConfig();
  Store setup(config);
  SessionId id = NewSession(setup);
  constexpr int kThreads = 16, kEach = 25;
  std::vector<std::vector<int64_t>> seqs(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Store store(config);
      for (int i = 0; i < kEach; ++i) seqs[t].push_back(store.AppendMessage(id, "user", "x", NowMicros(), 0));
    });
  }
  for (auto& t : threads) t.join();
  std::set<int64_t> all;
  for (const auto& v : seqs) {
    for (size_t i = 1; i < v.size(); ++i) EXPECT_LT(v[i - 1], v[i]);  // Each writer's own order.
    all.insert(v.begin(), v.end());
  }
  EXPECT_EQ(all.size(), static_cast<size_t>(kThreads * kEach));
  EXPECT_EQ(*all.begin(), 1);
  EXPECT_EQ(*all.rbegin(), kThreads * kEach);
}

// The server closing an idle connection (restart, KILL, wait_timeout) is
// noticed before the next statement, which then runs on a new connection.
TEST(StoreTest, ReconnectsTransparentlyAfterTheServerDropsTheConnection) {
  Store store(TestConfig());
  SessionId id = NewSession(store);
  const std::string shard = store.map()->router().Owner(id.text());
  std::string sock = StackEnv::Get().var() + "/db/" + shard + "/mariadb.sock";
  ASSERT_EQ(RunCommand("mariadb --no-defaults -uroot --socket=" + sock +
                       " -N -e \"SELECT CONCAT('KILL ', id, ';') FROM information_schema.processlist "
                       "WHERE user = 'chatllm_app' AND id <> CONNECTION_ID()\" | "
                       "mariadb --no-defaults -uroot --socket=" + sock + " 2>/dev/null; true"),
            0);
  // A write: it must not be lost or fail because the old connection died.
  EXPECT_EQ(store.AppendMessage(id, "user", "after kill", NowMicros(), 0), 1);
}

TEST(StoreTest, CheckShardsReportsEveryShardUp) {
  Store store(TestConfig());
  auto shards = store.CheckShards();
  ASSERT_EQ(shards.size(), StackEnv::Get().shards().size());
  for (const auto& s : shards) {
    EXPECT_TRUE(s.up) << s.name << ": " << s.error;
    EXPECT_EQ(s.schema_version, LatestMigrationVersion());
  }
}

TEST(StoreTest, UnreachableShardIsUnavailableNotAnError) {
  Config config = TestConfig();
  for (auto& s : config.shards) s.port = 1;  // Nothing listens there.
  Store store(config);
  try {
    store.GetSession(SessionId::Generate());
    FAIL() << "no exception";
  } catch (const DbError& e) {
    EXPECT_EQ(e.kind(), DbErrorKind::kUnavailable);
    EXPECT_EQ(std::string(e.what()).find(config.db_password), std::string::npos)
        << "error text leaks the password";
  }
}

}  // namespace
}  // namespace chatllm
