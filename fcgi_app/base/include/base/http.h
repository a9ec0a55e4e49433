#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"

namespace chatllm {

// One HTTP request as the FastCGI worker received it from nginx.
struct HttpRequest {
  std::string method;                          // "GET", "POST", ...
  std::string path;                            // Raw path from REQUEST_URI, without the query string.
  std::string query;                           // Raw query string, without '?'.
  std::map<std::string, std::string> headers;  // Lowercase names ("content-type").
  std::string body;
  std::string remote_addr;

  // Header value or "" when absent. `name` must be lowercase.
  const std::string& Header(const std::string& name) const;
};

struct HttpResponse {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;       // Empty for 204.
  bool streamed = false;  // Already sent through a ResponseStream; nothing left to write.

  void SetHeader(std::string name, std::string value);
};

// Lets a handler send its response in pieces (Server-Sent Events): the head
// first, then chunks, each flushed to nginx at once.
class ResponseStream {
 public:
  virtual ~ResponseStream() = default;
  // Sends the status line and `head`'s headers (no Content-Length; the
  // body is whatever Send() sends). Once, before Send().
  virtual bool Start(const HttpResponse& head) = 0;
  // Sends and flushes `data`. False once the client is gone (nginx closed
  // the connection); later calls do nothing.
  virtual bool Send(std::string_view data) = 0;
  virtual size_t bytes_sent() const = 0;
  // Sends `whole` (status, headers, body with its Content-Length) and ends
  // the request now, before the handler returns: the client has its answer
  // and the handler goes on working (a background turn). Only before
  // Start(); later Sends do nothing. False when the stream cannot end early
  // or the client is gone.
  virtual bool Finish(const HttpResponse& whole) { return false; }
};

// What one request did, for its access log line and the slow log. Filled as
// the request runs (by the worker, the Service and, through Observer, the
// Store); owned by the worker thread.
struct RequestTrace {
  std::string request_id;
  int route = 0;  // RouteId.
  const char* route_name = "";
  std::string session_id;   // When the route names one.
  std::string user;         // The caller's user id (hex), when authenticated.
  std::string key_id;       // The API key's id (8 raw bytes), when authenticated.
  std::string shard;        // Last shard a statement ran on.
  int64_t db_us = 0;        // Time in database statements.
  int64_t provider_us = 0;  // Time waiting for the LLM provider.
  std::string provider;     // Provider that answered (or failed last).
};

// Reason phrase for the status line ("Not Found"); "Unknown" if not listed.
const char* StatusReason(int status);

// The uniform error body: {"error":{"code":"...","message":"..."}}.
HttpResponse ErrorResponse(int status, std::string_view code, std::string_view message);

// Parses an application/x-www-form-urlencoded query string. Percent-escapes
// and '+' are decoded. A malformed escape or a repeated key (which would
// make the request ambiguous) is 400 invalid_request.
Status ParseQuery(std::string_view query, std::map<std::string, std::string>* out);

}  // namespace chatllm
