// libFuzzer target: the JSON request bodies (POST /v1/sessions,
// POST /v1/sessions/{id}/messages, POST /v1/chat/completions) through the
// strict parser and validation. The first byte picks the parser; the rest is
// the body. Properties: no crash or sanitizer report; a refusal is a 4xx
// with the uniform error body; an accepted body gives values within the
// configured limits.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "base/config.h"
#include "base/http.h"
#include "api/requests.h"
#include "fuzz_support.h"

using namespace chatllm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static const Config config;  // The defaults: the limits production starts from.
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::optional<ApiError> error;
  switch (data[0] % 3) {
    case 0: {
      CreateSessionRequest out;
      error = ParseCreateSession(body, config, &out);
      if (!error && out.title) FUZZ_CHECK(out.title->size() <= body.size());
      break;
    }
    case 1: {
      AppendMessageRequest out;
      error = ParseAppendMessage(body, config, &out);
      if (!error) FUZZ_CHECK(out.content.size() <= static_cast<size_t>(config.max_content_bytes));
      break;
    }
    default: {
      ChatCompletionRequest out;
      error = ParseChatCompletion(body, config, &out);
      if (!error) FUZZ_CHECK(!out.messages.empty());
      break;
    }
  }
  if (error) {
    FUZZ_CHECK(error->status >= 400 && error->status < 500);
    fuzz::CheckErrorResponse(ErrorResponse(error->status, error->code, error->message));
  }
  return 0;
}
