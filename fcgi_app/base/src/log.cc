#include "base/log.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "base/time_util.h"

namespace chatllm {
namespace {

std::mutex g_mu;  // Guards g_path and swapping g_fd.
std::string g_path;
std::atomic<int> g_fd{2};
std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "?";
}

int OpenAppend(const std::string& path, std::string* error) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0 && error) *error = "open(\"" + path + "\") failed: " + std::strerror(errno);
  return fd;
}

}  // namespace

bool LogOpen(const std::string& path, std::string* error) {
  std::lock_guard<std::mutex> lock(g_mu);
  int fd = 2;
  if (!path.empty()) {
    fd = OpenAppend(path, error);
    if (fd < 0) return false;
  }
  int old = g_fd.exchange(fd);
  if (old > 2) ::close(old);
  g_path = path;
  return true;
}

bool LogReopen(std::string* error) {
  std::string path;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    path = g_path;
  }
  if (path.empty()) return true;
  return LogOpen(path, error);
}

void LogSetLevel(LogLevel level) { g_level.store(static_cast<int>(level)); }

bool ParseLogLevel(const std::string& text, LogLevel* level) {
  if (text == "debug")
    *level = LogLevel::kDebug;
  else if (text == "info")
    *level = LogLevel::kInfo;
  else if (text == "warn")
    *level = LogLevel::kWarn;
  else if (text == "error")
    *level = LogLevel::kError;
  else
    return false;
  return true;
}

void Log(LogLevel level, const char* fmt, ...) {
  if (static_cast<int>(level) < g_level.load(std::memory_order_relaxed)) return;
  char buf[4096];
  std::string ts = FormatRfc3339(NowMicros());
  int n = std::snprintf(buf, sizeof(buf), "%s [%s] %d ", ts.c_str(), LevelName(level), static_cast<int>(::getpid()));
  va_list ap;
  va_start(ap, fmt);
  int m = std::vsnprintf(buf + n, sizeof(buf) - n - 1, fmt, ap);
  va_end(ap);
  size_t len = n + (m < 0 ? 0 : std::min<size_t>(m, sizeof(buf) - n - 2));
  buf[len++] = '\n';
  ssize_t ignored = ::write(g_fd.load(std::memory_order_relaxed), buf, len);
  (void)ignored;
}

}  // namespace chatllm
