// The API (Service, the turn use case and its presenters) on a MemoryStore
// and a scripted provider: what each way a turn can end answers and keeps.
// The same behaviours against the real stack are in tests/e2e/.

#include "api/service.h"

#include <gtest/gtest.h>
#include <rapidjson/pointer.h>

#include <deque>
#include <optional>

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
    r.path = path.substr(0, path.find('?'));
    if (path.find('?') != std::string::npos) r.query = path.substr(path.find('?') + 1);
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

// A streamed turn is durable (docs/api.md): a row with its events, ended
// with its answer; the stream names it and numbers its deltas.
TEST_F(ServiceTest, AStreamedTurnIsStoredAsADurableTurn) {
  const std::string id = NewSession();
  Collector stream;
  Call("POST", "/v1/sessions/" + id + "/messages", R"({"content":"tell me","stream":true})", {}, &stream);
  ASSERT_EQ(store_.turns().size(), 1u);
  const MemoryStore::Turn& t = store_.turns().begin()->second;
  EXPECT_EQ(t.record.state, "completed");
  EXPECT_EQ(t.record.user_seq, 1);
  EXPECT_EQ(t.record.answer_seq, 2);
  ASSERT_EQ(t.events.size(), 1u);
  EXPECT_EQ(t.events[0].text, "re: tell me");
  EXPECT_EQ(stream.body.rfind("id: 0\nevent: turn\n", 0), 0u) << stream.body;
  EXPECT_NE(stream.body.find("id: 1\nevent: delta\n"), std::string::npos) << stream.body;
  // A JSON turn is not one.
  Call("POST", "/v1/sessions/" + id + "/messages", R"({"content":"plain"})");
  EXPECT_EQ(store_.turns().size(), 1u);
}

// Takes the head, then the client is gone.
class GoneAfterHead : public Collector {
 public:
  bool Send(std::string_view) override { return false; }
};

TEST_F(ServiceTest, AClientThatLeavesDoesNotStopADurableTurn) {
  const std::string id = NewSession();
  GoneAfterHead stream;
  Call("POST", "/v1/sessions/" + id + "/messages", R"({"content":"tell me","stream":true})", {}, &stream);
  ASSERT_EQ(Stored(id).size(), 2u);
  EXPECT_EQ(Stored(id)[1].content, "re: tell me");
  EXPECT_NE(Stored(id)[1].meta_json.find("\"stop\""), std::string::npos) << Stored(id)[1].meta_json;
  EXPECT_EQ(store_.turns().begin()->second.record.state, "completed");
  // Without durable turns the client's leaving stops the turn, as before.
  config_.durable_turns = false;
  const std::string other = NewSession();
  GoneAfterHead again;
  Call("POST", "/v1/sessions/" + other + "/messages", R"({"content":"tell me","stream":true})", {}, &again);
  EXPECT_EQ(Stored(other).size(), 1u) << "the user message only: the client left before any text";
  EXPECT_EQ(store_.turns().size(), 1u);
}

TEST_F(ServiceTest, ACancelledTurnKeepsItsPartialAnswerMarkedCancelled) {
  config_.turn_flush_events = 1;  // Every piece is written at once, and the cancel seen.
  const std::string id = NewSession();
  store_.cancel_on_open = true;
  Collector stream;
  Call("POST", "/v1/sessions/" + id + "/messages", R"({"content":"tell me","stream":true})", {}, &stream);
  EXPECT_NE(stream.body.find("\"turn_cancelled\""), std::string::npos) << stream.body;
  EXPECT_EQ(store_.turns().begin()->second.record.state, "cancelled");
  ASSERT_EQ(Stored(id).size(), 2u);
  EXPECT_EQ(Stored(id)[1].content, "re: tell me");
  EXPECT_NE(Stored(id)[1].meta_json.find("\"cancelled\""), std::string::npos) << Stored(id)[1].meta_json;
}

TEST_F(ServiceTest, AProducerThatLostItsTurnStoresNothingMore) {
  config_.turn_flush_events = 1;
  const std::string id = NewSession();
  store_.expire_on_open = true;  // A reader ended it: the lease ran out.
  Collector stream;
  Call("POST", "/v1/sessions/" + id + "/messages", R"({"content":"tell me","stream":true})", {}, &stream);
  EXPECT_NE(stream.body.find("\"turn_lost\""), std::string::npos) << stream.body;
  EXPECT_EQ(Stored(id).size(), 1u) << "no answer once the turn is not this producer's";
  EXPECT_EQ(store_.turns().begin()->second.record.state, "incomplete");
}

TEST_F(ServiceTest, AnotherUsersSessionIsNotFound) {
  const std::string id = NewSession();
  store_.sessions()[SessionId::Parse(id)->bytes()].record.user_id = std::string(16, 'x');
  EXPECT_EQ(Call("GET", "/v1/sessions/" + id).status, 404);
  EXPECT_EQ(Call("POST", "/v1/sessions/" + id + "/messages", R"({"content":"mine?"})").status, 404);
  EXPECT_TRUE(Stored(id).empty());
}

// Takes what a background response answers at once (ResponseStream::Finish).
class Finishing : public Collector {
 public:
  bool Finish(const HttpResponse& whole) override {
    finished = whole;
    return true;
  }
  std::optional<HttpResponse> finished;
};

std::string Field(const std::string& json, const char* pointer) {
  rapidjson::Document d;
  d.Parse(json.c_str());
  const rapidjson::Value* v = rapidjson::Pointer(pointer).Get(d);
  if (!v) return "<none>";
  if (v->IsString()) return v->GetString();
  if (v->IsBool()) return v->GetBool() ? "true" : "false";
  if (v->IsInt64()) return std::to_string(v->GetInt64());
  return "<other>";
}

TEST_F(ServiceTest, AStoredResponseIsADurableTurnOfItsConversation) {
  HttpResponse conv = Call("POST", "/v1/conversations", R"({"metadata":{"topic":"t"}})");
  ASSERT_EQ(conv.status, 200) << conv.body;
  const std::string cid = Field(conv.body, "/id");
  ASSERT_EQ(cid.size(), 37u) << cid;
  HttpResponse r = Call("POST", "/v1/responses", R"({"input":"tell me","conversation":")" + cid + R"("})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Field(r.body, "/status"), "completed");
  EXPECT_EQ(Field(r.body, "/output/0/content/0/text"), "re: tell me");
  EXPECT_EQ(Field(r.body, "/conversation/id"), cid);
  EXPECT_EQ(Field(r.body, "/usage/total_tokens"), "7");
  ASSERT_EQ(store_.turns().size(), 1u);
  EXPECT_EQ(store_.turns().begin()->second.record.state, "completed");
  const std::string rid = Field(r.body, "/id");
  HttpResponse got = Call("GET", "/v1/responses/" + rid);
  ASSERT_EQ(got.status, 200) << got.body;
  EXPECT_EQ(Field(got.body, "/output/0/content/0/text"), "re: tell me");
  // Its events from sequence number 2 on: the head's last two, the one
  // delta (event 1 is number 4), and the end (5..8).
  Collector stream;
  Call("GET", "/v1/responses/" + rid + "?stream=true&starting_after=2", "", {}, &stream);
  EXPECT_EQ(stream.body.rfind("id: 3\nevent: response.content_part.added\n", 0), 0u) << stream.body;
  EXPECT_NE(stream.body.find("id: 4\nevent: response.output_text.delta\n"), std::string::npos) << stream.body;
  EXPECT_NE(stream.body.find("id: 8\nevent: response.completed\n"), std::string::npos) << stream.body;
  EXPECT_EQ(stream.body.find("id: 2\n"), std::string::npos) << stream.body;
  // The conversation's items, newest first; then ascending, page by page.
  HttpResponse items = Call("GET", "/v1/conversations/" + cid + "/items");
  ASSERT_EQ(items.status, 200) << items.body;
  EXPECT_EQ(Field(items.body, "/data/0/role"), "assistant");
  EXPECT_EQ(Field(items.body, "/data/1/content/0/text"), "tell me");
  EXPECT_EQ(Field(items.body, "/has_more"), "false");
  HttpResponse page = Call("GET", "/v1/conversations/" + cid + "/items?order=asc&limit=1");
  EXPECT_EQ(Field(page.body, "/data/0/role"), "user");
  EXPECT_EQ(Field(page.body, "/has_more"), "true");
  HttpResponse next =
      Call("GET", "/v1/conversations/" + cid + "/items?order=asc&limit=1&after=" + Field(page.body, "/last_id"));
  EXPECT_EQ(Field(next.body, "/data/0/role"), "assistant");
  EXPECT_EQ(Field(next.body, "/has_more"), "false");
  HttpResponse older = Call("GET", "/v1/conversations/" + cid + "/items?limit=1&after=" + Field(page.body, "/last_id"));
  EXPECT_EQ(Field(older.body, "/data/0/role"), "<none>") << older.body;
}

TEST_F(ServiceTest, ABackgroundResponseAnswersAtOnceAndIsProducedWhole) {
  Finishing stream;
  HttpResponse r =
      Call("POST", "/v1/responses", R"({"model":"scripted-1","input":"later","background":true})", {}, &stream);
  EXPECT_TRUE(r.streamed);
  ASSERT_TRUE(stream.finished.has_value());
  EXPECT_EQ(stream.finished->status, 200);
  EXPECT_EQ(Field(stream.finished->body, "/status"), "in_progress") << stream.finished->body;
  ASSERT_EQ(store_.turns().size(), 1u);
  EXPECT_EQ(store_.turns().begin()->second.record.state, "completed");
  HttpResponse got = Call("GET", "/v1/responses/" + Field(stream.finished->body, "/id"));
  EXPECT_EQ(Field(got.body, "/status"), "completed");
  EXPECT_EQ(Field(got.body, "/output/0/content/0/text"), "re: later");
}

TEST_F(ServiceTest, AKeyedResponseIsStoredOnceAcrossRetries) {
  const std::string body = R"({"model":"scripted-1","input":"once"})";
  HttpResponse first = Call("POST", "/v1/responses", body, {{"idempotency-key", "k1"}});
  ASSERT_EQ(first.status, 200) << first.body;
  HttpResponse again = Call("POST", "/v1/responses", body, {{"idempotency-key", "k1"}});
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(Field(again.body, "/id"), Field(first.body, "/id"));
  EXPECT_EQ(Field(again.body, "/output/0/content/0/text"), "re: once");
  EXPECT_EQ(provider_->calls, 1);
  EXPECT_EQ(store_.sessions().size(), 1u);
  EXPECT_EQ(store_.sessions().begin()->second.messages.size(), 2u);
}

TEST_F(ServiceTest, WhatTheResponsesApiCannotDoIsRefusedAndNothingStored) {
  EXPECT_EQ(Field(Call("POST", "/v1/responses", R"({"model":"m","input":"x","tools":[{"type":"web_search"}]})").body,
                  "/error/code"),
            "unsupported_parameter");
  EXPECT_EQ(Field(Call("POST", "/v1/responses", R"({"model":"m","input":"x","bogus":1})").body, "/error/code"),
            "unknown_parameter");
  EXPECT_EQ(Call("POST", "/v1/responses", R"({"input":"x","conversation":"conv_nope"})").status, 404);
  EXPECT_EQ(Call("POST", "/v1/responses", R"({"model":"m","input":"x","store":false,"conversation":"conv_x"})").status,
            400);
  EXPECT_EQ(Call("GET", "/v1/responses/resp_123").status, 404);
  EXPECT_EQ(Call("GET", "/v1/responses/" + std::string("resp_") + std::string(48, 'f') + "?stream=maybe").status, 400);
  EXPECT_TRUE(store_.sessions().empty());
  // Not stored: the whole context comes with the request.
  HttpResponse r =
      Call("POST", "/v1/responses",
           R"({"model":"m","store":false,"input":[{"role":"user","content":"a"},)"
           R"({"role":"assistant","content":"b"},{"role":"user","content":[{"type":"input_text","text":"c"}]}]})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Field(r.body, "/output/0/content/0/text"), "re: c");
  EXPECT_EQ(Field(r.body, "/store"), "false");
  EXPECT_TRUE(store_.sessions().empty());
}

}  // namespace
}  // namespace chatllm
