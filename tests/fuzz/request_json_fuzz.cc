// libFuzzer target: the JSON request bodies (POST /v1/sessions,
// POST /v1/sessions/{id}/messages, POST /v1/chat/completions) through the
// strict parser and validation. The first byte picks the parser; the rest is
// the body. Properties: no crash or sanitizer report; a refusal is a 4xx
// with the uniform error body; an accepted body gives values within the
// configured limits.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "api/requests.h"
#include "base/config.h"
#include "base/http.h"
#include "fuzz_support.h"

using namespace chatllm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static const Config config;  // The defaults: the limits production starts from.
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  Status error;
  switch (data[0] % 3) {
    case 0: {
      StatusOr<CreateSessionRequest> out = ParseCreateSession(body, config);
      error = out.status();
      if (out.ok() && out->title) FUZZ_CHECK(out->title->size() <= body.size());
      break;
    }
    case 1: {
      StatusOr<AppendMessageRequest> out = ParseAppendMessage(body, config);
      error = out.status();
      if (out.ok()) FUZZ_CHECK(out->content.size() <= static_cast<size_t>(config.max_content_bytes));
      break;
    }
    default: {
      StatusOr<ChatCompletionRequest> out = ParseChatCompletion(body, config);
      error = out.status();
      if (out.ok()) FUZZ_CHECK(!out->messages.empty());
      break;
    }
  }
  if (!error.ok()) {
    FUZZ_CHECK(error.http_status() >= 400 && error.http_status() < 500);
    fuzz::CheckErrorResponse(ErrorResponse(error.http_status(), error.code(), error.message()));
  }
  return 0;
}
