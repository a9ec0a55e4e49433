// The HTTP API through nginx, against the real stack: every route and every
// error case of docs/api.md. Rejected requests must store nothing.

#include <gtest/gtest.h>

#include <string>

#include "support/api_client.h"
#include "support/stack_env.h"

namespace chatllm::testing {
namespace {

class ApiTest : public ::testing::Test {
 protected:
  ApiClient api{StackEnv::Get().url()};

  std::string NewSession() {
    std::string id = api.CreateSession();
    EXPECT_FALSE(id.empty());
    return id;
  }
  int64_t MessageCount(const std::string& id) {
    ApiResponse r = api.Get("/v1/sessions/" + id);
    EXPECT_EQ(r.status, 200) << r.body;
    return r.status == 200 ? r["message_count"].GetInt64() : -1;
  }
  void ExpectError(const ApiResponse& r, int status, const std::string& code) {
    EXPECT_EQ(r.status, status) << r.body;
    EXPECT_TRUE(r.IsErrorBody()) << r.body;
    EXPECT_EQ(r.ErrorCode(), code) << r.body;
    EXPECT_EQ(r.Header("Content-Type"), "application/json") << r.body;
  }
};

TEST_F(ApiTest, HealthAndReadiness) {
  ApiResponse h = api.Get("/healthz");
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(h.body, R"({"status":"ok"})");
  ApiResponse r = api.Get("/readyz");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_STREQ(r["status"].GetString(), "ready");
  EXPECT_EQ(r["shards"].Size(), StackEnv::Get().shards().size());
  for (const auto& s : r["shards"].GetArray()) EXPECT_STREQ(s["state"].GetString(), "up");
}

TEST_F(ApiTest, SessionLifecycle) {
  ApiResponse c = api.Post("/v1/sessions", R"({"title":"Trip ✈ plans","metadata":{"team":"ops","n":[1,2]}})");
  ASSERT_EQ(c.status, 201) << c.body;
  std::string id = c["id"].GetString();
  EXPECT_EQ(id.size(), 36u);
  EXPECT_EQ(c.Header("Location"), "/v1/sessions/" + id);
  EXPECT_STREQ(c["title"].GetString(), "Trip ✈ plans");
  EXPECT_STREQ(c["metadata"]["team"].GetString(), "ops");
  EXPECT_EQ(c["message_count"].GetInt64(), 0);
  EXPECT_EQ(std::string(c["created_at"].GetString()).back(), 'Z');
  EXPECT_FALSE(c.Header("X-Served-By").empty());

  ApiResponse g = api.Get("/v1/sessions/" + id);
  ASSERT_EQ(g.status, 200);
  EXPECT_EQ(g.body, c.body);  // Same representation on create and read.

  // Uppercase ids name the same session.
  std::string upper = id;
  for (char& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  EXPECT_EQ(api.Get("/v1/sessions/" + upper).status, 200);

  ApiResponse empty = api.Post("/v1/sessions", "");
  ASSERT_EQ(empty.status, 201);
  EXPECT_TRUE(empty["title"].IsNull());
  EXPECT_TRUE(empty["metadata"].IsObject());

  ApiResponse d = api.Delete("/v1/sessions/" + id);
  EXPECT_EQ(d.status, 204);
  EXPECT_TRUE(d.body.empty());
  ExpectError(api.Get("/v1/sessions/" + id), 404, "session_not_found");
  ExpectError(api.Get("/v1/sessions/" + id + "/messages"), 404, "session_not_found");
  ExpectError(api.Delete("/v1/sessions/" + id), 404, "session_not_found");
  ExpectError(api.Append(id, "hello?"), 404, "session_not_found");
}

TEST_F(ApiTest, TurnStoresUserAndAssistant) {
  std::string id = NewSession();
  ApiResponse t = api.Append(id, "héllo 😀 \"quoted\"\n\u0001");
  ASSERT_EQ(t.status, 201) << t.body;
  EXPECT_EQ(t["user"]["seq"].GetInt64(), 1);
  EXPECT_STREQ(t["user"]["role"].GetString(), "user");
  EXPECT_FALSE(t["user"].HasMember("reply_to"));
  EXPECT_EQ(t["assistant"]["seq"].GetInt64(), 2);
  EXPECT_STREQ(t["assistant"]["role"].GetString(), "assistant");
  EXPECT_EQ(t["assistant"]["reply_to"].GetInt64(), 1);
  EXPECT_STREQ(t["assistant"]["content"].GetString(), "héllo 😀 \"quoted\"\n\u0001");  // echo

  // A NUL inside content survives the round trip.
  ApiResponse nul = api.Post("/v1/sessions/" + id + "/messages", R"({"content":"a\u0000b","role":"user"})");
  ASSERT_EQ(nul.status, 201) << nul.body;
  EXPECT_EQ(std::string(nul["user"]["content"].GetString(), nul["user"]["content"].GetStringLength()),
            std::string("a\0b", 3));

  ApiResponse list = api.Get("/v1/sessions/" + id + "/messages");
  ASSERT_EQ(list.status, 200);
  ASSERT_EQ(list["data"].Size(), 4u);
  EXPECT_FALSE(list["has_more"].GetBool());
  EXPECT_TRUE(list["next_after"].IsNull());
  for (int i = 0; i < 4; ++i) EXPECT_EQ(list["data"][i]["seq"].GetInt64(), i + 1);
  EXPECT_EQ(MessageCount(id), 4);
}

TEST_F(ApiTest, PaginationWalksTheWholeHistory) {
  std::string id = NewSession();
  for (int i = 0; i < 5; ++i) ASSERT_EQ(api.Append(id, "m" + std::to_string(i)).status, 201);
  std::vector<int64_t> seen;
  std::string after = "0";
  for (int page = 0; page < 10; ++page) {
    ApiResponse r = api.Get("/v1/sessions/" + id + "/messages?limit=3&after=" + after);
    ASSERT_EQ(r.status, 200) << r.body;
    for (const auto& m : r["data"].GetArray()) seen.push_back(m["seq"].GetInt64());
    if (!r["has_more"].GetBool()) {
      EXPECT_TRUE(r["next_after"].IsNull());
      break;
    }
    after = std::to_string(r["next_after"].GetInt64());
    EXPECT_EQ(r["data"].Size(), 3u);
  }
  ASSERT_EQ(seen.size(), 10u);
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], static_cast<int64_t>(i + 1));
  ApiResponse beyond = api.Get("/v1/sessions/" + id + "/messages?after=10");
  ASSERT_EQ(beyond.status, 200);
  EXPECT_EQ(beyond["data"].Size(), 0u);
  EXPECT_FALSE(beyond["has_more"].GetBool());
}

TEST_F(ApiTest, BadAppendBodiesAreRejectedAndStoreNothing) {
  std::string id = NewSession();
  const std::string path = "/v1/sessions/" + id + "/messages";
  const std::string big(32 * 1024 + 1, 'x');
  const std::string exact(32 * 1024, 'x');
  struct Case {
    std::string body;
    const char* code;
  } cases[] = {
      {"", "invalid_json"},
      {"{", "invalid_json"},
      {"not json", "invalid_json"},
      {R"({"content":"x"} trailing)", "invalid_json"},
      {"[]", "invalid_json"},
      {R"("content")", "invalid_json"},
      {"{\"content\":\"\xff\xfe\"}", "invalid_json"},                         // Invalid UTF-8.
      {"{\"content\":\"\xed\xa0\x80\"}", "invalid_json"},                     // Encoded surrogate.
      {R"({"content":"\ud800"})", "invalid_json"},                            // Lone high surrogate.
      {R"({"content":"\udfff"})", "invalid_json"},                            // Lone low surrogate.
      {R"({"content":"a","content":"b"})", "invalid_json"},                   // Duplicate key.
      {std::string(100000, '[') + std::string(100000, ']'), "invalid_json"},  // Deep nesting.
      {"{}", "invalid_request"},
      {R"({"content":""})", "invalid_request"},
      {R"({"content":null})", "invalid_request"},
      {R"({"content":42})", "invalid_request"},
      {R"({"content":{"text":"x"}})", "invalid_request"},
      {R"({"content":"x","role":"assistant"})", "invalid_request"},
      {R"({"content":"x","role":"system"})", "invalid_request"},
      {R"({"content":"x","role":false})", "invalid_request"},
      {R"({"content":"x","temprature":1})", "invalid_request"},
      {"{\"content\":\"" + big + "\"}", "invalid_request"},
  };
  for (const Case& c : cases) {
    ApiResponse r = api.Post(path, c.body);
    SCOPED_TRACE(c.body.substr(0, 60));
    ExpectError(r, 400, c.code);
  }
  EXPECT_EQ(MessageCount(id), 0);
  ApiResponse ok = api.Post(path, "{\"content\":\"" + exact + "\"}");
  EXPECT_EQ(ok.status, 201) << ok.body.substr(0, 200);  // Exactly at the limit is fine.
  EXPECT_EQ(MessageCount(id), 2);
}

TEST_F(ApiTest, BadCreateBodiesAreRejected) {
  ExpectError(api.Post("/v1/sessions", R"({"title":7})"), 400, "invalid_request");
  ExpectError(api.Post("/v1/sessions", "{\"title\":\"" + std::string(201, 'a') + "\"}"), 400, "invalid_request");
  EXPECT_EQ(api.Post("/v1/sessions", "{\"title\":\"" + std::string(200, 'a') + "\"}").status, 201);
  // 200 characters, 800 bytes.
  std::string emoji;
  for (int i = 0; i < 200; ++i) emoji += "😀";
  EXPECT_EQ(api.Post("/v1/sessions", "{\"title\":\"" + emoji + "\"}").status, 201);
  ExpectError(api.Post("/v1/sessions", R"({"metadata":"x"})"), 400, "invalid_request");
  ExpectError(api.Post("/v1/sessions", "{\"metadata\":{\"k\":\"" + std::string(4096, 'v') + "\"}}"), 400,
              "invalid_request");
  ExpectError(api.Post("/v1/sessions", R"({"name":"x"})"), 400, "invalid_request");
  ExpectError(api.Post("/v1/sessions", "{,}"), 400, "invalid_json");
  ExpectError(api.Post("/v1/sessions", R"({"title":"x"})", "text/plain"), 415, "unsupported_media_type");
}

TEST_F(ApiTest, BadQueryParametersAreRejected) {
  std::string id = NewSession();
  for (const char* q : {"limit=0", "limit=201", "limit=abc", "limit=-1", "limit=1.5", "after=-1", "after=x",
                        "after=99999999999999999999", "limit=1&limit=2", "page=2", "limit=%zz"}) {
    SCOPED_TRACE(q);
    ExpectError(api.Get("/v1/sessions/" + id + "/messages?" + q), 400, "invalid_request");
  }
  EXPECT_EQ(api.Get("/v1/sessions/" + id + "/messages?limit=200&after=0").status, 200);
  EXPECT_EQ(api.Get("/v1/sessions/" + id + "/messages?limit=1").status, 200);
}

TEST_F(ApiTest, UnknownSessionsRoutesAndMethods) {
  ExpectError(api.Get("/v1/sessions/00000000-0000-4000-8000-000000000000"), 404, "session_not_found");
  ExpectError(api.Get("/v1/sessions/not-a-uuid"), 404, "session_not_found");
  ExpectError(api.Append("not-a-uuid", "x"), 404, "session_not_found");
  ExpectError(api.Get("/v1/nothing"), 404, "not_found");
  ExpectError(api.Get("/"), 404, "not_found");
  ExpectError(api.Get("/v1/sessions/"), 404, "not_found");

  ApiResponse r = api.Send("PUT", "/v1/sessions", "{}", "application/json");
  ExpectError(r, 405, "method_not_allowed");
  EXPECT_EQ(r.Header("Allow"), "GET, HEAD, POST");
  r = api.Send("PATCH", "/v1/sessions/00000000-0000-4000-8000-000000000000", "{}", "application/json");
  ExpectError(r, 405, "method_not_allowed");
  EXPECT_EQ(r.Header("Allow"), "GET, HEAD, DELETE");
  r = api.Send("DELETE", "/v1/sessions/x/messages", "", "");
  EXPECT_EQ(r.Header("Allow"), "GET, HEAD, POST");

  ApiResponse head = api.Send("HEAD", "/healthz", "", "");
  EXPECT_EQ(head.status, 200);
  EXPECT_TRUE(head.body.empty());
}

TEST_F(ApiTest, OversizeBodyGets413FromNginxAsJson) {
  std::string id = NewSession();
  std::string body = "{\"content\":\"" + std::string(2 << 20, 'x') + "\"}";
  ApiResponse r = api.Post("/v1/sessions/" + id + "/messages", body);
  ExpectError(r, 413, "payload_too_large");
  EXPECT_EQ(MessageCount(id), 0);
}

TEST_F(ApiTest, ChunkedRequestBodyIsAccepted) {
  std::string id = NewSession();
  httplib::Client cli(StackEnv::Get().url());
  cli.set_default_headers({{"Authorization", "Bearer " + DefaultApiKey()}});
  std::string body = R"({"content":"sent in chunks"})";
  auto res = cli.Post(
      "/v1/sessions/" + id + "/messages",
      [&](size_t offset, httplib::DataSink& sink) {
        sink.write(body.data() + offset, std::min<size_t>(5, body.size() - offset));
        if (offset + 5 >= body.size()) sink.done();
        return true;
      },
      "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 201) << res->body;
}

}  // namespace
}  // namespace chatllm::testing
