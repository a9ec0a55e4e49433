#pragma once

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "fcgi_app/config.h"

namespace chatllm {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant".
  std::string content;
};

struct Completion {
  std::string content;
};

// A provider failure, already mapped to what the client should see.
class ProviderError : public std::runtime_error {
 public:
  ProviderError(int http_status, std::string code, const std::string& message)
      : std::runtime_error(message), status_(http_status), code_(std::move(code)) {}
  int status() const { return status_; }
  const std::string& code() const { return code_; }

 private:
  int status_;
  std::string code_;
};

// An LLM backend. One instance per worker thread; Complete() may block for
// seconds and is always called outside any database transaction.
class Provider {
 public:
  virtual ~Provider() = default;
  virtual const char* name() const = 0;
  // Whether Complete() reads anything but the last message. When false, the
  // turn skips loading the context: one statement fewer per turn.
  virtual bool uses_context() const { return true; }
  // Produces the assistant's reply to `context`, whose last element is the
  // user message being answered. Throws ProviderError.
  virtual Completion Complete(const std::vector<ChatMessage>& context) = 0;
};

// The offline provider: answers with the user's content verbatim, after
// `delay_ms` (0 by default; load tests use it to imitate a slow model).
class EchoProvider : public Provider {
 public:
  explicit EchoProvider(int delay_ms) : delay_ms_(delay_ms) {}
  const char* name() const override { return "echo"; }
  bool uses_context() const override { return false; }
  Completion Complete(const std::vector<ChatMessage>& context) override;

 private:
  int delay_ms_;
};

// Builds the provider named by config.provider. Throws ConfigError.
std::unique_ptr<Provider> MakeProvider(const Config& config);

}  // namespace chatllm
