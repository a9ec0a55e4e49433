#pragma once

#include <mutex>
#include <string>

#include "base/http.h"

namespace chatllm {

struct RequestTrace;

// The JSON-lines access log: one line per request, written with a single
// write(2) (O_APPEND), so the lines of every worker and thread interleave
// whole. Thread-safe.
//   {"time":"...Z","request_id":"...","method":"POST","route":"/v1/sessions/{id}/messages",
//    "status":201,"duration_ms":4.21,"session_id":"...","shard":"a","db_ms":1.9,
//    "provider_ms":0.01,"provider":"echo","worker_pid":1234,"bytes":312}
class AccessLog {
 public:
  AccessLog() = default;
  ~AccessLog();
  // Opens `path` for appending; an empty path disables the log.
  bool Open(const std::string& path, std::string* error);
  bool Reopen(std::string* error);
  bool enabled() const { return fd_ >= 0; }
  void Write(const std::string& method, int status, int64_t duration_us, size_t bytes, const RequestTrace& trace);

 private:
  std::mutex mu_;
  std::string path_;
  int fd_ = -1;
};

}  // namespace chatllm
