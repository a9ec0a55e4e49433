#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "base/config.h"
#include "base/tokens.h"

namespace chatllm {

// Errors in this room: a call that gets no answer throws ProviderError, whose
// kind says what the client is told (and whether the chain may ask again);
// reading a provider's answer returns a Status (provider_http.h).

struct ChatMessage {
  std::string role;  // "user" or "assistant" ("system" only in ProviderRequest::system).
  std::string content;
};

// What a provider is asked. The chain fills `model` for each provider it tries.
struct ProviderRequest {
  std::string model;                  // Empty: the provider's default model.
  std::string system;                 // System prompt; empty for none.
  std::vector<ChatMessage> messages;  // Oldest first.
  int max_tokens = 0;                 // 0: the provider's max_tokens.
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::vector<std::string> stop;
  std::string request_id;  // Sent as X-Request-Id.
};

struct Completion {
  std::string content;
  std::string model;           // As the provider reported it (or was asked).
  std::string provider;        // The name of the provider that answered.
  std::string finish_reason;   // "stop", "length", ...; see docs/providers.md.
  int64_t prompt_tokens = -1;  // As reported; -1 when the provider did not say.
  int64_t completion_tokens = -1;
  int64_t cached_tokens = -1;    // Of prompt_tokens, read from a cache; -1 when not said.
  int64_t cost_nanos = -1;       // Priced by [price.NAME], in 1e-9 USD; -1: no price, or no usage.
  bool usage_estimated = false;  // The counts are chatllm's estimates (the provider reported none).
  int64_t latency_us = 0;        // Of the call that answered (retries not included).
};

// Receives the answer's text as it arrives. OnDelta returns false when
// nobody listens any more (the client went away): the call stops.
class DeltaSink {
 public:
  virtual ~DeltaSink() = default;
  virtual bool OnDelta(std::string_view text) = 0;
};

enum class ProviderErrorKind {
  kUnavailable,  // Connection failed, 5xx, refused credentials: 502 provider_unavailable.
  kTimeout,      // No answer in time: 504 provider_timeout.
  kRateLimited,  // 429 from the provider: 429 provider_rate_limited.
  kBadResponse,  // Not the wire format, too large, a redirect: 502 provider_bad_response.
  kRejected,     // The provider refused the request (400, 404, 422): 502 provider_rejected.
  kCancelled,    // The client went away (DeltaSink returned false).
};

// A failed provider call: what the client is told, and whether the same
// provider may be asked again.
class ProviderError : public std::runtime_error {
 public:
  ProviderError(ProviderErrorKind kind, const std::string& message, bool retryable = false, int64_t retry_after_ms = -1)
      : std::runtime_error(message), kind_(kind), retryable_(retryable), retry_after_ms_(retry_after_ms) {}
  ProviderErrorKind kind() const { return kind_; }
  bool retryable() const { return retryable_; }
  // From the provider's Retry-After (or retry-after-ms); -1 if it sent none.
  int64_t retry_after_ms() const { return retry_after_ms_; }
  int status() const;        // The HTTP status for the client.
  const char* code() const;  // The error code for the client.

 private:
  ProviderErrorKind kind_;
  bool retryable_;
  int64_t retry_after_ms_;
};

// One LLM backend. One instance per worker thread (not thread-safe).
class Provider {
 public:
  explicit Provider(ProviderConfig config) : config_(std::move(config)) {}
  virtual ~Provider() = default;
  const ProviderConfig& config() const { return config_; }
  const std::string& name() const { return config_.name; }
  // Whether it reads anything but the last message (echo does not: a turn
  // then skips loading the context).
  virtual bool uses_context() const { return true; }
  // One call, no retries (ProviderChain retries), finished by `deadline_us`
  // (MonotonicMicros). With a sink, the answer is streamed into it as it
  // arrives (and returned whole); without, it is returned at the end.
  // Throws ProviderError.
  virtual Completion Call(const ProviderRequest& request, DeltaSink* sink, int64_t deadline_us) = 0;

 private:
  ProviderConfig config_;
};

// The offline provider: answers with the last user message verbatim, after
// `delay_ms` (load tests imitate a slow model with it); streams it word by word.
class EchoProvider : public Provider {
 public:
  using Provider::Provider;
  bool uses_context() const override { return false; }
  Completion Call(const ProviderRequest& request, DeltaSink* sink, int64_t deadline_us) override;
};

// Builds the client of one configured provider (openai, anthropic, echo).
std::unique_ptr<Provider> MakeProvider(const ProviderConfig& config);

// Shell-style glob: '*' matches any run of characters, '?' one character.
bool GlobMatch(std::string_view pattern, std::string_view text);

}  // namespace chatllm
