// Clients that behave like real ones (issue 12, "acknowledged means kept"):
// they send the same short message twice at once, retry with the same
// Idempotency-Key after a failure or after hanging up mid-stream, reuse a key
// on another session, retry a create after deleting what it made, and see a
// shard fail under a running turn. Each test is a failure seen on the stack
// before the fix; the names say what must hold now.

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "base/sse.h"
#include "store/cluster_map.h"
#include "support/api_client.h"
#include "support/stack_env.h"

namespace chatllm::testing {
namespace {

std::string Unique(const std::string& prefix) {
  static std::atomic<int> n{0};
  return prefix + "-" + std::to_string(::getpid()) + "-" + std::to_string(n++) + "-" +
         std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
}

struct Streamed {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> events;  // (event, data)
  std::string body;                                         // When the answer is not an event stream.
};

// POSTs a streaming request and reads its events; hangs up (closing the
// connection) after `stop_after` events if that is not 0.
Streamed PostStream(const std::string& path, const std::string& body, size_t stop_after,
                    const httplib::Headers& headers) {
  httplib::Client client(StackEnv::Get().url());
  client.set_read_timeout(30, 0);
  Streamed out;
  SseParser parser;
  bool sse = false;
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.body = body;
  req.headers = headers;
  req.set_header("Content-Type", "application/json");
  req.set_header("Authorization", "Bearer " + DefaultApiKey());
  req.response_handler = [&](const httplib::Response& r) {
    out.status = r.status;
    sse = r.get_header_value("Content-Type").rfind("text/event-stream", 0) == 0;
    return true;
  };
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    if (!sse) {
      out.body.append(data, n);
      return true;
    }
    return parser.Feed(std::string_view(data, n), [&](const SseParser::Event& e) {
      out.events.emplace_back(e.event, e.data);
      return stop_after == 0 || out.events.size() < stop_after;
    });
  };
  client.send(req);
  return out;
}

class RetryTest : public ::testing::Test {
 protected:
  std::string NewSession(const std::string& body = "{}") {
    ApiResponse r = api.Post("/v1/sessions", body);
    EXPECT_EQ(r.status, 201) << r.body;
    return r.status == 201 ? r["id"].GetString() : "";
  }
  std::vector<StoredMessage> History(const std::string& id) {
    std::vector<StoredMessage> h;
    EXPECT_TRUE(ReadHistory(api, id, &h));
    return h;
  }
  static int CountUser(const std::vector<StoredMessage>& h, const std::string& content) {
    int n = 0;
    for (const StoredMessage& m : h) n += m.role == "user" && m.content == content;
    return n;
  }
  // The current shard map (shardctl map).
  static std::shared_ptr<const ClusterMap> CurrentMap() {
    const StackEnv& env = StackEnv::Get();
    std::string json;
    EXPECT_EQ(RunCommand(env.build() + "/shardctl --config " + env.AppConfig(env.apps()[0].first) + " map", &json), 0);
    auto map = ClusterMap::FromJson(json.substr(0, json.find('\n')));
    EXPECT_TRUE(map.ok()) << map.status().message() << ": " << json;
    return map.ok() ? *map : nullptr;
  }

  ApiClient api{StackEnv::Get().url(), 30};
};

// 32 clients sending "yes" to one session at once: each is its own turn.
// Before: 32 x 201 but only 17 user messages stored (the keyless retry rule
// merged turns that were still running).
TEST_F(RetryTest, Issue12ConcurrentIdenticalTurnsAreAllStored) {
  const std::string id = NewSession();
  constexpr int kClients = 32;
  std::vector<ApiResponse> answers(kClients);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      ApiClient c(StackEnv::Get().url(), 30);
      answers[i] = c.Append(id, "yes");
    });
  }
  for (auto& t : threads) t.join();
  std::set<int64_t> user_seqs, assistant_seqs;
  for (const ApiResponse& a : answers) {
    ASSERT_EQ(a.status, 201) << a.body;
    user_seqs.insert(a["user"]["seq"].GetInt64());
    assistant_seqs.insert(a["assistant"]["seq"].GetInt64());
    EXPECT_EQ(a["assistant"]["reply_to"].GetInt64(), a["user"]["seq"].GetInt64());
  }
  EXPECT_EQ(user_seqs.size(), static_cast<size_t>(kClients)) << "two acknowledged turns share a user message";
  EXPECT_EQ(assistant_seqs.size(), static_cast<size_t>(kClients));
  std::vector<StoredMessage> h = History(id);
  ASSERT_EQ(h.size(), 2u * kClients);
  EXPECT_EQ(CountUser(h, "yes"), kClients);
  std::set<int64_t> replied;
  for (const StoredMessage& m : h) {
    if (m.role == "assistant") {
      EXPECT_TRUE(replied.insert(m.reply_to).second) << "two answers to seq " << m.reply_to;
    }
  }
  // Each acknowledged seq holds what was acknowledged there.
  for (const ApiResponse& a : answers) {
    const int64_t u = a["user"]["seq"].GetInt64();
    EXPECT_EQ(h[u - 1].role, "user");
    EXPECT_EQ(h[a["assistant"]["seq"].GetInt64() - 1].reply_to, u);
  }
}

// Without a key, the same text sent again after a failed turn is a new
// turn: the server cannot tell a retry from a second message.
TEST_F(RetryTest, Issue12AKeylessResendIsANewTurn) {
  const std::string id = NewSession();
  ApiResponse failed =
      api.Post("/v1/sessions/" + id + "/messages", R"({"content":"again?","model":"fake-status-503"})");
  ASSERT_EQ(failed.status, 502) << failed.body;
  ApiResponse resent = api.Post("/v1/sessions/" + id + "/messages", R"({"content":"again?","model":"gpt-ok"})");
  ASSERT_EQ(resent.status, 201) << resent.body;
  EXPECT_EQ(resent["user"]["seq"].GetInt64(), 2);
  EXPECT_EQ(CountUser(History(id), "again?"), 2);
}

// A keyed turn whose provider failed: the retry with the same key and body
// answers the stored user message instead of storing it again.
TEST_F(RetryTest, Issue12AFailedKeyedTurnRetriedStoresItsUserMessageOnce) {
  const std::string id = NewSession();
  const std::string content = Unique("fails once");
  const std::string body = "{\"content\":" + JsonString(content) + ",\"model\":\"fake-failfirst-3\"}";
  api.set_headers({{"Idempotency-Key", Unique("k")}});
  ApiResponse failed = api.Post("/v1/sessions/" + id + "/messages", body);
  ASSERT_EQ(failed.status, 502) << failed.body;  // Three calls (two retries), all 503.
  EXPECT_NE(failed.body.find("stored as seq 1"), std::string::npos) << failed.body;
  ApiResponse retried = api.Post("/v1/sessions/" + id + "/messages", body);
  ASSERT_EQ(retried.status, 201) << retried.body;
  EXPECT_EQ(retried.Header("Idempotent-Replayed"), "");
  EXPECT_EQ(retried["user"]["seq"].GetInt64(), 1);
  EXPECT_STREQ(retried["user"]["request_id"].GetString(), failed.Header("X-Request-Id").c_str());
  EXPECT_EQ(retried["assistant"]["reply_to"].GetInt64(), 1);
  ApiResponse replayed = api.Post("/v1/sessions/" + id + "/messages", body);
  EXPECT_EQ(replayed.status, 201);
  EXPECT_EQ(replayed.Header("Idempotent-Replayed"), "true");
  EXPECT_EQ(replayed.body, retried.body);
  api.set_headers({});
  std::vector<StoredMessage> h = History(id);
  ASSERT_EQ(h.size(), 2u);
  EXPECT_EQ(CountUser(h, content), 1);
}

// A stream cut by its client, then the same request sent again with its
// key. Before: user, partial answer, the same user text again, answer. The
// turn is durable (docs/api.md): it goes on without its client, so the
// retry, once the first request has answered, is its replay: the user
// message once, the one whole answer.
TEST_F(RetryTest, Issue12ACutStreamRetriedWithItsKeyStoresTheUserMessageOnce) {
  const std::string id = NewSession();
  const std::string path = "/v1/sessions/" + id + "/messages";
  const std::string content = Unique("cut me");
  const std::string body = "{\"content\":" + JsonString(content) + ",\"stream\":true,\"model\":\"fake-drip-20-100\"}";
  const httplib::Headers key = {{"Idempotency-Key", Unique("r1")}};
  Streamed cut = PostStream(path, body, 5, key);  // turn, user, 3 deltas, then hang up.
  ASSERT_EQ(cut.status, 200);
  ASSERT_EQ(cut.events.size(), 5u);
  Streamed again;
  ASSERT_TRUE(WaitFor(10, [&] {  // 409 while the first request still holds its key.
    again = PostStream(path, body, 0, key);
    return again.status != 409;
  })) << again.body;
  ASSERT_EQ(again.status, 201) << again.body;  // Replayed, as JSON.
  std::vector<StoredMessage> h = History(id);
  ASSERT_EQ(h.size(), 2u);
  EXPECT_EQ(CountUser(h, content), 1) << "the user message was stored twice";
  EXPECT_EQ(h[1].reply_to, 1);
  EXPECT_EQ(h[1].content.rfind("piece0 piece1 piece2 piece3 ", 0), 0u) << "the whole answer: " << h[1].content;
  EXPECT_NE(again.body.find(JsonString(h[1].content)), std::string::npos) << again.body;
}

// The same key and body on /v1/chat/completions for two sessions of one
// shard: two turns. Before: the second replayed the first session's answer
// and stored nothing in its own session.
TEST_F(RetryTest, Issue12AChatCompletionsKeyBelongsToItsSession) {
  auto map = CurrentMap();
  ASSERT_TRUE(map);
  std::map<std::string, std::string> first_on;  // shard -> session
  std::string a, b;
  for (int i = 0; i < 64 && b.empty(); ++i) {
    const std::string id = NewSession();
    const std::string& shard = map->router().Owner(id);
    if (first_on.count(shard)) {
      a = first_on[shard];
      b = id;
    } else {
      first_on[shard] = id;
    }
  }
  ASSERT_FALSE(b.empty());
  const std::string key = Unique("shared");
  const std::string body = R"({"model":"echo","messages":[{"role":"user","content":"same everywhere"}]})";
  api.set_headers({{"Idempotency-Key", key}, {"X-Session-Id", a}});
  ApiResponse in_a = api.Post("/v1/chat/completions", body);
  api.set_headers({{"Idempotency-Key", key}, {"X-Session-Id", b}});
  ApiResponse in_b = api.Post("/v1/chat/completions", body);
  api.set_headers({});
  ASSERT_EQ(in_a.status, 200) << in_a.body;
  ASSERT_EQ(in_b.status, 200) << in_b.body;
  EXPECT_EQ(in_b.Header("Idempotent-Replayed"), "");
  EXPECT_STREQ(in_b["chatllm"]["session_id"].GetString(), b.c_str());
  EXPECT_EQ(History(a).size(), 2u);
  EXPECT_EQ(History(b).size(), 2u);
  // Within one session the key still replays.
  api.set_headers({{"Idempotency-Key", key}, {"X-Session-Id", b}});
  ApiResponse again = api.Post("/v1/chat/completions", body);
  api.set_headers({});
  EXPECT_EQ(again.Header("Idempotent-Replayed"), "true");
  EXPECT_EQ(again.body, in_b.body);
  EXPECT_EQ(History(b).size(), 2u);
}

// A late retry of a keyed create after the session was deleted must not
// bring it back.
TEST_F(RetryTest, Issue12ADeletedSessionNeverComesBack) {
  const std::string key = Unique("create");
  api.set_headers({{"Idempotency-Key", key}});
  ApiResponse created = api.Post("/v1/sessions", R"({"title":"short-lived"})");
  api.set_headers({});
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string id = created["id"].GetString();
  ASSERT_EQ(api.Append(id, "hello").status, 201);
  ASSERT_EQ(api.Delete("/v1/sessions/" + id).status, 204);
  api.set_headers({{"Idempotency-Key", key}});
  ApiResponse late = api.Post("/v1/sessions", R"({"title":"short-lived"})");
  api.set_headers({});
  EXPECT_EQ(late.status, 201) << late.body;
  EXPECT_EQ(late.Header("Idempotent-Replayed"), "true");
  EXPECT_EQ(late.body, created.body);
  EXPECT_EQ(api.Get("/v1/sessions/" + id).status, 404);
  EXPECT_EQ(api.Append(id, "still there?").status, 404);
  EXPECT_EQ(api.Delete("/v1/sessions/" + id).status, 404);
  ApiResponse list = api.Get("/v1/sessions?limit=200");
  ASSERT_EQ(list.status, 200);
  EXPECT_EQ(list.body.find(id), std::string::npos) << "a deleted session is listed";
}

// A shard dies while the provider answers: the JSON and the streamed turn
// report the same error, without SQL, hosts or ports. Before: the stream's
// error event carried the database's own text.
TEST_F(RetryTest, Issue12AStoreFailureMidTurnIsTheSameCleanErrorOnBothPaths) {
  const StackEnv& env = StackEnv::Get();
  auto map = CurrentMap();
  ASSERT_TRUE(map);
  const std::string shard = map->router().Owner(NewSession());
  // A new session on that shard for each path, so that both store their
  // user message as seq 1 and their messages can be compared whole.
  auto session_on_shard = [&] {
    for (int i = 0; i < 64; ++i) {
      const std::string id = NewSession();
      if (map->router().Owner(id) == shard) return id;
    }
    return std::string();
  };
  int port = 0;
  for (const auto& [name, p] : env.shards()) {
    if (name == shard) port = p;
  }
  ASSERT_GT(port, 0);
  auto check_clean = [&](const std::string& text) {
    const std::vector<std::string> internals = {
        "127.0.0.1", std::to_string(port), "SQL", "sql", "MariaDB", "chat_", "SELECT", "errno", "Can't connect"};
    for (const std::string& bad : internals) {
      EXPECT_EQ(text.find(bad), std::string::npos) << "'" << bad << "' in: " << text;
    }
  };
  std::string json_code, json_message, sse_code, sse_message;
  for (bool stream : {false, true}) {
    SCOPED_TRACE(stream ? "stream" : "json");
    const std::string id = session_on_shard();
    ASSERT_FALSE(id.empty());
    const std::string body =
        std::string(R"({"content":"in flight","model":"fake-drip-4-300")") + (stream ? R"(,"stream":true})" : "}");
    // The shard dies once the provider has the turn (its answer drips for
    // about a second): fake-llm lists the calls it received by request id.
    const std::string request_id = Unique(stream ? "mid-turn-sse" : "mid-turn-json");
    std::thread killer([&] {
      httplib::Client fake("127.0.0.1", std::stoi(env.Value("CHATLLM_FAKE_LLM_PORT")));
      const std::string call = "\"request_id\":\"" + request_id + "\"";
      EXPECT_TRUE(WaitFor(10, [&] {
        auto calls = fake.Get("/_requests");
        return calls && calls->body.find(call) != std::string::npos;
      })) << "the turn never reached the provider";
      EXPECT_EQ(env.Stack("kill-db " + shard), 0);
    });
    Streamed r = PostStream("/v1/sessions/" + id + "/messages", body, 0, {{"X-Request-Id", request_id}});
    killer.join();
    ASSERT_EQ(env.Stack("start-db " + shard), 0);
    ASSERT_TRUE(WaitFor(30, [&] { return api.Get("/readyz").status == 200; }));
    rapidjson::Document d;
    if (stream) {
      ASSERT_EQ(r.status, 200);
      ASSERT_FALSE(r.events.empty());
      EXPECT_EQ(r.events.back().first, "error");
      d.Parse(r.events.back().second.c_str());
    } else {
      EXPECT_EQ(r.status, 503) << r.body;
      d.Parse(r.body.c_str());
    }
    ASSERT_TRUE(d.IsObject() && d.HasMember("error")) << r.body;
    const std::string code = d["error"]["code"].GetString(), message = d["error"]["message"].GetString();
    check_clean(message);
    (stream ? sse_code : json_code) = code;
    (stream ? sse_message : json_message) = message;
  }
  EXPECT_EQ(json_code, "shard_unavailable");
  EXPECT_EQ(sse_code, json_code);
  // The same words on both paths, but for one clause that depends on the
  // moment of the kill, not on the path: whether a statement (a durable
  // turn's event flush, say) was in flight when the connection broke.
  auto without_in_flight = [](std::string m) {
    const std::string clause = "; the connection broke mid-request, so a write may or may not have been stored";
    if (size_t at = m.find(clause); at != std::string::npos) m.erase(at, clause.size());
    return m;
  };
  EXPECT_EQ(without_in_flight(sse_message), without_in_flight(json_message));
}

// Issue 14: a keyed turn's answer is rendered outside its transaction, from
// the two stored messages (sql/008_replay_recipe.sql). A replay is the first
// answer byte for byte in both JSON dialects, and for a stream it is the
// JSON of what the stream said, with the first request's ids.
TEST_F(RetryTest, Issue14AReplayIsTheFirstAnswerInEveryFormat) {
  const std::string id = NewSession(R"({"model":"echo"})");
  // Native and OpenAI JSON: identical bodies.
  for (const std::string& path : {"/v1/sessions/" + id + "/messages", std::string("/v1/chat/completions")}) {
    const std::string content = Unique("say it again");
    const std::string body = path == "/v1/chat/completions"
                                 ? "{\"model\":\"echo\",\"session_id\":\"" + id +
                                       "\",\"messages\":[{\"role\":\"user\",\"content\":" + JsonString(content) + "}]}"
                                 : "{\"content\":" + JsonString(content) + "}";
    api.set_headers({{"Idempotency-Key", Unique("same")}});
    ApiResponse first = api.Post(path, body);
    ASSERT_TRUE(first.status == 200 || first.status == 201) << first.body;
    ApiResponse again = api.Post(path, body);
    EXPECT_EQ(again.status, first.status);
    EXPECT_EQ(again.Header("Idempotent-Replayed"), "true");
    EXPECT_EQ(again.body, first.body) << path;
    api.set_headers({});
  }
  // Native SSE: the replay's user and assistant are the events'.
  {
    const std::string key = Unique("stream");
    const std::string body = "{\"content\":" + JsonString(Unique("streamed")) + ",\"stream\":true}";
    Streamed first = PostStream("/v1/sessions/" + id + "/messages", body, 0, {{"Idempotency-Key", key}});
    ASSERT_EQ(first.status, 200);
    std::map<std::string, std::string> events;
    for (const auto& [event, data] : first.events) events[event] = data;
    ASSERT_TRUE(events.count("user") && events.count("assistant")) << first.body;
    api.set_headers({{"Idempotency-Key", key}});
    ApiResponse again = api.Post("/v1/sessions/" + id + "/messages", body);
    api.set_headers({});
    ASSERT_EQ(again.status, 201) << again.body;
    EXPECT_EQ(again.body, "{\"user\":" + events["user"] + ",\"assistant\":" + events["assistant"] + "}");
  }
  // OpenAI SSE: the replay's id is the stream's, its content the deltas'.
  {
    const std::string key = Unique("chunks");
    const std::string body = "{\"model\":\"echo\",\"stream\":true,\"session_id\":\"" + id +
                             "\",\"messages\":[{\"role\":\"user\",\"content\":\"count to three\"}]}";
    Streamed first = PostStream("/v1/chat/completions", body, 0, {{"Idempotency-Key", key}});
    ASSERT_EQ(first.status, 200);
    std::string stream_id, text;
    for (const auto& [event, data] : first.events) {
      rapidjson::Document chunk;
      chunk.Parse(data.c_str());
      if (!chunk.IsObject() || !chunk.HasMember("choices")) continue;
      stream_id = chunk["id"].GetString();
      for (const auto& choice : chunk["choices"].GetArray()) {
        if (choice["delta"].HasMember("content")) text += choice["delta"]["content"].GetString();
      }
    }
    api.set_headers({{"Idempotency-Key", key}});
    ApiResponse again = api.Post("/v1/chat/completions", body);
    api.set_headers({});
    ASSERT_EQ(again.status, 200) << again.body;
    EXPECT_EQ(again.Header("Idempotent-Replayed"), "true");
    EXPECT_EQ(std::string(again["id"].GetString()), stream_id);
    EXPECT_EQ(std::string(again["choices"][0]["message"]["content"].GetString()), text);
    EXPECT_FALSE(text.empty());
  }
}

}  // namespace
}  // namespace chatllm::testing
