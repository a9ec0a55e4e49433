#include "providers/pricing.h"

#include <gtest/gtest.h>

#include "providers/provider_chain.h"
#include "providers/provider_http.h"

namespace chatllm {
namespace {

PriceConfig Price(std::string name, std::string model, std::string provider, double in, double out,
                  double cached = -1) {
  PriceConfig p;
  p.name = std::move(name);
  p.model = std::move(model);
  p.provider = std::move(provider);
  p.input = in;
  p.output = out;
  p.cached_input = cached < 0 ? in : cached;
  return p;
}

TEST(PricingTest, TheFirstMatchingSectionPrices) {
  std::vector<PriceConfig> prices = {Price("mini-on-azure", "gpt-4o-mini*", "azure", 0.2, 0.8),
                                     Price("mini", "gpt-4o-mini*", "*", 0.15, 0.6),
                                     Price("any-gpt", "gpt-*", "*", 1, 2)};
  EXPECT_EQ(FindPrice(prices, "azure", "gpt-4o-mini-2024")->name, "mini-on-azure");
  EXPECT_EQ(FindPrice(prices, "openai", "gpt-4o-mini")->name, "mini");
  EXPECT_EQ(FindPrice(prices, "openai", "gpt-4o")->name, "any-gpt");
  EXPECT_EQ(FindPrice(prices, "openai", "claude-3"), nullptr);
  EXPECT_EQ(FindPrice({}, "openai", "gpt-4o"), nullptr);
}

TEST(PricingTest, CostIsExactInNanoUsdWithCachedTokensAtTheirPrice) {
  const PriceConfig p = Price("m", "*", "*", 0.15, 0.60, 0.075);
  // 1,000 prompt tokens at $0.15/M = $0.00015 = 150,000 nano-USD; 500 completion at $0.60/M = 300,000.
  EXPECT_EQ(CostNanos(p, 1000, -1, 500), 450000);
  // 400 of the 1,000 cached: 600 * 150 + 400 * 75 + 500 * 600.
  EXPECT_EQ(CostNanos(p, 1000, 400, 500), 90000 + 30000 + 300000);
  // A cached count above the prompt (a provider's slip) costs no less than all cached.
  EXPECT_EQ(CostNanos(p, 10, 50, 0), 750);
  EXPECT_EQ(CostNanos(p, 0, 0, 0), 0);
  EXPECT_EQ(CostNanos(Price("tiny", "*", "*", 0.0001, 0), 1, 0, 0), 0);  // 0.1 nano-USD rounds to 0.
}

TEST(PricingTest, UsdTextHasNineDecimals) {
  EXPECT_EQ(UsdText(0), "0.000000000");
  EXPECT_EQ(UsdText(450000), "0.000450000");
  EXPECT_EQ(UsdText(12'345'678'901), "12.345678901");
  EXPECT_EQ(UsdText(-5), "-0.000000005");
}

TEST(PricingTest, AnAnswerIsPricedOnlyWithItsUsage) {
  std::vector<PriceConfig> prices = {Price("m", "gpt-*", "*", 1, 2)};
  Completion c;
  c.provider = "openai";
  c.model = "gpt-x";
  PriceCompletion(prices, &c);
  EXPECT_EQ(c.cost_nanos, -1);  // No usage reported: not priced (not 0).
  c.prompt_tokens = 10;
  c.completion_tokens = 5;
  PriceCompletion(prices, &c);
  EXPECT_EQ(c.cost_nanos, 10 * 1000 + 5 * 2000);
  Completion other = c;
  other.cost_nanos = -1;
  other.model = "claude";
  PriceCompletion(prices, &other);
  EXPECT_EQ(other.cost_nanos, -1);
}

TEST(PricingTest, UsageReportsCachedTokensAsOpenAiCountsThem) {
  Completion o;
  ASSERT_TRUE(ParseOpenAiResponse(R"({"model":"m","choices":[{"message":{"content":"x"},"finish_reason":"stop"}],)"
                                  R"("usage":{"prompt_tokens":100,"completion_tokens":3,)"
                                  R"("prompt_tokens_details":{"cached_tokens":64}}})",
                                  &o)
                  .ok());
  EXPECT_EQ(o.prompt_tokens, 100);
  EXPECT_EQ(o.cached_tokens, 64);
  Completion plain;
  ASSERT_TRUE(ParseOpenAiResponse(R"({"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":1,)"
                                  R"("completion_tokens":1}})",
                                  &plain)
                  .ok());
  EXPECT_EQ(plain.cached_tokens, -1);
  // Anthropic's input_tokens leaves cache reads and writes out; chatllm's
  // prompt_tokens counts them all, the reads as cached.
  Completion a;
  ASSERT_TRUE(ParseAnthropicResponse(R"({"content":[{"type":"text","text":"x"}],"stop_reason":"end_turn",)"
                                     R"("usage":{"input_tokens":10,"cache_read_input_tokens":80,)"
                                     R"("cache_creation_input_tokens":5,"output_tokens":7}})",
                                     &a)
                  .ok());
  EXPECT_EQ(a.prompt_tokens, 95);
  EXPECT_EQ(a.cached_tokens, 80);
  EXPECT_EQ(a.completion_tokens, 7);
}

class FixedProvider : public Provider {
 public:
  FixedProvider() : Provider(Config()) {}
  static ProviderConfig Config() {
    ProviderConfig c;
    c.name = "p";
    c.type = "openai";
    return c;
  }
  Completion Call(const ProviderRequest&, DeltaSink*, int64_t) override {
    Completion c;
    c.content = "x";
    c.model = "gpt-1";
    c.prompt_tokens = 2000;
    c.completion_tokens = 1000;
    return c;
  }
};

class Tokens : public Observer {
 public:
  void OnQuery(const std::string&, int64_t, bool) override {}
  void OnProviderCall(const std::string&, int64_t, bool) override {}
  void OnTokens(const std::string& provider, const std::string& model, int64_t prompt, int64_t cached,
                int64_t completion, int64_t cost) override {
    seen = provider + "/" + model + " " + std::to_string(prompt) + " " + std::to_string(cached) + " " +
           std::to_string(completion) + " " + std::to_string(cost);
  }
  std::string seen;
};

TEST(PricingTest, TheChainPricesEachAnswerAndReportsItsTokens) {
  std::vector<std::unique_ptr<Provider>> v;
  v.push_back(std::make_unique<FixedProvider>());
  ProviderChain chain(std::move(v), nullptr, {Price("g", "gpt-*", "p", 0.5, 1.5)});
  ProviderRequest r;
  r.messages = {{"user", "hi"}};
  Tokens seen;
  Completion c = chain.Complete(r, nullptr, &seen, nullptr);
  EXPECT_EQ(c.cost_nanos, 2000 * 500 + 1000 * 1500);
  EXPECT_EQ(seen.seen, "p/gpt-1 2000 -1 1000 2500000");
}

}  // namespace
}  // namespace chatllm
