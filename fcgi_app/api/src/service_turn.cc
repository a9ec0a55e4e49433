// Turns: POST /v1/sessions/{id}/messages and POST /v1/chat/completions,
// answered as JSON or streamed as Server-Sent Events (docs/api.md,
// docs/providers.md).

#include <algorithm>
#include <functional>

#include "api/api_json.h"
#include "base/ids.h"
#include "base/log.h"
#include "api/service.h"
#include "base/sse.h"
#include "base/time_util.h"
#include "base/http.h"

namespace chatllm {

// How a turn reports: its success, its failure and, when streaming, its
// progress. One per request.
class TurnFormat {
 public:
  virtual ~TurnFormat() = default;
  // Streaming only: sends the head (and the stored user message, when there
  // is one). False when the client is already gone.
  virtual bool Begin(const MessageRecord* user) { return true; }
  // The model the turn asks for, once known (before Begin): a request that
  // named none uses its session's.
  virtual void ModelChosen(const std::string& model) {}
  // Where the provider's text goes as it comes; null when not streaming.
  virtual DeltaSink* sink() { return nullptr; }
  // Text already sent to the client (streaming).
  virtual const std::string& partial() const {
    static const std::string kNone;
    return kNone;
  }
  // The answer. `user`/`assistant` are null for a stateless turn.
  virtual HttpResponse Done(const MessageRecord* user, const MessageRecord* assistant, const Completion& c) = 0;
  // The answer as a plain (not streamed) response: what an Idempotency-Key
  // replays.
  virtual HttpResponse Final(const MessageRecord* user, const MessageRecord* assistant, const Completion& c) {
    return Done(user, assistant, c);
  }
  // A failure after the user message was stored (or, stateless, after the
  // provider was asked). `partial`: the incomplete answer, when stored.
  virtual HttpResponse Failed(int status, const std::string& code, const std::string& message,
                              const MessageRecord* user, const MessageRecord* partial, int64_t retry_after_ms) = 0;
};

namespace {

// text/event-stream to the client through the ResponseStream, and the text
// sent so far.
class StreamingSink : public DeltaSink {
 public:
  StreamingSink(ResponseStream* stream, std::function<std::string(std::string_view)> frame)
      : stream_(stream), frame_(std::move(frame)) {}
  bool OnDelta(std::string_view text) override {
    sent_.append(text);
    return stream_->Send(frame_(text));
  }
  const std::string& sent() const { return sent_; }

 private:
  ResponseStream* stream_;
  std::function<std::string(std::string_view)> frame_;
  std::string sent_;
};

HttpResponse StreamHead(const RequestTrace& trace, uint64_t epoch) {
  HttpResponse head;
  head.status = 200;
  head.SetHeader("Content-Type", "text/event-stream; charset=utf-8");
  head.SetHeader("X-Accel-Buffering", "no");  // nginx passes each event on at once.
  head.SetHeader("X-Request-Id", trace.request_id);
  head.SetHeader("X-Shard-Map-Epoch", std::to_string(epoch));
  return head;
}

HttpResponse Streamed() {
  HttpResponse r;
  r.status = 200;
  r.streamed = true;
  return r;
}

std::string ErrorJson(const std::string& code, const std::string& message, const MessageRecord* partial) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  w.Key("error");
  w.StartObject();
  w.Key("code");
  w.String(code);
  w.Key("message");
  w.String(message);
  w.EndObject();
  if (partial) {
    w.Key("assistant");
    WriteMessage(w, *partial);
  }
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

// A turn's failure message, the same as JSON and as an event: after the user
// message was stored, it says at which seq.
std::string FailureMessage(const std::string& message, const MessageRecord* user) {
  return user ? message + "; the user message is stored as seq " + std::to_string(user->seq) : message;
}

HttpResponse FailedResponse(int status, const std::string& code, const std::string& message,
                            const MessageRecord* user, int64_t retry_after_ms) {
  HttpResponse r = ErrorResponse(status, code, FailureMessage(message, user));
  if (retry_after_ms >= 0) r.SetHeader("Retry-After", std::to_string((retry_after_ms + 999) / 1000));
  return r;
}

// POST /v1/sessions/{id}/messages without "stream": 201 {"user":..., "assistant":...}.
class NativeJson : public TurnFormat {
 public:
  HttpResponse Done(const MessageRecord* user, const MessageRecord* assistant, const Completion&) override {
    rapidjson::StringBuffer buf;
    JsonWriter w(buf);
    w.StartObject();
    w.Key("user");
    WriteMessage(w, *user);
    w.Key("assistant");
    WriteMessage(w, *assistant);
    w.EndObject();
    return JsonResponse(201, buf);
  }
  HttpResponse Failed(int status, const std::string& code, const std::string& message, const MessageRecord* user,
                      const MessageRecord*, int64_t retry_after_ms) override {
    return FailedResponse(status, code, message, user, retry_after_ms);
  }
};

// POST /v1/sessions/{id}/messages with "stream": true: events `user`,
// `delta`*, then `assistant` or `error` (docs/api.md).
class NativeSse : public TurnFormat {
 public:
  NativeSse(ResponseStream* stream, const RequestTrace& trace, const Store& store)
      : stream_(stream), trace_(trace), store_(store), sink_(stream, [](std::string_view text) {
          rapidjson::StringBuffer buf;
          JsonWriter w(buf);
          w.StartObject();
          w.Key("text");
          w.String(text.data(), text.size());
          w.EndObject();
          return SseEvent("delta", std::string_view(buf.GetString(), buf.GetSize()));
        }) {}
  bool Begin(const MessageRecord* user) override {
    return stream_->Start(StreamHead(trace_, store_.last_epoch())) && stream_->Send(SseEvent("user", MessageJson(*user)));
  }
  DeltaSink* sink() override { return &sink_; }
  const std::string& partial() const override { return sink_.sent(); }
  HttpResponse Done(const MessageRecord*, const MessageRecord* assistant, const Completion&) override {
    stream_->Send(SseEvent("assistant", MessageJson(*assistant)));
    return Streamed();
  }
  HttpResponse Final(const MessageRecord* user, const MessageRecord* assistant, const Completion& c) override {
    return NativeJson().Done(user, assistant, c);
  }
  HttpResponse Failed(int, const std::string& code, const std::string& message, const MessageRecord* user,
                      const MessageRecord* partial, int64_t) override {
    stream_->Send(SseEvent("error", ErrorJson(code, FailureMessage(message, user), partial)));
    return Streamed();
  }

 private:
  ResponseStream* stream_;
  const RequestTrace& trace_;
  const Store& store_;
  StreamingSink sink_;
};

// OpenAI's chat.completion object and its extension: with a session,
// "chatllm": {"session_id", "user_seq", "assistant_seq"}.
void WriteUsage(JsonWriter& w, const Completion& c) {
  w.Key("usage");
  if (c.prompt_tokens < 0 || c.completion_tokens < 0) {
    w.Null();
    return;
  }
  w.StartObject();
  w.Key("prompt_tokens");
  w.Int64(c.prompt_tokens);
  w.Key("completion_tokens");
  w.Int64(c.completion_tokens);
  w.Key("total_tokens");
  w.Int64(c.prompt_tokens + c.completion_tokens);
  w.EndObject();
}

void WriteSessionRef(JsonWriter& w, const std::string& session_id, const MessageRecord* user,
                     const MessageRecord* assistant) {
  if (session_id.empty() || !user) return;
  w.Key("chatllm");
  w.StartObject();
  w.Key("session_id");
  w.String(session_id);
  w.Key("user_seq");
  w.Int64(user->seq);
  if (assistant) {
    w.Key("assistant_seq");
    w.Int64(assistant->seq);
  }
  w.EndObject();
}

class OpenAiBase : public TurnFormat {
 public:
  OpenAiBase(const RequestTrace& trace, std::string session_id)
      : id_("chatcmpl-" + trace.request_id), created_(NowMicros() / 1000000), session_id_(std::move(session_id)) {}

 protected:
  void Head(JsonWriter& w, const char* object, const std::string& model) const {
    w.Key("id");
    w.String(id_);
    w.Key("object");
    w.String(object);
    w.Key("created");
    w.Int64(created_);
    w.Key("model");
    w.String(model);
  }
  std::string id_;
  int64_t created_;
  std::string session_id_;
};

class OpenAiJson : public OpenAiBase {
 public:
  using OpenAiBase::OpenAiBase;
  HttpResponse Done(const MessageRecord* user, const MessageRecord* assistant, const Completion& c) override {
    rapidjson::StringBuffer buf;
    JsonWriter w(buf);
    w.StartObject();
    Head(w, "chat.completion", c.model);
    w.Key("choices");
    w.StartArray();
    w.StartObject();
    w.Key("index");
    w.Int(0);
    w.Key("message");
    w.StartObject();
    w.Key("role");
    w.String("assistant");
    w.Key("content");
    w.String(c.content);
    w.EndObject();
    w.Key("logprobs");
    w.Null();
    w.Key("finish_reason");
    w.String(c.finish_reason);
    w.EndObject();
    w.EndArray();
    WriteUsage(w, c);
    WriteSessionRef(w, session_id_, user, assistant);
    w.EndObject();
    return JsonResponse(200, buf);
  }
  HttpResponse Failed(int status, const std::string& code, const std::string& message, const MessageRecord* user,
                      const MessageRecord*, int64_t retry_after_ms) override {
    return FailedResponse(status, code, message, user, retry_after_ms);
  }
};

// chat.completion.chunk events, `data: [DONE]` at the end; an error is a
// `data: {"error": ...}` event (what the OpenAI SDKs raise from).
class OpenAiSse : public OpenAiBase {
 public:
  OpenAiSse(ResponseStream* stream, const RequestTrace& trace, std::string session_id, std::string model,
            bool include_usage, uint64_t epoch)
      : OpenAiBase(trace, std::move(session_id)),
        stream_(stream),
        trace_(trace),
        model_(std::move(model)),
        include_usage_(include_usage),
        epoch_(epoch),
        sink_(stream, [this](std::string_view text) { return Chunk(&text, nullptr, nullptr); }) {}
  bool Begin(const MessageRecord*) override {
    if (!stream_->Start(StreamHead(trace_, epoch_))) return false;
    std::string_view empty;
    return stream_->Send(Chunk(&empty, nullptr, nullptr, true));
  }
  void ModelChosen(const std::string& model) override {
    if (model_.empty()) model_ = model;
  }
  DeltaSink* sink() override { return &sink_; }
  const std::string& partial() const override { return sink_.sent(); }
  HttpResponse Final(const MessageRecord* user, const MessageRecord* assistant, const Completion& c) override {
    return OpenAiJson(trace_, session_id_).Done(user, assistant, c);
  }
  HttpResponse Done(const MessageRecord* user, const MessageRecord* assistant, const Completion& c) override {
    model_ = c.model;
    std::string out = Chunk(nullptr, &c.finish_reason, nullptr);
    if (include_usage_) out += Chunk(nullptr, nullptr, &c);
    if (!session_id_.empty() && user) {
      rapidjson::StringBuffer buf;
      JsonWriter w(buf);
      w.StartObject();
      Head(w, "chat.completion.chunk", model_);
      w.Key("choices");
      w.StartArray();
      w.EndArray();
      WriteSessionRef(w, session_id_, user, assistant);
      w.EndObject();
      out += SseEvent("", std::string_view(buf.GetString(), buf.GetSize()));
    }
    out += SseEvent("", "[DONE]");
    stream_->Send(out);
    return Streamed();
  }
  HttpResponse Failed(int, const std::string& code, const std::string& message, const MessageRecord* user,
                      const MessageRecord*, int64_t) override {
    rapidjson::StringBuffer buf;
    JsonWriter w(buf);
    w.StartObject();
    w.Key("error");
    w.StartObject();
    w.Key("message");
    w.String(FailureMessage(message, user));
    w.Key("type");
    w.String("api_error");
    w.Key("code");
    w.String(code);
    w.EndObject();
    w.EndObject();
    stream_->Send(SseEvent("", std::string_view(buf.GetString(), buf.GetSize())));
    return Streamed();
  }

 private:
  // One chunk: a content delta, the finish reason, or (usage) the final
  // usage-only chunk with no choices.
  std::string Chunk(const std::string_view* text, const std::string* finish, const Completion* usage,
                    bool first = false) const {
    rapidjson::StringBuffer buf;
    JsonWriter w(buf);
    w.StartObject();
    Head(w, "chat.completion.chunk", model_);
    w.Key("choices");
    w.StartArray();
    if (!usage) {
      w.StartObject();
      w.Key("index");
      w.Int(0);
      w.Key("delta");
      w.StartObject();
      if (first) {
        w.Key("role");
        w.String("assistant");
      }
      if (text) {
        w.Key("content");
        w.String(text->data(), text->size());
      }
      w.EndObject();
      w.Key("logprobs");
      w.Null();
      w.Key("finish_reason");
      if (finish) w.String(*finish);
      else w.Null();
      w.EndObject();
    }
    w.EndArray();
    if (usage) WriteUsage(w, *usage);
    w.EndObject();
    return SseEvent("", std::string_view(buf.GetString(), buf.GetSize()));
  }

  ResponseStream* stream_;
  const RequestTrace& trace_;
  std::string model_;
  bool include_usage_;
  uint64_t epoch_;
  StreamingSink sink_;
};

std::string AssistantMetaJson(const std::string& request_id, const Completion& c) {
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
  if (c.prompt_tokens >= 0 && c.completion_tokens >= 0) WriteUsage(w, c);
  w.Key("latency_ms");
  w.Double(static_cast<double>(c.latency_us / 100) / 10.0);
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

HttpResponse ModelNotSupported(const std::string& model) {
  return ErrorResponse(400, "model_not_supported", "no configured provider serves the model '" + model + "'");
}

void ApplySampling(const Sampling& s, ProviderRequest* r) {
  r->max_tokens = s.max_tokens;
  r->temperature = s.temperature;
  r->top_p = s.top_p;
  r->stop = s.stop;
}

}  // namespace

HttpResponse Service::AppendMessage(const SessionId& id, const HttpRequest& request, const UserId& user,
                                    RequestTrace* trace, ResponseStream* stream) {
  if (auto err = CheckJsonContentType(request.Header("content-type"))) return FromApiError(*err);
  AppendMessageRequest req;
  if (auto err = ParseAppendMessage(request.body, config_, &req)) return FromApiError(*err);
  if (req.stream && !stream) return ErrorResponse(400, "invalid_request", "streaming is not available here");
  Turn turn{std::move(req.content), std::move(req.model), std::nullopt, req.sampling, user, std::nullopt};
  if (auto bad = IdempotencyOf(request, "POST /v1/sessions/" + id.text() + "/messages", &turn.idempotency)) {
    return *bad;
  }
  if (req.stream) {
    NativeSse format(stream, *trace, *store_);
    return RunTurn(id, std::move(turn), trace, format);
  }
  NativeJson format;
  return RunTurn(id, std::move(turn), trace, format);
}

HttpResponse Service::ChatCompletions(const HttpRequest& request, const UserId& user, RequestTrace* trace,
                                      ResponseStream* stream) {
  if (auto err = CheckJsonContentType(request.Header("content-type"))) return FromApiError(*err);
  ChatCompletionRequest req;
  if (auto err = ParseChatCompletion(request.body, config_, &req)) return FromApiError(*err);
  if (req.stream && !stream) return ErrorResponse(400, "invalid_request", "streaming is not available here");
  std::string session_text = request.Header("x-session-id");
  if (!req.session_id.empty()) {
    if (!session_text.empty() && session_text != req.session_id) {
      return ErrorResponse(400, "invalid_request", "X-Session-Id and field 'session_id' name different sessions");
    }
    session_text = req.session_id;
  }
  // With a session, a request without `model` uses the session's (as a turn
  // of POST /v1/sessions/{id}/messages does); without one it names none.
  if (req.model.empty() && session_text.empty()) {
    return ErrorResponse(400, "invalid_request", "field 'model' is required (without a session)");
  }
  if (!providers_->Serves(req.model)) {
    return ErrorResponse(404, "model_not_found", "no configured provider serves the model '" + req.model + "'");
  }
  std::unique_ptr<TurnFormat> format;
  if (req.stream) {
    format = std::make_unique<OpenAiSse>(stream, *trace, session_text, req.model, req.include_usage,
                                         store_->last_epoch());
  } else {
    format = std::make_unique<OpenAiJson>(*trace, session_text);
  }
  if (session_text.empty()) return RunStateless(req, user, trace, *format);

  std::optional<SessionId> id = SessionId::Parse(session_text);
  if (!id) return SessionNotFound();
  trace->session_id = id->text();
  // The stored history is the context; of the request's messages only the
  // last, the user's new one, is used (and its system message, if any).
  if (req.messages.back().role != "user") {
    return ErrorResponse(400, "invalid_request", "with a session, the last message must be the user's");
  }
  Turn turn{std::move(req.messages.back().content), req.model,
            req.has_system ? std::optional<std::string>(req.system) : std::nullopt, req.sampling, user, std::nullopt};
  // The session is part of the key's scope: the same key and body sent for
  // another session is another request.
  if (auto bad = IdempotencyOf(request, "POST /v1/chat/completions session " + id->text(), &turn.idempotency)) {
    return *bad;
  }
  return RunTurn(*id, std::move(turn), trace, *format);
}

// One of a user's places for concurrent turns on this instance, held for the
// life of a turn (Service::AdmitTurn).
class Service::TurnSlot {
 public:
  explicit TurnSlot(UserLimits* limits) : limits_(limits) {}
  ~TurnSlot() { limits_->EndTurn(); }
  TurnSlot(const TurnSlot&) = delete;
  TurnSlot& operator=(const TurnSlot&) = delete;

 private:
  UserLimits* limits_;
};

std::optional<HttpResponse> Service::AdmitTurn(const UserId& user, std::unique_ptr<TurnSlot>* slot) {
  const int max_turns = (limits_ && !user.empty()) ? config_.max_concurrent_turns_per_user : 0;
  if (max_turns == 0) return std::nullopt;
  if (!limits_->TryBeginTurn(user, max_turns)) {
    HttpResponse r = ErrorResponse(429, "too_many_concurrent_turns",
                                   "this user already has " + std::to_string(max_turns) + " turns in progress");
    r.SetHeader("Retry-After", "1");
    return r;
  }
  *slot = std::make_unique<TurnSlot>(limits_);
  return std::nullopt;
}

HttpResponse Service::RunTurn(const SessionId& id, Turn turn, RequestTrace* trace, TurnFormat& format) {
  if (!turn.model.empty() && !providers_->Serves(turn.model)) return ModelNotSupported(turn.model);
  std::unique_ptr<TurnSlot> turn_slot;
  if (auto refused = AdmitTurn(turn.user, &turn_slot)) return *refused;
  // The context comes first: a request that cannot be answered (no session,
  // a model no provider serves) stores nothing.
  TurnContext ctx;
  const int64_t own = EstimateTokens(turn.content);
  if (providers_->NeedsContext(turn.model) || (turn.model.empty() && providers_->RoutesByModel())) {
    std::optional<TurnContext> loaded = store_->LoadContext(
        id, config_.context_messages, std::max<int64_t>(config_.context_tokens - own, 0), turn.user);
    if (!loaded) return SessionNotFound();
    ctx = std::move(*loaded);
    if (turn.model.empty()) turn.model = ctx.model;
    if (!turn.model.empty() && !providers_->Serves(turn.model)) return ModelNotSupported(turn.model);
  }
  if (turn.system) ctx.system_prompt = *turn.system;
  // The budget counts the system prompt too: drop the oldest messages until it fits.
  int64_t spent = own + (ctx.system_prompt.empty() ? 0 : EstimateTokens(ctx.system_prompt));
  for (const MessageRecord& m : ctx.messages) spent += EstimateTokens(m.content);
  size_t drop = 0;
  while (spent > config_.context_tokens && drop < ctx.messages.size()) spent -= EstimateTokens(ctx.messages[drop++].content);
  ctx.messages.erase(ctx.messages.begin(), ctx.messages.begin() + static_cast<std::ptrdiff_t>(drop));

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
  first.max_messages = config_.max_messages_per_session > 0 ? std::max<int64_t>(config_.max_messages_per_session - 1, 1) : 0;
  first.claim = idem;
  first.attempt = attempt;
  AppendResult stored = store_->Append(id, turn.user, first);
  switch (stored.idempotency.outcome) {
    case IdempotencyOutcome::kNew:
      break;
    case IdempotencyOutcome::kReplay: {
      HttpResponse r;
      r.status = stored.idempotency.status;
      r.body = stored.idempotency.response;
      r.SetHeader("Content-Type", "application/json");
      r.SetHeader("Idempotent-Replayed", "true");
      return r;
    }
    case IdempotencyOutcome::kInFlight: {
      HttpResponse r = ErrorResponse(409, "idempotency_key_in_use",
                                     "a request with this Idempotency-Key is still being processed; retry later");
      r.SetHeader("Retry-After", "1");
      return r;
    }
    case IdempotencyOutcome::kMismatch:
      return ErrorResponse(422, "idempotency_key_reused", "this Idempotency-Key was used for a different request");
  }
  if (stored.full) {
    return ErrorResponse(409, "session_full", "the session holds the maximum of " +
                                                  std::to_string(config_.max_messages_per_session) + " messages");
  }
  user.seq = stored.seq;
  if (user.seq == 0) return SessionNotFound();
  // From here the user message is stored. A keyed turn that fails keeps its
  // key, marked failed, on every way out below: the retry with the same key
  // answers this user message instead of storing it again.
  auto fail_key = [&] {
    if (idem) store_->FailTurnKey(id, turn.user, *idem, attempt);
  };
  MessageRecord stored_at;  // What a failure below reports: the seq.
  stored_at.seq = user.seq;
  try {
    return AnswerTurn(id, turn, std::move(ctx), std::move(user), stored.reused, idem, attempt, trace, format,
                      fail_key);
  } catch (const DbError& e) {
    fail_key();
    // The same code and message as JSON or as an event (never the
    // database's own text).
    const ApiError err = DbApiError(e, "a turn after storing its user message");
    return format.Failed(err.status, err.code, err.message, &stored_at, nullptr, err.status == 503 ? 1000 : -1);
  } catch (...) {
    fail_key();
    throw;
  }
}

HttpResponse Service::AnswerTurn(const SessionId& id, const Turn& turn, TurnContext ctx, MessageRecord user,
                                 bool reused, const IdempotencyKey* idem, int64_t attempt, RequestTrace* trace,
                                 TurnFormat& format, const std::function<void()>& fail_key) {
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

  DeltaSink* sink = format.sink();
  format.ModelChosen(ask.model);
  if (sink && !format.Begin(&user)) {  // The client left before the first byte.
    fail_key();
    return Streamed();
  }
  Completion answer;
  try {
    answer = providers_->Complete(std::move(ask), sink, observer_, trace);
  } catch (const ProviderError& e) {
    LOG_WARN("session %s: no answer (%s): %s", id.text().c_str(), e.code(), e.what());
    // Text the client already saw is kept, marked as incomplete.
    std::optional<MessageRecord> partial;
    if (!format.partial().empty()) {
      Completion cut;
      cut.content = format.partial();
      cut.provider = trace->provider;
      cut.model = turn.model;
      cut.finish_reason = e.kind() == ProviderErrorKind::kCancelled ? "client_disconnected" : "provider_error";
      const std::string meta = AssistantMetaJson(trace->request_id, cut);
      partial = MessageRecord{0, "assistant", cut.content, user.seq, std::max(NowMicros(), user.created_us), meta};
      AppendRequest rest;
      rest.role = "assistant";
      rest.content = partial->content;
      rest.created_us = partial->created_us;
      rest.reply_to = user.seq;
      rest.meta_json = meta;
      rest.max_messages = 0;  // An admitted turn's answer is always stored (see below).
      partial->seq = store_->Append(id, turn.user, rest).seq;
      if (partial->seq == 0) partial.reset();
    }
    fail_key();
    if (e.kind() == ProviderErrorKind::kCancelled) return Streamed();
    return format.Failed(e.status(), e.code(), e.what(), &user, partial ? &*partial : nullptr,
                         e.kind() == ProviderErrorKind::kRateLimited ? std::max<int64_t>(e.retry_after_ms(), 1000) : -1);
  }
  // Transaction 2: the answer, linked to the user message (and, with an
  // Idempotency-Key, the response a retry gets, in the same transaction).
  const std::string meta = AssistantMetaJson(trace->request_id, answer);
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
  second.attempt = attempt;
  second.respond = [&](int64_t seq) {
    assistant.seq = seq;
    HttpResponse r = format.Final(&user, &assistant, answer);
    return std::make_pair(r.status, r.body);
  };
  AppendResult answered = store_->Append(id, turn.user, second);
  if (answered.taken_over) {
    // This request outlived its key's lease and a retry took the turn over:
    // the retry's answer is the one stored; this one is dropped.
    LOG_WARN("session %s: a retry took this turn's Idempotency-Key over; its answer is not stored",
             id.text().c_str());
    return format.Failed(409, "idempotency_key_in_use",
                         "a retry with this Idempotency-Key took the turn over; retry to get its answer", &user,
                         nullptr, 1000);
  }
  assistant.seq = answered.seq;
  if (assistant.seq == 0) {
    return format.Failed(404, "session_not_found", "the session was deleted while the provider answered", nullptr,
                         nullptr, -1);
  }
  return format.Done(&user, &assistant, answer);
}

HttpResponse Service::RunStateless(const ChatCompletionRequest& req, const UserId& user, RequestTrace* trace,
                                   TurnFormat& format) {
  std::unique_ptr<TurnSlot> turn_slot;  // A stateless turn takes a place like any other.
  if (auto refused = AdmitTurn(user, &turn_slot)) return *refused;
  ProviderRequest ask;
  ask.model = req.model;
  ask.system = req.system;
  ask.messages = req.messages;
  ApplySampling(req.sampling, &ask);
  ask.request_id = trace->request_id;
  DeltaSink* sink = format.sink();
  if (sink && !format.Begin(nullptr)) return Streamed();
  try {
    Completion answer = providers_->Complete(std::move(ask), sink, observer_, trace);
    return format.Done(nullptr, nullptr, answer);
  } catch (const ProviderError& e) {
    if (e.kind() == ProviderErrorKind::kCancelled) return Streamed();
    LOG_WARN("chat completion: no answer (%s): %s", e.code(), e.what());
    return format.Failed(e.status(), e.code(), e.what(), nullptr, nullptr,
                         e.kind() == ProviderErrorKind::kRateLimited ? std::max<int64_t>(e.retry_after_ms(), 1000) : -1);
  }
}

}  // namespace chatllm
