#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "base/status.h"
#include "providers/provider.h"

namespace httplib {
class Client;
}

namespace chatllm {

// What the HTTP layer delivers to a wire format: the status, then the body
// as it arrives (whole for errors, chunk by chunk for a streamed 200).
struct HttpExchange {
  int status = 0;
  std::string content_type;
  std::string location;
  int64_t retry_after_ms = -1;
  std::string body;       // Non-streamed bodies, and every error body (capped).
  bool streamed = false;  // The body went to on_chunk (a 200 text/event-stream).
  bool stopped = false;   // on_chunk returned false.
};

// A provider spoken to over HTTP(S) with cpp-httplib: one kept-alive
// connection, certificates verified (ca_file or the system's), redirects
// not followed, every wait bounded (connect_timeout_ms, read_timeout_ms, the
// call's deadline), the body capped at max_response_bytes.
class HttpProvider : public Provider {
 public:
  explicit HttpProvider(ProviderConfig config);
  ~HttpProvider() override;

 protected:
  // POSTs `json` to `path` (under the base URL's path) with `headers`.
  // `on_chunk` receives a 200 response's body as it arrives when `stream`;
  // it returns false to stop reading (the exception it stored is then
  // thrown by the caller). Throws ProviderError for transport failures
  // and for any status but 200.
  HttpExchange Post(const std::string& path, const std::string& json,
                    const std::vector<std::pair<std::string, std::string>>& headers, bool stream,
                    const std::function<bool(std::string_view)>& on_chunk, const std::string& request_id,
                    int64_t deadline_us);
  // The error for a non-200 exchange (status, provider's message).
  ProviderError StatusError(const HttpExchange& x) const;
  // Hides the API key if a provider's text repeats it.
  std::string Scrub(std::string text) const;

  std::string origin_;       // scheme://host[:port] of the base URL.
  std::string path_prefix_;  // The base URL's path ("/v1"), no trailing '/'.

 private:
  std::unique_ptr<httplib::Client> client_;
};

// The OpenAI Chat Completions API (and the servers that speak it: vLLM,
// llama.cpp, Ollama...): POST {base_url}/chat/completions.
class OpenAiProvider : public HttpProvider {
 public:
  using HttpProvider::HttpProvider;
  Completion Call(const ProviderRequest& request, DeltaSink* sink, int64_t deadline_us) override;
};

// The Anthropic Messages API: POST {base_url}/v1/messages.
class AnthropicProvider : public HttpProvider {
 public:
  using HttpProvider::HttpProvider;
  Completion Call(const ProviderRequest& request, DeltaSink* sink, int64_t deadline_us) override;
};

// Wire-format helpers, pure (unit-tested).
std::string OpenAiRequestJson(const ProviderRequest& request, const std::string& model, int max_tokens, bool stream);
std::string AnthropicRequestJson(const ProviderRequest& request, const std::string& model, int max_tokens, bool stream);
// Parses a non-streamed answer into *out (content, finish reason, model,
// usage), or says why it is not one (502 provider_bad_response).
Status ParseOpenAiResponse(std::string_view body, Completion* out);
Status ParseAnthropicResponse(std::string_view body, Completion* out);
// The provider's own error text from an error body, if it has the usual
// {"error":{"message":...}} shape; else "".
std::string ProviderErrorText(std::string_view body);
// A Retry-After value (delta-seconds) in ms, or -1.
int64_t ParseRetryAfter(std::string_view value);

}  // namespace chatllm
