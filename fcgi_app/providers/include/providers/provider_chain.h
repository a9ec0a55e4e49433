#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/http.h"
#include "base/instance.h"
#include "providers/provider.h"

namespace chatllm {

// The providers of [provider] chain, in order, and the policy that uses them
// for one answer: each provider that serves the model is tried in turn
// (fallback); each is re-sent the request after a retryable failure (429,
// 5xx, connection refused or reset) up to its max_retries, after an
// exponential, jittered backoff or the provider's Retry-After, within its
// total_timeout. Once any text has been streamed to the client, nothing is
// retried: the answer cannot be taken back.
class ProviderChain {
 public:
  // Builds one client per configured provider. Throws ConfigError.
  explicit ProviderChain(const Config& config);
  // A chain of ready-made providers. `sleep` waits between retries (null:
  // the thread sleeps); a caller that keeps its own clock passes its own.
  explicit ProviderChain(std::vector<std::unique_ptr<Provider>> providers,
                         std::function<void(int64_t ms)> sleep = nullptr, std::vector<PriceConfig> prices = {});

  // Whether some provider serves `model` (empty: always).
  bool Serves(const std::string& model) const;
  // Whether the choice of provider depends on the model: there are several
  // providers and some does not serve every model. A turn that names no
  // model then needs the session's. (With one provider, a session whose model
  // it stopped serving after a configuration change is still answered by it.)
  bool RoutesByModel() const { return routes_by_model_; }
  // Whether a provider that may answer `model` reads the context.
  bool NeedsContext(const std::string& model) const;

  // The most an answer to `model` ("": each provider's default) may cost
  // before it is asked, over the providers that may answer it:
  // `prompt_tokens` and their max_tokens (or `max_tokens` when above 0),
  // priced. `*tokens` gets the token count; the cost is -1 when some
  // provider that may answer has no price for it.
  int64_t WorstCostNanos(const std::string& model, int64_t prompt_tokens, int max_tokens, int64_t* tokens) const;
  // `prompt` and `completion` tokens of `model` at the highest price of the
  // providers that may answer it; -1 when none has a price for it.
  int64_t HighestCostNanos(const std::string& model, int64_t prompt, int64_t completion) const;

  // Asks for an answer to `request`; `request.model` empty means each
  // provider's default. Throws the last provider's ProviderError when every
  // candidate failed, or at once when the sink refused text (kCancelled) or
  // after text was streamed. The answer is priced ([price.NAME]) and its
  // tokens reported to `observer`.
  Completion Complete(ProviderRequest request, DeltaSink* sink, Observer* observer, RequestTrace* trace);

 private:
  std::vector<Provider*> Candidates(const std::string& model) const;

  std::vector<std::unique_ptr<Provider>> providers_;
  std::vector<PriceConfig> prices_;  // [price.NAME]: what prices each answer.
  bool routes_by_model_ = false;
  std::function<void(int64_t ms)> sleep_;
};

// Backoff before retry `attempt` (0-based): base * 2^attempt capped at
// max_ms, then scaled by a factor in [0.5, 1.0) from `jitter` in [0, 1).
int64_t RetryBackoffMs(int attempt, int base_ms, int max_ms, double jitter);

}  // namespace chatllm
