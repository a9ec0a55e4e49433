#pragma once

// What an answer cost ([price.NAME] sections; docs/config.md, "Prices").
// Costs are integers in nano-USD (1e-9 USD): sums stay exact, and a token at
// $0.01 per million is still 10 of them.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/config.h"
#include "providers/provider.h"

namespace chatllm {

// The first price whose globs match `provider` and `model`; null: none.
const PriceConfig* FindPrice(const std::vector<PriceConfig>& prices, std::string_view provider, std::string_view model);

// `prompt` tokens (of which `cached` from a cache; -1: not said) and
// `completion` tokens at `price`, rounded to the nearest nano-USD.
int64_t CostNanos(const PriceConfig& price, int64_t prompt, int64_t cached, int64_t completion);

// Sets c->cost_nanos when a price matches and the usage is known.
void PriceCompletion(const std::vector<PriceConfig>& prices, Completion* c);

// "0.000123450" (USD, nine decimals): how costs are shown.
std::string UsdText(int64_t nanos);

}  // namespace chatllm
