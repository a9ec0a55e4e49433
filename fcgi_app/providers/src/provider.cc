#include "providers/provider.h"

#include <chrono>
#include <thread>

#include "base/time_util.h"
#include "providers/provider_http.h"

namespace chatllm {

int ProviderError::status() const {
  switch (kind_) {
    case ProviderErrorKind::kUnavailable:
      return 502;
    case ProviderErrorKind::kTimeout:
      return 504;
    case ProviderErrorKind::kRateLimited:
      return 429;
    case ProviderErrorKind::kBadResponse:
      return 502;
    case ProviderErrorKind::kRejected:
      return 502;
    case ProviderErrorKind::kCancelled:
      return 499;
  }
  return 502;
}

const char* ProviderError::code() const {
  switch (kind_) {
    case ProviderErrorKind::kUnavailable:
      return "provider_unavailable";
    case ProviderErrorKind::kTimeout:
      return "provider_timeout";
    case ProviderErrorKind::kRateLimited:
      return "provider_rate_limited";
    case ProviderErrorKind::kBadResponse:
      return "provider_bad_response";
    case ProviderErrorKind::kRejected:
      return "provider_rejected";
    case ProviderErrorKind::kCancelled:
      return "client_disconnected";
  }
  return "provider_unavailable";
}

Completion EchoProvider::Call(const ProviderRequest& request, DeltaSink* sink, int64_t deadline_us) {
  const int64_t start = MonotonicMicros();
  if (request.messages.empty()) throw ProviderError(ProviderErrorKind::kRejected, "echo: no message to answer");
  Completion c;
  c.content = request.messages.back().content;
  c.model = request.model.empty() ? config().model : request.model;
  c.finish_reason = "stop";
  c.prompt_tokens = request.system.empty() ? 0 : EstimateTokens(request.system);
  for (const ChatMessage& m : request.messages) c.prompt_tokens += EstimateTokens(m.content);
  c.completion_tokens = EstimateTokens(c.content);
  const int delay_ms = config().delay_ms;
  if (!sink) {
    if (delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
  } else {
    // Word by word (each piece keeps its trailing spaces), the delay spread
    // over the pieces.
    std::vector<std::string_view> pieces;
    std::string_view rest = c.content;
    while (!rest.empty()) {
      size_t end = rest.find(' ');
      end = end == std::string_view::npos ? rest.size() : rest.find_first_not_of(' ', end);
      if (end == std::string_view::npos) end = rest.size();
      pieces.push_back(rest.substr(0, end));
      rest.remove_prefix(end);
    }
    const int64_t step_us = pieces.empty() ? 0 : int64_t{delay_ms} * 1000 / static_cast<int64_t>(pieces.size());
    for (std::string_view piece : pieces) {
      if (step_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(step_us));
      if (!sink->OnDelta(piece)) throw ProviderError(ProviderErrorKind::kCancelled, "the client went away");
    }
  }
  if (MonotonicMicros() > deadline_us) throw ProviderError(ProviderErrorKind::kTimeout, "echo: no answer in time");
  c.latency_us = MonotonicMicros() - start;
  return c;
}

std::unique_ptr<Provider> MakeProvider(const ProviderConfig& config) {
  if (config.type == "echo") return std::make_unique<EchoProvider>(config);
  if (config.type == "openai") return std::make_unique<OpenAiProvider>(config);
  if (config.type == "anthropic") return std::make_unique<AnthropicProvider>(config);
  throw ConfigError("provider " + config.name + ": unknown type '" + config.type + "'");
}

bool GlobMatch(std::string_view pattern, std::string_view text) {
  // Iterative matcher with one backtrack point for the last '*'.
  size_t p = 0, t = 0, star = std::string_view::npos, mark = 0;
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++p;
      ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

}  // namespace chatllm
