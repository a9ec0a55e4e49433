// The presenters of a turn (presenters.h). Every final answer — the first
// and a keyed replay — is rendered from stored MessageRecords (the answer's
// metadata holds its model, usage and finish reason), never from the
// provider's reply, so that a replay's body is the first answer's.

#include "presenters.h"

#include <functional>
#include <optional>

#include "api/api_json.h"
#include "base/json.h"
#include "base/sse.h"
#include "base/time_util.h"
#include "durable_turn.h"

namespace chatllm {

AnswerMeta ReadMeta(const std::string& json) {
  AnswerMeta m;
  rapidjson::Document doc;
  doc.Parse(json.data(), json.size());
  if (!doc.IsObject()) return m;
  auto text = [&](const char* name, std::string* out) {
    auto it = doc.FindMember(name);
    if (it != doc.MemberEnd() && it->value.IsString()) out->assign(it->value.GetString(), it->value.GetStringLength());
  };
  text("request_id", &m.request_id);
  text("model", &m.model);
  text("finish_reason", &m.finish_reason);
  auto usage = doc.FindMember("usage");
  if (usage != doc.MemberEnd() && usage->value.IsObject()) {
    const auto& u = usage->value;
    auto p = u.FindMember("prompt_tokens");
    auto c = u.FindMember("completion_tokens");
    if (p != u.MemberEnd() && c != u.MemberEnd() && p->value.IsInt64() && c->value.IsInt64()) {
      m.has_usage = true;
      m.prompt_tokens = p->value.GetInt64();
      m.completion_tokens = c->value.GetInt64();
    }
  }
  return m;
}

namespace {

void WriteUsage(JsonWriter& w, const AnswerMeta& m) {
  w.Key("usage");
  if (!m.has_usage) {
    w.Null();
    return;
  }
  w.StartObject();
  w.Key("prompt_tokens");
  w.Int64(m.prompt_tokens);
  w.Key("completion_tokens");
  w.Int64(m.completion_tokens);
  w.Key("total_tokens");
  w.Int64(m.prompt_tokens + m.completion_tokens);
  w.EndObject();
}

// OpenAI's extension for a turn on a session: "chatllm": {"session_id",
// "user_seq", "assistant_seq"}.
void WriteSessionRef(JsonWriter& w, const std::string& session_id, const MessageRecord& user,
                     const MessageRecord* assistant) {
  if (session_id.empty() || user.seq == 0) return;
  w.Key("chatllm");
  w.StartObject();
  w.Key("session_id");
  w.String(session_id);
  w.Key("user_seq");
  w.Int64(user.seq);
  if (assistant) {
    w.Key("assistant_seq");
    w.Int64(assistant->seq);
  }
  w.EndObject();
}

std::string Text(const rapidjson::StringBuffer& buf) { return std::string(buf.GetString(), buf.GetSize()); }

// 201 {"user": ..., "assistant": ...}.
std::string NativeBody(const MessageRecord& user, const MessageRecord& assistant) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  w.Key("user");
  WriteMessage(w, user);
  w.Key("assistant");
  WriteMessage(w, assistant);
  w.EndObject();
  return Text(buf);
}

// The chat.completion object of a stored answer (`user.seq` 0: stateless).
std::string OpenAiBody(const std::string& session_id, const MessageRecord& user, const MessageRecord& assistant) {
  const AnswerMeta meta = ReadMeta(assistant.meta_json);
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  w.Key("id");
  w.String("chatcmpl-" + meta.request_id);
  w.Key("object");
  w.String("chat.completion");
  w.Key("created");
  w.Int64(assistant.created_us / 1000000);
  w.Key("model");
  w.String(meta.model);
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
  w.String(assistant.content.data(), assistant.content.size());
  w.EndObject();
  w.Key("logprobs");
  w.Null();
  w.Key("finish_reason");
  w.String(meta.finish_reason);
  w.EndObject();
  w.EndArray();
  WriteUsage(w, meta);
  WriteSessionRef(w, session_id, user, &assistant);
  w.EndObject();
  return Text(buf);
}

HttpResponse Json(int status, std::string body) { return JsonBody(status, std::move(body)); }

HttpResponse Streamed() { return StreamedResponse(); }

// A failure's message: after the user message was stored, it says at which
// seq (the same as JSON and as an event).
std::string FailureMessage(const TurnOutcome& o) {
  if (o.kind != TurnOutcome::Kind::kFailed || o.user.seq == 0) return o.error.message();
  return o.error.message() + "; the user message is stored as seq " + std::to_string(o.user.seq);
}

HttpResponse PlainError(const TurnOutcome& o) {
  HttpResponse r = ErrorResponse(o.error.http_status(), o.error.code(), FailureMessage(o));
  if (o.retry_after_ms >= 0) r.SetHeader("Retry-After", std::to_string((o.retry_after_ms + 999) / 1000));
  for (const auto& [name, value] : o.headers) r.SetHeader(name, value);
  return r;
}

// A keyed turn answered before, rendered again from its recipe: always as
// JSON (a stream is not replayed as one).
HttpResponse Replay(const TurnOutcome& o, const std::string& session_id) {
  std::string body;
  if (o.recipe.empty()) {
    body = o.replay_body;  // Stored by a binary before schema 8.
  } else if (o.recipe == "openai") {
    body = OpenAiBody(session_id, o.user, o.assistant);
  } else {
    body = NativeBody(o.user, o.assistant);
  }
  HttpResponse r = Json(o.replay_status, std::move(body));
  r.SetHeader("Idempotent-Replayed", "true");
  return r;
}

HttpResponse StreamHead(const RequestTrace& trace, uint64_t epoch, int64_t turn_id) {
  HttpResponse head = EventStreamHead(trace.request_id, epoch);
  if (turn_id != 0) head.SetHeader("X-Turn-Id", TurnIdText(turn_id));
  return head;
}

// text/event-stream to the client through the ResponseStream, and the text
// sent so far.
class StreamingSink : public DeltaSink {
 public:
  StreamingSink(ResponseStream* stream, std::function<std::string(std::string_view)> frame)
      : stream_(stream), frame_(std::move(frame)) {}
  bool OnDelta(std::string_view text) override {
    sent_.append(text);
    if (next_id_ == 0) return stream_->Send(frame_(text));
    // A durable turn's event: its number, for a client to resume after.
    return stream_->Send("id: " + std::to_string(next_id_) + "\n" + frame_(text));
  }
  const std::string& sent() const { return sent_; }
  void set_next_id(int64_t seq) { next_id_ = seq; }

 private:
  ResponseStream* stream_;
  std::function<std::string(std::string_view)> frame_;
  std::string sent_;
  int64_t next_id_ = 0;
};

// What both dialects share: the stream (null for JSON), whether its head
// went out, and the text sent.
class StreamingPresenter : public TurnPresenter {
 public:
  StreamingPresenter(ResponseStream* stream, const RequestTrace& trace, const Store& store,
                     std::function<std::string(std::string_view)> frame)
      : stream_(stream), trace_(trace), store_(store), sink_(stream, std::move(frame)) {}
  DeltaSink* sink() override { return stream_ ? &sink_ : nullptr; }
  const std::string& partial() const override { return sink_.sent(); }
  void TurnOpened(const SessionId& session, int64_t turn_id) override {
    turn_session_ = session;
    turn_id_ = turn_id;
  }
  void NextEventId(int64_t seq) override { sink_.set_next_id(seq); }
  void RateLimits(std::vector<std::pair<std::string, std::string>> headers) override {
    rate_limits_ = std::move(headers);
  }

 protected:
  bool StartStream() {
    HttpResponse head = StreamHead(trace_, store_.last_epoch(), turn_id_);
    for (const auto& [name, value] : rate_limits_) head.SetHeader(name, value);
    started_ = stream_->Start(head);
    return started_;
  }
  // An answer as JSON, with the room its budgets leave.
  HttpResponse Answer(int status, std::string body) const {
    HttpResponse r = Json(status, std::move(body));
    for (const auto& [name, value] : rate_limits_) r.SetHeader(name, value);
    return r;
  }
  // A durable turn's `turn` event (SSE id 0): its id and where to read it again.
  std::string TurnEvent() const {
    rapidjson::StringBuffer buf;
    JsonWriter w(buf);
    w.StartObject();
    w.Key("id");
    w.String(TurnIdText(turn_id_));
    w.Key("session_id");
    w.String(turn_session_->text());
    w.Key("events_url");
    w.String(TurnPath(*turn_session_, turn_id_) + "/events");
    w.EndObject();
    return "id: 0\n" + SseEvent("turn", std::string_view(buf.GetString(), buf.GetSize()));
  }
  ResponseStream* stream_;
  const RequestTrace& trace_;
  const Store& store_;
  StreamingSink sink_;
  bool started_ = false;
  std::optional<SessionId> turn_session_;
  int64_t turn_id_ = 0;                                           // A durable turn's; 0: none.
  std::vector<std::pair<std::string, std::string>> rate_limits_;  // x-ratelimit-*, when a budget admitted it.
};

std::string NativeErrorEvent(const TurnOutcome& o) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  w.Key("error");
  w.StartObject();
  w.Key("code");
  w.String(o.error.code());
  w.Key("message");
  w.String(FailureMessage(o));
  w.EndObject();
  if (o.partial) {
    w.Key("assistant");
    WriteMessage(w, *o.partial);
  }
  w.EndObject();
  return SseEvent("error", std::string_view(buf.GetString(), buf.GetSize()));
}

std::string DeltaEvent(std::string_view text) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  w.Key("text");
  w.String(text.data(), text.size());
  w.EndObject();
  return SseEvent("delta", std::string_view(buf.GetString(), buf.GetSize()));
}

class Native : public StreamingPresenter {
 public:
  Native(ResponseStream* stream, const RequestTrace& trace, const Store& store)
      : StreamingPresenter(stream, trace, store, DeltaEvent) {}
  const char* recipe() const override { return "native"; }
  int answer_status() const override { return 201; }
  bool Begin(const MessageRecord* user) override {
    if (!stream_) return true;
    if (!StartStream()) return false;
    if (turn_id_ != 0 && !stream_->Send(TurnEvent())) return false;
    return stream_->Send(SseEvent("user", MessageJson(*user)));
  }
  HttpResponse Present(const TurnOutcome& o) override {
    switch (o.kind) {
      case TurnOutcome::Kind::kAnswered:
        if (!started_) return Answer(201, NativeBody(o.user, o.assistant));
        stream_->Send(SseEvent("assistant", MessageJson(o.assistant)));
        return Streamed();
      case TurnOutcome::Kind::kReplayed:
        return Replay(o, "");
      case TurnOutcome::Kind::kRefused:
      case TurnOutcome::Kind::kFailed:
        if (!started_) return PlainError(o);
        stream_->Send(NativeErrorEvent(o));
        return Streamed();
      case TurnOutcome::Kind::kGone:
        break;
    }
    return Streamed();
  }
};

class OpenAi : public StreamingPresenter {
 public:
  OpenAi(ResponseStream* stream, const RequestTrace& trace, std::string session_id, std::string model,
         bool include_usage, const Store& store)
      : StreamingPresenter(stream, trace, store, [this](std::string_view text) { return Chunk(&text, nullptr); }),
        id_("chatcmpl-" + trace.request_id),
        created_(NowMicros() / 1000000),
        session_id_(std::move(session_id)),
        model_(std::move(model)),
        include_usage_(include_usage) {}
  const char* recipe() const override { return "openai"; }
  int answer_status() const override { return 200; }
  void ModelChosen(const std::string& model) override {
    if (model_.empty()) model_ = model;
  }
  bool Begin(const MessageRecord*) override {
    if (!stream_) return true;
    std::string_view empty;
    return StartStream() && stream_->Send(Chunk(&empty, nullptr, true));
  }
  HttpResponse Present(const TurnOutcome& o) override {
    switch (o.kind) {
      case TurnOutcome::Kind::kAnswered:
        if (!started_) return Answer(200, OpenAiBody(session_id_, o.user, o.assistant));
        stream_->Send(Finish(o));
        return Streamed();
      case TurnOutcome::Kind::kReplayed:
        return Replay(o, session_id_);
      case TurnOutcome::Kind::kRefused:
      case TurnOutcome::Kind::kFailed:
        if (!started_) return PlainError(o);
        stream_->Send(ErrorEvent(o));
        return Streamed();
      case TurnOutcome::Kind::kGone:
        break;
    }
    return Streamed();
  }

 private:
  void Head(JsonWriter& w) const {
    w.Key("id");
    w.String(id_);
    w.Key("object");
    w.String("chat.completion.chunk");
    w.Key("created");
    w.Int64(created_);
    w.Key("model");
    w.String(model_);
  }

  // One chunk: a content delta (`text`), the finish reason, or (`usage`)
  // the usage-only chunk with no choices.
  std::string Chunk(const std::string_view* text, const std::string* finish, bool first = false,
                    const AnswerMeta* usage = nullptr) const {
    rapidjson::StringBuffer buf;
    JsonWriter w(buf);
    w.StartObject();
    Head(w);
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
      if (finish)
        w.String(*finish);
      else
        w.Null();
      w.EndObject();
    }
    w.EndArray();
    if (usage) WriteUsage(w, *usage);
    w.EndObject();
    return SseEvent("", std::string_view(buf.GetString(), buf.GetSize()));
  }

  // The finish reason, the usage (when asked for), the session reference,
  // then [DONE].
  std::string Finish(const TurnOutcome& o) {
    const AnswerMeta meta = ReadMeta(o.assistant.meta_json);
    model_ = meta.model;
    std::string out = Chunk(nullptr, &meta.finish_reason);
    if (include_usage_) out += Chunk(nullptr, nullptr, false, &meta);
    if (!session_id_.empty() && o.user.seq != 0) {
      rapidjson::StringBuffer buf;
      JsonWriter w(buf);
      w.StartObject();
      Head(w);
      w.Key("choices");
      w.StartArray();
      w.EndArray();
      WriteSessionRef(w, session_id_, o.user, &o.assistant);
      w.EndObject();
      out += SseEvent("", std::string_view(buf.GetString(), buf.GetSize()));
    }
    out += SseEvent("", "[DONE]");
    return out;
  }

  // `data: {"error": ...}`: what the OpenAI SDKs raise from.
  std::string ErrorEvent(const TurnOutcome& o) const {
    rapidjson::StringBuffer buf;
    JsonWriter w(buf);
    w.StartObject();
    w.Key("error");
    w.StartObject();
    w.Key("message");
    w.String(FailureMessage(o));
    w.Key("type");
    w.String("api_error");
    w.Key("code");
    w.String(o.error.code());
    w.EndObject();
    w.EndObject();
    return SseEvent("", std::string_view(buf.GetString(), buf.GetSize()));
  }

  std::string id_;
  int64_t created_;
  std::string session_id_;
  std::string model_;
  bool include_usage_;
};

}  // namespace

std::unique_ptr<TurnPresenter> NativePresenter(ResponseStream* stream, const RequestTrace& trace, const Store& store) {
  return std::make_unique<Native>(stream, trace, store);
}

std::unique_ptr<TurnPresenter> OpenAiPresenter(ResponseStream* stream, const RequestTrace& trace,
                                               std::string session_id, std::string model, bool include_usage,
                                               const Store& store) {
  return std::make_unique<OpenAi>(stream, trace, std::move(session_id), std::move(model), include_usage, store);
}

}  // namespace chatllm
