// The turn use case (api/turn.h): two transactions around the provider's
// answer — the user message (with its Idempotency-Key), then the answer
// (completing the key) — and every way a turn can end, as an outcome.

#include "api/turn.h"

#include <algorithm>

#include "api/api_json.h"
#include "base/api_key.h"
#include "base/json.h"
#include "base/log.h"
#include "base/time_util.h"
#include "base/tokens.h"
#include "durable_turn.h"
#include "providers/pricing.h"
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

// A durable turn whose lease ran out before its producer ended it: taken
// for dead and ended 'incomplete' by a reader; nothing more is stored.
TurnOutcome TurnLost(const MessageRecord& user) {
  return Failed(user, 409, "turn_lost", "the turn outlived its lease and was ended as incomplete; its events are kept",
                -1);
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

std::string TurnRunner::AssistantMeta(const std::string& request_id, const Completion& c, const std::string& hold_hex) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  w.Key("request_id");
  w.String(request_id);
  if (!hold_hex.empty()) {
    w.Key("hold");
    w.String(hold_hex);
  }
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
    if (c.cached_tokens >= 0) {
      w.Key("cached_tokens");
      w.Int64(c.cached_tokens);
    }
    if (c.usage_estimated) {
      w.Key("estimated");
      w.Bool(true);
    }
    if (c.cost_nanos >= 0) {
      // A decimal string: exact, as a float sum of many answers would not be.
      w.Key("cost_usd");
      w.String(UsdText(c.cost_nanos));
    }
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
  usage_ = Usage{};
  // Whatever way the turn ends, a hold its answer did not settle is freed.
  struct Release {
    TurnRunner* runner;
    const UserId& user;
    ~Release() { runner->ReleaseUsage(user); }
  } release{this, turn.user};
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
  // The turn's worst case is held on the user's home before anything is
  // stored: a budget that refuses it refuses the turn.
  if (auto refused = HoldUsage(id, turn, ctx, *trace)) return *refused;
  progress.RateLimits(RateLimitHeaders());

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
  // A streamed turn is durable (durable_turn.h): it opens with its user
  // message, in the same transaction.
  if (progress.sink() && config_.durable_turns) {
    first.open_turn = DurableTurn::NewToken();
    first.producer = DurableTurn::NewToken();
    first.lease_ms = config_.turn_lease_ms;
  }
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
    case IdempotencyOutcome::kOverLimit:  // Only a create says this.
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
  if (usage_.code == kUsageSettled) {
    // The key's hold was settled by an earlier attempt that stored only a
    // cut-off answer (its key then failed): this attempt asks the provider
    // again, so it holds again, as a turn of its own.
    TurnRequest again{user.content, turn.model, turn.system, turn.sampling, turn.user, std::nullopt};
    if (std::optional<TurnOutcome> refused = HoldUsage(id, again, ctx, *trace)) {
      if (idem) store_->FailTurnKey(id, turn.user, *idem, attempt);
      if (!stored.reused) {
        refused->kind = TurnOutcome::Kind::kFailed;  // This attempt stored its user message.
        refused->user = user;
      }
      return *refused;
    }
    progress.RateLimits(RateLimitHeaders());
  }
  // From here the user message is stored. A keyed turn that fails keeps its
  // key, marked failed, on every way out below: the retry with the same key
  // answers this user message instead of storing it again.
  TurnOutcome out;
  const int64_t user_seq = user.seq;
  try {
    const std::pair<int64_t, int64_t> opened =
        stored.turn_opened ? std::make_pair(first.open_turn, first.producer) : std::make_pair(int64_t{0}, int64_t{0});
    out = Answer(id, turn, std::move(ctx), std::move(user), stored.reused, attempt, opened, trace, progress);
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
                               bool reused, int64_t attempt, std::pair<int64_t, int64_t> opened, RequestTrace* trace,
                               TurnProgress& progress) {
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
  // A streamed turn is durable: stored as it comes, it outlives its client
  // (durable_turn.h). Opening it throws DbError like any store call here.
  std::optional<DurableTurn> durable;
  if (sink && config_.durable_turns) {
    durable.emplace(config_, store_, id, turn.user, progress, sink);
    if (opened.first != 0) {
      durable->Adopt(opened.first, opened.second);
    } else if (!durable->Open(user.seq)) {
      return TurnOutcome::Refused(404, "session_not_found", "the session was deleted while the turn began");
    }
    progress.TurnOpened(id, durable->turn_id());
    sink = &*durable;
  }
  // The client left before the first byte: a durable turn goes on.
  if (sink && !progress.Begin(&user) && !durable) return Gone();
  Completion answer;
  std::optional<KeepLease> keep;
  if (durable) keep.emplace(observer_, &*durable);
  try {
    answer = providers_->Complete(std::move(ask), sink, keep ? &*keep : observer_, trace);
    FillUsage(&answer);
    // The events still waiting go with the answer (below).
    if (durable && durable->failed()) throw *durable->failed();
    if (durable && durable->lost()) return TurnLost(user);
  } catch (const ProviderError& e) {
    LOG_WARN("session %s: no answer (%s): %s", id.text().c_str(), e.code(), e.what());
    // The events still waiting first: the partial answer stored below is
    // all the text, and its events must be too (a reader resumes from them).
    if (durable) durable->Flush();
    if (durable && durable->lost()) return TurnLost(user);
    if (durable && durable->failed()) throw *durable->failed();
    std::optional<MessageRecord> partial =
        StorePartial(id, turn, user, e, trace, progress, durable ? &*durable : nullptr);
    if (durable && durable->cancel_requested()) {
      TurnOutcome out = Failed(user, 409, "turn_cancelled", "the turn was cancelled", -1);
      out.partial = std::move(partial);
      out.turn_id = durable->turn_id();
      return out;
    }
    if (e.kind() == ProviderErrorKind::kCancelled) return Gone();
    TurnOutcome out = Failed(user, e.status(), e.code(), e.what(), ProviderRetryAfter(e));
    out.partial = std::move(partial);
    if (durable) out.turn_id = durable->turn_id();
    return out;
  }
  // Transaction 2: the answer, linked to the user message, and with an
  // Idempotency-Key its completion: the status and the recipe a replay
  // renders the two messages with (nothing is rendered in the transaction).
  const std::string meta = AssistantMeta(trace->request_id, answer, usage_.hold_id.empty() ? "" : Hex(usage_.hold_id));
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
  if (durable) {
    second.close_turn = durable->turn_id();
    second.producer = durable->producer();
    second.turn_state = "completed";
    second.turn_events = &durable->pending();
    second.first_event = durable->next_event();
    second.lease_ms = config_.turn_lease_ms;
  }
  // From here the answer may be stored (even a write that fails may have
  // committed): its hold is settled, by this turn or by the reaper, never
  // released.
  usage_.answer_maybe_stored = true;
  AppendResult answered = store_->Append(id, turn.user, second);
  // Said not to be stored: the hold is released (a keyed one is left to its key).
  if (answered.turn_lost || (answered.seq == 0 && !answered.taken_over)) usage_.answer_maybe_stored = false;
  if (answered.turn_lost) return TurnLost(user);
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
  SettleUsage(turn.user, answer);
  TurnOutcome out;
  out.kind = TurnOutcome::Kind::kAnswered;
  out.user = std::move(user);
  out.assistant = std::move(assistant);
  if (durable) out.turn_id = durable->turn_id();
  return out;
}

std::optional<MessageRecord> TurnRunner::StorePartial(const SessionId& id, const TurnRequest& turn,
                                                      const MessageRecord& user, const ProviderError& e,
                                                      RequestTrace* trace, TurnProgress& progress,
                                                      DurableTurn* durable) {
  // Text the client already saw (a durable turn: all it produced, which its
  // events hold) is kept, marked as incomplete; a durable turn ends with it.
  const std::string& text = durable ? durable->text() : progress.partial();
  const char* end_state = durable && durable->cancel_requested() ? "cancelled" : "failed";
  if (text.empty()) {
    if (durable) store_->CloseTurn(id, turn.user, durable->turn_id(), durable->producer(), end_state);
    return std::nullopt;
  }
  Completion cut;
  cut.content = text;
  cut.provider = trace->provider;
  cut.model = turn.model;
  cut.finish_reason = durable                                     ? durable->stop_reason()
                      : e.kind() == ProviderErrorKind::kCancelled ? "client_disconnected"
                                                                  : "provider_error";
  // What the provider produced for it is charged: the prompt and the text
  // kept, estimated (no provider reports usage for a cut-off answer).
  FillUsage(&cut);
  const std::string meta = AssistantMeta(trace->request_id, cut, usage_.hold_id.empty() ? "" : Hex(usage_.hold_id));
  MessageRecord partial{0, "assistant", cut.content, user.seq, std::max(NowMicros(), user.created_us), meta};
  AppendRequest rest;
  rest.role = "assistant";
  rest.content = partial.content;
  rest.created_us = partial.created_us;
  rest.reply_to = user.seq;
  rest.meta_json = meta;
  rest.max_messages = 0;  // An admitted turn's answer is always stored (see Answer).
  if (durable) {
    rest.close_turn = durable->turn_id();
    rest.producer = durable->producer();
    rest.turn_state = end_state;
  }
  usage_.answer_maybe_stored = true;
  partial.seq = store_->Append(id, turn.user, rest).seq;
  if (partial.seq == 0) return std::nullopt;
  SettleUsage(turn.user, cut);
  return partial;
}

TurnOutcome TurnRunner::RunStateless(const ChatCompletionRequest& req, const UserId& user, RequestTrace* trace,
                                     TurnProgress& progress) {
  std::unique_ptr<Slot> slot;  // A stateless turn takes a place like any other.
  if (auto refused = Admit(user, &slot)) return *refused;
  // And holds its worst case like any other (no session: no stored answer
  // to settle from, so a hold whose turn died is released).
  usage_ = Usage{};
  struct Release {
    TurnRunner* runner;
    const UserId& user;
    ~Release() { runner->ReleaseUsage(user); }
  } release{this, user};
  {
    TurnRequest as_turn{req.messages.empty() ? "" : req.messages.back().content,
                        req.model,
                        std::nullopt,
                        req.sampling,
                        user,
                        std::nullopt};
    TurnContext ctx;
    ctx.system_prompt = req.system;
    ctx.messages.reserve(req.messages.size());
    for (size_t i = 0; i + 1 < req.messages.size(); ++i) {
      ctx.messages.push_back(MessageRecord{0, req.messages[i].role, req.messages[i].content, 0, 0, ""});
    }
    try {
      if (auto refused = HoldUsage(SessionId::FromBytes(std::string(16, '\0')), as_turn, ctx, *trace)) return *refused;
      progress.RateLimits(RateLimitHeaders());
    } catch (const DbError& e) {
      Status err = DbStatus(e, "a turn");
      return TurnOutcome::Refused(err.http_status(), err.code(), err.message(), err.http_status() == 503 ? 1000 : -1);
    }
  }
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
    FillUsage(&answer);
    usage_.answer_maybe_stored = true;
    SettleUsage(user, answer);
    TurnOutcome out;
    out.kind = TurnOutcome::Kind::kAnswered;
    out.assistant = MessageRecord{0, "assistant", std::move(answer.content),
                                  0, NowMicros(), AssistantMeta(trace->request_id, answer)};
    return out;
  } catch (const ProviderError& e) {
    // Text the client already read is charged (its prompt and the text,
    // estimated), as a stored cut-off answer is.
    if (!progress.partial().empty()) {
      Completion cut;
      cut.content = progress.partial();
      cut.model = req.model;
      FillUsage(&cut);
      usage_.answer_maybe_stored = true;
      SettleUsage(user, cut);
    }
    if (e.kind() == ProviderErrorKind::kCancelled) return Gone();
    LOG_WARN("chat completion: no answer (%s): %s", e.code(), e.what());
    return TurnOutcome::Refused(e.status(), e.code(), e.what(), ProviderRetryAfter(e));
  }
}

}  // namespace chatllm
