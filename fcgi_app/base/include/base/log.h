#pragma once

#include <string>

namespace chatllm {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// Process-wide logger. Each call writes one line with a single write(2), so
// lines from the master and its workers sharing one file never interleave.
// Format: "2026-11-27T09:10:53.123456Z [warn] <pid> <message>".
// Thread-safe; async-signal-unsafe (formats with vsnprintf).

// Sends log lines to `path` (appending), or to stderr when `path` is empty.
// Returns false and leaves the previous destination on failure.
bool LogOpen(const std::string& path, std::string* error);
// Reopens the current log file (after logrotate moved it).
bool LogReopen(std::string* error);
void LogSetLevel(LogLevel level);
bool ParseLogLevel(const std::string& text, LogLevel* level);

void Log(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

#define LOG_DEBUG(...) ::chatllm::Log(::chatllm::LogLevel::kDebug, __VA_ARGS__)
#define LOG_INFO(...) ::chatllm::Log(::chatllm::LogLevel::kInfo, __VA_ARGS__)
#define LOG_WARN(...) ::chatllm::Log(::chatllm::LogLevel::kWarn, __VA_ARGS__)
#define LOG_ERROR(...) ::chatllm::Log(::chatllm::LogLevel::kError, __VA_ARGS__)

}  // namespace chatllm
