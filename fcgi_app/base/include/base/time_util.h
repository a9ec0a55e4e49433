#pragma once

#include <cstdint>
#include <string>

namespace chatllm {

// Wall-clock time in microseconds since the Unix epoch (UTC).
int64_t NowMicros();
// Monotonic clock in microseconds, for durations and deadlines.
int64_t MonotonicMicros();

// "2026-11-27T09:10:53.123456Z": RFC 3339, UTC, always six fractional digits
// (years 0000-9999).
std::string FormatRfc3339(int64_t unix_micros);
// Unix seconds of the next UTC midnight (`month`: of the first of the next
// month): when a day's or a month's budget starts again.
int64_t NextUtcPeriodStart(bool month);

// Unix microseconds of a UTC civil time (proleptic Gregorian calendar).
int64_t UnixMicrosFromCivil(int64_t year, unsigned month, unsigned day, unsigned hour, unsigned minute, unsigned second,
                            unsigned micros);
// The civil date of a day count since 1970-01-01.
void CivilFromDays(int64_t days, int64_t* year, unsigned* month, unsigned* day);

}  // namespace chatllm
