// The providers' wire formats, pure: the request bodies chatllm sends and
// the answers it reads (provider_http.h declares them; unit-tested).

#include "wire_format.h"

#include <algorithm>
#include <string>
#include <vector>

#include "providers/provider_http.h"

namespace chatllm {

const rapidjson::Value* Member(const rapidjson::Value& v, const char* name) {
  if (!v.IsObject()) return nullptr;
  auto it = v.FindMember(name);
  return it == v.MemberEnd() ? nullptr : &it->value;
}

std::string StringMember(const rapidjson::Value& v, const char* name) {
  const rapidjson::Value* m = Member(v, name);
  return m && m->IsString() ? std::string(m->GetString(), m->GetStringLength()) : "";
}

int64_t IntMember(const rapidjson::Value& v, const char* name) {
  const rapidjson::Value* m = Member(v, name);
  return m && m->IsInt64() && m->GetInt64() >= 0 ? m->GetInt64() : -1;
}

std::string OpenAiFinish(const std::string& reason) { return reason.empty() ? "stop" : reason; }

std::string AnthropicFinish(const std::string& stop_reason) {
  if (stop_reason == "max_tokens") return "length";
  if (stop_reason.empty() || stop_reason == "end_turn" || stop_reason == "stop_sequence") return "stop";
  return stop_reason;
}

// A call that failed below HTTP (connect, TLS, a read), as the ProviderError
// the chain decides on: `idle_us` since the last byte tells a read timeout
// from a connection closed mid-answer.

// Anthropic wants user and assistant turns alternating, starting with the
// user. A history can hold two user messages in a row (a turn whose answer
// failed): consecutive messages of one role are joined.
std::vector<ChatMessage> Alternating(const std::vector<ChatMessage>& in) {
  std::vector<ChatMessage> out;
  for (const ChatMessage& m : in) {
    if (out.empty() && m.role != "user") continue;
    if (!out.empty() && out.back().role == m.role) {
      out.back().content.append("\n\n").append(m.content);
    } else {
      out.push_back(m);
    }
  }
  return out;
}

namespace {

void WriteSampling(JsonWriter& w, const ProviderRequest& r, const char* stop_key) {
  if (r.temperature) {
    w.Key("temperature");
    w.Double(*r.temperature);
  }
  if (r.top_p) {
    w.Key("top_p");
    w.Double(*r.top_p);
  }
  if (!r.stop.empty()) {
    w.Key(stop_key);
    w.StartArray();
    for (const std::string& s : r.stop) w.String(s);
    w.EndArray();
  }
}

Status BadAnswer(std::string problem) { return Status::Error(502, "provider_bad_response", std::move(problem)); }

}  // namespace

int64_t ParseRetryAfter(std::string_view value) {
  if (value.empty() || value.size() > 9 || value.find_first_not_of("0123456789") != std::string_view::npos) return -1;
  return std::stoll(std::string(value)) * 1000;
}

std::string ProviderErrorText(std::string_view body) {
  rapidjson::Document d;
  if (!ParseJson(body, &d).ok()) return "";
  const rapidjson::Value* e = Member(d, "error");
  if (!e) return "";
  if (e->IsString()) return std::string(e->GetString(), e->GetStringLength());
  return StringMember(*e, "message");
}

std::string OpenAiRequestJson(const ProviderRequest& r, const std::string& model, int max_tokens, bool stream) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  w.Key("model");
  w.String(model);
  w.Key("messages");
  w.StartArray();
  if (!r.system.empty()) {
    w.StartObject();
    w.Key("role");
    w.String("system");
    w.Key("content");
    w.String(r.system);
    w.EndObject();
  }
  for (const ChatMessage& m : r.messages) {
    w.StartObject();
    w.Key("role");
    w.String(m.role);
    w.Key("content");
    w.String(m.content);
    w.EndObject();
  }
  w.EndArray();
  w.Key("max_tokens");
  w.Int(max_tokens);
  WriteSampling(w, r, "stop");
  w.Key("stream");
  w.Bool(stream);
  if (stream) {
    w.Key("stream_options");
    w.StartObject();
    w.Key("include_usage");
    w.Bool(true);
    w.EndObject();
  }
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

std::string AnthropicRequestJson(const ProviderRequest& r, const std::string& model, int max_tokens, bool stream) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  w.Key("model");
  w.String(model);
  w.Key("max_tokens");
  w.Int(max_tokens);
  if (!r.system.empty()) {
    w.Key("system");
    w.String(r.system);
  }
  w.Key("messages");
  w.StartArray();
  for (const ChatMessage& m : Alternating(r.messages)) {
    w.StartObject();
    w.Key("role");
    w.String(m.role);
    w.Key("content");
    w.String(m.content);
    w.EndObject();
  }
  w.EndArray();
  WriteSampling(w, r, "stop_sequences");
  if (stream) {
    w.Key("stream");
    w.Bool(true);
  }
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

Status ParseOpenAiResponse(std::string_view body, Completion* out) {
  rapidjson::Document d;
  if (Status s = ParseJson(body, &d); !s.ok()) return BadAnswer("the answer is not JSON (" + s.message() + ")");
  const rapidjson::Value* choices = Member(d, "choices");
  if (!choices || !choices->IsArray() || choices->Empty()) return BadAnswer("the answer has no choices");
  const rapidjson::Value* message = Member((*choices)[0], "message");
  if (!message || !message->IsObject()) return BadAnswer("the answer's first choice has no message");
  const rapidjson::Value* content = Member(*message, "content");
  if (!content || !(content->IsString() || content->IsNull()))
    return BadAnswer("the answer's message has no text content");
  out->content = content->IsString() ? std::string(content->GetString(), content->GetStringLength()) : "";
  out->finish_reason = OpenAiFinish(StringMember((*choices)[0], "finish_reason"));
  out->model = StringMember(d, "model");
  if (const rapidjson::Value* usage = Member(d, "usage")) ReadOpenAiUsage(*usage, out);
  return Status::Ok();
}

void ReadOpenAiUsage(const rapidjson::Value& usage, Completion* c) {
  c->prompt_tokens = IntMember(usage, "prompt_tokens");
  c->completion_tokens = IntMember(usage, "completion_tokens");
  const rapidjson::Value* details = Member(usage, "prompt_tokens_details");
  c->cached_tokens = details ? IntMember(*details, "cached_tokens") : -1;
}

void ReadAnthropicInput(const rapidjson::Value& usage, Completion* c) {
  const int64_t input = IntMember(usage, "input_tokens");
  if (input < 0) return;
  const int64_t read = IntMember(usage, "cache_read_input_tokens");
  const int64_t written = IntMember(usage, "cache_creation_input_tokens");
  c->prompt_tokens = input + std::max<int64_t>(read, 0) + std::max<int64_t>(written, 0);
  c->cached_tokens = read;
}

Status ParseAnthropicResponse(std::string_view body, Completion* out) {
  rapidjson::Document d;
  if (Status s = ParseJson(body, &d); !s.ok()) return BadAnswer("the answer is not JSON (" + s.message() + ")");
  const rapidjson::Value* content = Member(d, "content");
  if (!content || !content->IsArray()) return BadAnswer("the answer has no content");
  out->content.clear();
  for (const auto& block : content->GetArray()) {
    if (StringMember(block, "type") == "text") out->content += StringMember(block, "text");
  }
  out->finish_reason = AnthropicFinish(StringMember(d, "stop_reason"));
  out->model = StringMember(d, "model");
  if (const rapidjson::Value* usage = Member(d, "usage")) {
    ReadAnthropicInput(*usage, out);
    out->completion_tokens = IntMember(*usage, "output_tokens");
  }
  return Status::Ok();
}

}  // namespace chatllm
