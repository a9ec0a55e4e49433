#pragma once

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <string>
#include <string_view>

#include "base/status.h"

namespace chatllm {

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

// Deepest nesting accepted in request bodies (objects and arrays).
constexpr int kMaxJsonDepth = 64;

// Parses `text` as exactly one JSON document, without recursion (RapidJSON's
// iterative parser plus an iterative validation walk). Rejects, with 400
// invalid_json and a short reason as the message: syntax errors and trailing data, invalid UTF-8 (overlong
// forms, code points above U+10FFFF), strings or keys that decode to a
// surrogate code point (RapidJSON accepts a lone "\udc00"), duplicate keys in
// an object, and nesting deeper than kMaxJsonDepth.
Status ParseJson(std::string_view text, rapidjson::Document* doc);

// True if `bytes` is well-formed UTF-8 with no surrogates and nothing above
// U+10FFFF (RFC 3629).
bool IsValidUtf8(std::string_view bytes);
// Number of code points in well-formed UTF-8.
size_t Utf8Length(std::string_view bytes);

// Serializes `value` compactly.
std::string JsonToString(const rapidjson::Value& value);

// Name of a JSON value's type for error messages ("string", "object", ...).
const char* JsonTypeName(const rapidjson::Value& value);

}  // namespace chatllm
