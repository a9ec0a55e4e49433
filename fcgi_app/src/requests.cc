#include "fcgi_app/requests.h"

#include <cctype>
#include <map>

#include "fcgi_app/http.h"
#include "fcgi_app/json.h"

namespace chatllm {
namespace {

ApiError Invalid(std::string message) { return ApiError{400, "invalid_request", std::move(message)}; }

// Parses `body` into a JSON object, or returns the error.
std::optional<ApiError> ParseObject(std::string_view body, rapidjson::Document* doc) {
  std::string error;
  if (!ParseJson(body, doc, &error)) return ApiError{400, "invalid_json", "request body is not valid JSON: " + error};
  if (!doc->IsObject()) {
    return ApiError{400, "invalid_json",
                    std::string("request body must be a JSON object, not ") + JsonTypeName(*doc)};
  }
  return std::nullopt;
}

std::optional<ApiError> WrongType(const char* field, const char* want, const rapidjson::Value& v) {
  return Invalid(std::string("field '") + field + "' must be " + want + ", not " + JsonTypeName(v));
}

}  // namespace

std::optional<ApiError> CheckJsonContentType(std::string_view ct) {
  if (ct.empty()) return std::nullopt;
  std::string_view media = ct.substr(0, ct.find(';'));
  while (!media.empty() && media.back() == ' ') media.remove_suffix(1);
  std::string lower;
  for (char c : media) lower.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  if (lower == "application/json") return std::nullopt;
  return ApiError{415, "unsupported_media_type",
                  "request body must be application/json, not '" + std::string(media) + "'"};
}

std::optional<ApiError> ParseCreateSession(std::string_view body, const Config& config,
                                           CreateSessionRequest* out) {
  *out = CreateSessionRequest{};
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos) return std::nullopt;
  rapidjson::Document doc;
  if (auto err = ParseObject(body, &doc)) return err;
  for (const auto& m : doc.GetObject()) {
    std::string_view name(m.name.GetString(), m.name.GetStringLength());
    const rapidjson::Value& v = m.value;
    if (name == "title") {
      if (v.IsNull()) continue;
      if (!v.IsString()) return WrongType("title", "a string or null", v);
      std::string_view title(v.GetString(), v.GetStringLength());
      if (Utf8Length(title) > config.max_title_chars) {
        return Invalid("field 'title' is longer than " + std::to_string(config.max_title_chars) +
                       " characters");
      }
      out->title = std::string(title);
    } else if (name == "metadata") {
      if (!v.IsObject()) return WrongType("metadata", "an object", v);
      out->metadata_json = JsonToString(v);
      if (out->metadata_json.size() > config.max_metadata_bytes) {
        return Invalid("field 'metadata' is larger than " +
                       std::to_string(config.max_metadata_bytes) + " bytes when serialized");
      }
    } else {
      return Invalid("unknown field '" + std::string(name) + "' (allowed: title, metadata)");
    }
  }
  return std::nullopt;
}

std::optional<ApiError> ParseAppendMessage(std::string_view body, const Config& config,
                                           AppendMessageRequest* out) {
  *out = AppendMessageRequest{};
  rapidjson::Document doc;
  if (auto err = ParseObject(body, &doc)) return err;
  bool have_content = false;
  for (const auto& m : doc.GetObject()) {
    std::string_view name(m.name.GetString(), m.name.GetStringLength());
    const rapidjson::Value& v = m.value;
    if (name == "content") {
      if (!v.IsString()) return WrongType("content", "a string", v);
      if (v.GetStringLength() == 0) return Invalid("field 'content' must not be empty");
      if (v.GetStringLength() > config.max_content_bytes) {
        return Invalid("field 'content' is larger than " + std::to_string(config.max_content_bytes) +
                       " bytes");
      }
      out->content.assign(v.GetString(), v.GetStringLength());
      have_content = true;
    } else if (name == "role") {
      if (!v.IsString()) return WrongType("role", "a string", v);
      if (std::string_view(v.GetString(), v.GetStringLength()) != "user") {
        return Invalid("field 'role' must be \"user\"");
      }
    } else {
      return Invalid("unknown field '" + std::string(name) + "' (allowed: content, role)");
    }
  }
  if (!have_content) return Invalid("field 'content' is required");
  return std::nullopt;
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

std::optional<ApiError> ParseListMessagesQuery(std::string_view query, ListMessagesQuery* out) {
  *out = ListMessagesQuery{};
  std::map<std::string, std::string> params;
  std::string error;
  if (!ParseQuery(query, &params, &error)) return Invalid(error);
  for (const auto& [key, value] : params) {
    int64_t v = 0;
    if (key == "limit") {
      if (!ParseDecimal(value, kMaxPageLimit, &v) || v < 1) {
        return Invalid("query parameter 'limit' must be an integer from 1 to " +
                       std::to_string(kMaxPageLimit));
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
  return std::nullopt;
}

}  // namespace chatllm
