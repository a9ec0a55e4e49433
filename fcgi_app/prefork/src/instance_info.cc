#include "prefork/instance_info.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cstdio>
#include <map>
#include <set>
#include <sstream>

#include "base/json.h"
#include "base/time_util.h"

namespace chatllm {

InstanceInfo::Listen InstanceInfo::ListenQueue() const {
  // For a listening TCP socket Linux reports the accept queue length in
  // tcpi_unacked and the backlog in tcpi_sacked.
  tcp_info ti{};
  socklen_t len = sizeof(ti);
  Listen l;
  if (getsockopt(listen_fd_, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0) {
    l.queue = static_cast<int>(ti.tcpi_unacked);
    l.max = static_cast<int>(ti.tcpi_sacked);
  }
  return l;
}

// Long (~85 lines) but flat: the members of /status in the order they are
// written (docs/process-manager.md documents each).
std::string InstanceInfo::StatusJson(bool full) const {
  int idle = 0, active = 0;
  std::set<pid_t> pids;
  for (int i = 0; i < board_->slot_count(); ++i) {
    const WorkerSlot& s = board_->slot(i);
    pid_t pid = s.pid.load();
    if (pid == 0) continue;
    pids.insert(pid);
    if (s.state.load() == static_cast<uint8_t>(SlotState::kIdle))
      ++idle;
    else
      ++active;
  }
  Scoreboard::Counters& c = board_->counters();
  Listen l = ListenQueue();
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  w.Key("instance");
  w.String(config_.instance_name);
  w.Key("pool");
  w.String(config_.pm);
  w.Key("start_time");
  w.Int64(c.started_unix.load());
  w.Key("accepted_conn");
  w.Uint64(c.accepted.load());
  w.Key("listen_queue");
  w.Int(l.queue);
  w.Key("max_listen_queue");
  w.Int(l.max);
  w.Key("idle_workers");
  w.Int(idle);
  w.Key("active_workers");
  w.Int(active);
  w.Key("total_workers");
  w.Int(idle + active);
  w.Key("processes");
  w.Int(static_cast<int>(pids.size()));
  w.Key("threads_per_worker");
  w.Int(config_.threads);
  w.Key("max_children");
  w.Int(config_.workers);
  w.Key("max_children_reached");
  w.Uint64(c.max_children_reached.load());
  w.Key("slow_requests");
  w.Uint64(c.slow_requests.load());
  w.Key("killed_requests");
  w.Uint64(c.killed_requests.load());
  w.Key("worker_starts");
  w.Uint64(c.worker_starts.load());
  w.Key("worker_crashes");
  w.Uint64(c.worker_crashes.load());
  w.Key("worker_recycles");
  w.Uint64(c.worker_recycles.load());
  w.Key("reloads");
  w.Uint64(c.reloads.load());
  if (full) {
    int64_t now = MonotonicMicros();
    w.Key("workers");
    w.StartArray();
    for (int i = 0; i < board_->slot_count(); ++i) {
      const WorkerSlot& s = board_->slot(i);
      if (s.pid.load() == 0) continue;
      w.StartObject();
      w.Key("pid");
      w.Int(s.pid.load());
      w.Key("slot");
      w.Int(i);
      w.Key("state");
      w.String(SlotStateName(static_cast<SlotState>(s.state.load())));
      w.Key("requests");
      w.Uint64(s.requests.load());
      int64_t start = s.request_start_us.load();
      if (start != 0) {
        w.Key("request");
        w.String(board_->RequestOf(i));
        w.Key("request_ms");
        w.Double(static_cast<double>(now - start) / 1000.0);
      }
      w.EndObject();
    }
    w.EndArray();
  }
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

namespace {

void Header(std::ostringstream& out, const char* name, const char* type, const char* help) {
  out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n';
}

void Histogram(std::ostringstream& out, const char* name, const std::string& labels, const SharedHistogram& h) {
  uint64_t cumulative = 0;
  char le[32];
  for (int b = 0; b < SharedHistogram::kBuckets; ++b) {
    cumulative += h.counts[b].load(std::memory_order_relaxed);
    if (b == SharedHistogram::kBuckets - 1)
      std::snprintf(le, sizeof(le), "+Inf");
    else
      std::snprintf(le, sizeof(le), "%g", SharedHistogram::kBounds[b]);
    out << name << "_bucket{" << labels << (labels.empty() ? "" : ",") << "le=\"" << le << "\"} " << cumulative << '\n';
  }
  out << name << "_sum{" << labels << "} " << static_cast<double>(h.sum_us.load()) / 1e6 << '\n';
  out << name << "_count{" << labels << "} " << h.count.load() << '\n';
}

// Label values are names we chose or validated ([a-z0-9_-] shard names,
// route templates); escape anyway.
std::string Label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
  return out;
}

// Long (~95 lines) but flat: one Prometheus family after another, in the
// order /metrics prints them; splitting it would only scatter the format.
void SeriesMetrics(std::ostringstream& out, NamedSeries* table, int n, const char* prefix, const char* label,
                   const char* what) {
  std::string calls = std::string(prefix) + "_total", errors = std::string(prefix) + "_errors_total",
              seconds = std::string(prefix) + "_duration_seconds";
  std::string h1 = std::string(what) + " by " + label + ".";
  std::string h2 = std::string(what) + " that failed, by " + label + ".";
  std::string h3 = std::string(what) + " latency by " + label + ".";
  Header(out, calls.c_str(), "counter", h1.c_str());
  for (int i = 0; i < n; ++i) {
    if (table[i].claimed.load() != 2) continue;
    out << calls << '{' << label << "=\"" << Label(table[i].name) << "\"} " << table[i].calls.load() << '\n';
  }
  Header(out, errors.c_str(), "counter", h2.c_str());
  for (int i = 0; i < n; ++i) {
    if (table[i].claimed.load() != 2) continue;
    out << errors << '{' << label << "=\"" << Label(table[i].name) << "\"} " << table[i].errors.load() << '\n';
  }
  Header(out, seconds.c_str(), "histogram", h3.c_str());
  for (int i = 0; i < n; ++i) {
    if (table[i].claimed.load() != 2) continue;
    Histogram(out, seconds.c_str(), std::string(label) + "=\"" + Label(table[i].name) + "\"", table[i].latency);
  }
}

// Tokens and cost by provider and model (docs/metrics.md).
void UsageMetrics(std::ostringstream& out, UsageSeries* table, int n) {
  auto labels = [](const UsageSeries& u) {
    const std::string name = u.name;
    const size_t tab = name.find('\t');
    return "provider=\"" + Label(name.substr(0, tab)) + "\",model=\"" +
           Label(tab == std::string::npos ? "" : name.substr(tab + 1)) + "\"";
  };
  Header(out, "chatllm_answers_total", "counter", "Answers received from providers, by provider and model.");
  for (int i = 0; i < n; ++i) {
    if (table[i].claimed.load() != 2) continue;
    out << "chatllm_answers_total{" << labels(table[i]) << "} " << table[i].answers.load() << '\n';
  }
  Header(out, "chatllm_tokens_total", "counter",
         "Tokens as the providers reported them, by provider, model and kind (prompt includes cached).");
  for (int i = 0; i < n; ++i) {
    if (table[i].claimed.load() != 2) continue;
    const std::string l = labels(table[i]);
    out << "chatllm_tokens_total{" << l << ",kind=\"prompt\"} " << table[i].prompt_tokens.load() << '\n';
    out << "chatllm_tokens_total{" << l << ",kind=\"cached\"} " << table[i].cached_tokens.load() << '\n';
    out << "chatllm_tokens_total{" << l << ",kind=\"completion\"} " << table[i].completion_tokens.load() << '\n';
  }
  Header(out, "chatllm_cost_usd_total", "counter", "What the answers cost at the [price.NAME] prices, in USD.");
  for (int i = 0; i < n; ++i) {
    if (table[i].claimed.load() != 2) continue;
    const uint64_t nanos = table[i].cost_nanos.load();
    char usd[40];
    std::snprintf(usd, sizeof usd, "%llu.%09llu", static_cast<unsigned long long>(nanos / 1000000000),
                  static_cast<unsigned long long>(nanos % 1000000000));
    out << "chatllm_cost_usd_total{" << labels(table[i]) << "} " << usd << '\n';
  }
}

std::string RouteLabels(const std::vector<RouteLabel>& routes, int route) {
  static const RouteLabel kUnnamed{"any", "?"};
  const RouteLabel& r = route < static_cast<int>(routes.size()) ? routes[route] : kUnnamed;
  return "method=\"" + Label(r.method) + "\",route=\"" + Label(r.name) + "\"";
}

}  // namespace

std::string InstanceInfo::Metrics() const {
  std::ostringstream out;
  Header(out, "chatllm_http_requests_total", "counter", "HTTP requests handled, by method, route and status.");
  for (int r = 0; r < kMetricRoutes; ++r) {
    for (int s = 0; s < kMetricStatuses; ++s) {
      uint64_t n = board_->requests(r, s).load(std::memory_order_relaxed);
      if (n == 0) continue;
      int code = kMetricStatusCodes[s];
      out << "chatllm_http_requests_total{" << RouteLabels(routes_, r) << ",status=\""
          << (code < 0 ? std::string("other") : std::to_string(code)) << "\"} " << n << '\n';
    }
  }
  Header(out, "chatllm_http_request_duration_seconds", "histogram",
         "Time from accepting a request to its last byte, by method and route.");
  for (int r = 0; r < kMetricRoutes; ++r) {
    const SharedHistogram& h = board_->request_latency(r);
    if (h.count.load() == 0) continue;
    Histogram(out, "chatllm_http_request_duration_seconds", RouteLabels(routes_, r), h);
  }
  SeriesMetrics(out, board_->shards(), Scoreboard::kMaxShards, "chatllm_db_queries", "shard", "Database statements");
  SeriesMetrics(out, board_->providers(), Scoreboard::kMaxProviders, "chatllm_provider_requests", "provider",
                "LLM provider calls");

  UsageMetrics(out, board_->usage(), Scoreboard::kMaxUsage);
  Header(out, "chatllm_budget_refusals_total", "counter",
         "Turns refused by a budget (429 budget_exceeded), by scope (user or key) and budget.");
  static const char* kBudgets[] = {"",           "tokens_day", "tokens_month", "cost_day",
                                   "cost_month", "concurrent", "unpriced"};
  for (int scope = 0; scope < 2; ++scope) {
    for (int kind = 1; kind <= 6; ++kind) {
      out << "chatllm_budget_refusals_total{scope=\"" << (scope ? "key" : "user") << "\",budget=\"" << kBudgets[kind]
          << "\"} " << board_->counters().budget_refusals[scope][kind].load() << '\n';
    }
  }

  std::map<std::string, int> by_state = {{"idle", 0}, {"reading", 0}, {"handling", 0}, {"writing", 0}};
  std::set<pid_t> pids;
  for (int i = 0; i < board_->slot_count(); ++i) {
    const WorkerSlot& s = board_->slot(i);
    if (s.pid.load() == 0) continue;
    pids.insert(s.pid.load());
    ++by_state[SlotStateName(static_cast<SlotState>(s.state.load()))];
  }
  Header(out, "chatllm_worker_threads", "gauge", "Worker threads by state (a worker process has [server] threads).");
  for (const auto& [state, n] : by_state) out << "chatllm_worker_threads{state=\"" << state << "\"} " << n << '\n';
  Header(out, "chatllm_worker_processes", "gauge", "Live worker processes.");
  out << "chatllm_worker_processes " << pids.size() << '\n';

  Scoreboard::Counters& c = board_->counters();
  struct {
    const char* name;
    const char* help;
    uint64_t value;
  } counters[] = {
      {"chatllm_accepted_connections_total", "FastCGI connections accepted.", c.accepted.load()},
      {"chatllm_worker_starts_total", "Worker processes forked.", c.worker_starts.load()},
      {"chatllm_worker_crashes_total", "Worker processes that died unplanned.", c.worker_crashes.load()},
      {"chatllm_worker_recycles_total", "Workers that exited after max_requests or the idle timeout.",
       c.worker_recycles.load()},
      {"chatllm_max_children_reached_total", "Times the pool wanted a worker beyond max_children.",
       c.max_children_reached.load()},
      {"chatllm_slow_requests_total", "Requests that ran longer than slowlog_timeout.", c.slow_requests.load()},
      {"chatllm_killed_requests_total", "Workers killed because a request ran longer than request_timeout.",
       c.killed_requests.load()},
      {"chatllm_reloads_total", "Configuration reloads (SIGHUP, SIGUSR2).", c.reloads.load()},
  };
  for (const auto& k : counters) {
    Header(out, k.name, "counter", k.help);
    out << k.name << ' ' << k.value << '\n';
  }
  Listen l = ListenQueue();
  Header(out, "chatllm_listen_queue", "gauge", "Connections waiting in the listen socket's accept queue.");
  out << "chatllm_listen_queue " << l.queue << '\n';
  Header(out, "chatllm_listen_queue_max", "gauge", "The listen socket's backlog.");
  out << "chatllm_listen_queue_max " << l.max << '\n';
  Header(out, "chatllm_start_time_seconds", "gauge", "Unix time the master started.");
  out << "chatllm_start_time_seconds " << c.started_unix.load() << '\n';
  return out.str();
}

}  // namespace chatllm
