#include "api/requests.h"

#include <algorithm>
#include <cctype>
#include <map>

#include "base/base64url.h"
#include "base/http.h"
#include "base/json.h"
#include "request_fields.h"

namespace chatllm {
namespace request_fields {

Status Invalid(std::string message) { return Status::Invalid(std::move(message)); }

Status Unsupported(const std::string& what) {
  return Status::Error(400, "unsupported_parameter", what + " is not supported by this endpoint");
}

// Parses `body` into a JSON object, or returns the error.
Status ParseObject(std::string_view body, rapidjson::Document* doc) {
  if (Status s = ParseJson(body, doc); !s.ok()) {
    return Status::Error(400, "invalid_json", "request body is not valid JSON: " + s.message());
  }
  if (!doc->IsObject()) {
    return Status::Error(400, "invalid_json",
                         std::string("request body must be a JSON object, not ") + JsonTypeName(*doc));
  }
  return Status::Ok();
}

Status WrongType(const char* field, const char* want, const rapidjson::Value& v) {
  return Invalid(std::string("field '") + field + "' must be " + want + ", not " + JsonTypeName(v));
}

// `metadata`: an object, kept re-serialized compactly, of at most
// max_metadata_bytes.
Status ParseMetadata(const rapidjson::Value& v, const Config& config, std::string* out) {
  if (!v.IsObject()) return WrongType("metadata", "an object", v);
  *out = JsonToString(v);
  if (out->size() > config.max_metadata_bytes) {
    return Invalid("field 'metadata' is larger than " + std::to_string(config.max_metadata_bytes) +
                   " bytes when serialized");
  }
  return Status::Ok();
}

Status ParseModel(const rapidjson::Value& v, std::string* out) {
  if (!v.IsString()) return WrongType("model", "a string", v);
  std::string_view m(v.GetString(), v.GetStringLength());
  if (!ValidModelName(m)) return Invalid("field 'model' must be 1..128 characters of [A-Za-z0-9._:/@+-]");
  out->assign(m);
  return Status::Ok();
}

// max_tokens, temperature, top_p, stop: shared by the turn and the
// chat-completions requests. Returns true if `name` was one of them.
bool ParseSampling(std::string_view name, const rapidjson::Value& v, Sampling* out, Status* err) {
  if (name == "max_tokens" || name == "max_completion_tokens") {
    if (!v.IsInt() || v.GetInt() < 1 || v.GetInt() > 1000000) {
      *err = Invalid("field '" + std::string(name) + "' must be an integer from 1 to 1000000");
    } else {
      out->max_tokens = v.GetInt();
    }
  } else if (name == "temperature") {
    if (!v.IsNumber() || v.GetDouble() < 0 || v.GetDouble() > 2)
      *err = Invalid("field 'temperature' must be a number from 0 to 2");
    else
      out->temperature = v.GetDouble();
  } else if (name == "top_p") {
    if (!v.IsNumber() || v.GetDouble() < 0 || v.GetDouble() > 1)
      *err = Invalid("field 'top_p' must be a number from 0 to 1");
    else
      out->top_p = v.GetDouble();
  } else if (name == "stop") {
    out->stop.clear();
    if (v.IsNull()) return true;
    if (v.IsString()) {
      out->stop.emplace_back(v.GetString(), v.GetStringLength());
    } else if (v.IsArray() && v.Size() <= 4) {
      for (const auto& item : v.GetArray()) {
        if (!item.IsString()) {
          *err = Invalid("field 'stop' must be a string or an array of up to 4 strings");
          return true;
        }
        out->stop.emplace_back(item.GetString(), item.GetStringLength());
      }
    } else {
      *err = Invalid("field 'stop' must be a string or an array of up to 4 strings");
    }
  } else {
    return false;
  }
  return true;
}

// The text of an OpenAI message's content: a string, or an array of
// {"type":"text","text":...} parts (joined). Other parts are refused.
Status MessageText(const rapidjson::Value& content, size_t index, std::string* out) {
  const std::string where = "messages[" + std::to_string(index) + "].content";
  if (content.IsString()) {
    out->assign(content.GetString(), content.GetStringLength());
    return Status::Ok();
  }
  if (!content.IsArray()) return Invalid("field '" + where + "' must be a string or an array of text parts");
  out->clear();
  for (const auto& part : content.GetArray()) {
    auto type = part.IsObject() ? part.FindMember("type") : rapidjson::Value::ConstMemberIterator();
    auto text = part.IsObject() ? part.FindMember("text") : rapidjson::Value::ConstMemberIterator();
    if (!part.IsObject() || type == part.MemberEnd() || !type->value.IsString() ||
        std::string_view(type->value.GetString()) != "text" || text == part.MemberEnd() || !text->value.IsString()) {
      return Status::Error(400, "unsupported_parameter", "field '" + where + "': only text parts are supported");
    }
    out->append(text->value.GetString(), text->value.GetStringLength());
  }
  return Status::Ok();
}

}  // namespace request_fields

using namespace request_fields;

Status CheckJsonContentType(std::string_view ct) {
  if (ct.empty()) return Status::Ok();
  std::string_view media = ct.substr(0, ct.find(';'));
  while (!media.empty() && media.back() == ' ') media.remove_suffix(1);
  std::string lower;
  for (char c : media) lower.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  if (lower == "application/json") return Status::Ok();
  return Status::Error(415, "unsupported_media_type",
                       "request body must be application/json, not '" + std::string(media) + "'");
}

static Status ParseCreateSessionInto(std::string_view body, const Config& config, CreateSessionRequest* out) {
  *out = CreateSessionRequest{};
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos) return Status::Ok();
  rapidjson::Document doc;
  if (Status err = ParseObject(body, &doc); !err.ok()) return err;
  for (const auto& m : doc.GetObject()) {
    std::string_view name(m.name.GetString(), m.name.GetStringLength());
    const rapidjson::Value& v = m.value;
    if (name == "title") {
      if (v.IsNull()) continue;
      if (!v.IsString()) return WrongType("title", "a string or null", v);
      std::string_view title(v.GetString(), v.GetStringLength());
      if (Utf8Length(title) > config.max_title_chars) {
        return Invalid("field 'title' is longer than " + std::to_string(config.max_title_chars) + " characters");
      }
      out->title = std::string(title);
    } else if (name == "metadata") {
      if (Status err = ParseMetadata(v, config, &out->metadata_json); !err.ok()) return err;
    } else if (name == "model") {
      if (v.IsNull()) continue;
      std::string model;
      if (Status err = ParseModel(v, &model); !err.ok()) return err;
      out->model = std::move(model);
    } else if (name == "system_prompt") {
      if (v.IsNull()) continue;
      if (!v.IsString()) return WrongType("system_prompt", "a string or null", v);
      if (v.GetStringLength() > config.max_system_prompt_bytes) {
        return Invalid("field 'system_prompt' is larger than " + std::to_string(config.max_system_prompt_bytes) +
                       " bytes");
      }
      if (v.GetStringLength() > 0) out->system_prompt = std::string(v.GetString(), v.GetStringLength());
    } else {
      return Invalid("unknown field '" + std::string(name) + "' (allowed: title, metadata, model, system_prompt)");
    }
  }
  return Status::Ok();
}

static Status ParseAppendMessageInto(std::string_view body, const Config& config, AppendMessageRequest* out) {
  *out = AppendMessageRequest{};
  rapidjson::Document doc;
  if (Status err = ParseObject(body, &doc); !err.ok()) return err;
  bool have_content = false;
  for (const auto& m : doc.GetObject()) {
    std::string_view name(m.name.GetString(), m.name.GetStringLength());
    const rapidjson::Value& v = m.value;
    if (name == "content") {
      if (!v.IsString()) return WrongType("content", "a string", v);
      if (v.GetStringLength() == 0) return Invalid("field 'content' must not be empty");
      if (v.GetStringLength() > config.max_content_bytes) {
        return Invalid("field 'content' is larger than " + std::to_string(config.max_content_bytes) + " bytes");
      }
      out->content.assign(v.GetString(), v.GetStringLength());
      have_content = true;
    } else if (name == "role") {
      if (!v.IsString()) return WrongType("role", "a string", v);
      if (std::string_view(v.GetString(), v.GetStringLength()) != "user") {
        return Invalid("field 'role' must be \"user\"");
      }
    } else if (name == "model") {
      if (Status err = ParseModel(v, &out->model); !err.ok()) return err;
    } else if (name == "stream") {
      if (!v.IsBool()) return WrongType("stream", "a boolean", v);
      out->stream = v.GetBool();
    } else {
      Status err;
      if (ParseSampling(name, v, &out->sampling, &err)) {
        if (!err.ok()) return err;
        continue;
      }
      return Invalid("unknown field '" + std::string(name) +
                     "' (allowed: content, role, model, stream, max_tokens, temperature, top_p, stop)");
    }
  }
  if (!have_content) return Invalid("field 'content' is required");
  return Status::Ok();
}

bool ValidModelName(std::string_view name) {
  if (name.empty() || name.size() > 128) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == ':' || c == '/' || c == '@' || c == '+' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// The "messages" of a chat completion: system and developer messages are
// joined into out->system, user and assistant ones kept in order.
static Status ParseChatMessages(const rapidjson::Value& v, const Config& config, ChatCompletionRequest* out) {
  if (!v.IsArray() || v.Empty()) return Invalid("field 'messages' must be a non-empty array");
  if (v.Size() > 10000) return Invalid("field 'messages' holds more than 10000 messages");
  for (rapidjson::SizeType i = 0; i < v.Size(); ++i) {
    const rapidjson::Value& msg = v[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!msg.IsObject()) return Invalid("field '" + where + "' must be an object");
    auto role_it = msg.FindMember("role");
    auto content_it = msg.FindMember("content");
    if (role_it == msg.MemberEnd() || !role_it->value.IsString()) {
      return Invalid("field '" + where + ".role' must be a string");
    }
    std::string role(role_it->value.GetString(), role_it->value.GetStringLength());
    if (msg.HasMember("tool_calls") || msg.HasMember("function_call") || role == "tool" || role == "function") {
      return Unsupported("tool and function messages");
    }
    if (role != "system" && role != "developer" && role != "user" && role != "assistant") {
      return Invalid("field '" + where + ".role' must be system, developer, user or assistant");
    }
    if (content_it == msg.MemberEnd()) return Invalid("field '" + where + ".content' is required");
    std::string text;
    if (Status e = MessageText(content_it->value, i, &text); !e.ok()) return e;
    if (text.size() > config.max_content_bytes) {
      return Invalid("field '" + where + ".content' is larger than " + std::to_string(config.max_content_bytes) +
                     " bytes");
    }
    if (role == "system" || role == "developer") {
      if (out->has_system) out->system.append("\n\n");
      out->system += text;
      out->has_system = true;
    } else {
      out->messages.push_back(ChatMessage{role, std::move(text)});
    }
  }
  return Status::Ok();
}

static Status ParseChatCompletionInto(std::string_view body, const Config& config, ChatCompletionRequest* out) {
  *out = ChatCompletionRequest{};
  rapidjson::Document doc;
  if (Status err = ParseObject(body, &doc); !err.ok()) return err;
  bool have_messages = false;
  for (const auto& m : doc.GetObject()) {
    std::string_view name(m.name.GetString(), m.name.GetStringLength());
    const rapidjson::Value& v = m.value;
    Status err;
    if (name == "model") {
      if (Status e = ParseModel(v, &out->model); !e.ok()) return e;
    } else if (name == "messages") {
      if (Status e = ParseChatMessages(v, config, out); !e.ok()) return e;
      have_messages = true;
    } else if (name == "stream") {
      if (!v.IsBool() && !v.IsNull()) return WrongType("stream", "a boolean", v);
      out->stream = v.IsBool() && v.GetBool();
    } else if (name == "stream_options") {
      if (v.IsNull()) continue;
      if (!v.IsObject()) return WrongType("stream_options", "an object", v);
      auto usage = v.FindMember("include_usage");
      if (usage != v.MemberEnd()) {
        if (!usage->value.IsBool()) return WrongType("stream_options.include_usage", "a boolean", usage->value);
        out->include_usage = usage->value.GetBool();
      }
    } else if (name == "session_id") {
      if (!v.IsString()) return WrongType("session_id", "a string", v);
      out->session_id.assign(v.GetString(), v.GetStringLength());
    } else if (name == "n") {
      if (!v.IsNull() && !(v.IsInt() && v.GetInt() == 1)) return Unsupported("n other than 1");
    } else if (name == "tools" || name == "functions" || name == "tool_choice" || name == "function_call" ||
               name == "audio" || name == "prediction") {
      if (!v.IsNull()) return Unsupported("'" + std::string(name) + "'");
    } else if (name == "logprobs") {
      if (v.IsBool() && v.GetBool()) return Unsupported("logprobs");
    } else if (name == "response_format") {
      auto type = v.IsObject() ? v.FindMember("type") : rapidjson::Value::ConstMemberIterator();
      if (!v.IsNull() && !(v.IsObject() && type != v.MemberEnd() && type->value.IsString() &&
                           std::string_view(type->value.GetString()) == "text")) {
        return Unsupported("response_format other than text");
      }
    } else if (ParseSampling(name, v, &out->sampling, &err)) {
      if (!err.ok()) return err;
    }
    // Anything else (user, seed, penalties, metadata, store...) is ignored.
  }
  if (!have_messages) return Invalid("field 'messages' is required");
  if (out->messages.empty()) return Invalid("field 'messages' must hold at least one user or assistant message");
  return Status::Ok();
}

std::string SessionCursorText(int64_t created_us, std::string_view id_bytes) {
  std::string raw(8, '\0');
  for (int i = 0; i < 8; ++i) raw[i] = static_cast<char>((static_cast<uint64_t>(created_us) >> (56 - 8 * i)) & 0xff);
  raw.append(id_bytes);
  return Base64UrlEncode(raw);
}

static Status ParseListSessionsQueryInto(std::string_view query, ListSessionsQuery* out) {
  *out = ListSessionsQuery{};
  std::map<std::string, std::string> params;
  if (Status s = ParseQuery(query, &params); !s.ok()) return s;
  for (const auto& [key, value] : params) {
    if (key == "limit") {
      int64_t v = 0;
      if (!ParseDecimal(value, kMaxPageLimit, &v) || v < 1) {
        return Invalid("query parameter 'limit' must be an integer from 1 to " + std::to_string(kMaxPageLimit));
      }
      out->limit = static_cast<int>(v);
    } else if (key == "after") {
      std::string raw;
      if (value.size() != 32 || !Base64UrlDecode(value, &raw) || raw.size() != 24) {
        return Invalid("query parameter 'after' must be a cursor from a previous page's next_after");
      }
      uint64_t created = 0;
      for (int i = 0; i < 8; ++i) created = (created << 8) | static_cast<unsigned char>(raw[i]);
      if (created > static_cast<uint64_t>(INT64_MAX)) {
        return Invalid("query parameter 'after' must be a cursor from a previous page's next_after");
      }
      out->after_created_us = static_cast<int64_t>(created);
      out->after_id = raw.substr(8);
    } else {
      return Invalid("unknown query parameter '" + key + "' (allowed: limit, after)");
    }
  }
  return Status::Ok();
}

Status ParseNoQuery(std::string_view query) {
  std::map<std::string, std::string> params;
  if (Status s = ParseQuery(query, &params); !s.ok()) return s;
  if (!params.empty())
    return Invalid("unknown query parameter '" + params.begin()->first + "' (this route takes none)");
  return Status::Ok();
}

bool ValidIdempotencyKey(std::string_view key) {
  if (key.empty() || key.size() > 255) return false;
  for (char c : key) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

bool ParseDecimal(std::string_view text, int64_t max, int64_t* out) {
  if (text.empty() || text.size() > 19) return false;
  if (text.size() > 1 && text[0] == '0') return false;
  int64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    int d = c - '0';
    if (v > (max - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

static Status ParseListMessagesQueryInto(std::string_view query, ListMessagesQuery* out) {
  *out = ListMessagesQuery{};
  std::map<std::string, std::string> params;
  if (Status s = ParseQuery(query, &params); !s.ok()) return s;
  for (const auto& [key, value] : params) {
    int64_t v = 0;
    if (key == "limit") {
      if (!ParseDecimal(value, kMaxPageLimit, &v) || v < 1) {
        return Invalid("query parameter 'limit' must be an integer from 1 to " + std::to_string(kMaxPageLimit));
      }
      out->limit = static_cast<int>(v);
    } else if (key == "after") {
      if (!ParseDecimal(value, INT64_MAX, &v)) {
        return Invalid("query parameter 'after' must be a non-negative integer (a seq)");
      }
      out->after = v;
    } else {
      return Invalid("unknown query parameter '" + key + "' (allowed: limit, after)");
    }
  }
  return Status::Ok();
}

StatusOr<CreateSessionRequest> ParseCreateSession(std::string_view body, const Config& config) {
  CreateSessionRequest out;
  if (Status s = ParseCreateSessionInto(body, config, &out); !s.ok()) return s;
  return out;
}

StatusOr<AppendMessageRequest> ParseAppendMessage(std::string_view body, const Config& config) {
  AppendMessageRequest out;
  if (Status s = ParseAppendMessageInto(body, config, &out); !s.ok()) return s;
  return out;
}

StatusOr<ChatCompletionRequest> ParseChatCompletion(std::string_view body, const Config& config) {
  ChatCompletionRequest out;
  if (Status s = ParseChatCompletionInto(body, config, &out); !s.ok()) return s;
  return out;
}

StatusOr<ListSessionsQuery> ParseListSessionsQuery(std::string_view query) {
  ListSessionsQuery out;
  if (Status s = ParseListSessionsQueryInto(query, &out); !s.ok()) return s;
  return out;
}

StatusOr<ListMessagesQuery> ParseListMessagesQuery(std::string_view query) {
  ListMessagesQuery out;
  if (Status s = ParseListMessagesQueryInto(query, &out); !s.ok()) return s;
  return out;
}

StatusOr<int64_t> ParseTurnEventsQuery(std::string_view query, std::string_view last_id) {
  std::map<std::string, std::string> params;
  if (Status s = ParseQuery(query, &params); !s.ok()) return s;
  int64_t after = 0;
  for (const auto& [key, value] : params) {
    if (key != "starting_after") return Invalid("unknown query parameter '" + key + "' (allowed: starting_after)");
    if (!ParseDecimal(value, INT64_MAX, &after)) {
      return Invalid("query parameter 'starting_after' must be a non-negative integer (an event's id)");
    }
  }
  // An EventSource opened on ...?starting_after=N sends that URL again when
  // it reconnects, with the id it saw last: the later of the two.
  int64_t seen = 0;
  if (!last_id.empty()) {
    if (!ParseDecimal(last_id, INT64_MAX, &seen)) {
      return Invalid("header Last-Event-ID must be a non-negative integer (an event's id)");
    }
    after = std::max(after, seen);
  }
  return after;
}

}  // namespace chatllm
