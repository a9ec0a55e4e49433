#include "providers/provider.h"

#include <gtest/gtest.h>

#include <deque>

#include "providers/provider_chain.h"
#include "providers/provider_http.h"

namespace chatllm {
namespace {

TEST(GlobTest, MatchesLikeAShell) {
  EXPECT_TRUE(GlobMatch("*", ""));
  EXPECT_TRUE(GlobMatch("*", "gpt-4o"));
  EXPECT_TRUE(GlobMatch("gpt-*", "gpt-4o"));
  EXPECT_FALSE(GlobMatch("gpt-*", "claude-3"));
  EXPECT_TRUE(GlobMatch("claude-?-*", "claude-3-haiku"));
  EXPECT_FALSE(GlobMatch("claude-?-*", "claude-35-haiku"));
  EXPECT_TRUE(GlobMatch("*mini*", "gpt-4o-mini-2024"));
  EXPECT_TRUE(GlobMatch("a*b*c", "aXXbYYbc"));
  EXPECT_FALSE(GlobMatch("a*b*c", "aXXbYYbd"));
  EXPECT_FALSE(GlobMatch("echo", "echo-1"));
}

TEST(ProviderTest, TokenEstimateIsAQuarterOfTheBytesPlusFour) {
  EXPECT_EQ(EstimateTokens(""), 4);
  EXPECT_EQ(EstimateTokens("abcd"), 5);
  EXPECT_EQ(EstimateTokens("abcde"), 6);
  EXPECT_EQ(EstimateTokens(std::string(400, 'x')), 104);
}

TEST(ProviderTest, BackoffDoublesIsCappedAndJittered) {
  EXPECT_EQ(RetryBackoffMs(0, 250, 8000, 0.0), 125);
  EXPECT_EQ(RetryBackoffMs(0, 250, 8000, 0.999), 249);
  EXPECT_EQ(RetryBackoffMs(2, 250, 8000, 0.0), 500);
  EXPECT_EQ(RetryBackoffMs(10, 250, 8000, 0.0), 4000);
  EXPECT_LT(RetryBackoffMs(60, 250, 8000, 0.999), 8000);
}

TEST(ProviderTest, ErrorsMapToTheClientsStatusAndCode) {
  EXPECT_EQ(ProviderError(ProviderErrorKind::kUnavailable, "x").status(), 502);
  EXPECT_STREQ(ProviderError(ProviderErrorKind::kUnavailable, "x").code(), "provider_unavailable");
  EXPECT_EQ(ProviderError(ProviderErrorKind::kTimeout, "x").status(), 504);
  EXPECT_STREQ(ProviderError(ProviderErrorKind::kTimeout, "x").code(), "provider_timeout");
  EXPECT_EQ(ProviderError(ProviderErrorKind::kRateLimited, "x").status(), 429);
  EXPECT_STREQ(ProviderError(ProviderErrorKind::kRateLimited, "x").code(), "provider_rate_limited");
  EXPECT_EQ(ProviderError(ProviderErrorKind::kBadResponse, "x").status(), 502);
  EXPECT_STREQ(ProviderError(ProviderErrorKind::kBadResponse, "x").code(), "provider_bad_response");
}

TEST(WireFormatTest, OpenAiRequestCarriesSystemHistorySamplingAndStreamOptions) {
  ProviderRequest r;
  r.system = "be brief";
  r.messages = {{"user", "hi"}, {"assistant", "hello"}, {"user", "again \"quoted\""}};
  r.temperature = 0.5;
  r.stop = {"END"};
  EXPECT_EQ(OpenAiRequestJson(r, "gpt-x", 64, true),
            R"({"model":"gpt-x","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"},)"
            R"({"role":"assistant","content":"hello"},{"role":"user","content":"again \"quoted\""}],"max_tokens":64,)"
            R"("temperature":0.5,"stop":["END"],"stream":true,"stream_options":{"include_usage":true}})");
}

TEST(WireFormatTest, AnthropicRequestAlternatesRolesAndStartsWithTheUser) {
  ProviderRequest r;
  r.system = "sys";
  // A reply without its question, then two user messages in a row (the
  // first one's answer failed): Anthropic refuses both shapes.
  r.messages = {{"assistant", "orphan"}, {"user", "a"}, {"user", "b"}, {"assistant", "c"}, {"user", "d"}};
  EXPECT_EQ(AnthropicRequestJson(r, "claude-x", 100, false),
            R"({"model":"claude-x","max_tokens":100,"system":"sys","messages":[{"role":"user","content":"a\n\nb"},)"
            R"({"role":"assistant","content":"c"},{"role":"user","content":"d"}]})");
}

TEST(WireFormatTest, ParsesAnswersAndRefusesWhatIsNotTheFormat) {
  Completion c;
  EXPECT_TRUE(ParseOpenAiResponse(R"({"model":"m1","choices":[{"message":{"role":"assistant","content":"hey"},)"
                                  R"("finish_reason":"length"}],"usage":{"prompt_tokens":7,"completion_tokens":2}})",
                                  &c)
                  .ok());
  EXPECT_EQ(c.content, "hey");
  EXPECT_EQ(c.model, "m1");
  EXPECT_EQ(c.finish_reason, "length");
  EXPECT_EQ(c.prompt_tokens, 7);
  EXPECT_EQ(c.completion_tokens, 2);
  EXPECT_FALSE(ParseOpenAiResponse("<html>", &c).ok());
  EXPECT_FALSE(ParseOpenAiResponse(R"({"choices":[]})", &c).ok());
  EXPECT_FALSE(ParseOpenAiResponse(R"({"choices":[{"message":{"content":5}}]})", &c).ok());

  Completion a;
  EXPECT_TRUE(
      ParseAnthropicResponse(R"({"model":"c1","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}],)"
                             R"("stop_reason":"max_tokens","usage":{"input_tokens":3,"output_tokens":4}})",
                             &a)
          .ok());
  EXPECT_EQ(a.content, "ab");
  EXPECT_EQ(a.finish_reason, "length");
  EXPECT_EQ(a.prompt_tokens, 3);
  EXPECT_EQ(a.completion_tokens, 4);
  EXPECT_FALSE(ParseAnthropicResponse(R"({"content":"text"})", &a).ok());
}

TEST(WireFormatTest, ErrorTextAndRetryAfter) {
  EXPECT_EQ(ProviderErrorText(R"({"error":{"message":"slow down","type":"x"}})"), "slow down");
  EXPECT_EQ(ProviderErrorText(R"({"type":"error","error":{"type":"overloaded_error","message":"busy"}})"), "busy");
  EXPECT_EQ(ProviderErrorText("not json"), "");
  EXPECT_EQ(ParseRetryAfter("3"), 3000);
  EXPECT_EQ(ParseRetryAfter(""), -1);
  EXPECT_EQ(ParseRetryAfter("Wed, 21 Oct 2015 07:28:00 GMT"), -1);
  EXPECT_EQ(ParseRetryAfter("-1"), -1);
}

// A provider that plays a script of outcomes, one per call.
class ScriptedProvider : public Provider {
 public:
  ScriptedProvider(const std::string& name, std::vector<std::string> models,
                   std::deque<std::optional<ProviderError>> script)
      : Provider(Config(name, std::move(models))), script_(std::move(script)) {}
  static ProviderConfig Config(const std::string& name, std::vector<std::string> models) {
    ProviderConfig c;
    c.name = name;
    c.type = "openai";
    c.models = std::move(models);
    c.max_retries = 2;
    c.retry_base_ms = 100;
    c.retry_max_ms = 1000;
    return c;
  }
  Completion Call(const ProviderRequest& r, DeltaSink* sink, int64_t) override {
    ++calls;
    models_asked.push_back(r.model);
    std::optional<ProviderError> next;
    if (!script_.empty()) {
      next = script_.front();
      script_.pop_front();
    }
    if (sink && stream_first) sink->OnDelta("partial");
    if (next) throw *next;
    Completion c;
    c.content = "answer from " + name();
    return c;
  }
  int calls = 0;
  bool stream_first = false;
  std::vector<std::string> models_asked;

 private:
  std::deque<std::optional<ProviderError>> script_;
};

struct Chain {
  Chain(std::deque<std::optional<ProviderError>> a, std::deque<std::optional<ProviderError>> b,
        std::vector<std::string> b_models = {"*"}) {
    auto pa = std::make_unique<ScriptedProvider>("a", std::vector<std::string>{"gpt-*"}, std::move(a));
    auto pb = std::make_unique<ScriptedProvider>("b", std::move(b_models), std::move(b));
    first = pa.get();
    second = pb.get();
    std::vector<std::unique_ptr<Provider>> v;
    v.push_back(std::move(pa));
    v.push_back(std::move(pb));
    chain = std::make_unique<ProviderChain>(std::move(v), [this](int64_t ms) { slept.push_back(ms); });
  }
  Completion Ask(const std::string& model, DeltaSink* sink = nullptr) {
    ProviderRequest r;
    r.model = model;
    r.messages = {{"user", "hi"}};
    return chain->Complete(r, sink, nullptr, nullptr);
  }
  ScriptedProvider* first;
  ScriptedProvider* second;
  std::unique_ptr<ProviderChain> chain;
  std::vector<int64_t> slept;
};

const ProviderError k503(ProviderErrorKind::kUnavailable, "503", true);
const ProviderError k400(ProviderErrorKind::kRejected, "400", false);

TEST(ProviderChainTest, RetriesARetryableFailureWithBackoff) {
  Chain c({k503, k503, std::nullopt}, {});
  EXPECT_EQ(c.Ask("gpt-x").content, "answer from a");
  EXPECT_EQ(c.first->calls, 3);
  EXPECT_EQ(c.second->calls, 0);
  ASSERT_EQ(c.slept.size(), 2u);
  EXPECT_GE(c.slept[0], 50);
  EXPECT_LT(c.slept[0], 100);
  EXPECT_GE(c.slept[1], 100);
  EXPECT_LT(c.slept[1], 200);
}

TEST(ProviderChainTest, FallsBackAfterTheRetriesOrAtOnceOnAFinalError) {
  Chain exhausted({k503, k503, k503}, {std::nullopt});
  EXPECT_EQ(exhausted.Ask("gpt-x").content, "answer from b");
  EXPECT_EQ(exhausted.first->calls, 3);

  Chain rejected({k400}, {std::nullopt});
  EXPECT_EQ(rejected.Ask("gpt-x").content, "answer from b");
  EXPECT_EQ(rejected.first->calls, 1);
  EXPECT_TRUE(rejected.slept.empty());
}

TEST(ProviderChainTest, HonoursRetryAfterUnlessItIsTooLong) {
  Chain short_wait({ProviderError(ProviderErrorKind::kRateLimited, "429", true, 700), std::nullopt}, {});
  EXPECT_EQ(short_wait.Ask("gpt-x").content, "answer from a");
  EXPECT_EQ(short_wait.slept, std::vector<int64_t>{700});

  // Longer than retry_max_ms: not worth waiting for; the next provider.
  Chain long_wait({ProviderError(ProviderErrorKind::kRateLimited, "429", true, 60000)}, {std::nullopt});
  EXPECT_EQ(long_wait.Ask("gpt-x").content, "answer from b");
  EXPECT_TRUE(long_wait.slept.empty());
}

TEST(ProviderChainTest, TheLastErrorIsThrownWhenEveryoneFails) {
  Chain c({k503, k503, k503}, {ProviderError(ProviderErrorKind::kTimeout, "slow", false)});
  try {
    c.Ask("gpt-x");
    FAIL() << "no error";
  } catch (const ProviderError& e) {
    EXPECT_EQ(e.kind(), ProviderErrorKind::kTimeout);
  }
}

TEST(ProviderChainTest, OnlyProvidersServingTheModelAreAsked) {
  Chain c({}, {std::nullopt}, {"claude-*"});
  EXPECT_EQ(c.Ask("claude-3").content, "answer from b");
  EXPECT_EQ(c.first->calls, 0);
  EXPECT_TRUE(c.chain->Serves("gpt-4"));
  EXPECT_TRUE(c.chain->Serves("claude-3"));
  EXPECT_FALSE(c.chain->Serves("llama"));
  EXPECT_TRUE(c.chain->RoutesByModel());
  EXPECT_THROW(c.Ask("llama"), ProviderError);
  // No model: every provider in order, each with its default.
  Chain d({std::nullopt}, {});
  EXPECT_EQ(d.Ask("").content, "answer from a");
  EXPECT_EQ(d.first->models_asked, std::vector<std::string>{""});
}

class Collect : public DeltaSink {
 public:
  bool OnDelta(std::string_view text) override {
    got += text;
    return true;
  }
  std::string got;
};

// One provider answers every turn whatever the session's model: a turn that
// names no model needs no read of it (the echo-only stacks' turns stay one
// statement).
TEST(ProviderChainTest, OneProviderDoesNotRouteByModel) {
  std::vector<std::unique_ptr<Provider>> one;
  one.push_back(std::make_unique<ScriptedProvider>("echo", std::vector<std::string>{"echo"},
                                                   std::deque<std::optional<ProviderError>>{}));
  ProviderChain chain(std::move(one));
  EXPECT_FALSE(chain.RoutesByModel());
  EXPECT_TRUE(chain.Serves("echo"));
  EXPECT_TRUE(chain.Serves(""));
  EXPECT_FALSE(chain.Serves("gpt-4o"));
}

TEST(ProviderChainTest, NothingIsRetriedOnceTextReachedTheClient) {
  Chain c({k503, std::nullopt}, {std::nullopt});
  c.first->stream_first = true;
  Collect sink;
  EXPECT_THROW(c.Ask("gpt-x", &sink), ProviderError);
  EXPECT_EQ(c.first->calls, 1);
  EXPECT_EQ(c.second->calls, 0);
  EXPECT_EQ(sink.got, "partial");
}

TEST(EchoProviderTest, StreamsTheLastMessageWordByWord) {
  ProviderConfig cfg;
  cfg.name = cfg.type = cfg.model = "echo";
  EchoProvider echo(cfg);
  ProviderRequest r;
  r.messages = {{"user", "old"}, {"user", "one two  three"}};
  std::vector<std::string> pieces;
  class Pieces : public DeltaSink {
   public:
    explicit Pieces(std::vector<std::string>* out) : out_(out) {}
    bool OnDelta(std::string_view t) override {
      out_->emplace_back(t);
      return true;
    }
    std::vector<std::string>* out_;
  } piece_sink(&pieces);
  Completion c = echo.Call(r, &piece_sink, INT64_MAX);
  EXPECT_EQ(c.content, "one two  three");
  EXPECT_EQ(pieces, (std::vector<std::string>{"one ", "two  ", "three"}));
  EXPECT_EQ(c.model, "echo");
  EXPECT_EQ(c.finish_reason, "stop");
}

}  // namespace
}  // namespace chatllm
