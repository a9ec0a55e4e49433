// OpenAI's Responses API objects and events (responses.h), and the
// presenter of POST /v1/responses.

#include "responses.h"

#include "api/api_json.h"
#include "base/api_key.h"
#include "base/json.h"
#include "base/sse.h"
#include "base/time_util.h"
#include "durable_turn.h"

namespace chatllm {
namespace {

// `n` lowercase hex digits into bytes; false for anything else.
bool HexBytes(std::string_view text, std::string* out) {
  if (text.size() % 2) return false;
  out->clear();
  auto digit = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (size_t i = 0; i < text.size(); i += 2) {
    int hi = digit(text[i]), lo = digit(text[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<char>(hi << 4 | lo));
  }
  return true;
}

std::optional<SessionId> SessionFromHex(std::string_view hex) {
  std::string bytes;
  if (hex.size() != 32 || !HexBytes(hex, &bytes)) return std::nullopt;
  SessionId id = SessionId::FromBytes(bytes);
  if (!id.names_session()) return std::nullopt;
  return id;
}

const char* ItemStatus(const std::string& status) {
  if (status == "completed") return "completed";
  if (status == "in_progress") return "in_progress";
  return "incomplete";
}

// The answer's item: "msg_" and the response id's digits.
std::string ItemIdOf(const ResponseView& v) { return "msg_" + (v.id.size() > 5 ? v.id.substr(5) : std::string()); }

void WriteOutputText(JsonWriter& w, std::string_view text) {
  w.StartObject();
  w.Key("type");
  w.String("output_text");
  w.Key("text");
  w.String(text.data(), static_cast<rapidjson::SizeType>(text.size()));
  w.Key("annotations");
  w.StartArray();
  w.EndArray();
  w.Key("logprobs");
  w.StartArray();
  w.EndArray();
  w.EndObject();
}

void WriteOutputItem(JsonWriter& w, const ResponseView& v, bool with_content) {
  w.StartObject();
  w.Key("id");
  w.String(ItemIdOf(v));
  w.Key("type");
  w.String("message");
  w.Key("status");
  w.String(ItemStatus(v.status));
  w.Key("role");
  w.String("assistant");
  w.Key("content");
  w.StartArray();
  if (with_content) WriteOutputText(w, v.text);
  w.EndArray();
  w.EndObject();
}

void WriteResponse(JsonWriter& w, const ResponseView& v) {
  w.StartObject();
  w.Key("id");
  w.String(v.id);
  w.Key("object");
  w.String("response");
  w.Key("created_at");
  w.Int64(v.created_us / 1000000);
  w.Key("status");
  w.String(v.status);
  w.Key("error");
  if (v.status == "failed") {
    w.StartObject();
    w.Key("code");
    w.String(v.error_code.empty() ? "server_error" : v.error_code);
    w.Key("message");
    w.String(v.error_message.empty() ? "the provider failed before the answer was whole" : v.error_message);
    w.EndObject();
  } else {
    w.Null();
  }
  w.Key("incomplete_details");
  if (v.status == "incomplete" || v.status == "cancelled") {
    w.StartObject();
    w.Key("reason");
    w.String(v.status == "cancelled" ? "cancelled" : "interrupted");
    w.EndObject();
  } else {
    w.Null();
  }
  w.Key("model");
  w.String(v.model);
  w.Key("output");
  w.StartArray();
  // An answer (or its part) once there is one; none while it has not begun.
  if (v.status != "in_progress" || !v.text.empty()) WriteOutputItem(w, v, true);
  w.EndArray();
  w.Key("conversation");
  if (v.conversation.empty()) {
    w.Null();
  } else {
    w.StartObject();
    w.Key("id");
    w.String(v.conversation);
    w.EndObject();
  }
  w.Key("store");
  w.Bool(!v.conversation.empty());
  w.Key("parallel_tool_calls");
  w.Bool(false);
  w.Key("tool_choice");
  w.String("auto");
  w.Key("tools");
  w.StartArray();
  w.EndArray();
  w.Key("text");
  w.StartObject();
  w.Key("format");
  w.StartObject();
  w.Key("type");
  w.String("text");
  w.EndObject();
  w.EndObject();
  w.Key("truncation");
  w.String("auto");
  w.Key("metadata");
  w.StartObject();
  w.EndObject();
  w.Key("usage");
  if (v.meta.has_usage) {
    w.StartObject();
    w.Key("input_tokens");
    w.Int64(v.meta.prompt_tokens);
    w.Key("input_tokens_details");
    w.StartObject();
    w.Key("cached_tokens");
    w.Int(0);
    w.EndObject();
    w.Key("output_tokens");
    w.Int64(v.meta.completion_tokens);
    w.Key("output_tokens_details");
    w.StartObject();
    w.Key("reasoning_tokens");
    w.Int(0);
    w.EndObject();
    w.Key("total_tokens");
    w.Int64(v.meta.prompt_tokens + v.meta.completion_tokens);
    w.EndObject();
  } else {
    w.Null();
  }
  w.EndObject();
}

// One event: `id:` (its sequence number, for an EventSource), its type as
// the SSE event name and in the data, and `body` writing the rest.
template <typename Body>
std::string Event(const char* type, int64_t seq, Body&& body) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  w.Key("type");
  w.String(type);
  w.Key("sequence_number");
  w.Int64(seq);
  body(w);
  w.EndObject();
  return "id: " + std::to_string(seq) + "\n" + SseEvent(type, std::string_view(buf.GetString(), buf.GetSize()));
}

void ItemPlace(JsonWriter& w, const ResponseView& v, bool content_index) {
  w.Key("item_id");
  w.String(ItemIdOf(v));
  w.Key("output_index");
  w.Int(0);
  if (content_index) {
    w.Key("content_index");
    w.Int(0);
  }
}

}  // namespace

std::string ConversationIdText(const SessionId& session) { return "conv_" + Hex(session.bytes()); }

std::optional<SessionId> ParseConversationId(std::string_view text) {
  if (text.size() != 37 || text.substr(0, 5) != "conv_") return std::nullopt;
  return SessionFromHex(text.substr(5));
}

std::string ResponseIdText(const SessionId& session, int64_t turn_id) {
  return "resp_" + Hex(session.bytes()) + TurnIdText(turn_id);
}

std::optional<std::pair<SessionId, int64_t>> ParseResponseId(std::string_view text) {
  if (text.size() != 53 || text.substr(0, 5) != "resp_") return std::nullopt;
  std::optional<SessionId> session = SessionFromHex(text.substr(5, 32));
  std::optional<int64_t> turn = ParseTurnId(text.substr(37));
  if (!session || !turn || text.substr(37) != TurnIdText(*turn)) return std::nullopt;
  return std::make_pair(*session, *turn);
}

std::string ItemIdText(const SessionId& session, int64_t seq) {
  return "msg_" + Hex(session.bytes()) + TurnIdText(seq);
}

std::optional<int64_t> ParseItemId(std::string_view text, const SessionId& session) {
  if (text.size() != 52 || text.substr(0, 36) != "msg_" + Hex(session.bytes())) return std::nullopt;
  std::optional<int64_t> seq = ParseTurnId(text.substr(36));
  if (!seq || text.substr(36) != TurnIdText(*seq)) return std::nullopt;
  return seq;
}

std::string ResponseJson(const ResponseView& v) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  WriteResponse(w, v);
  return std::string(buf.GetString(), buf.GetSize());
}

std::string ResponseHeadEvents(const ResponseView& v, int64_t after) {
  // As the response was when it began, whatever it is now.
  ResponseView begun = v;
  begun.status = "in_progress";
  begun.text.clear();
  begun.meta = AnswerMeta{};
  std::string out;
  if (after < 0)
    out += Event("response.created", 0, [&](JsonWriter& w) {
      w.Key("response");
      WriteResponse(w, begun);
    });
  if (after < 1)
    out += Event("response.in_progress", 1, [&](JsonWriter& w) {
      w.Key("response");
      WriteResponse(w, begun);
    });
  if (after < 2)
    out += Event("response.output_item.added", 2, [&](JsonWriter& w) {
      w.Key("output_index");
      w.Int(0);
      w.Key("item");
      WriteOutputItem(w, begun, false);
    });
  if (after < 3)
    out += Event("response.content_part.added", 3, [&](JsonWriter& w) {
      ItemPlace(w, begun, true);
      w.Key("part");
      WriteOutputText(w, "");
    });
  return out;
}

std::string ResponseDeltaEvent(const ResponseView& v, int64_t n, std::string_view text) {
  return Event("response.output_text.delta", n + kResponseHeadEvents - 1, [&](JsonWriter& w) {
    ItemPlace(w, v, true);
    w.Key("delta");
    w.String(text.data(), static_cast<rapidjson::SizeType>(text.size()));
    w.Key("logprobs");
    w.StartArray();
    w.EndArray();
  });
}

std::string ResponseEndEvents(const ResponseView& v, int64_t last, int64_t after) {
  const int64_t first = last + kResponseHeadEvents;
  std::string out;
  if (after < first)
    out += Event("response.output_text.done", first, [&](JsonWriter& w) {
      ItemPlace(w, v, true);
      w.Key("text");
      w.String(v.text.data(), static_cast<rapidjson::SizeType>(v.text.size()));
      w.Key("logprobs");
      w.StartArray();
      w.EndArray();
    });
  if (after < first + 1)
    out += Event("response.content_part.done", first + 1, [&](JsonWriter& w) {
      ItemPlace(w, v, true);
      w.Key("part");
      WriteOutputText(w, v.text);
    });
  if (after < first + 2)
    out += Event("response.output_item.done", first + 2, [&](JsonWriter& w) {
      w.Key("output_index");
      w.Int(0);
      w.Key("item");
      WriteOutputItem(w, v, true);
    });
  const char* end = v.status == "completed" ? "response.completed"
                    : v.status == "failed"  ? "response.failed"
                                            : "response.incomplete";
  if (after < first + 3)
    out += Event(end, first + 3, [&](JsonWriter& w) {
      w.Key("response");
      WriteResponse(w, v);
    });
  return out;
}

std::string ConversationJson(const SessionId& session, int64_t created_us, const std::string& metadata_json) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  w.Key("id");
  w.String(ConversationIdText(session));
  w.Key("object");
  w.String("conversation");
  w.Key("created_at");
  w.Int64(created_us / 1000000);
  w.Key("metadata");
  w.RawValue(metadata_json.data(), metadata_json.size(), rapidjson::kObjectType);
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

void WriteItem(JsonWriter& w, const SessionId& session, const MessageRecord& m) {
  const bool answer = m.role == "assistant";
  std::string status = "completed";
  if (answer) {
    const std::string reason = ReadMeta(m.meta_json).finish_reason;
    if (reason == "cancelled" || reason == "provider_error" || reason == "client_disconnected") status = "incomplete";
  }
  w.StartObject();
  w.Key("id");
  w.String(ItemIdText(session, m.seq));
  w.Key("type");
  w.String("message");
  w.Key("status");
  w.String(status);
  w.Key("role");
  w.String(m.role);
  w.Key("content");
  w.StartArray();
  if (answer) {
    WriteOutputText(w, m.content);
  } else {
    w.StartObject();
    w.Key("type");
    w.String("input_text");
    w.Key("text");
    w.String(m.content.data(), static_cast<rapidjson::SizeType>(m.content.size()));
    w.EndObject();
  }
  w.EndArray();
  w.Key("created_at");
  w.Int64(m.created_us / 1000000);
  w.EndObject();
}

namespace {

// Counts the deltas (event n is the n-th) and sends each as an event.
class ResponseSink : public DeltaSink {
 public:
  ResponseSink(ResponseStream* stream, const ResponseView& view) : stream_(stream), view_(view) {}
  bool OnDelta(std::string_view text) override {
    ++count_;
    sent_.append(text);
    if (!stream_ || gone_) return !gone_;
    if (!stream_->Send(ResponseDeltaEvent(view_, count_, text))) gone_ = true;
    return !gone_;
  }
  void set_gone() { gone_ = true; }
  int64_t count() const { return count_; }
  const std::string& sent() const { return sent_; }

 private:
  ResponseStream* stream_;
  const ResponseView& view_;
  int64_t count_ = 0;
  std::string sent_;
  bool gone_ = false;
};

class Responses : public TurnPresenter {
 public:
  Responses(ResponseStream* stream, ResponseStream* background, const RequestTrace& trace, const Store& store,
            std::string conversation, std::string model, std::string id)
      : stream_(stream), background_(background), trace_(trace), store_(store), sink_(stream, view_) {
    view_.id = std::move(id);
    view_.conversation = std::move(conversation);
    view_.model = std::move(model);
    view_.created_us = NowMicros();
    view_.status = "in_progress";
  }
  // A stored response's turn is durable even when not streamed: the sink
  // is what makes it one (TurnRunner), and what counts its events.
  DeltaSink* sink() override { return &sink_; }
  const std::string& partial() const override { return sink_.sent(); }
  const char* recipe() const override { return recipe_.c_str(); }
  int answer_status() const override { return 200; }
  void ModelChosen(const std::string& model) override {
    if (view_.model.empty()) view_.model = model;
  }
  void TurnOpened(const SessionId& session, int64_t turn_id) override {
    view_.id = ResponseIdText(session, turn_id);
    recipe_ = "responses:" + TurnIdText(turn_id);
  }
  void RateLimits(std::vector<std::pair<std::string, std::string>> headers) override {
    rate_limits_ = std::move(headers);
  }
  bool Begin(const MessageRecord*) override {
    if (background_ && !stream_) {
      // The answer now: the response as it begins; the turn goes on.
      HttpResponse r = Answer(ResponseJson(view_));
      r.SetHeader("X-Request-Id", trace_.request_id);
      r.SetHeader("X-Shard-Map-Epoch", std::to_string(store_.last_epoch()));
      finished_ = background_->Finish(r);
      sink_.set_gone();
      return false;
    }
    if (!stream_) return true;
    started_ = stream_->Start(Head());
    return started_ && stream_->Send(ResponseHeadEvents(view_, -1));
  }
  HttpResponse Present(const TurnOutcome& o) override {
    if (finished_ || o.kind == TurnOutcome::Kind::kGone) return Streamed();
    ResponseView end = view_;
    switch (o.kind) {
      case TurnOutcome::Kind::kAnswered:
        end.status = "completed";
        end.text = o.assistant.content;
        end.meta = ReadMeta(o.assistant.meta_json);
        if (!end.meta.model.empty()) end.model = end.meta.model;
        if (!started_) return Answer(ResponseJson(end));
        stream_->Send(ResponseEndEvents(end, sink_.count(), -1));
        return Streamed();
      case TurnOutcome::Kind::kRefused:
      case TurnOutcome::Kind::kFailed: {
        if (!started_) {
          HttpResponse r = ErrorResponse(o.error.http_status(), o.error.code(), o.error.message());
          if (o.retry_after_ms >= 0) r.SetHeader("Retry-After", std::to_string((o.retry_after_ms + 999) / 1000));
          for (const auto& [name, value] : o.headers) r.SetHeader(name, value);
          return r;
        }
        const std::string& code = o.error.code();
        end.status = code == "turn_cancelled" ? "cancelled" : code == "turn_lost" ? "incomplete" : "failed";
        end.error_code = code;
        end.error_message = o.error.message();
        end.text = o.partial ? o.partial->content : sink_.sent();
        stream_->Send(ResponseEndEvents(end, sink_.count(), -1));
        return Streamed();
      }
      case TurnOutcome::Kind::kReplayed:  // The service renders a replay from the stored turn.
      case TurnOutcome::Kind::kGone:
        break;
    }
    return Streamed();
  }

 private:
  static HttpResponse Json(int status, std::string body) { return JsonBody(status, std::move(body)); }
  static HttpResponse Streamed() { return StreamedResponse(); }
  HttpResponse Head() const {
    HttpResponse head = EventStreamHead(trace_.request_id, store_.last_epoch());
    for (const auto& [name, value] : rate_limits_) head.SetHeader(name, value);
    return head;
  }
  // The response as JSON, with the room its budgets leave.
  HttpResponse Answer(std::string body) const {
    HttpResponse r = Json(200, std::move(body));
    for (const auto& [name, value] : rate_limits_) r.SetHeader(name, value);
    return r;
  }

  ResponseStream* stream_;
  ResponseStream* background_;
  const RequestTrace& trace_;
  const Store& store_;
  ResponseView view_;
  ResponseSink sink_;
  std::vector<std::pair<std::string, std::string>> rate_limits_;  // x-ratelimit-*, when a budget admitted it.
  std::string recipe_ = "responses";
  bool started_ = false;
  bool finished_ = false;
};

}  // namespace

std::unique_ptr<TurnPresenter> ResponsesPresenter(ResponseStream* stream, ResponseStream* background,
                                                  const RequestTrace& trace, const Store& store,
                                                  std::string conversation, std::string model, std::string id) {
  return std::make_unique<Responses>(stream, background, trace, store, std::move(conversation), std::move(model),
                                     std::move(id));
}

}  // namespace chatllm
