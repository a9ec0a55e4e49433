#include "prefork/instance_info.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "prefork/scoreboard.h"

namespace chatllm {
namespace {

// The lines of `text` from the one starting with `first` up to, not
// including, the one starting with `stop` ("" if `first` is missing).
std::string Section(const std::string& text, const std::string& first, const std::string& stop) {
  size_t from = text.find(first);
  if (from == std::string::npos || (from != 0 && text[from - 1] != '\n')) return "";
  size_t to = text.find("\n" + stop, from);
  return text.substr(from, to == std::string::npos ? std::string::npos : to + 1 - from);
}

class InstanceInfoTest : public ::testing::Test {
 protected:
  InstanceInfoTest() : board_(4), info_(config_, &board_, -1, {{"GET", "/healthz"}, {"POST", "/v1/sessions"}}) {}

  Config config_;
  Scoreboard board_;
  InstanceInfo info_;  // No listen socket (-1): the queue reads as 0.
};

TEST_F(InstanceInfoTest, OneRouteAndStatusGiveExactlyTheirCounterAndHistogram) {
  board_.CountRequest(1, 201, 1500);
  const std::string metrics = info_.Metrics();
  EXPECT_EQ(Section(metrics, "# HELP chatllm_http_requests_total", "# HELP chatllm_db_queries_total"),
            "# HELP chatllm_http_requests_total HTTP requests handled, by method, route and status.\n"
            "# TYPE chatllm_http_requests_total counter\n"
            "chatllm_http_requests_total{method=\"POST\",route=\"/v1/sessions\",status=\"201\"} 1\n"
            "# HELP chatllm_http_request_duration_seconds Time from accepting a request to its last "
            "byte, by method and route.\n"
            "# TYPE chatllm_http_request_duration_seconds histogram\n"
            "chatllm_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/"
            "sessions\",le=\"0.001\"} 0\n"
            "chatllm_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/"
            "sessions\",le=\"0.0025\"} 1\n"
            "chatllm_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/"
            "sessions\",le=\"0.005\"} 1\n"
            "chatllm_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/"
            "sessions\",le=\"0.01\"} 1\n"
            "chatllm_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/"
            "sessions\",le=\"0.025\"} 1\n"
            "chatllm_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/"
            "sessions\",le=\"0.05\"} 1\n"
            "chatllm_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/"
            "sessions\",le=\"0.1\"} 1\n"
            "chatllm_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/"
            "sessions\",le=\"0.25\"} 1\n"
            "chatllm_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/"
            "sessions\",le=\"0.5\"} 1\n"
            "chatllm_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/"
            "sessions\",le=\"1\"} 1\n"
            "chatllm_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/"
            "sessions\",le=\"2.5\"} 1\n"
            "chatllm_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/"
            "sessions\",le=\"5\"} 1\n"
            "chatllm_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/"
            "sessions\",le=\"10\"} 1\n"
            "chatllm_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/"
            "sessions\",le=\"+Inf\"} 1\n"
            "chatllm_http_request_duration_seconds_sum{method=\"POST\",route=\"/v1/sessions\"} 0.0015\n"
            "chatllm_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/sessions\"} 1\n");
}

TEST_F(InstanceInfoTest, AnUnlistedStatusIsOtherAndAnUnnamedRouteIsAny) {
  board_.CountRequest(0, 418, 10);
  board_.CountRequest(0, 418, 10);
  board_.CountRequest(7, 200, 10);  // Beyond the two routes the handler named.
  const std::string metrics = info_.Metrics();
  EXPECT_NE(metrics.find("\nchatllm_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"other\"} 2\n"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("\nchatllm_http_requests_total{method=\"any\",route=\"?\",status=\"200\"} 1\n"),
            std::string::npos)
      << metrics;
}

TEST_F(InstanceInfoTest, NamedSeriesWorkersAndCounters) {
  NamedSeries* shard = board_.Shard("a");
  ASSERT_NE(shard, nullptr);
  shard->calls.fetch_add(3);
  shard->errors.fetch_add(1);
  board_.Claim(0, 100);
  board_.Claim(1, 100);  // A second thread of the same worker.
  board_.Claim(2, 200);
  board_.SetState(2, SlotState::kHandling);
  board_.counters().worker_crashes.fetch_add(2);
  const std::string metrics = info_.Metrics();
  for (const char* line : {
           "\nchatllm_db_queries_total{shard=\"a\"} 3\n",
           "\nchatllm_db_queries_errors_total{shard=\"a\"} 1\n",
           "\nchatllm_worker_threads{state=\"handling\"} 1\n",
           "\nchatllm_worker_threads{state=\"idle\"} 2\n",
           "\nchatllm_worker_threads{state=\"reading\"} 0\n",
           "\nchatllm_worker_processes 2\n",
           "\nchatllm_worker_crashes_total 2\n",
           "\nchatllm_listen_queue 0\n",
       }) {
    EXPECT_NE(metrics.find(line), std::string::npos) << line << " missing from\n" << metrics;
  }
  EXPECT_EQ(metrics.find("chatllm_provider_requests_total{"), std::string::npos) << "no provider was named";
}

}  // namespace
}  // namespace chatllm
