#include "prefork/access_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/http.h"
#include "base/instance.h"
#include "base/json.h"
#include "base/time_util.h"

namespace chatllm {

AccessLog::~AccessLog() {
  if (fd_ >= 0) ::close(fd_);
}

bool AccessLog::Open(const std::string& path, std::string* error) {
  std::lock_guard<std::mutex> lock(mu_);
  int fd = -1;
  if (!path.empty()) {
    fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0) {
      *error = "open(\"" + path + "\") failed: " + std::strerror(errno);
      return false;
    }
  }
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
  path_ = path;
  return true;
}

bool AccessLog::Reopen(std::string* error) {
  std::string path;
  {
    std::lock_guard<std::mutex> lock(mu_);
    path = path_;
  }
  return path.empty() || Open(path, error);
}

void AccessLog::Write(const std::string& method, int status, int64_t duration_us, size_t bytes, const RequestTrace& t) {
  if (fd_ < 0) return;
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  w.Key("time");
  w.String(FormatRfc3339(NowMicros()));
  w.Key("request_id");
  w.String(t.request_id);
  w.Key("method");
  w.String(method);
  w.Key("route");
  w.String(t.route_name);
  w.Key("status");
  w.Int(status);
  w.Key("duration_ms");
  w.Double(static_cast<double>(duration_us) / 1000.0);
  if (!t.user.empty()) {
    w.Key("user");
    w.String(t.user);
  }
  if (!t.session_id.empty()) {
    w.Key("session_id");
    w.String(t.session_id);
  }
  if (!t.shard.empty()) {
    w.Key("shard");
    w.String(t.shard);
    w.Key("db_ms");
    w.Double(static_cast<double>(t.db_us) / 1000.0);
  }
  if (!t.provider.empty()) {
    w.Key("provider");
    w.String(t.provider);
    w.Key("provider_ms");
    w.Double(static_cast<double>(t.provider_us) / 1000.0);
  }
  w.Key("worker_pid");
  w.Int(static_cast<int>(::getpid()));
  w.Key("bytes");
  w.Uint64(bytes);
  w.EndObject();
  std::string line(buf.GetString(), buf.GetSize());
  line.push_back('\n');
  std::lock_guard<std::mutex> lock(mu_);
  ssize_t ignored = ::write(fd_, line.data(), line.size());
  (void)ignored;
}

}  // namespace chatllm
