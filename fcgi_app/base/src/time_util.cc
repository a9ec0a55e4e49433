#include "base/time_util.h"

#include <ctime>

namespace chatllm {

int64_t NowMicros() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1000000 + ts.tv_nsec / 1000;
}

int64_t MonotonicMicros() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000 + ts.tv_nsec / 1000;
}

// Proleptic Gregorian calendar arithmetic (H. Hinnant's civil_from_days and
// days_from_civil algorithms): no time zone database, no locks, no libc
// formatting on the response path.
void CivilFromDays(int64_t z, int64_t* y, unsigned* m, unsigned* d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = static_cast<int64_t>(yoe) + era * 400 + (*m <= 2);
}

int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

std::string FormatRfc3339(int64_t unix_micros) {
  int64_t secs = unix_micros / 1000000;
  int64_t frac = unix_micros % 1000000;
  if (frac < 0) {
    frac += 1000000;
    secs -= 1;
  }
  int64_t days = secs / 86400;
  int64_t rem = secs % 86400;
  if (rem < 0) {
    rem += 86400;
    days -= 1;
  }
  int64_t year;
  unsigned month, day;
  CivilFromDays(days, &year, &month, &day);
  // "YYYY-MM-DDTHH:MM:SS.ffffffZ", years 0000-9999.
  char buf[27];
  auto put = [&buf](int pos, int64_t v, int width) {
    for (int i = width - 1; i >= 0; --i) {
      buf[pos + i] = static_cast<char>('0' + v % 10);
      v /= 10;
    }
  };
  put(0, year, 4);
  buf[4] = '-';
  put(5, month, 2);
  buf[7] = '-';
  put(8, day, 2);
  buf[10] = 'T';
  put(11, rem / 3600, 2);
  buf[13] = ':';
  put(14, rem / 60 % 60, 2);
  buf[16] = ':';
  put(17, rem % 60, 2);
  buf[19] = '.';
  put(20, frac, 6);
  buf[26] = 'Z';
  return std::string(buf, sizeof(buf));
}

int64_t UnixMicrosFromCivil(int64_t year, unsigned month, unsigned day, unsigned hour, unsigned minute, unsigned second,
                            unsigned micros) {
  return (DaysFromCivil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second) * 1000000 + micros;
}

int64_t NextUtcPeriodStart(bool month) {
  const std::time_t now = std::time(nullptr);
  std::tm t{};
  gmtime_r(&now, &t);
  t.tm_hour = t.tm_min = t.tm_sec = 0;
  if (month) {
    t.tm_mday = 1;
    t.tm_mon += 1;
  } else {
    t.tm_mday += 1;
  }
  return static_cast<int64_t>(timegm(&t));
}

}  // namespace chatllm
