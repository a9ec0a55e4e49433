#include "base/json.h"

#include <rapidjson/error/en.h>

#include <set>
#include <utility>
#include <vector>

namespace chatllm {

bool IsValidUtf8(std::string_view bytes) {
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t n = bytes.size();
  size_t i = 0;
  while (i < n) {
    unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) {
      len = 2;
      cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;  // Continuation byte, 0xc0/0xc1 (overlong) or > 0xf4.
    }
    if (i + len > n) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) return false;  // Overlong.
    if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += len;
  }
  return true;
}

size_t Utf8Length(std::string_view bytes) {
  size_t count = 0;
  for (unsigned char c : bytes) {
    if ((c & 0xc0) != 0x80) ++count;
  }
  return count;
}

namespace {

bool ValidateTree(const rapidjson::Value& root, std::string* error) {
  // Explicit stack of (value, depth): no recursion on attacker-chosen depth.
  std::vector<std::pair<const rapidjson::Value*, int>> stack;
  stack.emplace_back(&root, 0);
  std::set<std::string_view> keys;
  while (!stack.empty()) {
    auto [v, depth] = stack.back();
    stack.pop_back();
    if (v->IsString()) {
      if (!IsValidUtf8(std::string_view(v->GetString(), v->GetStringLength()))) {
        *error = "string is not valid UTF-8 (lone surrogate escape?)";
        return false;
      }
    } else if (v->IsObject() || v->IsArray()) {
      if (depth + 1 > kMaxJsonDepth) {
        *error = "nesting deeper than " + std::to_string(kMaxJsonDepth) + " levels";
        return false;
      }
      if (v->IsArray()) {
        for (const auto& item : v->GetArray()) stack.emplace_back(&item, depth + 1);
        continue;
      }
      keys.clear();
      for (const auto& member : v->GetObject()) {
        std::string_view key(member.name.GetString(), member.name.GetStringLength());
        if (!IsValidUtf8(key)) {
          *error = "object key is not valid UTF-8";
          return false;
        }
        if (!keys.insert(key).second) {
          *error = "duplicate key \"" + std::string(key) + "\"";
          return false;
        }
        stack.emplace_back(&member.value, depth + 1);
      }
    }
  }
  return true;
}

}  // namespace

Status ParseJson(std::string_view text, rapidjson::Document* doc) {
  constexpr unsigned kFlags = rapidjson::kParseIterativeFlag | rapidjson::kParseValidateEncodingFlag;
  doc->Parse<kFlags>(text.data(), text.size());
  if (doc->HasParseError()) {
    return Status::Error(400, "invalid_json",
                         std::string(rapidjson::GetParseError_En(doc->GetParseError())) + " (at byte " +
                             std::to_string(doc->GetErrorOffset()) + ")");
  }
  std::string error;
  if (!ValidateTree(*doc, &error)) return Status::Error(400, "invalid_json", error);
  return Status::Ok();
}

std::string JsonToString(const rapidjson::Value& value) {
  rapidjson::StringBuffer buf;
  JsonWriter writer(buf);
  value.Accept(writer);
  return std::string(buf.GetString(), buf.GetSize());
}

const char* JsonTypeName(const rapidjson::Value& value) {
  switch (value.GetType()) {
    case rapidjson::kNullType:
      return "null";
    case rapidjson::kFalseType:
    case rapidjson::kTrueType:
      return "boolean";
    case rapidjson::kObjectType:
      return "object";
    case rapidjson::kArrayType:
      return "array";
    case rapidjson::kStringType:
      return "string";
    case rapidjson::kNumberType:
      return "number";
  }
  return "value";
}

}  // namespace chatllm
