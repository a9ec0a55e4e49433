#include "load/stats.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace chatllm::load {

void OpStats::Merge(const OpStats& other) {
  latencies_us.insert(latencies_us.end(), other.latencies_us.begin(), other.latencies_us.end());
  for (const auto& [status, n] : other.by_status) by_status[status] += n;
  ok += other.ok;
  errors += other.errors;
  expected += other.expected;
}

double PercentileMs(const std::vector<int64_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  // Nearest-rank: the smallest sample with at least q of the samples at or below it.
  size_t rank = static_cast<size_t>(q * static_cast<double>(sorted.size()) + 0.999999);
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return static_cast<double>(sorted[rank - 1]) / 1000.0;
}

Summary Summarize(const std::string& op, OpStats& s, double seconds) {
  std::sort(s.latencies_us.begin(), s.latencies_us.end());
  Summary r;
  r.op = op;
  r.ok = s.ok;
  r.errors = s.errors;
  r.expected = s.expected;
  r.count = s.ok + s.errors + s.expected;
  r.rps = seconds > 0 ? static_cast<double>(s.ok) / seconds : 0;
  r.p50_ms = PercentileMs(s.latencies_us, 0.50);
  r.p90_ms = PercentileMs(s.latencies_us, 0.90);
  r.p95_ms = PercentileMs(s.latencies_us, 0.95);
  r.p99_ms = PercentileMs(s.latencies_us, 0.99);
  r.p999_ms = PercentileMs(s.latencies_us, 0.999);
  r.max_ms = s.latencies_us.empty() ? 0 : static_cast<double>(s.latencies_us.back()) / 1000.0;
  r.by_status = s.by_status;
  return r;
}

void PrintTable(const std::string& title, const std::vector<Summary>& rows) {
  if (!title.empty()) std::printf("%s\n", title.c_str());
  std::printf("%-8s %9s %9s %9s %8s %8s %8s %8s %8s %8s  %s\n", "op", "requests", "errors", "ok/s", "p50 ms", "p90 ms",
              "p95 ms", "p99 ms", "p99.9 ms", "max ms", "by status");
  for (const Summary& r : rows) {
    std::string statuses;
    for (const auto& [status, n] : r.by_status) {
      if (!statuses.empty()) statuses += " ";
      statuses += (status == 0 ? std::string("conn") : std::to_string(status)) + ":" + std::to_string(n);
    }
    if (r.expected > 0) statuses += " expected:" + std::to_string(r.expected);
    std::printf("%-8s %9lld %9lld %9.1f %8.2f %8.2f %8.2f %8.2f %8.2f %8.2f  %s\n", r.op.c_str(),
                static_cast<long long>(r.count), static_cast<long long>(r.errors), r.rps, r.p50_ms, r.p90_ms, r.p95_ms,
                r.p99_ms, r.p999_ms, r.max_ms, statuses.c_str());
  }
  std::fflush(stdout);
}

std::string SummariesToJson(const std::string& label, double seconds, int64_t start_unix_us,
                            const std::vector<Summary>& rows) {
  std::ostringstream out;
  out << "{\"label\":\"" << label << "\",\"seconds\":" << seconds << ",\"start_unix_us\":" << start_unix_us
      << ",\"ops\":[";
  for (size_t i = 0; i < rows.size(); ++i) {
    const Summary& r = rows[i];
    if (i) out << ",";
    out << "{\"op\":\"" << r.op << "\",\"requests\":" << r.count << ",\"ok\":" << r.ok << ",\"errors\":" << r.errors
        << ",\"expected\":" << r.expected << ",\"ok_per_s\":" << r.rps << ",\"p50_ms\":" << r.p50_ms
        << ",\"p90_ms\":" << r.p90_ms << ",\"p95_ms\":" << r.p95_ms << ",\"p99_ms\":" << r.p99_ms
        << ",\"p999_ms\":" << r.p999_ms << ",\"max_ms\":" << r.max_ms << ",\"by_status\":{";
    bool first = true;
    for (const auto& [status, n] : r.by_status) {
      if (!first) out << ",";
      first = false;
      out << "\"" << (status == 0 ? std::string("conn") : std::to_string(status)) << "\":" << n;
    }
    out << "}}";
  }
  out << "]}";
  return out.str();
}

}  // namespace chatllm::load
