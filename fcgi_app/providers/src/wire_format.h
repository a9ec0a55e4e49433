#pragma once

// Private to the providers room: reading the providers' JSON, shared by the
// wire formats (wire_format.cc) and the streaming clients (provider_http.cc).

#include <cstdint>
#include <string>
#include <vector>

#include "base/json.h"
#include "providers/provider.h"

namespace chatllm {

// Member `name` of object `v`, or null (also when `v` is not an object).
const rapidjson::Value* Member(const rapidjson::Value& v, const char* name);
// A string member's value, or "".
std::string StringMember(const rapidjson::Value& v, const char* name);
// An integer member's value, or -1.
int64_t IntMember(const rapidjson::Value& v, const char* name);
// Token counts of an OpenAI `usage` object (an answer or the last chunk):
// prompt, completion and the prompt's cached part
// (prompt_tokens_details.cached_tokens).
void ReadOpenAiUsage(const rapidjson::Value& usage, Completion* c);
// The prompt side of an Anthropic `usage` object, counted as OpenAI does:
// prompt_tokens = input + cache reads + cache writes, cached = cache reads.
void ReadAnthropicInput(const rapidjson::Value& usage, Completion* c);
// The finish reason as docs/providers.md names it.
std::string OpenAiFinish(const std::string& reason);
std::string AnthropicFinish(const std::string& stop_reason);
// Anthropic wants user and assistant turns alternating, starting with the
// user: consecutive messages of one role are joined, a leading assistant
// message dropped.
std::vector<ChatMessage> Alternating(const std::vector<ChatMessage>& in);

}  // namespace chatllm
