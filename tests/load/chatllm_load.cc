// chatllm-load: load generator for the chatllm API (see --help).
//
// Closed loop: --clients threads, each sending its next request when the
// previous one ends. Open loop (--rate): requests start on a fixed schedule
// and latency is measured from the scheduled start, so a slow server shows
// as queueing delay instead of silently lowering the offered load.

#include <httplib.h>
#include <rapidjson/document.h>

#include <atomic>
#include <csignal>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <thread>

#include "load/history.h"
#include "load/load_options.h"
#include "load/stats.h"

namespace chatllm::load {
namespace {

using Clock = std::chrono::steady_clock;

// SIGINT/SIGTERM end the run early, with the summary printed as usual.
volatile std::sig_atomic_t g_interrupted = 0;
void OnInterrupt(int) { g_interrupted = 1; }

const std::vector<std::string> kOps = {"create", "append", "get", "read", "list", "raw"};

struct Shared {
  LoadOptions opt;
  Clock::time_point start;
  std::vector<std::string> sessions;
  std::vector<std::atomic<int64_t>> max_seq;  // Highest seq seen per session (for list cursors).
  std::mutex sessions_mu;                     // Guards sessions (grown by create).
  std::atomic<int64_t> next_arrival{0};       // Open loop schedule index.
  std::atomic<int64_t> issued{0};             // Requests started (for --requests).
  std::atomic<bool> stop{false};
  HistoryWriter history;
  std::string run_id;
  // Live reporting.
  std::mutex report_mu;
  std::vector<int64_t> interval_latencies;
  int64_t interval_ok = 0, interval_err = 0;
  std::atomic<int64_t> retried{0};  // Attempts repeated under --retries.

  explicit Shared(const LoadOptions& o) : opt(o), max_seq(o.sessions) {}
  int64_t Now() const {
    return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count();
  }
};

std::string RandomHex(int n) {
  std::random_device rd;
  std::string s;
  for (int i = 0; i < n; ++i) s.push_back("0123456789abcdef"[rd() % 16]);
  return s;
}

std::string JsonEscape(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out + "\"";
}

class Client {
 public:
  Client(Shared& shared, int id)
      : s_(shared), id_(id), http_(shared.opt.url), rng_(std::random_device{}() ^ (id * 7919)) {
    http_.set_keep_alive(true);
    http_.set_tcp_nodelay(true);  // Headers and body go out in two writes: no Nagle wait.
    if (!s_.opt.api_key.empty()) http_.set_default_headers({{"Authorization", "Bearer " + s_.opt.api_key}});
    http_.set_connection_timeout(s_.opt.timeout_s, 0);
    http_.set_read_timeout(s_.opt.timeout_s, 0);
    http_.set_write_timeout(s_.opt.timeout_s, 0);
    double total = 0;
    for (const auto& [op, w] : s_.opt.mix) total += w;
    double acc = 0;
    for (const auto& [op, w] : s_.opt.mix) {
      acc += w / total;
      cumulative_.emplace_back(acc, op);
    }
  }

  void Run() {
    for (int64_t n = 0; !s_.stop.load(std::memory_order_relaxed) && !g_interrupted; ++n) {
      int64_t scheduled = -1;
      if (s_.opt.rate > 0) {
        int64_t i = s_.next_arrival.fetch_add(1);
        scheduled = static_cast<int64_t>(static_cast<double>(i) * 1e6 / s_.opt.rate);
        if (scheduled > static_cast<int64_t>(s_.opt.duration_s * 1e6)) break;
        int64_t wait = scheduled - s_.Now();
        if (wait > 0) std::this_thread::sleep_for(std::chrono::microseconds(wait));
      } else if (s_.opt.duration_s > 0 && s_.Now() > static_cast<int64_t>(s_.opt.duration_s * 1e6)) {
        break;
      }
      if (s_.opt.requests > 0 && s_.issued.fetch_add(1) >= s_.opt.requests) break;
      if (s_.stop.load(std::memory_order_relaxed)) break;
      const std::string& op = PickOp();
      int64_t begin = scheduled >= 0 ? scheduled : s_.Now();
      int status = Do(op, n);
      int64_t end = s_.Now();
      Record(op, status, begin, end);
    }
  }

  std::map<std::string, OpStats> stats;

 private:
  const std::string& PickOp() {
    double r = std::uniform_real_distribution<double>(0, 1)(rng_);
    for (const auto& [c, op] : cumulative_) {
      if (r <= c) return op;
    }
    return cumulative_.back().second;
  }

  size_t PickSession() {
    std::lock_guard<std::mutex> lock(s_.sessions_mu);
    if (s_.opt.session_per_client) {
      // Round-robin over this client's own sessions: id, id + clients, ...
      size_t n = s_.sessions.size();
      size_t mine = std::max<size_t>(1, (n - static_cast<size_t>(id_) % n + s_.opt.clients - 1) / s_.opt.clients);
      return (static_cast<size_t>(id_) + static_cast<size_t>(s_.opt.clients) * (round_++ % mine)) % n;
    }
    return std::uniform_int_distribution<size_t>(0, s_.sessions.size() - 1)(rng_);
  }

  std::string SessionAt(size_t i) {
    std::lock_guard<std::mutex> lock(s_.sessions_mu);
    return s_.sessions[i];
  }

  // Runs `call` (one HTTP attempt) again while its outcome is unknown, up to
  // --retries times: a careful client's retry, safe for writes because they
  // carry an Idempotency-Key.
  template <typename Call>
  httplib::Result WithRetries(Call&& call) {
    for (int attempt = 0;; ++attempt) {
      httplib::Result r = call();
      const int status = r ? r->status : 0;
      const bool unknown = status == 0 || status == 502 || status == 504 ||
                           (status == 409 && r->body.find("idempotency_key_in_use") != std::string::npos);
      if (!unknown || attempt >= s_.opt.retries || s_.stop.load()) return r;
      s_.retried.fetch_add(1);
      std::this_thread::sleep_for(std::chrono::milliseconds(status == 409 ? 200 : 20));
    }
  }
  httplib::Headers IdempotencyHeaders(const std::string& key) const {
    if (s_.opt.retries <= 0) return {};
    return {{"Idempotency-Key", key}};
  }

  int Do(const std::string& op, int64_t n) {
    if (op == "raw") {
      auto r = http_.Get(s_.opt.raw_path);
      return r ? 200 : 0;  // Ceilings: any answer counts.
    }
    if (op == "create") {
      int64_t invoke = s_.Now();
      const httplib::Headers h = IdempotencyHeaders(s_.run_id + "-create-c" + std::to_string(id_) + "-" + std::to_string(n));
      auto r = WithRetries([&] { return http_.Post("/v1/sessions", h, "{}", "application/json"); });
      if (r && r->status == 201) {
        rapidjson::Document d;
        d.Parse(r->body.c_str());
        if (d.IsObject() && d.HasMember("id")) {
          std::lock_guard<std::mutex> lock(s_.sessions_mu);
          s_.sessions.push_back(d["id"].GetString());
          s_.history.Session(s_.sessions.back());
        }
      }
      (void)invoke;
      return r ? r->status : 0;
    }
    size_t idx = PickSession();
    std::string session = SessionAt(idx);
    if (op == "append") {
      AppendRecord rec;
      rec.session = session;
      rec.client = id_;
      rec.content = s_.run_id + "-c" + std::to_string(id_) + "-" + std::to_string(n) + "-";
      rec.content.resize(std::max<size_t>(rec.content.size(), s_.opt.content_bytes), 'x');
      rec.invoke_us = s_.Now();
      const httplib::Headers h = IdempotencyHeaders(rec.content);  // Unique per append.
      const std::string body = "{\"content\":" + JsonEscape(rec.content) + "}";
      auto r = WithRetries([&] { return http_.Post("/v1/sessions/" + session + "/messages", h, body, "application/json"); });
      rec.complete_us = s_.Now();
      rec.status = r ? r->status : 0;
      rec.outcome = OutcomeOfStatus(rec.status);
      if (rec.status == 201) {
        rapidjson::Document d;
        d.Parse(r->body.c_str());
        if (d.IsObject() && d.HasMember("user")) rec.seq = d["user"]["seq"].GetInt64();
        if (idx < s_.max_seq.size()) {
          int64_t seen = s_.max_seq[idx].load();
          while (seen < rec.seq + 1 && !s_.max_seq[idx].compare_exchange_weak(seen, rec.seq + 1)) {
          }
        }
      }
      s_.history.Append(rec);
      return rec.status;
    }
    if (op == "get") {
      auto r = http_.Get("/v1/sessions/" + session);
      return r ? r->status : 0;
    }
    if (op == "read") {
      ReadRecord rec;
      rec.session = session;
      rec.client = id_;
      rec.limit = s_.opt.read_limit;
      rec.invoke_us = s_.Now();
      auto r = WithRetries([&] { return http_.Get("/v1/sessions/" + session + "/messages?limit=" + std::to_string(rec.limit)); });
      rec.complete_us = s_.Now();
      if (r && r->status == 200 && s_.history.enabled()) {
        rapidjson::Document d;
        d.Parse(r->body.c_str(), r->body.size());
        if (d.IsObject() && d.HasMember("data")) {
          for (const auto& m : d["data"].GetArray()) {
            rec.messages.emplace_back(
                m["seq"].GetInt64(),
                MessageHash(m["role"].GetString(), std::string(m["content"].GetString(), m["content"].GetStringLength())));
          }
          s_.history.Read(rec);
        }
      }
      return r ? r->status : 0;
    }
    // list: a page from a random point of the history seen so far.
    int64_t top = idx < s_.max_seq.size() ? s_.max_seq[idx].load() : 0;
    int64_t after = top > 0 ? std::uniform_int_distribution<int64_t>(0, top)(rng_) : 0;
    auto r = http_.Get("/v1/sessions/" + session + "/messages?limit=50&after=" + std::to_string(after));
    return r ? r->status : 0;
  }

  void Record(const std::string& op, int status, int64_t begin, int64_t end) {
    bool ok = status >= 200 && status < 300;
    if (end < static_cast<int64_t>(s_.opt.warmup_s * 1e6)) return;
    OpStats& st = stats[op];
    st.by_status[status]++;
    if (ok) {
      st.ok++;
      st.latencies_us.push_back(end - begin);
    } else {
      st.errors++;
    }
    if (s_.opt.report_every_s > 0) {
      std::lock_guard<std::mutex> lock(s_.report_mu);
      if (ok) {
        s_.interval_ok++;
        s_.interval_latencies.push_back(end - begin);
      } else {
        s_.interval_err++;
      }
    }
  }

  Shared& s_;
  int id_;
  httplib::Client http_;
  std::mt19937_64 rng_;
  size_t round_ = 0;
  std::vector<std::pair<double, std::string>> cumulative_;
};

int Main(int argc, char** argv) {
  LoadOptions opt;
  int exit_code = 0;
  if (!ParseLoadOptions(argc, argv, &opt, &exit_code)) return exit_code;
  Shared shared(opt);
  shared.run_id = RandomHex(8);
  if (!opt.history_file.empty() && !shared.history.Open(opt.history_file)) {
    std::fprintf(stderr, "chatllm-load: cannot write %s\n", opt.history_file.c_str());
    return 1;
  }

  bool needs_sessions = false;
  for (const auto& [op, w] : opt.mix) needs_sessions |= (op != "create" && op != "raw");
  if (needs_sessions && !opt.sessions_file.empty()) {
    std::ifstream in(opt.sessions_file);
    std::string id;
    while (std::getline(in, id)) {
      if (id.empty()) continue;
      shared.sessions.push_back(id);
      shared.history.Session(id);
    }
    if (shared.sessions.empty()) {
      std::fprintf(stderr, "chatllm-load: no session ids in %s\n", opt.sessions_file.c_str());
      return 1;
    }
    shared.max_seq = std::vector<std::atomic<int64_t>>(shared.sessions.size());
  } else if (needs_sessions) {
    httplib::Client setup(opt.url);
    if (!opt.api_key.empty()) setup.set_default_headers({{"Authorization", "Bearer " + opt.api_key}});
    setup.set_keep_alive(true);
    setup.set_tcp_nodelay(true);
    for (int i = 0; i < opt.sessions; ++i) {
      // A kept-alive connection can be closed under us (an nginx reload):
      // retry; a stray extra session is harmless.
      auto r = setup.Post("/v1/sessions", R"({"title":"load"})", "application/json");
      for (int attempt = 0; attempt < 3 && !r; ++attempt) {
        r = setup.Post("/v1/sessions", R"({"title":"load"})", "application/json");
      }
      if (!r || r->status != 201) {
        std::fprintf(stderr, "chatllm-load: creating session %d failed: %s\n", i,
                     r ? (std::to_string(r->status) + " " + r->body).c_str() : httplib::to_string(r.error()).c_str());
        return 1;
      }
      rapidjson::Document d;
      d.Parse(r->body.c_str());
      shared.sessions.push_back(d["id"].GetString());
      shared.history.Session(shared.sessions.back());
    }
  }
  if (!opt.quiet) {
    std::printf("chatllm-load %s: %s, %d clients, %s, %d sessions\n", opt.label.c_str(), opt.url.c_str(),
                opt.clients,
                opt.rate > 0 ? ("open loop at " + std::to_string(static_cast<int>(opt.rate)) + " req/s").c_str()
                             : "closed loop",
                static_cast<int>(shared.sessions.size()));
    std::fflush(stdout);
  }

  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < opt.clients; ++i) clients.push_back(std::make_unique<Client>(shared, i));
  std::signal(SIGINT, OnInterrupt);
  std::signal(SIGTERM, OnInterrupt);
  shared.start = Clock::now();
  const int64_t start_unix_us = std::chrono::duration_cast<std::chrono::microseconds>(
                                    std::chrono::system_clock::now().time_since_epoch())
                                    .count();
  std::vector<std::thread> threads;
  for (auto& c : clients) threads.emplace_back([&c] { c->Run(); });

  std::thread reporter;
  if (opt.report_every_s > 0) {
    reporter = std::thread([&] {
      int64_t t = 0;
      while (!shared.stop.load()) {
        std::this_thread::sleep_for(std::chrono::seconds(opt.report_every_s));
        t += opt.report_every_s;
        std::vector<int64_t> lat;
        int64_t ok, err;
        {
          std::lock_guard<std::mutex> lock(shared.report_mu);
          lat.swap(shared.interval_latencies);
          ok = shared.interval_ok;
          err = shared.interval_err;
          shared.interval_ok = shared.interval_err = 0;
        }
        std::sort(lat.begin(), lat.end());
        std::printf("  t=%4llds  ok/s %8.1f  errors %5lld  p50 %7.2f ms  p99 %7.2f ms\n",
                    static_cast<long long>(t), static_cast<double>(ok) / opt.report_every_s,
                    static_cast<long long>(err), PercentileMs(lat, 0.5), PercentileMs(lat, 0.99));
        std::fflush(stdout);
      }
    });
  }
  for (auto& t : threads) t.join();
  double seconds = std::chrono::duration<double>(Clock::now() - shared.start).count() - opt.warmup_s;
  shared.stop = true;
  if (reporter.joinable()) reporter.join();
  shared.history.Close();

  std::vector<Summary> rows;
  OpStats total;
  for (const std::string& op : kOps) {
    OpStats merged;
    for (auto& c : clients) {
      auto it = c->stats.find(op);
      if (it != c->stats.end()) merged.Merge(it->second);
    }
    if (merged.ok + merged.errors == 0) continue;
    total.Merge(merged);
    rows.push_back(Summarize(op, merged, seconds));
  }
  if (rows.size() > 1) rows.push_back(Summarize("total", total, seconds));
  PrintTable(opt.label.empty() ? "" : "[" + opt.label + "]", rows);
  if (opt.retries > 0) {
    std::printf("%lld attempts repeated (--retries %d: outcome unknown, retried with the same Idempotency-Key)\n",
                static_cast<long long>(shared.retried.load()), opt.retries);
  }
  if (!opt.json_file.empty()) {
    std::ofstream(opt.json_file) << SummariesToJson(opt.label, seconds, start_unix_us, rows) << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace chatllm::load

int main(int argc, char** argv) { return chatllm::load::Main(argc, argv); }
