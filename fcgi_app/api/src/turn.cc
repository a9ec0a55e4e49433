// The turn use case (api/turn.h): two transactions around the provider's
// answer — the user message (with its Idempotency-Key), then the answer
// (completing the key) — and every way a turn can end, as an outcome.

#include "api/turn.h"

#include <algorithm>

#include "api/api_json.h"
#include "base/json.h"
#include "base/log.h"
#include "base/time_util.h"
#include "base/tokens.h"
#include "store/db_error.h"

namespace chatllm {

const std::string& TurnProgress::partial() const {
  static const std::string kNone;
  return kNone;
}

TurnOutcome TurnOutcome::Refused(int status, std::string code, std::string message, int64_t retry_after_ms) {
  TurnOutcome out;
  out.kind = Kind::kRefused;
  out.error = Status::Error(status, std::move(code), std::move(message));
  out.retry_after_ms = retry_after_ms;
  return out;
}

namespace {

TurnOutcome Failed(const MessageRecord& user, int status, std::string code, std::string message,
                   int64_t retry_after_ms) {
  TurnOutcome out = TurnOutcome::Refused(status, std::move(code), std::move(message), retry_after_ms);
  out.kind = TurnOutcome::Kind::kFailed;
  out.user = user;
  return out;
}

TurnOutcome Gone() {
  TurnOutcome out;
  out.kind = TurnOutcome::Kind::kGone;
  return out;
}

TurnOutcome NoSession() { return TurnOutcome::Refused(404, "session_not_found", "no session with this id"); }

TurnOutcome ModelNotSupported(const std::string& model) {
  return TurnOutcome::Refused(400, "model_not_supported", "no configured provider serves the model '" + model + "'");
}

void ApplySampling(const Sampling& s, ProviderRequest* r) {
  r->max_tokens = s.max_tokens;
  r->temperature = s.temperature;
  r->top_p = s.top_p;
  r->stop = s.stop;
}

// A provider failure's Retry-After: a rate limit's own (at least a second).
int64_t ProviderRetryAfter(const ProviderError& e) {
  return e.kind() == ProviderErrorKind::kRateLimited ? std::max<int64_t>(e.retry_after_ms(), 1000) : -1;
}

// The context within the token budget: drops the oldest messages until the
// turn's own text, the system prompt and the history fit.
void FitBudget(int64_t budget, int64_t own, TurnContext* ctx) {
  int64_t spent = own + (ctx->system_prompt.empty() ? 0 : EstimateTokens(ctx->system_prompt));
  for (const MessageRecord& m : ctx->messages) spent += EstimateTokens(m.content);
  size_t drop = 0;
  while (spent > budget && drop < ctx->messages.size()) spent -= EstimateTokens(ctx->messages[drop++].content);
  ctx->messages.erase(ctx->messages.begin(), ctx->messages.begin() + static_cast<std::ptrdiff_t>(drop));
}

}  // namespace

std::string TurnRunner::AssistantMeta(const std::string& request_id, const Completion& c) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  w.Key("request_id");
  w.String(request_id);
  w.Key("provider");
  w.String(c.provider);
  w.Key("model");
  w.String(c.model);
  w.Key("finish_reason");
  w.String(c.finish_reason);
  if (c.prompt_tokens >= 0 && c.completion_tokens >= 0) {
    w.Key("usage");
    w.StartObject();
    w.Key("prompt_tokens");
    w.Int64(c.prompt_tokens);
    w.Key("completion_tokens");
    w.Int64(c.completion_tokens);
    w.Key("total_tokens");
    w.Int64(c.prompt_tokens + c.completion_tokens);
    w.EndObject();
  }
  w.Key("latency_ms");
  w.Double(static_cast<double>(c.latency_us / 100) / 10.0);
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

// One of a user's places for concurrent turns on this instance, held for the
// life of a turn.
class TurnRunner::Slot {
 public:
  explicit Slot(UserLimits* limits) : limits_(limits) {}
  ~Slot() { limits_->EndTurn(); }
  Slot(const Slot&) = delete;
  Slot& operator=(const Slot&) = delete;

 private:
  UserLimits* limits_;
};

TurnRunner::TurnRunner(const Config& config, Store* store, ProviderChain* providers, Observer* observer,
                       UserLimits* limits)
    : config_(config), store_(store), providers_(providers), observer_(observer), limits_(limits) {}

std::optional<TurnOutcome> TurnRunner::Admit(const UserId& user, std::unique_ptr<Slot>* slot) {
  const int max_turns = (limits_ && !user.empty()) ? config_.max_concurrent_turns_per_user : 0;
  if (max_turns == 0) return std::nullopt;
  if (!limits_->TryBeginTurn(user, max_turns)) {
    return TurnOutcome::Refused(429, "too_many_concurrent_turns",
                                "this user already has " + std::to_string(max_turns) + " turns in progress", 1000);
  }
  *slot = std::make_unique<Slot>(limits_);
  return std::nullopt;
}

TurnOutcome TurnRunner::Run(const SessionId& id, TurnRequest turn, RequestTrace* trace, TurnProgress& progress) {
  if (!turn.model.empty() && !providers_->Serves(turn.model)) return ModelNotSupported(turn.model);
  std::unique_ptr<Slot> slot;
  if (auto refused = Admit(turn.user, &slot)) return *refused;
  try {
    return Begin(id, turn, trace, progress);
  } catch (const DbError& e) {
    // Before the user message was stored (or with its outcome unknown, which
    // the message says).
    Status err = DbStatus(e, "a turn");
    return TurnOutcome::Refused(err.http_status(), err.code(), err.message(), err.http_status() == 503 ? 1000 : -1);
  }
}

TurnOutcome TurnRunner::Begin(const SessionId& id, TurnRequest& turn, RequestTrace* trace, TurnProgress& progress) {
  // The context comes first: a request that cannot be answered (no session,
  // a model no provider serves) stores nothing.
  TurnContext ctx;
  const int64_t own = EstimateTokens(turn.content);
  if (providers_->NeedsContext(turn.model) || (turn.model.empty() && providers_->RoutesByModel())) {
    std::optional<TurnContext> loaded = store_->LoadContext(
        id, config_.context_messages, std::max<int64_t>(config_.context_tokens - own, 0), turn.user);
    if (!loaded) return NoSession();
    ctx = std::move(*loaded);
    if (turn.model.empty()) turn.model = ctx.model;
    if (!turn.model.empty() && !providers_->Serves(turn.model)) return ModelNotSupported(turn.model);
  }
  if (turn.system) ctx.system_prompt = *turn.system;
  FitBudget(config_.context_tokens, own, &ctx);

  // Transaction 1: the user message, durable before the provider is asked
  // (with its Idempotency-Key, if any). Room is left for its answer.
  const std::string user_meta = UserMetaJson(trace->request_id);
  MessageRecord user{0, "user", std::move(turn.content), 0, NowMicros(), user_meta};
  const IdempotencyKey* idem = turn.idempotency ? &*turn.idempotency : nullptr;
  // This request's hold on its key: only the attempt holding it may answer
  // under it (a retry takes a key over after a failure or the lease).
  int64_t attempt = 0;
  if (idem) {
    RandomBytes(&attempt, sizeof(attempt));
    attempt = (attempt & INT64_MAX) | 1;
  }
  AppendRequest first;
  first.role = user.role;
  first.content = user.content;
  first.created_us = user.created_us;
  first.meta_json = user_meta;
  first.max_messages =
      config_.max_messages_per_session > 0 ? std::max<int64_t>(config_.max_messages_per_session - 1, 1) : 0;
  first.claim = idem;
  first.attempt = attempt;
  AppendResult stored = store_->Append(id, turn.user, first);
  switch (stored.idempotency.outcome) {
    case IdempotencyOutcome::kNew:
      break;
    case IdempotencyOutcome::kReplay:
      return Replay(id, turn.user, stored.idempotency);
    case IdempotencyOutcome::kInFlight:
      return TurnOutcome::Refused(409, "idempotency_key_in_use",
                                  "a request with this Idempotency-Key is still being processed; retry later", 1000);
    case IdempotencyOutcome::kMismatch:
      return TurnOutcome::Refused(422, "idempotency_key_reused",
                                  "this Idempotency-Key was used for a different request");
  }
  if (stored.full) {
    return TurnOutcome::Refused(
        409, "session_full",
        "the session holds the maximum of " + std::to_string(config_.max_messages_per_session) + " messages");
  }
  user.seq = stored.seq;
  if (user.seq == 0) return NoSession();
  // From here the user message is stored. A keyed turn that fails keeps its
  // key, marked failed, on every way out below: the retry with the same key
  // answers this user message instead of storing it again.
  TurnOutcome out;
  const int64_t user_seq = user.seq;
  try {
    out = Answer(id, turn, std::move(ctx), std::move(user), stored.reused, attempt, trace, progress);
  } catch (const DbError& e) {
    Status err = DbStatus(e, "a turn after storing its user message");
    MessageRecord at;
    at.seq = user_seq;
    out = Failed(at, err.http_status(), err.code(), err.message(), err.http_status() == 503 ? 1000 : -1);
  } catch (...) {
    if (idem) store_->FailTurnKey(id, turn.user, *idem, attempt);
    throw;
  }
  if (idem && out.kind != TurnOutcome::Kind::kAnswered) store_->FailTurnKey(id, turn.user, *idem, attempt);
  return out;
}

TurnOutcome TurnRunner::Replay(const SessionId& id, const UserId& user, const IdempotencyResult& stored) {
  TurnOutcome out;
  out.kind = TurnOutcome::Kind::kReplayed;
  out.replay_status = stored.status;
  if (stored.answer_seq == 0) {
    // Completed by a binary before schema 8: the body itself, a JSON object.
    if (stored.response.empty() || stored.response.front() != '{') {
      LOG_ERROR("session %s: an idempotency key's stored response is neither a body nor a recipe", id.text().c_str());
      return TurnOutcome::Refused(500, "internal_error", "internal error; see the server log");
    }
    out.replay_body = stored.response;
    return out;
  }
  out.recipe = stored.response;
  std::optional<std::vector<MessageRecord>> both = store_->ReadMessages(id, {stored.user_seq, stored.answer_seq}, user);
  if (!both) return NoSession();
  for (MessageRecord& m : *both) {
    if (m.seq == stored.user_seq)
      out.user = std::move(m);
    else if (m.seq == stored.answer_seq)
      out.assistant = std::move(m);
  }
  if (out.user.seq == 0 || out.assistant.seq == 0) {
    // Messages are never deleted apart from their session (whose keys go
    // with it): a key naming a missing message is a bug to look at.
    LOG_ERROR("session %s: an idempotency key names messages %lld and %lld, which are not stored", id.text().c_str(),
              static_cast<long long>(stored.user_seq), static_cast<long long>(stored.answer_seq));
    return TurnOutcome::Refused(500, "internal_error", "internal error; see the server log");
  }
  return out;
}

TurnOutcome TurnRunner::Answer(const SessionId& id, const TurnRequest& turn, TurnContext ctx, MessageRecord user,
                               bool reused, int64_t attempt, RequestTrace* trace, TurnProgress& progress) {
  const IdempotencyKey* idem = turn.idempotency ? &*turn.idempotency : nullptr;
  if (reused) {
    // A retry with the key of an earlier attempt that stored this user
    // message and then failed: answer that message (with its request id),
    // in the context of what came before it.
    LOG_INFO("session %s: Idempotency-Key retry answers the stored user message %lld", id.text().c_str(),
             static_cast<long long>(user.seq));
    auto again = store_->ListMessages(id, user.seq - 1, 1, turn.user);
    if (again && again->size() == 1) user = std::move((*again)[0]);
    while (!ctx.messages.empty() && ctx.messages.back().seq >= user.seq) ctx.messages.pop_back();
  }

  ProviderRequest ask;
  ask.model = turn.model;
  ask.system = std::move(ctx.system_prompt);
  ask.messages.reserve(ctx.messages.size() + 1);
  for (MessageRecord& m : ctx.messages) ask.messages.push_back(ChatMessage{std::move(m.role), std::move(m.content)});
  ask.messages.push_back(ChatMessage{user.role, user.content});
  ApplySampling(turn.sampling, &ask);
  ask.request_id = trace->request_id;

  DeltaSink* sink = progress.sink();
  progress.ModelChosen(ask.model);
  if (sink && !progress.Begin(&user)) return Gone();  // The client left before the first byte.
  Completion answer;
  try {
    answer = providers_->Complete(std::move(ask), sink, observer_, trace);
  } catch (const ProviderError& e) {
    LOG_WARN("session %s: no answer (%s): %s", id.text().c_str(), e.code(), e.what());
    std::optional<MessageRecord> partial = StorePartial(id, turn, user, e, trace, progress);
    if (e.kind() == ProviderErrorKind::kCancelled) return Gone();
    TurnOutcome out = Failed(user, e.status(), e.code(), e.what(), ProviderRetryAfter(e));
    out.partial = std::move(partial);
    return out;
  }
  // Transaction 2: the answer, linked to the user message, and with an
  // Idempotency-Key its completion: the status and the recipe a replay
  // renders the two messages with (nothing is rendered in the transaction).
  const std::string meta = AssistantMeta(trace->request_id, answer);
  MessageRecord assistant{0, "assistant", answer.content, user.seq, std::max(NowMicros(), user.created_us), meta};
  AppendRequest second;
  second.role = assistant.role;
  second.content = assistant.content;
  second.created_us = assistant.created_us;
  second.reply_to = user.seq;
  second.meta_json = meta;
  // No limit for the answer: the turn was admitted with room for it, and a
  // concurrent turn taking that room must not turn a stored user message
  // into a refusal (a 409 must mean nothing was stored). A session can so
  // exceed max_messages_per_session by the answers of turns in flight.
  second.max_messages = 0;
  second.complete = idem;
  second.complete_status = progress.answer_status();
  second.complete_recipe = progress.recipe();
  second.attempt = attempt;
  AppendResult answered = store_->Append(id, turn.user, second);
  if (answered.taken_over) {
    // This request outlived its key's lease and a retry took the turn over:
    // the retry's answer is the one stored; this one is dropped.
    LOG_WARN("session %s: a retry took this turn's Idempotency-Key over; its answer is not stored", id.text().c_str());
    return Failed(user, 409, "idempotency_key_in_use",
                  "a retry with this Idempotency-Key took the turn over; retry to get its answer", 1000);
  }
  assistant.seq = answered.seq;
  if (assistant.seq == 0) {
    return TurnOutcome::Refused(404, "session_not_found", "the session was deleted while the provider answered");
  }
  TurnOutcome out;
  out.kind = TurnOutcome::Kind::kAnswered;
  out.user = std::move(user);
  out.assistant = std::move(assistant);
  return out;
}

std::optional<MessageRecord> TurnRunner::StorePartial(const SessionId& id, const TurnRequest& turn,
                                                      const MessageRecord& user, const ProviderError& e,
                                                      RequestTrace* trace, TurnProgress& progress) {
  // Text the client already saw is kept, marked as incomplete.
  if (progress.partial().empty()) return std::nullopt;
  Completion cut;
  cut.content = progress.partial();
  cut.provider = trace->provider;
  cut.model = turn.model;
  cut.finish_reason = e.kind() == ProviderErrorKind::kCancelled ? "client_disconnected" : "provider_error";
  const std::string meta = AssistantMeta(trace->request_id, cut);
  MessageRecord partial{0, "assistant", cut.content, user.seq, std::max(NowMicros(), user.created_us), meta};
  AppendRequest rest;
  rest.role = "assistant";
  rest.content = partial.content;
  rest.created_us = partial.created_us;
  rest.reply_to = user.seq;
  rest.meta_json = meta;
  rest.max_messages = 0;  // An admitted turn's answer is always stored (see Answer).
  partial.seq = store_->Append(id, turn.user, rest).seq;
  if (partial.seq == 0) return std::nullopt;
  return partial;
}

TurnOutcome TurnRunner::RunStateless(const ChatCompletionRequest& req, const UserId& user, RequestTrace* trace,
                                     TurnProgress& progress) {
  std::unique_ptr<Slot> slot;  // A stateless turn takes a place like any other.
  if (auto refused = Admit(user, &slot)) return *refused;
  ProviderRequest ask;
  ask.model = req.model;
  ask.system = req.system;
  ask.messages = req.messages;
  ApplySampling(req.sampling, &ask);
  ask.request_id = trace->request_id;
  DeltaSink* sink = progress.sink();
  if (sink && !progress.Begin(nullptr)) return Gone();
  try {
    Completion answer = providers_->Complete(std::move(ask), sink, observer_, trace);
    TurnOutcome out;
    out.kind = TurnOutcome::Kind::kAnswered;
    out.assistant = MessageRecord{0, "assistant", std::move(answer.content),
                                  0, NowMicros(), AssistantMeta(trace->request_id, answer)};
    return out;
  } catch (const ProviderError& e) {
    if (e.kind() == ProviderErrorKind::kCancelled) return Gone();
    LOG_WARN("chat completion: no answer (%s): %s", e.code(), e.what());
    return TurnOutcome::Refused(e.status(), e.code(), e.what(), ProviderRetryAfter(e));
  }
}

}  // namespace chatllm
