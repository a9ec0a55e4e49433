#include "providers/pricing.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace chatllm {

const PriceConfig* FindPrice(const std::vector<PriceConfig>& prices, std::string_view provider,
                             std::string_view model) {
  for (const PriceConfig& p : prices) {
    if (GlobMatch(p.model, model) && GlobMatch(p.provider, provider)) return &p;
  }
  return nullptr;
}

int64_t CostNanos(const PriceConfig& price, int64_t prompt, int64_t cached, int64_t completion) {
  const double in = static_cast<double>(std::max<int64_t>(prompt, 0));
  const double hit = std::clamp<double>(static_cast<double>(cached), 0.0, in);
  const double out = static_cast<double>(std::max<int64_t>(completion, 0));
  // USD per million tokens = 1,000 nano-USD per token.
  const double nanos = ((in - hit) * price.input + hit * price.cached_input + out * price.output) * 1000.0;
  return std::llround(nanos);
}

void PriceCompletion(const std::vector<PriceConfig>& prices, Completion* c) {
  if (c->prompt_tokens < 0 || c->completion_tokens < 0) return;
  if (const PriceConfig* p = FindPrice(prices, c->provider, c->model)) {
    c->cost_nanos = CostNanos(*p, c->prompt_tokens, c->cached_tokens, c->completion_tokens);
  }
}

std::string UsdText(int64_t nanos) {
  const bool negative = nanos < 0;
  const uint64_t n = negative ? static_cast<uint64_t>(-(nanos + 1)) + 1 : static_cast<uint64_t>(nanos);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%s%llu.%09llu", negative ? "-" : "", static_cast<unsigned long long>(n / 1000000000),
                static_cast<unsigned long long>(n % 1000000000));
  return buf;
}

}  // namespace chatllm
