#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace chatllm {

// What one request did, for its access log line and the slow log. Filled as
// the request runs (by the worker, the Service and, through Observer, the
// Store); owned by the worker thread.
struct RequestTrace {
  std::string request_id;
  int route = 0;            // RouteId.
  const char* route_name = "";
  std::string session_id;   // When the route names one.
  std::string user;         // The caller's user id (hex), when authenticated.
  std::string shard;        // Last shard a statement ran on.
  int64_t db_us = 0;        // Time in database statements.
  int64_t provider_us = 0;  // Time waiting for the LLM provider.
  std::string provider;     // Provider that answered (or failed last).
};

// Receives the timing of every database statement and provider call. The
// worker implements it to feed the shared-memory metrics and the current
// RequestTrace. Called on the thread doing the work.
class Observer {
 public:
  virtual ~Observer() = default;
  virtual void OnQuery(const std::string& shard, int64_t micros, bool ok) = 0;
  virtual void OnProviderCall(const std::string& provider, int64_t micros, bool ok) = 0;
};

}  // namespace chatllm
