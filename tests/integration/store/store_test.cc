// ShardedStore against the real MariaDB shards of the test stack.

#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <set>
#include <thread>

#include "base/api_key.h"
#include "base/config.h"
#include "base/time_util.h"
#include "base/tokens.h"
#include "store/connection.h"
#include "store/migrator.h"
#include "store/mysql_statement.h"
#include "store/sharded_store.h"
#include "support/stack_env.h"

namespace chatllm {
namespace {

using testing::RunCommand;
using testing::StackEnv;

Config TestConfig() { return LoadConfig(StackEnv::Get().AppConfig(StackEnv::Get().apps()[0].first)); }

// The store with requests made without authentication (no user), and a
// one-call append.
class Store : public ShardedStore {
 public:
  using ShardedStore::CreateSession;
  using ShardedStore::DeleteSession;
  using ShardedStore::GetSession;
  using ShardedStore::ListMessages;
  using ShardedStore::LoadContext;
  using ShardedStore::ShardedStore;
  IdempotencyResult CreateSession(const SessionId& id, const SessionRecord& s) {
    return ShardedStore::CreateSession(id, s, nullptr, 0, "", 0);
  }
  std::optional<SessionRecord> GetSession(const SessionId& id) { return ShardedStore::GetSession(id, ""); }
  bool DeleteSession(const SessionId& id) { return ShardedStore::DeleteSession(id, ""); }
  std::optional<std::vector<MessageRecord>> ListMessages(const SessionId& id, int64_t after, int limit) {
    return ShardedStore::ListMessages(id, after, limit, "");
  }
  std::optional<TurnContext> LoadContext(const SessionId& id, int limit, int64_t budget) {
    return ShardedStore::LoadContext(id, limit, budget, "");
  }
  int64_t AppendMessage(const SessionId& id, std::string_view role, std::string_view content, int64_t created_us,
                        int64_t reply_to, std::string_view meta_json = "") {
    AppendRequest r;
    r.role = role;
    r.content = content;
    r.created_us = created_us;
    r.reply_to = reply_to;
    r.meta_json = meta_json;
    return Append(id, "", r).seq;
  }
};

SessionId NewSession(Store& store) {
  SessionId id = SessionId::Generate();
  SessionRecord s;
  s.created_us = s.updated_us = NowMicros();
  store.CreateSession(id, s);
  return id;
}

// Issue 14: a database password may hold any character (Poco's connection
// string split on ';', so the config refused one); the connection is made
// with the password as it is.
TEST(StoreTest, Issue14ADatabasePasswordMayHoldAnyCharacter) {
  const Config config = TestConfig();
  const ShardConfig& shard = config.shards[0];
  const std::string password = "a;b=c d#e'f\"g\\h";
  const std::string sql_file = StackEnv::Get().var() + "/odd_user.sql";
  std::ofstream(sql_file) << "CREATE OR REPLACE USER 'chatllm_odd'@'%' IDENTIFIED BY 'a;b=c d#e\\'f\"g\\\\h';\n"
                          << "GRANT SELECT ON chatllm.* TO 'chatllm_odd'@'%';\n";
  const std::string root =
      "mariadb --no-defaults -uroot --socket=" + StackEnv::Get().var() + "/db/" + shard.name + "/mariadb.sock";
  ASSERT_EQ(RunCommand(root + " < " + sql_file), 0);
  {
    DbConnection conn(DbEndpoint{shard.name, shard.host, shard.port, shard.database, "chatllm_odd", password},
                      DbOptions{});
    MysqlStatement one(conn.Get(), "SELECT 1");
    one.Execute();
    EXPECT_EQ(one.Int64(0, 0), 1);
  }
  DbConnection wrong(DbEndpoint{shard.name, shard.host, shard.port, shard.database, "chatllm_odd", "a"}, DbOptions{});
  EXPECT_THROW(wrong.Get(), DbError);
  RunCommand(root + " -e \"DROP USER 'chatllm_odd'@'%'\"");
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
    EXPECT_EQ(
        store.AppendMessage(id, i % 2 ? "user" : "assistant", "m" + std::to_string(i), NowMicros(), i % 2 ? 0 : i - 1),
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
  for (int i = 1; i <= 10; ++i)
    store.AppendMessage(id, "user", std::string(40, static_cast<char>('a' + i)), NowMicros(), 0);
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

// Two user messages with the same content are two messages: without an
// Idempotency-Key nothing tells a retry from a second message (issue 12).
TEST(StoreTest, IdenticalUserMessagesAreEachStored) {
  Store store(TestConfig());
  SessionId id = NewSession(store);
  EXPECT_EQ(store.AppendMessage(id, "user", "yes", NowMicros(), 0), 1);
  EXPECT_EQ(store.AppendMessage(id, "user", "yes", NowMicros(), 0), 2);
  EXPECT_EQ(store.GetSession(id)->message_count, 2);
}

IdempotencyKey TestKey(const std::string& key, const std::string& body) {
  const std::string target = "POST /test";
  return IdempotencyKey{key, IdempotencyTargetSha(target), SecretHash(target + "\n" + body)};
}

// A keyed turn (sql/007_acknowledged.sql): the key and the user message in
// one statement; while the turn runs the key is in use; once it failed, a
// retry takes it over and answers the same user message; once answered, it
// replays; another body with the same key is refused.
TEST(StoreTest, AKeyedTurnStoresItsUserMessageOnceAcrossRetries) {
  Store store(TestConfig());
  SessionId id = NewSession(store);
  const IdempotencyKey key = TestKey("turn-" + id.text(), "hi");
  AppendRequest ask;
  ask.role = "user";
  ask.content = "hi";
  ask.created_us = NowMicros();
  ask.claim = &key;
  ask.attempt = 1;
  AppendResult first = store.Append(id, "", ask);
  EXPECT_EQ(first.idempotency.outcome, IdempotencyOutcome::kNew);
  EXPECT_EQ(first.seq, 1);
  EXPECT_FALSE(first.reused);
  EXPECT_EQ(store.Append(id, "", ask).idempotency.outcome, IdempotencyOutcome::kInFlight);

  store.FailTurnKey(id, "", key, 1);
  ask.attempt = 2;
  AppendResult retried = store.Append(id, "", ask);
  EXPECT_EQ(retried.idempotency.outcome, IdempotencyOutcome::kNew);
  EXPECT_TRUE(retried.reused);
  EXPECT_EQ(retried.seq, 1);
  EXPECT_EQ(store.Append(id, "", ask).idempotency.outcome, IdempotencyOutcome::kInFlight);

  AppendRequest answer;
  answer.role = "assistant";
  answer.content = "hello";
  answer.created_us = NowMicros();
  answer.reply_to = retried.seq;
  answer.complete = &key;
  answer.attempt = 2;
  answer.complete_status = 201;
  answer.complete_recipe = "native";
  EXPECT_EQ(store.Append(id, "", answer).seq, 2);

  // The replay is what the answer is made of (sql/008_replay_recipe.sql).
  AppendResult replay = store.Append(id, "", ask);
  EXPECT_EQ(replay.idempotency.outcome, IdempotencyOutcome::kReplay);
  EXPECT_EQ(replay.idempotency.status, 201);
  EXPECT_EQ(replay.idempotency.response, "native");
  EXPECT_EQ(replay.idempotency.user_seq, 1);
  EXPECT_EQ(replay.idempotency.answer_seq, 2);
  auto both = store.ReadMessages(id, {1, 2}, "");
  ASSERT_TRUE(both);
  ASSERT_EQ(both->size(), 2u);
  EXPECT_EQ((*both)[0].content, "hi");
  EXPECT_EQ((*both)[1].content, "hello");
  EXPECT_EQ((*both)[1].reply_to, 1);
  // A binary of schema 7 (which calls chat_turn_begin) cannot render the
  // recipe: it is told the key is still in use, and asks its client to
  // retry; schema 8's entry point replays it.
  {
    std::string hex;
    for (unsigned char c : id.bytes()) {
      static const char* digits = "0123456789abcdef";
      hex += digits[c >> 4];
      hex += digits[c & 15];
    }
    const std::string shard = store.map()->router().Owner(id.text());
    const std::string row = "FROM idempotency_keys WHERE idem_key = '" + key.key + "'";
    const std::string args = "(UNHEX('" + hex + "'), 'hi', UTC_TIMESTAMP(6), 1000000, '', NULL, 0, @u, @t, '" +
                             key.key + "', @r, 86400, 60, 99)";
    std::string out;
    ASSERT_EQ(RunCommand("mariadb --no-defaults -uroot -N --socket=" + StackEnv::Get().var() + "/db/" + shard +
                             "/mariadb.sock chatllm -e \"SET @u = (SELECT user_id " + row +
                             "), @t = (SELECT target_sha " + row + "), @r = (SELECT request_sha " + row +
                             "); SELECT chat_turn_begin" + args + ", chat_turn_begin_v2" + args + "\"",
                         &out),
              0)
        << out;
    EXPECT_EQ(out, "-11\t-10\n");
  }
  const IdempotencyKey other = TestKey(key.key, "something else");
  ask.claim = &other;
  EXPECT_EQ(store.Append(id, "", ask).idempotency.outcome, IdempotencyOutcome::kMismatch);
  EXPECT_EQ(store.GetSession(id)->message_count, 2);
}

// A turn that outlived its key's lease was taken over by a retry: the
// first attempt can then neither answer under the key nor mark it failed
// (issue 12 review: both attempts used to store a complete answer).
TEST(StoreTest, Issue12AnAttemptTakenOverStoresNoAnswer) {
  Store store(TestConfig());
  SessionId id = NewSession(store);
  const IdempotencyKey key = TestKey("lease-" + id.text(), "slow");
  AppendRequest ask;
  ask.role = "user";
  ask.content = "slow";
  ask.created_us = NowMicros();
  ask.claim = &key;
  ask.attempt = 11;
  ASSERT_EQ(store.Append(id, "", ask).seq, 1);
  // The lease runs out (an hour passes, as far as the key can tell).
  const std::string shard = store.map()->router().Owner(id.text());
  ASSERT_EQ(
      RunCommand("mariadb --no-defaults -uroot --socket=" + StackEnv::Get().var() + "/db/" + shard +
                 "/mariadb.sock chatllm -e \"UPDATE idempotency_keys SET created_at = created_at - INTERVAL 1 HOUR "
                 "WHERE idem_key = '" +
                 key.key + "'\""),
      0);
  ask.attempt = 22;
  AppendResult retry = store.Append(id, "", ask);
  EXPECT_TRUE(retry.reused);
  EXPECT_EQ(retry.seq, 1);

  AppendRequest answer;
  answer.role = "assistant";
  answer.content = "late";
  answer.created_us = NowMicros();
  answer.reply_to = 1;
  answer.complete = &key;
  answer.complete_status = 201;
  answer.complete_recipe = "native";
  answer.attempt = 11;  // The first attempt finishes at last...
  AppendResult late = store.Append(id, "", answer);
  EXPECT_TRUE(late.taken_over);
  EXPECT_EQ(late.seq, 0);
  store.FailTurnKey(id, "", key, 11);  // ...or fails: neither touches the retry's key.
  ask.attempt = 33;
  EXPECT_EQ(store.Append(id, "", ask).idempotency.outcome, IdempotencyOutcome::kInFlight);
  answer.attempt = 22;
  answer.content = "on time";
  EXPECT_EQ(store.Append(id, "", answer).seq, 2);
  AppendResult replay = store.Append(id, "", ask);
  EXPECT_EQ(replay.idempotency.outcome, IdempotencyOutcome::kReplay);
  EXPECT_EQ(replay.idempotency.answer_seq, 2);
  EXPECT_EQ(store.GetSession(id)->message_count, 2) << "one answer, not two";
}

// A keyed turn refused because the session is full stores nothing and
// keeps no key: the same request runs once there is room.
TEST(StoreTest, AKeyedTurnOnAFullSessionStoresNothing) {
  Store store(TestConfig());
  SessionId id = NewSession(store);
  ASSERT_EQ(store.AppendMessage(id, "user", "first", NowMicros(), 0), 1);
  const IdempotencyKey key = TestKey("full-" + id.text(), "x");
  AppendRequest ask;
  ask.role = "user";
  ask.content = "x";
  ask.created_us = NowMicros();
  ask.claim = &key;
  ask.attempt = 1;
  ask.max_messages = 1;
  AppendResult full = store.Append(id, "", ask);
  EXPECT_TRUE(full.full);
  EXPECT_EQ(full.seq, 0);
  ask.max_messages = 0;
  AppendResult later = store.Append(id, "", ask);
  EXPECT_EQ(later.idempotency.outcome, IdempotencyOutcome::kNew);
  EXPECT_EQ(later.seq, 2);
}

// An error raised inside a stored function reaches libmariadb while the
// rows are fetched, where the statement's errno reads 0. Issue 12: lock
// waits and deadlocks there were answered 500 as "unexpected SQL error 0".
TEST(StoreTest, Issue12AnErrorInsideAStoredFunctionKeepsItsErrno) {
  Store store(TestConfig());
  SessionRecord s;
  s.title = std::string(1001, 't');  // The column and the parameter hold 1000.
  s.created_us = s.updated_us = NowMicros();
  try {
    store.CreateSession(SessionId::Generate(), s);
    ADD_FAILURE() << "a 1001-character title was stored";
  } catch (const DbError& e) {
    EXPECT_EQ(e.mysql_errno(), 1406) << e.what();  // ER_DATA_TOO_LONG
    EXPECT_NE(std::string(e.what()).find("Data too long"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("chat_create_session"), std::string::npos) << "names the statement";
  }
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
                       "mariadb --no-defaults -uroot --socket=" +
                       sock + " 2>/dev/null; true"),
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
  for (auto& s : config.shards) {
    s.port = 1;          // Nothing listens there,
    s.replicas.clear();  // and no replica tells the map instead.
  }
  Store store(config);
  try {
    store.GetSession(SessionId::Generate());
    FAIL() << "no exception";
  } catch (const DbError& e) {
    EXPECT_EQ(e.kind(), DbErrorKind::kUnavailable);
    EXPECT_EQ(std::string(e.what()).find(config.db_password), std::string::npos) << "error text leaks the password";
  }
}

}  // namespace
}  // namespace chatllm
