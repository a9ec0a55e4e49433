// A turn's usage hold (api/turn.h, sql/011_usage.sql): the worst case is
// held on the user's home before anything is stored, the stored answer
// settles it into the ledger, and a turn that ends without an answer
// releases it. A budget that refuses the hold refuses the turn: 429
// budget_exceeded, nothing stored, no provider asked.

#include <algorithm>
#include <ctime>

#include "api/turn.h"
#include "base/api_key.h"
#include "base/log.h"
#include "base/time_util.h"
#include "base/tokens.h"
#include "providers/pricing.h"
#include "store/db_error.h"

namespace chatllm {
namespace {

// The hold of a keyed turn is named by its key and the API key that sent
// it (a retry holds once; one through another key answers to that key's
// budget); any other turn's is random.
std::string HoldIdOf(const UserId& user, const std::string& key_id, const SessionId& session,
                     const std::optional<IdempotencyKey>& idem) {
  std::string id(16, '\0');
  if (!idem) {
    RandomBytes(id.data(), id.size());
    return id;
  }
  return SecretHash(user + key_id + session.bytes() + idem->target_sha + idem->key).substr(0, 16);
}

// OpenAI's x-ratelimit-* trio for one budget: `unit` is tokens, usd (the
// figures in USD) or turns; reset_s < 0: none (a turn at once ends when it
// ends).
void AddRateLimit(std::vector<std::pair<std::string, std::string>>* headers, const std::string& unit, int64_t limit,
                  int64_t remaining, int64_t reset_s) {
  const bool usd = unit == "usd";
  headers->emplace_back("x-ratelimit-limit-" + unit, usd ? UsdText(limit) : std::to_string(limit));
  headers->emplace_back("x-ratelimit-remaining-" + unit, usd ? UsdText(remaining) : std::to_string(remaining));
  if (reset_s >= 0) headers->emplace_back("x-ratelimit-reset-" + unit, std::to_string(reset_s) + "s");
}

}  // namespace

std::vector<std::pair<std::string, std::string>> TurnRunner::RateLimitHeaders() const {
  std::vector<std::pair<std::string, std::string>> headers;
  if (usage_.code != kUsageHeld) return headers;
  const int64_t now = std::time(nullptr);
  auto reset = [&](const UsageRoom::Figure& f) { return NextUtcPeriodStart(f.monthly) - now; };
  const UsageRoom& room = usage_.room;
  if (room.tokens.limit >= 0)
    AddRateLimit(&headers, "tokens", room.tokens.limit, room.tokens.remaining, reset(room.tokens));
  if (room.cost_nanos.limit >= 0)
    AddRateLimit(&headers, "usd", room.cost_nanos.limit, room.cost_nanos.remaining, reset(room.cost_nanos));
  if (room.turns.limit >= 0) AddRateLimit(&headers, "turns", room.turns.limit, room.turns.remaining, -1);
  return headers;
}

std::optional<TurnOutcome> TurnRunner::HoldUsage(const SessionId& session, const TurnRequest& turn,
                                                 const TurnContext& ctx, const RequestTrace& trace) {
  usage_ = Usage{};
  if (!config_.usage_ledger || turn.user.empty()) return std::nullopt;
  // The prompt as the turn will send it, estimated as the context budget is.
  int64_t prompt = EstimateTokens(turn.content) + (ctx.system_prompt.empty() ? 0 : EstimateTokens(ctx.system_prompt));
  for (const MessageRecord& m : ctx.messages) prompt += EstimateTokens(m.content);
  usage_.key_id = trace.key_id;
  usage_.model = turn.model;
  usage_.prompt_estimate = prompt;
  // A user and key the home said have no budget, a moment ago: nothing to
  // hold (a budget set since applies within [usage] budget_cache_ms).
  const std::string who = turn.user + trace.key_id;
  const int64_t now = MonotonicMicros();
  auto known = no_budget_.find(who);
  if (known != no_budget_.end() && known->second > now) {
    usage_.code = kUsageNotHeld;
    return std::nullopt;
  }
  UsageHold h;
  h.hold_id = HoldIdOf(turn.user, trace.key_id, session, turn.idempotency);
  h.keyed = turn.idempotency.has_value();
  h.key_id = trace.key_id;
  h.session_id = session.bytes();
  h.cost_nanos = providers_->WorstCostNanos(turn.model, prompt, turn.sampling.max_tokens, &h.tokens);
  h.lease_ms = int64_t{config_.usage_hold_lease_s} * 1000;
  h.keep_s = config_.idempotency_ttl_s;
  // Until the home says otherwise, this request may hold it (a call whose
  // answer was lost may have committed): the release on the way out is
  // harmless if it did not.
  usage_.hold_id = h.hold_id;
  usage_.keyed = h.keyed;
  usage_.code = kUsageHeld;
  // A home that does not answer fails the turn (503): its budget, if any,
  // cannot be checked. The user's requests need the home anyway: a key's
  // lookup reads it (is the user disabled?), so once a worker's cached key
  // expires ([auth] key_cache_ttl_ms) every request of that user gets 503.
  int code = store_->HoldUsage(turn.user, h, &usage_.room);
  if (code <= -11 && store_->ReapUsage(turn.user) > 0) code = store_->HoldUsage(turn.user, h, &usage_.room);
  usage_.code = code;
  if (code != kUsageHeld && code != kUsageHeldByOther) usage_.hold_id.clear();
  if (code == kUsageNotHeld && config_.usage_budget_cache_ms > 0) {
    if (no_budget_.size() >= 10000) no_budget_.clear();  // Bounded: a worker thread's recent users.
    no_budget_[who] = now + int64_t{config_.usage_budget_cache_ms} * 1000;
  }
  if (code <= -11) return BudgetRefusal(code, turn.user, trace.key_id);
  return std::nullopt;
}

void TurnRunner::FillUsage(Completion* c) const {
  if (!config_.usage_ledger || usage_.code == 0) return;
  if (c->prompt_tokens < 0 || c->completion_tokens < 0) {
    c->prompt_tokens = c->prompt_tokens < 0 ? usage_.prompt_estimate : c->prompt_tokens;
    c->completion_tokens = c->completion_tokens < 0 ? EstimateTokens(c->content) : c->completion_tokens;
    c->usage_estimated = true;
  }
  if (c->cost_nanos < 0) {
    // The reported model has no price (a dated snapshot of the one asked
    // for, say): priced as the model asked for, at the highest price any
    // provider that may answer it has (-1 still when none has one).
    c->cost_nanos = providers_->HighestCostNanos(usage_.model, c->prompt_tokens, c->completion_tokens);
  }
}

void TurnRunner::SettleUsage(const UserId& user, const Completion& answer) {
  if (usage_.settled || (usage_.code != kUsageHeld && usage_.code != kUsageHeldByOther && usage_.code != kUsageNotHeld))
    return;
  UsageAmount used;
  used.model = answer.model;
  used.prompt_tokens = std::max<int64_t>(answer.prompt_tokens, 0);
  used.cached_tokens = std::max<int64_t>(answer.cached_tokens, 0);
  used.completion_tokens = std::max<int64_t>(answer.completion_tokens, 0);
  used.cost_nanos = answer.cost_nanos;
  try {
    if (usage_.code == kUsageNotHeld) {
      store_->AddUsage(user, usage_.key_id, used);
    } else {
      store_->SettleUsage(user, usage_.hold_id, used);
    }
    usage_.settled = true;
  } catch (const DbError& e) {
    // A held turn's answer is stored and names its hold: the reaper settles
    // it once the lease runs out. One that held nothing is not counted
    // (docs/architecture.md, "Usage and budgets": the one gap).
    LOG_WARN("usage: an answer is stored but not yet counted (%s)", e.what());
  }
}

void TurnRunner::ReleaseUsage(const UserId& user) {
  // Only a hold this request made, not named by an Idempotency-Key (a retry
  // of the key may be running under it: it ends settled, or by its lease),
  // and only when no answer can be stored: an answer whose write may have
  // landed is the reaper's to settle.
  if (usage_.code != kUsageHeld || usage_.keyed || usage_.settled || usage_.answer_maybe_stored) return;
  try {
    store_->ReleaseUsage(user, usage_.hold_id);
  } catch (const DbError& e) {
    LOG_WARN("usage: could not release a hold (%s); its lease frees it", e.what());
  }
  usage_.settled = true;
}

TurnOutcome TurnRunner::BudgetRefusal(int code, const UserId& user, const std::string& key_id) {
  const bool of_key = code <= -21;
  const int kind = std::clamp(of_key ? -code - 20 : -code - 10, 1, 6);
  static const char* kWhat[] = {"",
                                "tokens per day",
                                "tokens per month",
                                "cost per day",
                                "cost per month",
                                "concurrent turns",
                                "cost (the model has no price)"};
  std::string message = std::string("the ") + (of_key ? "API key's" : "user's") + " budget of " + kWhat[kind] +
                        " does not allow this turn";
  int64_t limit = -1, remaining = -1;
  int64_t reset_s = kind == 1 || kind == 3   ? NextUtcPeriodStart(false) - std::time(nullptr)
                    : kind == 2 || kind == 4 ? NextUtcPeriodStart(true) - std::time(nullptr)
                                             : 1;
  try {
    const UsageState state = store_->ReadUsageState(user, key_id);
    for (size_t i = 0; i < state.budgets.size() && i < state.used.size(); ++i) {
      const bool budget_of_key = state.budgets[i].key_id != std::string(8, '\0');
      if (budget_of_key != of_key) continue;
      const UsageBudget& b = state.budgets[i];
      const UsageState::Used& u = state.used[i];
      switch (kind) {
        case 1:
          limit = b.tokens_day, remaining = b.tokens_day - u.tokens_day - u.held_tokens;
          break;
        case 2:
          limit = b.tokens_month, remaining = b.tokens_month - u.tokens_month - u.held_tokens;
          break;
        case 3:
          limit = b.cost_day, remaining = b.cost_day - u.cost_day - u.held_cost;
          break;
        case 4:
          limit = b.cost_month, remaining = b.cost_month - u.cost_month - u.held_cost;
          break;
        case 5:
          limit = b.concurrent, remaining = b.concurrent - u.held_count;
          break;
        default:
          break;
      }
    }
  } catch (const DbError& e) {
    LOG_WARN("usage: a budget refused a turn; its figures could not be read (%s)", e.what());
  }
  remaining = std::max<int64_t>(remaining, 0);
  const bool cost = kind == 3 || kind == 4;
  auto amount = [&](int64_t v) { return cost ? "$" + UsdText(v) : std::to_string(v); };
  if (limit >= 0) {
    message += ": limit " + amount(limit) + ", remaining " + amount(remaining);
    message += kind == 5 ? " (a turn ends)" : ", resets in " + std::to_string(reset_s) + " s";
  }
  TurnOutcome out = TurnOutcome::Refused(429, "budget_exceeded", message, reset_s * 1000);
  if (limit >= 0 && kind != 6)
    AddRateLimit(&out.headers, kind == 5 ? "turns" : cost ? "usd" : "tokens", limit, remaining, reset_s);
  out.headers.emplace_back("x-chatllm-budget", std::string(of_key ? "key" : "user") + "." +
                                                   (kind == 1   ? "tokens_day"
                                                    : kind == 2 ? "tokens_month"
                                                    : kind == 3 ? "cost_day"
                                                    : kind == 4 ? "cost_month"
                                                    : kind == 5 ? "concurrent"
                                                                : "unpriced"));
  if (observer_) observer_->OnBudgetRefusal(of_key, kind);
  return out;
}

}  // namespace chatllm
