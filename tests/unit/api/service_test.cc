// The API (Service, the turn use case and its presenters) on a MemoryStore
// and a scripted provider: what each way a turn can end answers and keeps.
// The same behaviours against the real stack are in tests/e2e/.

#include "api/service.h"

#include <gtest/gtest.h>

#include <deque>

#include "base/json.h"
#include "memory_store.h"

namespace chatllm {
namespace {

using testing::MemoryStore;

// Answers "re: <last message>" with usage; fails when the script says so.
class ScriptedProvider : public Provider {
 public:
  ScriptedProvider() : Provider(Config()) {}
  static ProviderConfig Config() {
    ProviderConfig c;
    c.name = "scripted";
    c.type = "openai";
    c.max_retries = 0;
    return c;
  }
  Completion Call(const ProviderRequest& r, DeltaSink* sink, int64_t) override {
    ++calls;
    asked.push_back(r.messages.back().content);
    if (!failures.empty()) {
      ProviderError e = failures.front();
      failures.pop_front();
      if (sink) sink->OnDelta("half an ans");
      throw e;
    }
    Completion c;
    c.content = "re: " + r.messages.back().content;
    c.model = r.model.empty() ? "scripted-1" : r.model;
    c.finish_reason = "stop";
    c.prompt_tokens = 5;
    c.completion_tokens = 2;
    if (sink && !sink->OnDelta(c.content)) throw ProviderError(ProviderErrorKind::kCancelled, "gone");
    return c;
  }
  int calls = 0;
  std::vector<std::string> asked;
  std::deque<ProviderError> failures;
};

// Collects what a streaming response sends.
class Collector : public ResponseStream {
 public:
  bool Start(const HttpResponse& head) override {
    status = head.status;
    return true;
  }
  bool Send(std::string_view data) override {
    body.append(data);
    return true;
  }
  size_t bytes_sent() const override { return body.size(); }
  int status = 0;
  std::string body;
};

class ServiceTest : public ::testing::Test {
 protected:
  ServiceTest() {
    config_.auth_required = false;
    std::vector<std::unique_ptr<Provider>> list;
    auto p = std::make_unique<ScriptedProvider>();
    provider_ = p.get();
    list.push_back(std::move(p));
    chain_ = std::make_unique<ProviderChain>(std::move(list));
    service_ = std::make_unique<Service>(config_, &store_, chain_.get());
  }

  HttpResponse Call(const std::string& method, const std::string& path, const std::string& body = "",
                    std::map<std::string, std::string> headers = {}, ResponseStream* stream = nullptr) {
    HttpRequest r;
    r.method = method;
    r.path = path;
    r.body = body;
    r.headers = std::move(headers);
    RequestTrace trace;
    trace.request_id = "req" + std::to_string(++requests_);
    return service_->Handle(r, &trace, stream);
  }
  std::string NewSession() {
    HttpResponse r = Call("POST", "/v1/sessions", "{}");
    EXPECT_EQ(r.status, 201) << r.body;
    rapidjson::Document d;
    d.Parse(r.body.c_str());
    return d["id"].GetString();
  }
  std::vector<MessageRecord>& Stored(const std::string& id) {
    return store_.sessions()[SessionId::Parse(id)->bytes()].messages;
  }

  Config config_;
  MemoryStore store_;
  ScriptedProvider* provider_ = nullptr;
  std::unique_ptr<ProviderChain> chain_;
  std::unique_ptr<Service> service_;
  int requests_ = 0;
};

TEST_F(ServiceTest, ATurnStoresTheUserMessageAndItsAnswer) {
  const std::string id = NewSession();
  HttpResponse r = Call("POST", "/v1/sessions/" + id + "/messages", R"({"content":"hello"})");
  ASSERT_EQ(r.status, 201) << r.body;
  rapidjson::Document d;
  d.Parse(r.body.c_str());
  EXPECT_EQ(d["user"]["seq"].GetInt64(), 1);
  EXPECT_STREQ(d["assistant"]["content"].GetString(), "re: hello");
  EXPECT_EQ(d["assistant"]["reply_to"].GetInt64(), 1);
  ASSERT_EQ(Stored(id).size(), 2u);
  EXPECT_EQ(Stored(id)[0].content, "hello");
}

// The body a keyed retry gets is the first answer's, byte for byte, in both
// dialects, and the provider is asked once.
TEST_F(ServiceTest, AKeyedReplayIsTheFirstAnswer) {
  const std::string id = NewSession();
  const std::map<std::string, std::string> key{{"idempotency-key", "k1"}};
  HttpResponse first = Call("POST", "/v1/sessions/" + id + "/messages", R"({"content":"once"})", key);
  HttpResponse again = Call("POST", "/v1/sessions/" + id + "/messages", R"({"content":"once"})", key);
  ASSERT_EQ(first.status, 201);
  EXPECT_EQ(again.status, 201);
  EXPECT_EQ(again.body, first.body);
  const std::string chat = R"({"model":"m","session_id":")" + id + R"(","messages":[{"role":"user","content":"hi"}]})";
  HttpResponse a = Call("POST", "/v1/chat/completions", chat, key);
  HttpResponse b = Call("POST", "/v1/chat/completions", chat, key);
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_EQ(b.body, a.body);
  EXPECT_NE(a.body.find("\"id\":\"chatcmpl-req"), std::string::npos) << a.body;
  EXPECT_NE(a.body.find("\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}"),
            std::string::npos)
      << a.body;
  EXPECT_EQ(provider_->calls, 2);
  EXPECT_EQ(Stored(id).size(), 4u);
}

// A provider failure after the user message was stored: 502 saying where it
// is; a retry with the key answers that message instead of storing it again.
TEST_F(ServiceTest, AFailedKeyedTurnIsFinishedByItsRetry) {
  const std::string id = NewSession();
  provider_->failures.push_back(ProviderError(ProviderErrorKind::kUnavailable, "down"));
  const std::map<std::string, std::string> key{{"idempotency-key", "k2"}};
  HttpResponse failed = Call("POST", "/v1/sessions/" + id + "/messages", R"({"content":"again"})", key);
  EXPECT_EQ(failed.status, 502);
  EXPECT_NE(failed.body.find("stored as seq 1"), std::string::npos) << failed.body;
  HttpResponse retried = Call("POST", "/v1/sessions/" + id + "/messages", R"({"content":"again"})", key);
  ASSERT_EQ(retried.status, 201) << retried.body;
  ASSERT_EQ(Stored(id).size(), 2u);
  EXPECT_EQ(Stored(id)[1].reply_to, 1);
  EXPECT_NE(retried.body.find("\"request_id\":\"req2\""), std::string::npos) << "the stored message's request id";
}

// The same words twice without a key are two turns.
TEST_F(ServiceTest, IdenticalTurnsWithoutAKeyAreBothStored) {
  const std::string id = NewSession();
  EXPECT_EQ(Call("POST", "/v1/sessions/" + id + "/messages", R"({"content":"yes"})").status, 201);
  EXPECT_EQ(Call("POST", "/v1/sessions/" + id + "/messages", R"({"content":"yes"})").status, 201);
  EXPECT_EQ(Stored(id).size(), 4u);
}

// A shard that fails before the user message is stored: 503 with
// Retry-After, nothing stored, no internals in the message.
TEST_F(ServiceTest, AShardDownBeforeTheUserMessageStoresNothing) {
  const std::string id = NewSession();
  store_.FailNext("append", DbErrorKind::kUnavailable);
  HttpResponse r = Call("POST", "/v1/sessions/" + id + "/messages", R"({"content":"lost?"})");
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body.find("injected"), std::string::npos) << r.body;
  bool retry_after = false;
  for (const auto& [name, value] : r.headers) retry_after |= name == "Retry-After" && value == "1";
  EXPECT_TRUE(retry_after);
  EXPECT_TRUE(Stored(id).empty());
  EXPECT_EQ(provider_->calls, 0);
}

TEST_F(ServiceTest, RejectedBodiesStoreNothing) {
  const std::string id = NewSession();
  for (const char* body : {"", "{", R"({"content":""})", R"({"content":"x","extra":1})", R"({"content":5})"}) {
    HttpResponse r = Call("POST", "/v1/sessions/" + id + "/messages", body);
    EXPECT_EQ(r.status, 400) << body;
  }
  EXPECT_EQ(store_.append_calls(), 0);
  EXPECT_TRUE(Stored(id).empty());
}

// A streamed turn whose provider fails mid-answer: the text the client saw
// is kept as an incomplete answer, and the error event says so.
TEST_F(ServiceTest, AStreamCutByTheProviderKeepsWhatTheClientSaw) {
  const std::string id = NewSession();
  provider_->failures.push_back(ProviderError(ProviderErrorKind::kUnavailable, "cut"));
  Collector stream;
  HttpResponse r =
      Call("POST", "/v1/sessions/" + id + "/messages", R"({"content":"tell me","stream":true})", {}, &stream);
  EXPECT_TRUE(r.streamed);
  EXPECT_EQ(stream.status, 200);
  EXPECT_NE(stream.body.find("event: user"), std::string::npos);
  EXPECT_NE(stream.body.find("event: error"), std::string::npos) << stream.body;
  ASSERT_EQ(Stored(id).size(), 2u);
  EXPECT_EQ(Stored(id)[1].content, "half an ans");
  EXPECT_NE(Stored(id)[1].meta_json.find("provider_error"), std::string::npos);
}

TEST_F(ServiceTest, AnotherUsersSessionIsNotFound) {
  const std::string id = NewSession();
  store_.sessions()[SessionId::Parse(id)->bytes()].record.user_id = std::string(16, 'x');
  EXPECT_EQ(Call("GET", "/v1/sessions/" + id).status, 404);
  EXPECT_EQ(Call("POST", "/v1/sessions/" + id + "/messages", R"({"content":"mine?"})").status, 404);
  EXPECT_TRUE(Stored(id).empty());
}

}  // namespace
}  // namespace chatllm
