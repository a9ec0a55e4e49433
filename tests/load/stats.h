#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace chatllm::load {

// Latency samples and outcomes of one operation. Exact percentiles: samples
// are kept (8 bytes each) and sorted once at the end.
struct OpStats {
  std::vector<int64_t> latencies_us;  // Successful requests only.
  std::map<int, int64_t> by_status;   // HTTP status -> count; 0 = no response; not `expected` ones.
  int64_t ok = 0;
  int64_t errors = 0;
  // Not errors: a 404 on a session this run deleted, a stream its client
  // chose to hang up on.
  int64_t expected = 0;

  void Merge(const OpStats& other);
};

struct Summary {
  std::string op;
  int64_t count = 0, ok = 0, errors = 0, expected = 0;
  double rps = 0;  // Successful requests per second.
  double p50_ms = 0, p90_ms = 0, p95_ms = 0, p99_ms = 0, p999_ms = 0, max_ms = 0;
  std::map<int, int64_t> by_status;
};

// Sorts `stats` samples and computes the summary over `seconds`.
Summary Summarize(const std::string& op, OpStats& stats, double seconds);

// Value at quantile q (0..1) of sorted samples, in milliseconds.
double PercentileMs(const std::vector<int64_t>& sorted_us, double q);

// Prints summaries as an aligned table.
void PrintTable(const std::string& title, const std::vector<Summary>& rows);
// The summaries as a JSON object {"label":..,"seconds":..,"start_unix_us":..,"ops":[...]};
// start_unix_us is the wall-clock time of the run's t=0 (history times are
// relative to it).
std::string SummariesToJson(const std::string& label, double seconds, int64_t start_unix_us,
                            const std::vector<Summary>& rows);

}  // namespace chatllm::load
