#pragma once

#include <httplib.h>
#include <rapidjson/document.h>

#include <optional>
#include <string>

namespace chatllm::testing {

// A response from the API with its body parsed when it is JSON.
struct ApiResponse {
  int status = 0;  // 0: no response (connection error or timeout).
  std::string body;
  httplib::Headers headers;
  std::shared_ptr<rapidjson::Document> json;  // Null when the body is not JSON.

  const rapidjson::Value& operator[](const char* key) const { return (*json)[key]; }
  std::string Header(const std::string& name) const;
  // "code" of a {"error":{"code","message"}} body, or "" if the body is not one.
  std::string ErrorCode() const;
  // True if the body is exactly the uniform error shape.
  bool IsErrorBody() const;
};

// Thin HTTP client for the chatllm API (one connection, not thread-safe).
// Sends `api_key` as a Bearer token on every request (none if empty); the
// default is the stack's key (DefaultApiKey()).
class ApiClient {
 public:
  explicit ApiClient(const std::string& base_url, int timeout_s = 10);
  ApiClient(const std::string& base_url, const std::string& api_key, int timeout_s = 10);

  void set_api_key(const std::string& key);
  // Extra headers for the next requests (e.g. Idempotency-Key); replaces the previous set.
  void set_headers(httplib::Headers headers) { extra_ = std::move(headers); }

  ApiResponse Get(const std::string& path);
  ApiResponse Delete(const std::string& path);
  ApiResponse Post(const std::string& path, const std::string& body,
                   const std::string& content_type = "application/json");
  ApiResponse Send(const std::string& method, const std::string& path, const std::string& body,
                   const std::string& content_type);

  // Creates a session; returns its id or "" on failure.
  std::string CreateSession(const std::string& body = "{}");
  // Appends `content`; returns the response (201 on success).
  ApiResponse Append(const std::string& session_id, const std::string& content);

 private:
  httplib::Headers RequestHeaders() const;

  httplib::Client client_;
  std::string key_;
  httplib::Headers extra_;
};

// JSON-escapes `s` as a string literal with quotes.
std::string JsonString(const std::string& s);

}  // namespace chatllm::testing

namespace chatllm::testing {

struct StoredMessage {
  int64_t seq = 0;
  std::string role;
  std::string content;
  int64_t reply_to = 0;
};

// Reads a session's whole history page by page (limit=200). Returns false if
// any page failed.
bool ReadHistory(ApiClient& api, const std::string& session_id, std::vector<StoredMessage>* out);

// Checks the invariants every history must satisfy: seq dense from 1, each
// assistant message right after the user message it replies to and echoing
// it (echo provider). Returns "" or the first violation.
std::string CheckHistoryShape(const std::vector<StoredMessage>& history);

}  // namespace chatllm::testing
