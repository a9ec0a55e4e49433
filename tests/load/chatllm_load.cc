// chatllm-load: load generator for the chatllm API (see --help).
//
// Closed loop: --clients threads, each sending its next request when the
// previous one ends. Open loop (--rate): requests start on a fixed schedule
// and latency is measured from the scheduled start, so a slow server shows
// as queueing delay instead of silently lowering the offered load.

#include <httplib.h>
#include <rapidjson/document.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
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

const std::vector<std::string> kOps = {"create", "recreate", "append", "get", "read",
                                       "list",   "sessions", "delete", "raw"};

// What every client sends now and then (--identical): short answers people
// really send, which only their seq tells apart.
const std::vector<std::string> kSharedTexts = {"yes", "ok", "no", "thanks", "go on"};

// A stream that ended with an `error` event after its user message was
// stored: recorded with this status (unknown outcome, like a 5xx).
constexpr int kStreamFailed = 599;

struct Shared {
  LoadOptions opt;
  Clock::time_point start;
  std::vector<std::string> sessions;
  std::vector<char> alive;                    // Parallel to sessions: 0 once this run deleted it.
  int64_t live = 0;                           // Sessions alive.
  std::vector<std::atomic<int64_t>> max_seq;  // Highest seq seen per session (for list cursors).
  struct KeyedCreate {
    std::string key, body;
  };
  std::vector<KeyedCreate> keyed_creates;  // For the recreate op.
  std::mutex sessions_mu;                  // Guards the four above (grown by create).
  std::atomic<int64_t> next_arrival{0};    // Open loop schedule index.
  std::atomic<int64_t> issued{0};          // Requests started (for --requests).
  std::atomic<bool> stop{false};
  HistoryWriter history;
  std::string run_id;
  // Live reporting.
  std::mutex report_mu;
  std::vector<int64_t> interval_latencies;
  int64_t interval_ok = 0, interval_err = 0;
  std::atomic<int64_t> retried{0};  // Attempts repeated under --retries.
  std::atomic<int64_t> cuts{0};     // Streams the client hung up on.
  std::atomic<int64_t> resumed{0};  // ...of which read again from their last event.
  std::atomic<int64_t> doubles{0};  // Keyed writes sent twice at once.

  explicit Shared(const LoadOptions& o) : opt(o), max_seq(o.sessions) {}
  int64_t Now() const { return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count(); }
  void AddSession(const std::string& id) {
    std::lock_guard<std::mutex> lock(sessions_mu);
    sessions.push_back(id);
    alive.push_back(1);
    ++live;
    history.Session(id);
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

// What a client learned from one request.
struct Answer {
  int status = 0;    // 0: no answer (or the client hung up); kStreamFailed: see above.
  std::string code;  // error.code of an error answer.
  std::string body;
  bool replayed = false;
  int64_t user_seq = 0, assistant_seq = 0;  // A turn's, when answered.
  std::string id;                           // A create's session.
  // A stream of a durable turn: where to read it again, the id of the last
  // delta seen, and the text of the deltas seen.
  std::string events_url;
  int64_t last_event = 0;
  std::string text;
  int64_t first_delta_us = 0;  // When the first piece of text came (the run's clock).
};

// The value of string member `name` of a JSON object, "" if none.
std::string JsonMember(const std::string& data, const char* name) {
  rapidjson::Document d;
  d.Parse(data.c_str(), data.size());
  return d.IsObject() && d.HasMember(name) && d[name].IsString() ? d[name].GetString() : "";
}

// Reads what a JSON answer says (a turn, a created session, an error).
void ParseJson(Answer* a) {
  rapidjson::Document d;
  d.Parse(a->body.c_str(), a->body.size());
  if (d.HasParseError() || !d.IsObject()) return;
  if (d.HasMember("error") && d["error"].IsObject() && d["error"].HasMember("code") && d["error"]["code"].IsString()) {
    a->code = d["error"]["code"].GetString();
  }
  if (d.HasMember("user") && d["user"].IsObject() && d["user"].HasMember("seq"))
    a->user_seq = d["user"]["seq"].GetInt64();
  if (d.HasMember("assistant") && d["assistant"].IsObject() && d["assistant"].HasMember("seq")) {
    a->assistant_seq = d["assistant"]["seq"].GetInt64();
  }
  if (d.HasMember("id") && d["id"].IsString()) a->id = d["id"].GetString();
}

Answer FromResult(const httplib::Result& r) {
  Answer a;
  if (!r) return a;
  a.status = r->status;
  a.body = r->body;
  a.replayed = r->get_header_value("Idempotent-Replayed") == "true";
  ParseJson(&a);
  return a;
}

// The seq in a streamed message event's data.
int64_t SeqOf(const std::string& data) {
  rapidjson::Document d;
  d.Parse(data.c_str(), data.size());
  return d.IsObject() && d.HasMember("seq") && d["seq"].IsInt64() ? d["seq"].GetInt64() : 0;
}

class Client {
 public:
  Client(Shared& shared, int id)
      : s_(shared), id_(id), http_(shared.opt.url), rng_(std::random_device{}() ^ (id * 7919)) {
    Configure(http_);
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
      Done done = Do(op, n);
      int64_t end = s_.Now();
      Record(done.op, done, begin, end);
    }
  }

  std::map<std::string, OpStats> stats;

 private:
  struct Done {
    std::string op;
    int status = 0;
    bool expected = false;  // Not an error: see OpStats::expected.
  };

  void Configure(httplib::Client& c) const {
    c.set_keep_alive(true);
    c.set_tcp_nodelay(true);  // Headers and body go out in two writes: no Nagle wait.
    if (!s_.opt.api_key.empty()) c.set_default_headers({{"Authorization", "Bearer " + s_.opt.api_key}});
    c.set_connection_timeout(s_.opt.timeout_s, 0);
    c.set_read_timeout(s_.opt.timeout_s, 0);
    c.set_write_timeout(s_.opt.timeout_s, 0);
  }

  double Uniform() { return std::uniform_real_distribution<double>(0, 1)(rng_); }

  const std::string& PickOp() {
    double r = Uniform();
    for (const auto& [c, op] : cumulative_) {
      if (r <= c) return op;
    }
    return cumulative_.back().second;
  }

  // A session this run has not deleted, when there is one.
  size_t PickSession() {
    std::lock_guard<std::mutex> lock(s_.sessions_mu);
    const size_t n = s_.sessions.size();
    if (s_.opt.session_per_client) {
      // Round-robin over this client's own sessions: id, id + clients, ...
      size_t mine = std::max<size_t>(1, (n - static_cast<size_t>(id_) % n + s_.opt.clients - 1) / s_.opt.clients);
      return (static_cast<size_t>(id_) + static_cast<size_t>(s_.opt.clients) * (round_++ % mine)) % n;
    }
    size_t i = 0;
    for (int attempt = 0; attempt < 16; ++attempt) {
      i = std::uniform_int_distribution<size_t>(0, n - 1)(rng_);
      if (s_.alive[i]) break;
    }
    return i;
  }

  std::string SessionAt(size_t i, bool* alive = nullptr) {
    std::lock_guard<std::mutex> lock(s_.sessions_mu);
    if (alive) *alive = s_.alive[i] != 0;
    return s_.sessions[i];
  }
  bool Deleted(size_t i) {
    std::lock_guard<std::mutex> lock(s_.sessions_mu);
    return !s_.alive[i];
  }

  // Sends `call` (one attempt) again while its outcome is unknown, up to
  // --retries times, but only a keyed write: a careful client's retry.
  template <typename Call>
  Answer WithRetries(bool keyed, Call&& call) {
    for (int attempt = 0;; ++attempt) {
      Answer a = call();
      const bool unknown = a.status == 0 || a.status == 502 || a.status == 503 || a.status == 504 ||
                           a.status == kStreamFailed || (a.status == 409 && a.code == "idempotency_key_in_use");
      if (!keyed || !unknown || attempt >= s_.opt.retries || s_.stop.load()) return a;
      s_.retried.fetch_add(1);
      std::this_thread::sleep_for(std::chrono::milliseconds(a.status == 409 || a.status == 503 ? 200 : 20));
    }
  }

  // POSTs `body` to `path` as a stream and reads its events; hangs up after
  // `cut_after` of them if that is >= 0 (status 0 then, unless the answer
  // was already whole). A JSON answer (an error, or a replay) is read as such.
  Answer PostStream(const std::string& path, const httplib::Headers& headers, const std::string& body, int cut_after) {
    httplib::Client c(s_.opt.url);
    Configure(c);
    c.set_keep_alive(false);
    Answer a;
    bool sse = false, cut = false;
    std::string pending, event, error_code;
    int events = 0;
    httplib::Request req;
    req.method = "POST";
    req.path = path;
    req.headers = headers;
    if (!s_.opt.api_key.empty()) req.set_header("Authorization", "Bearer " + s_.opt.api_key);
    req.set_header("Content-Type", "application/json");
    req.body = body;
    req.response_handler = [&](const httplib::Response& r) {
      a.status = r.status;
      a.replayed = r.get_header_value("Idempotent-Replayed") == "true";
      sse = r.get_header_value("Content-Type").rfind("text/event-stream", 0) == 0;
      return true;
    };
    req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      if (!sse) {
        a.body.append(data, n);
        return true;
      }
      if (cut_after == 0) {
        cut = true;
        return false;
      }
      pending.append(data, n);
      for (size_t end; (end = pending.find("\n\n")) != std::string::npos;) {
        std::string block = pending.substr(0, end);
        pending.erase(0, end + 2);
        std::string name, payload, id;
        std::istringstream lines(block);
        for (std::string line; std::getline(lines, line);) {
          if (line.rfind("event: ", 0) == 0) name = line.substr(7);
          if (line.rfind("data: ", 0) == 0) payload += line.substr(6);
          if (line.rfind("id: ", 0) == 0) id = line.substr(4);
        }
        if (name == "turn") a.events_url = JsonMember(payload, "events_url");
        if (name == "delta") {
          if (a.first_delta_us == 0) a.first_delta_us = s_.Now();
          a.text += JsonMember(payload, "text");
          if (!id.empty()) a.last_event = std::atoll(id.c_str());
        }
        if (name == "user") a.user_seq = SeqOf(payload);
        if (name == "assistant") a.assistant_seq = SeqOf(payload);
        if (name == "error") {
          Answer e;
          e.body = payload;
          ParseJson(&e);
          error_code = e.code.empty() ? "stream_error" : e.code;
        }
        ++events;
        if (cut_after > 0 && events >= cut_after && a.assistant_seq == 0 && error_code.empty()) {
          cut = true;
          return false;
        }
      }
      return true;
    };
    c.send(req);
    if (!sse) {
      ParseJson(&a);
      return a;
    }
    if (!error_code.empty()) {
      a.status = kStreamFailed;
      a.code = error_code;
      a.user_seq = a.assistant_seq = 0;
    } else if (cut || a.assistant_seq == 0) {
      a.status = 0;  // Hung up (or the stream broke) before the answer: unknown.
      a.user_seq = a.assistant_seq = 0;
    } else {
      a.status = 201;  // A whole turn, as the JSON path would have said.
    }
    return a;
  }

  // Reads a durable turn's events after `cut.last_event` to its end, as a
  // client whose stream dropped does. On its `assistant` event, sets what
  // the checker proves: the answer's seq and the text assembled (what the
  // cut stream showed, then the rest).
  void Resume(const Answer& cut, AppendRecord* rec) {
    httplib::Client c(s_.opt.url);
    Configure(c);
    c.set_keep_alive(false);
    httplib::Headers h;
    if (!s_.opt.api_key.empty()) h.emplace("Authorization", "Bearer " + s_.opt.api_key);
    std::string text = cut.text, pending;
    int64_t seq = 0;
    int64_t expect = cut.last_event + 1;
    bool broken = false;
    auto r =
        c.Get(cut.events_url + "?starting_after=" + std::to_string(cut.last_event), h, [&](const char* data, size_t n) {
          pending.append(data, n);
          for (size_t end; (end = pending.find("\n\n")) != std::string::npos;) {
            std::string block = pending.substr(0, end);
            pending.erase(0, end + 2);
            std::string name, payload, id;
            std::istringstream lines(block);
            for (std::string line; std::getline(lines, line);) {
              if (line.rfind("event: ", 0) == 0) name = line.substr(7);
              if (line.rfind("data: ", 0) == 0) payload += line.substr(6);
              if (line.rfind("id: ", 0) == 0) id = line.substr(4);
            }
            if (name == "delta") {
              // Every event once, in order: a gap or a repeat
              // makes the text wrong, which the checker sees.
              if (std::atoll(id.c_str()) != expect++) broken = true;
              text += JsonMember(payload, "text");
            }
            if (name == "assistant") seq = SeqOf(payload);
          }
          return true;
        });
    s_.resumed.fetch_add(1);
    if (!r || r->status != 200 || seq == 0) return;  // Not to its answer (failed, cut, deleted).
    rec->resumed_seq = seq;
    rec->resumed_text = broken ? text + " [events out of order]" : text;
  }

  // The same keyed write sent again at once on a second connection (the
  // answer of one of the two is recorded as a second record with the key).
  template <typename Send>
  std::thread SendTwice(bool keyed, Send&& send) {
    if (!keyed || Uniform() >= s_.opt.twice) return std::thread();
    s_.doubles.fetch_add(1);
    return std::thread(std::forward<Send>(send));
  }

  Done Do(const std::string& op, int64_t n) {
    if (op == "raw") {
      auto r = http_.Get(s_.opt.raw_path);
      return {op, r ? 200 : 0};  // Ceilings: any answer counts.
    }
    if (op == "create" || op == "recreate") return Create(op, n);
    if (op == "delete") return Delete(n);
    if (op == "sessions") return ListSessions();
    // Now and then a read goes to a session this run deleted: it must stay gone.
    const bool probe = (op == "get" || op == "read") && Uniform() < 0.05;
    size_t idx = probe ? PickDeleted() : PickSession();
    const std::string session = SessionAt(idx);
    if (op == "append") return Append(idx, session, n);
    Done done{op};
    if (op == "get" || op == "read") {
      ReadRecord rec;
      rec.session = session;
      rec.client = id_;
      rec.limit = op == "get" ? 0 : s_.opt.read_limit;
      rec.invoke_us = s_.Now();
      const std::string path = op == "get" ? "/v1/sessions/" + session
                                           : "/v1/sessions/" + session + "/messages?limit=" + std::to_string(rec.limit);
      auto r = http_.Get(path);
      // A GET that got no answer at all is sent once more, as browsers and
      // HTTP libraries do (RFC 9110 9.2.2: it is idempotent): a kept-alive
      // connection that the server closed as the request went out (an nginx
      // reload ends its old workers' idle connections) fails that way.
      if (!r) r = http_.Get(path);
      rec.complete_us = s_.Now();
      done.status = r ? r->status : 0;
      rec.status = done.status;
      if (r && r->status == 200 && op == "read") {
        rapidjson::Document d;
        d.Parse(r->body.c_str(), r->body.size());
        if (d.IsObject() && d.HasMember("data")) {
          for (const auto& m : d["data"].GetArray()) {
            rec.messages.emplace_back(m["seq"].GetInt64(),
                                      MessageHash(m["role"].GetString(), std::string(m["content"].GetString(),
                                                                                     m["content"].GetStringLength())));
          }
        }
      }
      if (done.status == 200 || done.status == 404) s_.history.Read(rec);
    } else {
      // list: a page from a random point of the history seen so far.
      int64_t top = idx < s_.max_seq.size() ? s_.max_seq[idx].load() : 0;
      int64_t after = top > 0 ? std::uniform_int_distribution<int64_t>(0, top)(rng_) : 0;
      auto r = http_.Get("/v1/sessions/" + session + "/messages?limit=50&after=" + std::to_string(after));
      done.status = r ? r->status : 0;
    }
    done.expected = done.status == 404 && Deleted(idx);
    return done;
  }

  // A session this run deleted, or a live one if it deleted none.
  size_t PickDeleted() {
    {
      std::lock_guard<std::mutex> lock(s_.sessions_mu);
      for (int attempt = 0; attempt < 16; ++attempt) {
        size_t i = std::uniform_int_distribution<size_t>(0, s_.sessions.size() - 1)(rng_);
        if (!s_.alive[i]) return i;
      }
    }
    return PickSession();
  }

  // GET /v1/sessions: the newest page of the caller's sessions.
  Done ListSessions() {
    ListRecord rec;
    rec.client = id_;
    rec.invoke_us = s_.Now();
    auto r = http_.Get("/v1/sessions?limit=100");
    rec.complete_us = s_.Now();
    if (r && r->status == 200) {
      rapidjson::Document d;
      d.Parse(r->body.c_str(), r->body.size());
      if (d.IsObject() && d.HasMember("data") && d["data"].IsArray()) {
        for (const auto& s : d["data"].GetArray()) {
          if (s.IsObject() && s.HasMember("id") && s["id"].IsString()) rec.ids.push_back(s["id"].GetString());
        }
      }
      s_.history.List(rec);
    }
    return {"sessions", r ? r->status : 0};
  }

  Done Append(size_t idx, const std::string& session, int64_t n) {
    AppendRecord rec;
    rec.session = session;
    rec.client = id_;
    if (Uniform() < s_.opt.identical) {
      rec.content = kSharedTexts[std::uniform_int_distribution<size_t>(0, kSharedTexts.size() - 1)(rng_)];
    } else {
      rec.content = s_.run_id + "-c" + std::to_string(id_) + "-" + std::to_string(n) + "-";
      rec.content.resize(std::max<size_t>(rec.content.size(), s_.opt.content_bytes), 'x');
    }
    const bool keyed = Uniform() < s_.opt.keys;
    if (keyed) rec.key = s_.run_id + "-a" + std::to_string(id_) + "-" + std::to_string(n);
    const bool cut = Uniform() < s_.opt.cut;
    const bool streamed = cut || Uniform() < s_.opt.stream;
    rec.streamed = streamed;
    std::string body = "{\"content\":" + JsonEscape(rec.content);
    if (streamed) {
      body += ",\"stream\":true";
      if (!s_.opt.stream_model.empty()) body += ",\"model\":" + JsonEscape(s_.opt.stream_model);
    }
    body += "}";
    const std::string path = "/v1/sessions/" + session + "/messages";
    const httplib::Headers headers = keyed ? httplib::Headers{{"Idempotency-Key", rec.key}} : httplib::Headers{};
    auto finish = [this, idx](AppendRecord& r, const Answer& a) {
      r.complete_us = s_.Now();
      r.status = a.status;
      r.code = a.code;
      r.outcome = OutcomeOf(r.status, r.code);
      if (r.outcome == Outcome::kOk) {
        r.seq = a.user_seq;
        r.assistant_seq = a.assistant_seq;
        if (idx < s_.max_seq.size()) {
          int64_t seen = s_.max_seq[idx].load();
          while (seen < r.seq + 1 && !s_.max_seq[idx].compare_exchange_weak(seen, r.seq + 1)) {
          }
        }
      }
      s_.history.Append(r);
    };
    // Each attempt has its own X-Request-Id; the app stores it with the
    // message it writes, which tells the checker which request wrote what.
    auto with_id = [&](AppendRecord& r) {
      httplib::Headers h = headers;
      r.request_ids.push_back(s_.run_id + "-" + std::to_string(id_) + "-" + std::to_string(n) + "-" +
                              std::to_string(attempts_++));
      h.emplace("X-Request-Id", r.request_ids.back());
      return h;
    };
    auto send = [&]() -> Answer {
      const httplib::Headers h = with_id(rec);
      if (streamed) return PostStream(path, h, body, -1);
      return FromResult(http_.Post(path, h, body, "application/json"));
    };
    AppendRecord copy = rec;
    std::thread twice = SendTwice(keyed, [&, copy]() mutable {
      httplib::Client other(s_.opt.url);
      Configure(other);
      copy.invoke_us = s_.Now();
      int attempt = 0;
      finish(copy, WithRetries(true, [&] {
               httplib::Headers h = headers;
               copy.request_ids.push_back(s_.run_id + "-" + std::to_string(id_) + "-" + std::to_string(n) + "-t" +
                                          std::to_string(attempt++));
               h.emplace("X-Request-Id", copy.request_ids.back());
               return streamed ? PostStream(path, h, body, -1)
                               : FromResult(other.Post(path, h, body, "application/json"));
             }));
    });
    rec.invoke_us = s_.Now();
    Answer a;
    if (cut) {
      // The client hangs up after a few events, then (keyed) sends the same
      // request again and reads it to the end.
      s_.cuts.fetch_add(1);
      AppendRecord first = rec;
      first.cut = true;
      const int cut_after = std::uniform_int_distribution<int>(s_.opt.cut_min, 4)(rng_);
      const httplib::Headers h = with_id(first);
      const Answer got = PostStream(path, h, body, cut_after);
      // Some clients read the turn again from where they were (any
      // instance) before they do anything else.
      if (got.status == 0 && !got.events_url.empty() && Uniform() < s_.opt.resume) Resume(got, &first);
      finish(first, got);
      if (!keyed) {
        if (twice.joinable()) twice.join();
        return {"append", first.status, first.status == 0 || (first.status == 404 && Deleted(idx))};
      }
      rec.invoke_us = s_.Now();
    }
    a = WithRetries(keyed, send);
    finish(rec, a);
    if (twice.joinable()) twice.join();
    if (streamed && !cut) {
      if (rec.status == 201 && a.first_delta_us > 0) Record("ttft", Done{"ttft", 201}, rec.invoke_us, a.first_delta_us);
      return {"append_stream", rec.status, rec.status == 404 && Deleted(idx)};
    }
    return {"append", rec.status, rec.status == 404 && Deleted(idx)};
  }

  Done Create(const std::string& op, int64_t n) {
    CreateRecord rec;
    rec.client = id_;
    std::string body;
    bool keyed = Uniform() < s_.opt.keys;
    if (op == "recreate") {
      std::lock_guard<std::mutex> lock(s_.sessions_mu);
      if (!s_.keyed_creates.empty()) {
        const Shared::KeyedCreate& k =
            s_.keyed_creates[std::uniform_int_distribution<size_t>(0, s_.keyed_creates.size() - 1)(rng_)];
        rec.key = k.key;
        body = k.body;
        keyed = true;
      }
    }
    if (body.empty()) {
      body =
          "{\"title\":" + JsonEscape("load " + s_.run_id + "-" + std::to_string(id_) + "-" + std::to_string(n)) + "}";
      if (keyed) rec.key = s_.run_id + "-create-c" + std::to_string(id_) + "-" + std::to_string(n);
    }
    const httplib::Headers headers = keyed ? httplib::Headers{{"Idempotency-Key", rec.key}} : httplib::Headers{};
    auto finish = [this](CreateRecord& r, const Answer& a) {
      r.complete_us = s_.Now();
      r.status = a.status;
      r.replayed = a.replayed;
      if (a.status == 201 && !a.id.empty()) r.id = a.id;
      s_.history.Create(r);
    };
    CreateRecord copy = rec;
    std::thread twice = SendTwice(keyed, [&, copy]() mutable {
      httplib::Client other(s_.opt.url);
      Configure(other);
      copy.invoke_us = s_.Now();
      finish(copy, WithRetries(true, [&] {
               return FromResult(other.Post("/v1/sessions", headers, body, "application/json"));
             }));
    });
    rec.invoke_us = s_.Now();
    Answer a =
        WithRetries(keyed, [&] { return FromResult(http_.Post("/v1/sessions", headers, body, "application/json")); });
    finish(rec, a);
    if (twice.joinable()) twice.join();
    if (a.status == 201 && !a.id.empty() && op == "create") {
      s_.AddSession(a.id);
      if (keyed) {
        std::lock_guard<std::mutex> lock(s_.sessions_mu);
        s_.keyed_creates.push_back({rec.key, body});
      }
    }
    return {op, a.status};
  }

  Done Delete(int64_t n) {
    size_t idx;
    std::string session;
    {
      std::lock_guard<std::mutex> lock(s_.sessions_mu);
      // Keep at least half of the shared sessions: deleting becomes creating.
      if (s_.live <= std::max<int64_t>(1, s_.opt.sessions / 2))
        idx = SIZE_MAX;
      else
        idx = std::uniform_int_distribution<size_t>(0, s_.sessions.size() - 1)(rng_);
      if (idx != SIZE_MAX && s_.alive[idx]) {
        s_.alive[idx] = 0;  // Others stop picking it; those already sending race with the delete.
        --s_.live;
        session = s_.sessions[idx];
      }
    }
    if (session.empty()) return Create("create", n);
    DeleteRecord rec;
    rec.session = session;
    rec.client = id_;
    rec.invoke_us = s_.Now();
    auto r = http_.Delete("/v1/sessions/" + session);
    rec.complete_us = s_.Now();
    rec.status = r ? r->status : 0;
    s_.history.Delete(rec);
    return {"delete", rec.status};
  }

  void Record(const std::string& op, const Done& done, int64_t begin, int64_t end) {
    const int status = done.status;
    bool ok = status >= 200 && status < 300;
    if (end < static_cast<int64_t>(s_.opt.warmup_s * 1e6)) return;
    OpStats& st = stats[op];
    if (done.expected) {
      st.expected++;  // Not in by_status: that lists what was asked for and errors.
    } else {
      st.by_status[status]++;
    }
    if (ok) {
      st.ok++;
      st.latencies_us.push_back(end - begin);
    } else if (!done.expected) {
      st.errors++;
    }
    if (s_.opt.report_every_s > 0) {
      std::lock_guard<std::mutex> lock(s_.report_mu);
      if (ok) {
        s_.interval_ok++;
        s_.interval_latencies.push_back(end - begin);
      } else if (!done.expected) {
        s_.interval_err++;
      }
    }
  }

  Shared& s_;
  int id_;
  httplib::Client http_;
  std::mt19937_64 rng_;
  size_t round_ = 0;
  int64_t attempts_ = 0;  // For unique X-Request-Ids.
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
  for (const auto& [op, w] : opt.mix) needs_sessions |= (op != "create" && op != "recreate" && op != "raw");
  if (needs_sessions && !opt.sessions_file.empty()) {
    std::ifstream in(opt.sessions_file);
    std::string id;
    while (std::getline(in, id)) {
      if (!id.empty()) shared.AddSession(id);
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
      // As a real client would: a kept-alive connection closed under us (an
      // nginx reload), or a 502/503 while a fault scenario kills workers or
      // a shard already, is retried (a stray extra session is harmless).
      auto r = setup.Post("/v1/sessions", R"({"title":"load"})", "application/json");
      for (int attempt = 1; attempt < 10 && (!r || r->status == 502 || r->status == 503 || r->status == 504);
           ++attempt) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100 * attempt));
        r = setup.Post("/v1/sessions", R"({"title":"load"})", "application/json");
      }
      if (!r || r->status != 201) {
        std::fprintf(stderr, "chatllm-load: creating session %d failed: %s\n", i,
                     r ? (std::to_string(r->status) + " " + r->body).c_str() : httplib::to_string(r.error()).c_str());
        return 1;
      }
      rapidjson::Document d;
      d.Parse(r->body.c_str());
      shared.AddSession(d["id"].GetString());
    }
  }
  if (!opt.quiet) {
    std::printf("chatllm-load %s: %s, %d clients, %s, %d sessions\n", opt.label.c_str(), opt.url.c_str(), opt.clients,
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
  const int64_t start_unix_us =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
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
        std::printf("  t=%4llds  ok/s %8.1f  errors %5lld  p50 %7.2f ms  p99 %7.2f ms\n", static_cast<long long>(t),
                    static_cast<double>(ok) / opt.report_every_s, static_cast<long long>(err), PercentileMs(lat, 0.5),
                    PercentileMs(lat, 0.99));
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
  // The mix's ops, then what --stream reports: its appends, and their time
  // to the first piece of text (not a request: not in the total).
  std::vector<std::string> reported = kOps;
  reported.insert(reported.end(), {"append_stream", "ttft"});
  for (const std::string& op : reported) {
    OpStats merged;
    for (auto& c : clients) {
      auto it = c->stats.find(op);
      if (it != c->stats.end()) merged.Merge(it->second);
    }
    if (merged.ok + merged.errors == 0) continue;
    if (op != "ttft") total.Merge(merged);
    rows.push_back(Summarize(op, merged, seconds));
  }
  if (rows.size() > 1) rows.push_back(Summarize("total", total, seconds));
  PrintTable(opt.label.empty() ? "" : "[" + opt.label + "]", rows);
  if (opt.retries > 0) {
    std::printf("%lld attempts repeated (--retries %d: outcome unknown, retried with the same Idempotency-Key)\n",
                static_cast<long long>(shared.retried.load()), opt.retries);
  }
  if (opt.cut > 0 || opt.twice > 0) {
    std::printf("%lld streams cut by the client (%lld resumed), %lld keyed writes sent twice at once\n",
                static_cast<long long>(shared.cuts.load()), static_cast<long long>(shared.resumed.load()),
                static_cast<long long>(shared.doubles.load()));
  }
  if (!opt.json_file.empty()) {
    std::ofstream(opt.json_file) << SummariesToJson(opt.label, seconds, start_unix_us, rows) << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace chatllm::load

int main(int argc, char** argv) { return chatllm::load::Main(argc, argv); }
