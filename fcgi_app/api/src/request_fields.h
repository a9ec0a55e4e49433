#pragma once

// Private to the api room: the field parsers the request parsers share
// (requests.cc for the native and chat-completions requests,
// responses_requests.cc for OpenAI's Responses and Conversations).

#include <string>
#include <string_view>

#include "api/requests.h"
#include "base/json.h"
#include "base/status.h"

namespace chatllm::request_fields {

Status Invalid(std::string message);
// 400 unsupported_parameter: `what` is not supported by this endpoint.
Status Unsupported(const std::string& what);
// Parses `body` into a JSON object, or returns the error.
Status ParseObject(std::string_view body, rapidjson::Document* doc);
Status WrongType(const char* field, const char* want, const rapidjson::Value& v);
// `metadata`: an object, kept re-serialized compactly, of at most
// max_metadata_bytes.
Status ParseMetadata(const rapidjson::Value& v, const Config& config, std::string* out);
Status ParseModel(const rapidjson::Value& v, std::string* out);
// max_tokens, temperature, top_p, stop. Returns true if `name` was one of
// them (then `*err` says whether its value was good).
bool ParseSampling(std::string_view name, const rapidjson::Value& v, Sampling* out, Status* err);

}  // namespace chatllm::request_fields
