#pragma once

#include <cstdint>
#include <string_view>

namespace chatllm {

// The cheap token estimate used for context budgets: a token per 4 bytes of
// UTF-8, rounded up, plus 4 per message for the role and separators
// (docs/providers.md). The same everywhere a budget is counted: the store
// reading a turn's context, the turn trimming it, echo reporting usage.
inline int64_t EstimateTokens(std::string_view text) { return (static_cast<int64_t>(text.size()) + 3) / 4 + 4; }

}  // namespace chatllm
