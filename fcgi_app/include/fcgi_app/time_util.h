#pragma once

#include <cstdint>
#include <string>

namespace chatllm {

// Wall-clock time in microseconds since the Unix epoch (UTC).
int64_t NowMicros();
// Monotonic clock in microseconds, for durations and deadlines.
int64_t MonotonicMicros();

// "2026-11-27T09:10:53.123456Z": RFC 3339, UTC, always six fractional digits.
std::string FormatRfc3339(int64_t unix_micros);

}  // namespace chatllm
