// OpenAI's Responses and Conversations requests (api/requests.h).

#include <algorithm>
#include <map>

#include "api/requests.h"
#include "base/http.h"
#include "base/json.h"
#include "request_fields.h"

namespace chatllm {

using namespace request_fields;

static Status UnknownParameter(std::string_view name) {
  return Status::Error(400, "unknown_parameter", "unknown parameter '" + std::string(name) + "'");
}

// One input item's text: a string, or input_text / output_text / text parts.
static Status InputItemText(const rapidjson::Value& content, const std::string& where, std::string* out) {
  if (content.IsString()) {
    out->assign(content.GetString(), content.GetStringLength());
    return Status::Ok();
  }
  if (!content.IsArray()) return Invalid("field '" + where + "' must be a string or an array of text parts");
  out->clear();
  for (const auto& part : content.GetArray()) {
    auto type = part.IsObject() ? part.FindMember("type") : rapidjson::Value::ConstMemberIterator();
    auto text = part.IsObject() ? part.FindMember("text") : rapidjson::Value::ConstMemberIterator();
    if (!part.IsObject() || type == part.MemberEnd() || !type->value.IsString()) {
      return Invalid("field '" + where + "' must hold objects with a 'type'");
    }
    std::string_view t(type->value.GetString(), type->value.GetStringLength());
    if ((t != "input_text" && t != "output_text" && t != "text") || text == part.MemberEnd() ||
        !text->value.IsString()) {
      return Status::Error(400, "unsupported_parameter", "field '" + where + "': only text parts are supported");
    }
    out->append(text->value.GetString(), text->value.GetStringLength());
  }
  return Status::Ok();
}

// `input`: a string (one user message) or an array of message items.
static Status ParseResponseInput(const rapidjson::Value& v, const Config& config, CreateResponseRequest* out,
                                 std::string* system) {
  if (v.IsString()) {
    out->messages.push_back(ChatMessage{"user", std::string(v.GetString(), v.GetStringLength())});
  } else if (v.IsArray()) {
    if (v.Size() > 10000) return Invalid("field 'input' holds more than 10000 items");
    for (rapidjson::SizeType i = 0; i < v.Size(); ++i) {
      const rapidjson::Value& item = v[i];
      const std::string where = "input[" + std::to_string(i) + "]";
      if (!item.IsObject()) return Invalid("field '" + where + "' must be an object");
      auto type = item.FindMember("type");
      if (type != item.MemberEnd() &&
          !(type->value.IsString() && std::string_view(type->value.GetString()) == "message")) {
        return Status::Error(400, "unsupported_parameter", "field '" + where + "': only message items are supported");
      }
      auto role = item.FindMember("role");
      auto content = item.FindMember("content");
      if (role == item.MemberEnd() || !role->value.IsString())
        return Invalid("field '" + where + ".role' must be a string");
      std::string r(role->value.GetString(), role->value.GetStringLength());
      if (r != "user" && r != "assistant" && r != "system" && r != "developer") {
        return Invalid("field '" + where + ".role' must be user, assistant, system or developer");
      }
      if (content == item.MemberEnd()) return Invalid("field '" + where + ".content' is required");
      std::string text;
      if (Status e = InputItemText(content->value, where + ".content", &text); !e.ok()) return e;
      if (r == "system" || r == "developer") {
        if (!system->empty()) system->append("\n\n");
        system->append(text);
      } else {
        out->messages.push_back(ChatMessage{r, std::move(text)});
      }
    }
  } else {
    return WrongType("input", "a string or an array of items", v);
  }
  for (const ChatMessage& m : out->messages) {
    if (m.content.size() > config.max_content_bytes) {
      return Invalid("field 'input' holds a message larger than " + std::to_string(config.max_content_bytes) +
                     " bytes");
    }
  }
  return Status::Ok();
}

static Status ParseCreateResponseInto(std::string_view body, const Config& config, CreateResponseRequest* out) {
  *out = CreateResponseRequest{};
  rapidjson::Document doc;
  if (Status err = ParseObject(body, &doc); !err.ok()) return err;
  bool have_input = false;
  std::string system;
  for (const auto& m : doc.GetObject()) {
    std::string_view name(m.name.GetString(), m.name.GetStringLength());
    const rapidjson::Value& v = m.value;
    if (name == "model") {
      if (v.IsNull()) continue;
      if (Status e = ParseModel(v, &out->model); !e.ok()) return e;
    } else if (name == "input") {
      if (Status e = ParseResponseInput(v, config, out, &system); !e.ok()) return e;
      have_input = true;
    } else if (name == "instructions") {
      if (v.IsNull()) continue;
      if (!v.IsString()) return WrongType("instructions", "a string", v);
      if (v.GetStringLength() > config.max_system_prompt_bytes) {
        return Invalid("field 'instructions' is larger than " + std::to_string(config.max_system_prompt_bytes) +
                       " bytes");
      }
      out->instructions = std::string(v.GetString(), v.GetStringLength());
    } else if (name == "conversation") {
      if (v.IsNull()) continue;
      const rapidjson::Value* id = &v;
      if (v.IsObject()) {
        auto it = v.FindMember("id");
        if (it == v.MemberEnd()) return Invalid("field 'conversation.id' is required");
        id = &it->value;
      }
      if (!id->IsString()) return WrongType("conversation", "a string or {\"id\": string}", *id);
      out->conversation.assign(id->GetString(), id->GetStringLength());
    } else if (name == "stream" || name == "background" || name == "store") {
      if (v.IsNull()) continue;
      if (!v.IsBool()) return Invalid("field '" + std::string(name) + "' must be a boolean, not " + JsonTypeName(v));
      (name == "stream" ? out->stream : name == "background" ? out->background : out->store) = v.GetBool();
    } else if (name == "max_output_tokens") {
      if (v.IsNull()) continue;
      if (!v.IsInt() || v.GetInt() < 1 || v.GetInt() > 1000000) {
        return Invalid("field 'max_output_tokens' must be an integer from 1 to 1000000");
      }
      out->sampling.max_tokens = v.GetInt();
    } else if (name == "temperature" || name == "top_p") {
      if (v.IsNull()) continue;
      Status err;
      ParseSampling(name, v, &out->sampling, &err);
      if (!err.ok()) return err;
    } else if (name == "metadata") {
      if (v.IsNull() || (v.IsObject() && v.MemberCount() == 0)) continue;
      return Unsupported("'metadata' on a response (set it on the conversation)");
    } else if (name == "tools" || name == "include") {
      if (v.IsNull() || (v.IsArray() && v.Empty())) continue;
      return Unsupported("'" + std::string(name) + "'");
    } else if (name == "tool_choice") {
      if (v.IsNull() ||
          (v.IsString() && (std::string_view(v.GetString()) == "auto" || std::string_view(v.GetString()) == "none"))) {
        continue;
      }
      return Unsupported("'tool_choice'");
    } else if (name == "text") {
      if (v.IsNull()) continue;
      auto format = v.IsObject() ? v.FindMember("format") : rapidjson::Value::ConstMemberIterator();
      bool text_format =
          v.IsObject() && (format == v.MemberEnd() || (format->value.IsObject() && format->value.HasMember("type") &&
                                                       format->value["type"].IsString() &&
                                                       std::string_view(format->value["type"].GetString()) == "text"));
      if (!text_format) return Unsupported("'text.format' other than text");
    } else if (name == "reasoning") {
      if (v.IsNull() || (v.IsObject() && v.MemberCount() == 0)) continue;
      return Unsupported("'reasoning'");
    } else if (name == "truncation") {
      // chatllm always fits the conversation to its context budget ("auto").
      if (v.IsNull() || (v.IsString() && (std::string_view(v.GetString()) == "auto" ||
                                          std::string_view(v.GetString()) == "disabled"))) {
        continue;
      }
      return Invalid("field 'truncation' must be \"auto\" or \"disabled\"");
    } else if (name == "user" || name == "safety_identifier" || name == "prompt_cache_key" || name == "service_tier" ||
               name == "parallel_tool_calls" || name == "stream_options") {
      continue;  // Hints with no effect here.
    } else if (name == "previous_response_id" || name == "prompt" || name == "max_tool_calls" ||
               name == "top_logprobs" || name == "prompt_cache_retention") {
      if (v.IsNull()) continue;
      return Unsupported("'" + std::string(name) + "'");
    } else {
      return UnknownParameter(name);
    }
  }
  if (!have_input) return Invalid("field 'input' is required");
  if (!system.empty()) out->instructions = out->instructions ? *out->instructions + "\n\n" + system : system;
  if (out->instructions && out->instructions->size() > config.max_system_prompt_bytes) {
    return Invalid("the instructions (with system and developer items) are larger than " +
                   std::to_string(config.max_system_prompt_bytes) + " bytes");
  }
  if (out->messages.empty() || out->messages.back().role != "user") {
    return Invalid("field 'input' must end with a user message");
  }
  if (out->store) {
    // A stored response is one turn of its conversation: one user message.
    if (out->messages.size() != 1) {
      return Unsupported(
          "an 'input' of more than one user or assistant message with store: true (a conversation "
          "takes one new user message per response; send earlier ones with store: false)");
    }
    if (out->messages.front().content.empty()) return Invalid("field 'input' must not be empty");
    out->input = std::move(out->messages.front().content);
    out->messages.clear();
  }
  return Status::Ok();
}

StatusOr<CreateResponseRequest> ParseCreateResponse(std::string_view body, const Config& config) {
  CreateResponseRequest out;
  if (Status s = ParseCreateResponseInto(body, config, &out); !s.ok()) return s;
  return out;
}

StatusOr<ResponseQuery> ParseResponseQuery(std::string_view query, std::string_view last_id) {
  std::map<std::string, std::string> params;
  if (Status s = ParseQuery(query, &params); !s.ok()) return s;
  ResponseQuery out;
  int64_t seen = -1;
  if (!last_id.empty()) {
    if (!ParseDecimal(last_id, INT64_MAX, &seen)) {
      return Invalid("header Last-Event-ID must be a non-negative integer (an event's sequence_number)");
    }
  }
  for (const auto& [key, value] : params) {
    if (key == "stream") {
      if (value != "true" && value != "false") return Invalid("query parameter 'stream' must be true or false");
      out.stream = value == "true";
    } else if (key == "starting_after") {
      if (!ParseDecimal(value, INT64_MAX, &out.starting_after)) {
        return Invalid("query parameter 'starting_after' must be a non-negative integer (a sequence_number)");
      }
    } else if (key == "include[]" || key == "include") {
      return Unsupported("'include'");
    } else if (key == "include_obfuscation") {
      continue;
    } else {
      return Invalid("unknown query parameter '" + key + "' (allowed: stream, starting_after)");
    }
  }
  // As for a turn's events: the later of the query's and Last-Event-ID.
  out.starting_after = std::max(out.starting_after, seen);
  return out;
}

static Status ParseCreateConversationInto(std::string_view body, const Config& config, CreateConversationRequest* out) {
  *out = CreateConversationRequest{};
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos) return Status::Ok();
  rapidjson::Document doc;
  if (Status err = ParseObject(body, &doc); !err.ok()) return err;
  for (const auto& m : doc.GetObject()) {
    std::string_view name(m.name.GetString(), m.name.GetStringLength());
    const rapidjson::Value& v = m.value;
    if (name == "metadata") {
      if (v.IsNull()) continue;
      if (Status err = ParseMetadata(v, config, &out->metadata_json); !err.ok()) return err;
    } else if (name == "items") {
      if (v.IsNull() || (v.IsArray() && v.Empty())) continue;
      return Unsupported("'items' (a conversation starts empty; its messages come from responses)");
    } else {
      return UnknownParameter(name);
    }
  }
  return Status::Ok();
}

StatusOr<CreateConversationRequest> ParseCreateConversation(std::string_view body, const Config& config) {
  CreateConversationRequest out;
  if (Status s = ParseCreateConversationInto(body, config, &out); !s.ok()) return s;
  return out;
}

StatusOr<ConversationItemsQuery> ParseConversationItemsQuery(std::string_view query) {
  std::map<std::string, std::string> params;
  if (Status s = ParseQuery(query, &params); !s.ok()) return s;
  ConversationItemsQuery out;
  for (const auto& [key, value] : params) {
    if (key == "limit") {
      int64_t v = 0;
      if (!ParseDecimal(value, 100, &v) || v < 1) return Invalid("query parameter 'limit' must be from 1 to 100");
      out.limit = static_cast<int>(v);
    } else if (key == "after") {
      out.after = value;
    } else if (key == "order") {
      if (value != "asc" && value != "desc") return Invalid("query parameter 'order' must be asc or desc");
      out.ascending = value == "asc";
    } else if (key == "include[]" || key == "include") {
      return Unsupported("'include'");
    } else {
      return Invalid("unknown query parameter '" + key + "' (allowed: limit, after, order)");
    }
  }
  return out;
}

}  // namespace chatllm
