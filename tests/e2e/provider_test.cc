// LLM providers end to end: through nginx to the app, which calls
// tests/fake-llm over the real OpenAI and Anthropic wire formats (the test
// stack's provider chain: echo, fake_down, fake_openai, fake_anthropic).
// Covers context and system prompts, usage and request ids, failures of
// every kind (the user message stays, the session stays usable, a retried
// turn is stored once), fallback, streaming through nginx (unbuffered,
// client disconnects, provider failures mid-stream), the OpenAI-compatible
// endpoint, key handling and TLS verification.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <thread>

#include "base/sse.h"
#include "support/api_client.h"
#include "support/fcgi_client.h"
#include "support/instance.h"
#include "support/stack_env.h"

namespace chatllm::testing {
namespace {

using Clock = std::chrono::steady_clock;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

struct Event {
  std::string name;
  std::string data;
  double at_ms;  // Since the request was sent.
};

struct Streamed {
  int status = 0;
  std::string content_type;
  std::vector<Event> events;
};

// POSTs and reads the text/event-stream answer as it arrives; stops (and
// closes the connection) once `stop_after` events came, if given.
Streamed PostStream(const std::string& path, const std::string& body, size_t stop_after = 0,
                    const httplib::Headers& headers = {}) {
  httplib::Client client(StackEnv::Get().url());
  client.set_read_timeout(30, 0);
  Streamed out;
  SseParser parser;
  const auto start = Clock::now();
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.body = body;
  req.headers = headers;
  req.set_header("Content-Type", "application/json");
  req.set_header("Authorization", "Bearer " + DefaultApiKey());
  req.response_handler = [&](const httplib::Response& r) {
    out.status = r.status;
    out.content_type = r.get_header_value("Content-Type");
    return true;
  };
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    return parser.Feed(std::string_view(data, n), [&](const SseParser::Event& e) {
      out.events.push_back(
          Event{e.event, e.data, std::chrono::duration<double, std::milli>(Clock::now() - start).count()});
      return stop_after == 0 || out.events.size() < stop_after;
    });
  };
  client.send(req);
  return out;
}

class ProviderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fake_port_ = std::stoi(StackEnv::Get().Value("CHATLLM_FAKE_LLM_PORT"));
    ClearFake();
  }

  std::string NewSession(const std::string& body = "{}") {
    ApiResponse r = api.Post("/v1/sessions", body);
    EXPECT_EQ(r.status, 201) << r.body;
    return r.status == 201 ? r["id"].GetString() : "";
  }
  ApiResponse Turn(const std::string& id, const std::string& content, const std::string& extra = "") {
    return api.Post("/v1/sessions/" + id + "/messages", "{\"content\":" + JsonString(content) + extra + "}");
  }
  int64_t MessageCount(const std::string& id) {
    ApiResponse r = api.Get("/v1/sessions/" + id);
    return r.status == 200 ? r["message_count"].GetInt64() : -1;
  }
  std::vector<StoredMessage> History(const std::string& id) {
    std::vector<StoredMessage> h;
    EXPECT_TRUE(ReadHistory(api, id, &h));
    return h;
  }
  // The calls the fake received since SetUp.
  rapidjson::Document FakeCalls() {
    httplib::Client fake("127.0.0.1", fake_port_);
    auto r = fake.Get("/_requests");
    rapidjson::Document d;
    d.Parse(r ? r->body.c_str() : "[]");
    return d;
  }
  void ClearFake() {
    httplib::Client fake("127.0.0.1", fake_port_);
    fake.Delete("/_requests");
  }
  std::string FakeKey() { return ReadFile(StackEnv::Get().var() + "/secrets/fake_llm_key"); }

  ApiClient api{StackEnv::Get().url(), 30};
  int fake_port_ = 0;
};

TEST_F(ProviderTest, OpenAiProviderGetsTheSystemPromptAndTheStoredHistory) {
  std::string id = NewSession(R"({"model":"gpt-ctx","system_prompt":"be kind"})");
  ApiResponse s = api.Get("/v1/sessions/" + id);
  EXPECT_STREQ(s["model"].GetString(), "gpt-ctx");
  EXPECT_STREQ(s["system_prompt"].GetString(), "be kind");

  ApiResponse first = Turn(id, "first question");
  ASSERT_EQ(first.status, 201) << first.body;
  EXPECT_STREQ(first["assistant"]["content"].GetString(), "[gpt-ctx|n=1|sys=be kind] first question");
  ApiResponse second = Turn(id, "second question");
  ASSERT_EQ(second.status, 201) << second.body;
  // Context: first question, its answer, the new question.
  EXPECT_STREQ(second["assistant"]["content"].GetString(), "[gpt-ctx|n=3|sys=be kind] second question");

  // The answer carries what the provider reported, and keeps it when read back.
  const auto& a = second["assistant"];
  EXPECT_STREQ(a["provider"].GetString(), "fake_openai");
  EXPECT_STREQ(a["model"].GetString(), "gpt-ctx");
  EXPECT_STREQ(a["finish_reason"].GetString(), "stop");
  EXPECT_GT(a["usage"]["prompt_tokens"].GetInt64(), 0);
  EXPECT_GT(a["usage"]["completion_tokens"].GetInt64(), 0);
  EXPECT_EQ(a["usage"]["total_tokens"].GetInt64(),
            a["usage"]["prompt_tokens"].GetInt64() + a["usage"]["completion_tokens"].GetInt64());
  EXPECT_TRUE(a["latency_ms"].IsNumber());
  ApiResponse page = api.Get("/v1/sessions/" + id + "/messages");
  const auto& stored = page["data"][3];
  EXPECT_STREQ(stored["provider"].GetString(), "fake_openai");
  EXPECT_EQ(stored["usage"]["total_tokens"].GetInt64(), a["usage"]["total_tokens"].GetInt64());

  // The provider saw our request id and key, and the response names the same id.
  rapidjson::Document calls = FakeCalls();
  ASSERT_EQ(calls.Size(), 2u);
  EXPECT_EQ(std::string(calls[1]["request_id"].GetString()), second.Header("X-Request-Id"));
  EXPECT_EQ(std::string(calls[1]["auth"].GetString()), "Bearer " + FakeKey());
  EXPECT_STREQ(calls[1]["path"].GetString(), "/v1/chat/completions");
}

TEST_F(ProviderTest, AnthropicProviderAndPerMessageModels) {
  std::string id = NewSession(R"({"model":"gpt-a","system_prompt":"terse"})");
  // This turn asks for an Anthropic model: fake_anthropic answers.
  ApiResponse r = Turn(id, "hello", R"(,"model":"claude-x")");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_STREQ(r["assistant"]["content"].GetString(), "[claude-x|n=1|sys=terse] hello");
  EXPECT_STREQ(r["assistant"]["provider"].GetString(), "fake_anthropic");
  rapidjson::Document calls = FakeCalls();
  ASSERT_EQ(calls.Size(), 1u);
  EXPECT_STREQ(calls[0]["path"].GetString(), "/v1/messages");
  EXPECT_EQ(std::string(calls[0]["auth"].GetString()), FakeKey());  // x-api-key
  // The session's own model again for the next turn.
  ApiResponse next = Turn(id, "again");
  ASSERT_EQ(next.status, 201) << next.body;
  EXPECT_STREQ(next["assistant"]["provider"].GetString(), "fake_openai");
}

TEST_F(ProviderTest, UnknownModelsAreRefusedAndStoreNothing) {
  ApiResponse c = api.Post("/v1/sessions", R"({"model":"llama-nowhere"})");
  EXPECT_EQ(c.status, 400);
  EXPECT_EQ(c.ErrorCode(), "model_not_supported");
  std::string id = NewSession();
  ApiResponse r = Turn(id, "hi", R"(,"model":"llama-nowhere")");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.ErrorCode(), "model_not_supported");
  EXPECT_EQ(MessageCount(id), 0);
  EXPECT_EQ(FakeCalls().Size(), 0u);
}

struct FailureCase {
  std::string model;
  int status;
  std::string code;
  int calls;  // How many calls the fake should see (retries).
};

TEST_F(ProviderTest, ProviderFailuresKeepTheUserMessageAndTheSessionUsable) {
  const std::vector<FailureCase> cases = {
      {"fake-status-500", 502, "provider_unavailable", 3},   // Retried twice.
      {"fake-status-429", 429, "provider_rate_limited", 3},  // Retry-After: 1 honoured.
      {"fake-status-400", 502, "provider_rejected", 1},
      {"fake-slow-3000", 504, "provider_timeout", 1},  // read_timeout_ms 1500.
      {"fake-garbage", 502, "provider_bad_response", 1},
      {"fake-huge", 502, "provider_bad_response", 1},  // max_response_bytes 256 KiB.
      {"fake-redirect", 502, "provider_bad_response", 1},
      {"fake-cut", 502, "provider_unavailable", 1},
  };
  for (const FailureCase& f : cases) {
    SCOPED_TRACE(f.model);
    ClearFake();
    std::string id = NewSession();
    const auto start = Clock::now();
    ApiResponse r = Turn(id, "question for " + f.model, ",\"model\":\"" + f.model + "\"");
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    EXPECT_EQ(r.status, f.status) << r.body;
    EXPECT_TRUE(r.IsErrorBody()) << r.body;
    EXPECT_EQ(r.ErrorCode(), f.code) << r.body;
    EXPECT_NE(r.body.find("the user message is stored as seq 1"), std::string::npos) << r.body;
    EXPECT_EQ(FakeCalls().Size(), static_cast<size_t>(f.calls));
    if (f.status == 429) {
      EXPECT_EQ(r.Header("Retry-After"), "1");
      EXPECT_GE(secs, 1.9) << "two retries after Retry-After: 1";
    }
    if (f.model == "fake-redirect") {
      EXPECT_NE(r.body.find("redirect"), std::string::npos) << r.body;
    }
    std::vector<StoredMessage> h = History(id);
    ASSERT_EQ(h.size(), 1u);
    EXPECT_EQ(h[0].role, "user");
    // Usable: the next turn is answered.
    ApiResponse ok = Turn(id, "and now?", R"(,"model":"gpt-ok")");
    ASSERT_EQ(ok.status, 201) << ok.body;
    EXPECT_EQ(ok["user"]["seq"].GetInt64(), 2);
    EXPECT_EQ(ok["assistant"]["reply_to"].GetInt64(), 2);
  }
}

// A turn whose provider failed, retried with the same Idempotency-Key and
// body: the stored user message is answered (same seq, same request id),
// and the provider sees the question once. (Without a key the same text
// again is a new turn: tests/e2e/retry_test.cc.)
TEST_F(ProviderTest, ARetriedTurnStoresItsUserMessageOnce) {
  std::string id = NewSession();
  // The fake fails the first calls with this content for its lifetime: the
  // session id makes it new to a stack that ran this test before.
  const std::string body = R"({"content":"same words )" + id + R"(","model":"fake-failfirst-3"})";
  api.set_headers({{"Idempotency-Key", "retried-turn-" + id}});
  ApiResponse failed = api.Post("/v1/sessions/" + id + "/messages", body);
  ASSERT_EQ(failed.status, 502) << failed.body;
  ApiResponse retried = api.Post("/v1/sessions/" + id + "/messages", body);
  api.set_headers({});
  ASSERT_EQ(retried.status, 201) << retried.body;
  EXPECT_EQ(retried["user"]["seq"].GetInt64(), 1);
  EXPECT_STREQ(retried["user"]["request_id"].GetString(), failed.Header("X-Request-Id").c_str());
  EXPECT_EQ(retried["assistant"]["seq"].GetInt64(), 2);
  EXPECT_EQ(retried["assistant"]["reply_to"].GetInt64(), 1);
  // The provider saw the question once, not twice.
  EXPECT_EQ(std::string(retried["assistant"]["content"].GetString()), "[fake-failfirst-3|n=1|sys=] same words " + id);
  EXPECT_EQ(History(id).size(), 2u);
  // Once answered, the same words again are a new turn.
  ApiResponse again = Turn(id, "same words", R"(,"model":"gpt-ok")");
  ASSERT_EQ(again.status, 201) << again.body;
  EXPECT_EQ(again["user"]["seq"].GetInt64(), 3);
}

TEST_F(ProviderTest, RetriesAndFallbackHideTransientFailures) {
  std::string id = NewSession();
  // 503 twice for this request id, then an answer.
  ApiResponse flaky = Turn(id, "hi", R"(,"model":"fake-flaky-2")");
  ASSERT_EQ(flaky.status, 201) << flaky.body;
  EXPECT_EQ(FakeCalls().Size(), 3u);
  ClearFake();
  // fallback-* is served by fake_down (always 503, retried once) first, then fake_openai.
  ApiResponse fallback = Turn(id, "hi again", R"(,"model":"fallback-1")");
  ASSERT_EQ(fallback.status, 201) << fallback.body;
  EXPECT_STREQ(fallback["assistant"]["provider"].GetString(), "fake_openai");
  rapidjson::Document calls = FakeCalls();
  ASSERT_EQ(calls.Size(), 3u);
  EXPECT_STREQ(calls[0]["path"].GetString(), "/down/v1/chat/completions");
  EXPECT_STREQ(calls[1]["path"].GetString(), "/down/v1/chat/completions");
  EXPECT_STREQ(calls[2]["path"].GetString(), "/v1/chat/completions");
}

TEST_F(ProviderTest, StreamingSendsEachPieceAsItComesThroughNginx) {
  for (const std::string model : {"fake-drip-6-150", "claude-drip-6-150"}) {
    SCOPED_TRACE(model);
    std::string id = NewSession();
    Streamed s = PostStream("/v1/sessions/" + id + "/messages",
                            R"({"content":"stream please","stream":true,"model":")" + model + "\"}");
    EXPECT_EQ(s.status, 200);
    EXPECT_EQ(s.content_type, "text/event-stream; charset=utf-8");
    ASSERT_EQ(s.events.size(), 9u);  // turn (durable: docs/api.md), user, 6 deltas, assistant
    EXPECT_EQ(s.events.front().name, "turn");
    EXPECT_EQ(s.events[1].name, "user");
    EXPECT_EQ(s.events.back().name, "assistant");
    std::string text;
    for (size_t i = 2; i <= 7; ++i) {
      EXPECT_EQ(s.events[i].name, "delta");
      rapidjson::Document d;
      d.Parse(s.events[i].data.c_str());
      text += d["text"].GetString();
    }
    EXPECT_EQ(text, "piece0 piece1 piece2 piece3 piece4 piece5 ");
    // Not buffered anywhere: the first piece arrived ~750 ms before the last.
    EXPECT_LT(s.events[2].at_ms + 500, s.events[7].at_ms)
        << "first delta at " << s.events[2].at_ms << " ms, last at " << s.events[7].at_ms << " ms";
    rapidjson::Document assistant;
    assistant.Parse(s.events.back().data.c_str());
    EXPECT_EQ(std::string(assistant["content"].GetString()), text);
    EXPECT_STREQ(assistant["finish_reason"].GetString(), "stop");
    std::vector<StoredMessage> h = History(id);
    ASSERT_EQ(h.size(), 2u);
    EXPECT_EQ(h[1].content, text);
  }
}

// A client that leaves mid-stream: tests/e2e/durable_test.cc (the answer
// goes on and is stored whole; the client can read it again).

TEST_F(ProviderTest, AProviderFailingMidStreamEndsWithAnErrorEventAndAMarkedPartialAnswer) {
  for (const std::string model : {"fake-midfail", "claude-midfail", "fake-cut"}) {
    SCOPED_TRACE(model);
    std::string id = NewSession();
    Streamed s = PostStream("/v1/sessions/" + id + "/messages",
                            R"({"content":"a b c d e f","stream":true,"model":")" + model + "\"}");
    ASSERT_GE(s.events.size(), 3u);
    EXPECT_EQ(s.events.back().name, "error");
    rapidjson::Document err;
    err.Parse(s.events.back().data.c_str());
    EXPECT_STREQ(err["error"]["code"].GetString(), "provider_unavailable") << s.events.back().data;
    ASSERT_TRUE(err.HasMember("assistant")) << s.events.back().data;
    EXPECT_STREQ(err["assistant"]["finish_reason"].GetString(), "provider_error");
    std::vector<StoredMessage> h = History(id);
    ASSERT_EQ(h.size(), 2u);
    EXPECT_EQ(h[1].content, err["assistant"]["content"].GetString());
    EXPECT_FALSE(h[1].content.empty());
  }
  // A failure before any text: an error event, and only the user message stored.
  std::string id = NewSession();
  Streamed s =
      PostStream("/v1/sessions/" + id + "/messages", R"({"content":"x","stream":true,"model":"fake-status-400"})");
  ASSERT_EQ(s.events.size(), 3u);  // turn, user, error
  EXPECT_EQ(s.events[2].name, "error");
  EXPECT_EQ(s.events[2].data.find("\"assistant\""), std::string::npos);
  EXPECT_EQ(History(id).size(), 1u);
}

TEST_F(ProviderTest, OpenAiCompatibleEndpointStatelessAndWithASession) {
  ApiResponse r =
      api.Post("/v1/chat/completions", R"({"model":"gpt-direct","messages":[{"role":"system","content":"sys"},)"
                                       R"({"role":"user","content":"q1"},{"role":"assistant","content":"a1"},)"
                                       R"({"role":"user","content":"q2"}]})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_STREQ(r["object"].GetString(), "chat.completion");
  EXPECT_STREQ(r["choices"][0]["message"]["role"].GetString(), "assistant");
  EXPECT_STREQ(r["choices"][0]["message"]["content"].GetString(), "[gpt-direct|n=3|sys=sys] q2");
  EXPECT_STREQ(r["choices"][0]["finish_reason"].GetString(), "stop");
  EXPECT_GT(r["usage"]["total_tokens"].GetInt64(), 0);
  EXPECT_FALSE(r.json->HasMember("chatllm"));

  ApiResponse missing =
      api.Post("/v1/chat/completions", R"({"model":"nope","messages":[{"role":"user","content":"x"}]})");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(missing.ErrorCode(), "model_not_found");

  // With a session: the stored history is the context; the turn is stored.
  std::string id = NewSession(R"({"system_prompt":"stored"})");
  ASSERT_EQ(Turn(id, "earlier", R"(,"model":"gpt-s")").status, 201);
  httplib::Client client(StackEnv::Get().url());
  auto res = client.Post(
      "/v1/chat/completions", {{"X-Session-Id", id}, {"Authorization", "Bearer " + DefaultApiKey()}},
      R"({"model":"gpt-s","messages":[{"role":"user","content":"ignored"},{"role":"user","content":"now"}]})",
      "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  rapidjson::Document d;
  d.Parse(res->body.c_str());
  EXPECT_STREQ(d["choices"][0]["message"]["content"].GetString(), "[gpt-s|n=3|sys=stored] now");
  EXPECT_STREQ(d["chatllm"]["session_id"].GetString(), id.c_str());
  EXPECT_EQ(d["chatllm"]["user_seq"].GetInt64(), 3);
  EXPECT_EQ(d["chatllm"]["assistant_seq"].GetInt64(), 4);
  EXPECT_EQ(History(id).size(), 4u);

  // Streamed, OpenAI style: chunks, usage, [DONE].
  Streamed s =
      PostStream("/v1/chat/completions", R"({"model":"gpt-s","stream":true,"stream_options":{"include_usage":true},)"
                                         R"("messages":[{"role":"user","content":"one two three"}]})");
  ASSERT_GE(s.events.size(), 5u);
  EXPECT_EQ(s.events.back().data, "[DONE]");
  std::string text;
  bool usage = false;
  for (const Event& e : s.events) {
    if (e.data == "[DONE]") continue;
    rapidjson::Document c;
    c.Parse(e.data.c_str());
    EXPECT_STREQ(c["object"].GetString(), "chat.completion.chunk");
    if (c["choices"].Empty()) {
      usage = c["usage"]["total_tokens"].GetInt64() > 0;
      continue;
    }
    if (c["choices"][0]["delta"].HasMember("content")) text += c["choices"][0]["delta"]["content"].GetString();
  }
  EXPECT_EQ(text, "[gpt-s|n=1|sys=] one two three");
  EXPECT_TRUE(usage);
}

// An instance of its own whose chain starts with one more provider section.
class ExtraProvider {
 public:
  ExtraProvider(const std::string& name, int port, const std::string& section) {
    instance_ = std::make_unique<Instance>(
        name, port,
        std::map<std::string, std::string>{{"workers", "1"},
                                           {"chain", "extra, echo, fake_down, fake_openai, fake_anthropic"}});
    std::ofstream(instance_->config(), std::ios::app) << "\n[provider.extra]\n" << section;
    instance_->Start();
  }
  FcgiResponse Turn(const std::string& model) {
    FcgiResponse s = FcgiRequest(instance_->port(), "POST", "/v1/sessions", "{}");
    std::string id = s.body.substr(s.body.find("\"id\":\"") + 6, 36);
    return FcgiRequest(instance_->port(), "POST", "/v1/sessions/" + id + "/messages",
                       R"({"content":"hi","model":")" + model + "\"}");
  }
  Instance& instance() { return *instance_; }

 private:
  std::unique_ptr<Instance> instance_;
};

int SparePort(int offset) { return StackEnv::Get().apps().back().second + 300 + offset; }

TEST_F(ProviderTest, ARefusedKeyIsNeverRepeatedInAnswersOrLogs) {
  const std::string wrong = "sk-wrong-" + std::to_string(::getpid()) + "-secret";
  const std::string key_file = StackEnv::Get().var() + "/wrong_key";
  std::ofstream(key_file) << wrong << "\n";
  ExtraProvider app("badkey", SparePort(1),
                    "type = openai\nbase_url = http://127.0.0.1:" + std::to_string(fake_port_) +
                        "/v1\napi_key_file = " + key_file + "\nmodels = badkey-*\nmax_retries = 0\n");
  FcgiResponse r = app.Turn("badkey-1");
  EXPECT_EQ(r.status, 502) << r.body;
  EXPECT_NE(r.body.find("provider_unavailable"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("refused the API key"), std::string::npos) << r.body;
  // The fake repeats the key in its 401 body; it must go no further.
  rapidjson::Document calls = FakeCalls();
  ASSERT_EQ(calls.Size(), 1u);
  EXPECT_EQ(std::string(calls[0]["auth"].GetString()), "Bearer " + wrong);
  EXPECT_EQ(r.body.find(wrong), std::string::npos) << r.body;
  EXPECT_EQ(app.instance().log().find(wrong), std::string::npos);
}

TEST_F(ProviderTest, HttpsCertificatesAreVerified) {
  // A self-signed certificate for 127.0.0.1, and fake-llm serving TLS with it.
  const std::string dir = StackEnv::Get().var() + "/fake-llm-tls";  // Not tls/: the nginx certificate is there.
  ASSERT_EQ(RunCommand("mkdir -p " + dir +
                       " && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 "
                       "-addext subjectAltName=IP:127.0.0.1 -keyout " +
                       dir + "/key.pem -out " + dir + "/cert.pem 2>/dev/null"),
            0);
  const int tls_port = SparePort(9);
  pid_t fake = fork();
  if (fake == 0) {
    std::string bin = StackEnv::Get().build() + "/tests/fake-llm";
    std::string key = StackEnv::Get().var() + "/secrets/fake_llm_key";
    execl(bin.c_str(), bin.c_str(), "--port", std::to_string(tls_port).c_str(), "--key-file", key.c_str(), "--tls",
          (dir + "/cert.pem").c_str(), (dir + "/key.pem").c_str(), nullptr);
    _exit(127);
  }
  // Serving once it answers over TLS (this check trusts any certificate).
  httplib::Client probe("https://127.0.0.1:" + std::to_string(tls_port));
  probe.enable_server_certificate_verification(false);
  EXPECT_TRUE(WaitFor(10, [&] {
    auto r = probe.Get("/_requests");
    return r && r->status == 200;
  })) << "fake-llm did not start serving TLS";
  const std::string section = "type = openai\nbase_url = https://127.0.0.1:" + std::to_string(tls_port) +
                              "/v1\napi_key_file = " + StackEnv::Get().var() +
                              "/secrets/fake_llm_key\nmodels = tls-*\nmax_retries = 0\n";
  {
    // Trusting the certificate's issuer (itself): answered over TLS.
    ExtraProvider trusting("tls-trust", SparePort(2), section + "ca_file = " + dir + "/cert.pem\n");
    FcgiResponse ok = trusting.Turn("tls-1");
    EXPECT_EQ(ok.status, 201) << ok.body;
    EXPECT_NE(ok.body.find("[tls-1|n=1|sys=] hi"), std::string::npos) << ok.body;
  }
  {
    // With the system's CAs only: refused.
    ExtraProvider strict("tls-strict", SparePort(3), section);
    FcgiResponse refused = strict.Turn("tls-1");
    EXPECT_EQ(refused.status, 502) << refused.body;
    EXPECT_NE(refused.body.find("not trusted"), std::string::npos) << refused.body;
  }
  kill(fake, SIGTERM);
  waitpid(fake, nullptr, 0);
}

}  // namespace
}  // namespace chatllm::testing
