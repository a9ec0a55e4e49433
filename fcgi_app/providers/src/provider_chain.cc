#include "providers/provider_chain.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <thread>

#include "base/http.h"
#include "base/log.h"
#include "base/time_util.h"
#include "providers/pricing.h"

namespace chatllm {
namespace {

bool ServesModel(const Provider& p, const std::string& model) {
  if (model.empty()) return true;
  const auto& globs = p.config().models;
  return std::any_of(globs.begin(), globs.end(), [&](const std::string& g) { return GlobMatch(g, model); });
}

bool ServesEverything(const Provider& p) {
  const auto& globs = p.config().models;
  return std::find(globs.begin(), globs.end(), "*") != globs.end();
}

// Counts what reached the client, so that nothing is retried after it.
class CountingSink : public DeltaSink {
 public:
  explicit CountingSink(DeltaSink* inner) : inner_(inner) {}
  bool OnDelta(std::string_view text) override {
    delivered_ += text.size();
    return inner_->OnDelta(text);
  }
  size_t delivered() const { return delivered_; }

 private:
  DeltaSink* inner_;
  size_t delivered_ = 0;
};

}  // namespace

int64_t RetryBackoffMs(int attempt, int base_ms, int max_ms, double jitter) {
  int64_t d = base_ms;
  for (int i = 0; i < attempt && d < max_ms; ++i) d *= 2;
  d = std::min<int64_t>(d, max_ms);
  return static_cast<int64_t>(static_cast<double>(d) * (0.5 + 0.5 * jitter));
}

namespace {

// With one provider, a turn's model cannot change who answers it: the
// session's model was checked when the session was created, so a turn that
// names none needs no read of it (echo's turns stay one statement shorter).
bool ChoiceDependsOnModel(const std::vector<std::unique_ptr<Provider>>& providers) {
  return providers.size() > 1 &&
         std::any_of(providers.begin(), providers.end(), [](const auto& p) { return !ServesEverything(*p); });
}

}  // namespace

ProviderChain::ProviderChain(const Config& config) : prices_(config.prices) {
  for (const ProviderConfig& p : config.providers) providers_.push_back(MakeProvider(p));
  routes_by_model_ = ChoiceDependsOnModel(providers_);
}

ProviderChain::ProviderChain(std::vector<std::unique_ptr<Provider>> providers, std::function<void(int64_t ms)> sleep,
                             std::vector<PriceConfig> prices)
    : providers_(std::move(providers)), prices_(std::move(prices)), sleep_(std::move(sleep)) {
  routes_by_model_ = ChoiceDependsOnModel(providers_);
}

std::vector<Provider*> ProviderChain::Candidates(const std::string& model) const {
  std::vector<Provider*> out;
  for (const auto& p : providers_) {
    if (ServesModel(*p, model)) out.push_back(p.get());
  }
  return out;
}

bool ProviderChain::Serves(const std::string& model) const { return !Candidates(model).empty(); }

bool ProviderChain::NeedsContext(const std::string& model) const {
  for (Provider* p : Candidates(model)) {
    if (p->uses_context()) return true;
  }
  return false;
}

int64_t ProviderChain::WorstCostNanos(const std::string& model, int64_t prompt_tokens, int max_tokens,
                                      int64_t* tokens) const {
  int64_t worst_tokens = 0, worst_cost = 0;
  bool priced = true;
  for (Provider* p : Candidates(model)) {
    const int64_t out = max_tokens > 0 ? max_tokens : p->config().max_tokens;
    worst_tokens = std::max(worst_tokens, prompt_tokens + out);
    const PriceConfig* price = FindPrice(prices_, p->name(), model.empty() ? p->config().model : model);
    if (!price) {
      priced = false;
      continue;
    }
    worst_cost = std::max(worst_cost, CostNanos(*price, prompt_tokens, 0, out));
  }
  *tokens = worst_tokens;
  return priced ? worst_cost : -1;
}

int64_t ProviderChain::HighestCostNanos(const std::string& model, int64_t prompt, int64_t completion) const {
  int64_t highest = -1;
  for (Provider* p : Candidates(model)) {
    if (const PriceConfig* price = FindPrice(prices_, p->name(), model.empty() ? p->config().model : model)) {
      highest = std::max(highest, CostNanos(*price, prompt, 0, completion));
    }
  }
  return highest;
}

Completion ProviderChain::Complete(ProviderRequest request, DeltaSink* sink, Observer* observer, RequestTrace* trace) {
  std::vector<Provider*> candidates = Candidates(request.model);
  if (candidates.empty()) {
    throw ProviderError(ProviderErrorKind::kRejected, "no provider serves the model '" + request.model + "'");
  }
  thread_local std::minstd_rand rng{std::random_device{}()};
  std::uniform_real_distribution<double> jitter(0.0, 1.0);
  std::optional<CountingSink> counting;
  if (sink) counting.emplace(sink);
  std::optional<ProviderError> last;
  for (Provider* p : candidates) {
    const ProviderConfig& cfg = p->config();
    const int64_t deadline = MonotonicMicros() + int64_t{cfg.total_timeout_ms} * 1000;
    for (int attempt = 0;; ++attempt) {
      const int64_t start = MonotonicMicros();
      if (trace) trace->provider = p->name();
      try {
        Completion c = p->Call(request, counting ? &*counting : nullptr, deadline);
        const int64_t took = MonotonicMicros() - start;
        if (trace) trace->provider_us += took;
        if (observer) observer->OnProviderCall(p->name(), took, true);
        c.provider = p->name();
        PriceCompletion(prices_, &c);
        if (observer) {
          observer->OnTokens(c.provider, c.model, c.prompt_tokens, c.cached_tokens, c.completion_tokens, c.cost_nanos);
        }
        return c;
      } catch (const ProviderError& e) {
        const int64_t took = MonotonicMicros() - start;
        if (trace) trace->provider_us += took;
        if (e.kind() == ProviderErrorKind::kCancelled) throw;
        if (observer) observer->OnProviderCall(p->name(), took, false);
        last = e;
        if (counting && counting->delivered() > 0) throw;  // Text already shown: no retry, no fallback.
        if (!e.retryable() || attempt >= cfg.max_retries) {
          LOG_WARN("provider %s failed (%s), giving up on it: %s", p->name().c_str(), e.code(), e.what());
          break;
        }
        int64_t wait_ms = e.retry_after_ms() >= 0
                              ? e.retry_after_ms()
                              : RetryBackoffMs(attempt, cfg.retry_base_ms, cfg.retry_max_ms, jitter(rng));
        if (wait_ms > cfg.retry_max_ms || MonotonicMicros() + wait_ms * 1000 >= deadline) {
          LOG_WARN("provider %s failed (%s); asks to wait %lld ms, more than it may: %s", p->name().c_str(), e.code(),
                   static_cast<long long>(wait_ms), e.what());
          break;
        }
        LOG_INFO("provider %s failed (%s), retry %d in %lld ms: %s", p->name().c_str(), e.code(), attempt + 1,
                 static_cast<long long>(wait_ms), e.what());
        if (sleep_)
          sleep_(wait_ms);
        else
          std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
      }
    }
  }
  throw *last;
}

}  // namespace chatllm
