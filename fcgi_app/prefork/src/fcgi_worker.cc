#include "prefork/fcgi_worker.h"

#include <arpa/inet.h>
#include <fcgiapp.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "base/http.h"
#include "base/ids.h"
#include "base/instance.h"
#include "base/log.h"
#include "base/time_util.h"
#include "prefork/access_log.h"
#include "prefork/fcgi_guard.h"
#include "prefork/instance_info.h"

namespace chatllm {

int OpenListenSocket(const std::string& listen, int backlog, std::string* error) {
  size_t colon = listen.rfind(':');
  std::string host = listen.substr(0, colon);
  std::string port = listen.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) {
    *error = "getaddrinfo(" + listen + ") failed: " + gai_strerror(rc);
    return -1;
  }
  int fd = -1;
  std::string last;
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    // Non-blocking: workers wait in poll and several may wake for one
    // connection; the losers' accept() must return EAGAIN, not block.
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
      last = std::string("socket() failed: ") + std::strerror(errno);
      continue;
    }
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd, backlog) == 0) break;
    last = "bind(" + listen + ") failed: " + std::strerror(errno);
    ::close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) *error = last;
  return fd;
}

namespace {

// Process-wide state of a worker, shared by its threads.
std::atomic<bool> g_stop{false};
volatile sig_atomic_t g_reopen_log = 0;
std::atomic<int64_t> g_served{0};
std::atomic<bool> g_failed{false};  // A thread could not start: exit non-zero.

// How long a worker waits for a request's head (nginx sends it at once).
constexpr int kFcgiHeadTimeoutMs = 5000;

void OnStopSignal(int) { g_stop.store(true); }
void OnReopenSignal(int) { g_reopen_log = 1; }

// "HTTP_X_REQUEST_ID" -> "x-request-id".
std::string HeaderName(const char* env_name, size_t len) {
  std::string out(env_name, len);
  for (char& c : out) c = (c == '_') ? '-' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// A request id from nginx ($request_id) or the client is kept if it is
// 1..64 characters of [A-Za-z0-9._-]; otherwise one is made.
std::string RequestId(const std::string& given) {
  bool ok = !given.empty() && given.size() <= 64;
  for (char c : given) ok &= std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  if (ok) return given;
  unsigned char raw[16];
  RandomBytes(raw, sizeof(raw));
  static const char kHex[] = "0123456789abcdef";
  std::string id;
  for (unsigned char b : raw) {
    id.push_back(kHex[b >> 4]);
    id.push_back(kHex[b & 15]);
  }
  return id;
}

// The CGI response head: status, the response's headers and ours.
std::string ResponseHead(const HttpResponse& resp, const Config& config, bool with_length) {
  std::string out;
  out.reserve(256 + (with_length ? resp.body.size() : 0));
  out += "Status: " + std::to_string(resp.status) + " " + StatusReason(resp.status) + "\r\n";
  for (const auto& [name, value] : resp.headers) out += name + ": " + value + "\r\n";
  out += "X-Served-By: " + config.instance_name + "\r\n";
  out += "Cache-Control: no-store\r\n";
  if (with_length && resp.status != 204) out += "Content-Length: " + std::to_string(resp.body.size()) + "\r\n";
  out += "\r\n";
  return out;
}

// A streamed response: each Send() is written and flushed to nginx as one
// FastCGI record (nginx passes it on at once: X-Accel-Buffering: no). A
// failed write means nginx closed the connection, i.e. the client is gone.
class FcgiStream : public ResponseStream {
 public:
  FcgiStream(FCGX_Request& fcgi, const Config& config) : fcgi_(fcgi), config_(config) {}
  bool Start(const HttpResponse& head) override { return Send(ResponseHead(head, config_, false)); }
  bool Send(std::string_view data) override {
    if (broken_) return false;
    if (FCGX_PutStr(data.data(), static_cast<int>(data.size()), fcgi_.out) < 0 || FCGX_FFlush(fcgi_.out) < 0) {
      broken_ = true;
      return false;
    }
    bytes_ += data.size();
    return true;
  }
  size_t bytes_sent() const override { return bytes_; }
  bool Finish(const HttpResponse& whole) override;
  bool finished() const { return finished_; }

 private:
  FCGX_Request& fcgi_;
  const Config& config_;
  bool broken_ = false;
  bool finished_ = false;
  size_t bytes_ = 0;
};

size_t WriteResponse(FCGX_Request& fcgi, const HttpResponse& resp, const Config& config, bool head) {
  std::string out = ResponseHead(resp, config, true);
  if (!head) out += resp.body;
  // A failed write means nginx gave up on the request (client gone): there
  // is nobody left to tell, and the worker carries on.
  FCGX_PutStr(out.data(), static_cast<int>(out.size()), fcgi.out);
  return out.size();
}

bool FcgiStream::Finish(const HttpResponse& whole) {
  if (broken_ || bytes_ != 0) return false;
  bytes_ = WriteResponse(fcgi_, whole, config_, false);
  // The end of the FastCGI request: nginx completes the client's response
  // while this thread goes on with the handler (ServeConnection does not
  // finish it again).
  FCGX_Finish_r(&fcgi_);
  finished_ = true;
  broken_ = true;
  return true;
}

// Feeds the shared metrics and the current request's trace.
class ThreadObserver : public Observer {
 public:
  explicit ThreadObserver(Scoreboard* board) : board_(board) {}
  void set_trace(RequestTrace* t) { trace_ = t; }
  void OnQuery(const std::string& shard, int64_t micros, bool ok) override {
    if (trace_) {
      trace_->shard = shard;
      trace_->db_us += micros;
    }
    Count(board_->Shard(shard), micros, ok);
  }
  void OnProviderCall(const std::string& provider, int64_t micros, bool ok) override {
    Count(board_->Provider(provider), micros, ok);
  }
  void OnBudgetRefusal(bool of_key, int kind) override {
    if (kind >= 1 && kind <= 6) board_->counters().budget_refusals[of_key ? 1 : 0][kind].fetch_add(1);
  }
  void OnTokens(const std::string& provider, const std::string& model, int64_t prompt, int64_t cached,
                int64_t completion, int64_t cost_nanos) override {
    UsageSeries* u = board_->Usage(provider, model);
    if (!u) return;
    u->answers.fetch_add(1, std::memory_order_relaxed);
    if (prompt > 0) u->prompt_tokens.fetch_add(static_cast<uint64_t>(prompt), std::memory_order_relaxed);
    if (cached > 0) u->cached_tokens.fetch_add(static_cast<uint64_t>(cached), std::memory_order_relaxed);
    if (completion > 0) u->completion_tokens.fetch_add(static_cast<uint64_t>(completion), std::memory_order_relaxed);
    if (cost_nanos > 0) u->cost_nanos.fetch_add(static_cast<uint64_t>(cost_nanos), std::memory_order_relaxed);
  }

 private:
  static void Count(NamedSeries* s, int64_t micros, bool ok) {
    if (!s) return;
    s->calls.fetch_add(1, std::memory_order_relaxed);
    if (!ok) s->errors.fetch_add(1, std::memory_order_relaxed);
    s->latency.Observe(micros);
  }
  Scoreboard* board_;
  RequestTrace* trace_ = nullptr;
};

struct WorkerShared {
  const Config* config;
  int listen_fd;
  Scoreboard* board;
  int first_slot;
  int threads;
  AccessLog* access_log;
  InstanceInfo* info;
  const Application* app;
  sigset_t held;     // Signals held except while waiting for a connection.
  sigset_t waiting;  // The mask while waiting (held signals open).
};

// The per-user limits of the instance, as one thread takes part in them
// (the turn marks live in the thread's own scoreboard slot).
class SlotLimits : public UserLimits {
 public:
  SlotLimits(Scoreboard* board, int slot) : board_(board), slot_(slot) {}
  bool TryBeginTurn(std::string_view user, int max_active) override {
    return board_->TryBeginTurn(slot_, user, max_active);
  }
  void EndTurn() override { board_->EndTurn(slot_); }
  bool TakeToken(std::string_view user, int per_second, int burst) override {
    return board_->TakeToken(user, per_second, burst);
  }

 private:
  Scoreboard* board_;
  int slot_;
};

// True when every thread of this worker has been idle for idle_timeout.
bool WorkerIdleTooLong(const WorkerShared& w) {
  int64_t limit = MonotonicMicros() - int64_t{w.config->idle_timeout_s} * 1000000;
  for (int s = w.first_slot; s < w.first_slot + w.threads; ++s) {
    const WorkerSlot& slot = w.board->slot(s);
    if (slot.state.load() != static_cast<uint8_t>(SlotState::kIdle) || slot.state_since_us.load() > limit) return false;
  }
  return true;
}

// One accepted connection: its request read, checked, handled and answered,
// and accounted for in the scoreboard and the access log.
void ServeConnection(WorkerShared* w, int slot, int fd, FCGX_Request& fcgi, RequestHandler& handler,
                     ThreadObserver& observer) {
  const Config& config = *w->config;
  const int64_t start = MonotonicMicros();
  w->board->counters().accepted.fetch_add(1, std::memory_order_relaxed);
  w->board->SetState(slot, SlotState::kReading);
  // libfcgi must only see well-formed request heads (fcgi_guard.h).
  std::string why;
  if (PeekFcgiHead(fd, kFcgiHeadTimeoutMs, &why) != FcgiHead::kComplete) {
    LOG_WARN("worker: dropped a connection that did not send a well-formed FastCGI request: %s", why.c_str());
    ::close(fd);
    w->board->SetState(slot, SlotState::kIdle);
    return;
  }
  // Hand the connection to libfcgi: with ipcFd set and keepConnection on,
  // FCGX_Accept_r reads the request from it instead of accepting (its
  // opening FCGX_Finish_r would otherwise close it). libfcgi 2.4.
  fcgi.ipcFd = fd;
  fcgi.keepConnection = 1;
  if (FCGX_Accept_r(&fcgi) < 0) {
    LOG_WARN("worker: reading a FastCGI request failed");
    FCGX_Finish_r(&fcgi);
    w->board->SetState(slot, SlotState::kIdle);
    return;
  }
  HttpRequest req;
  HttpResponse resp;
  RequestTrace trace;
  bool complete = ReadRequest(fcgi, config, &req, &resp);
  trace.request_id = RequestId(req.Header("x-request-id"));
  w->board->BeginRequest(slot, req.method + " " + req.path + " id=" + trace.request_id);
  w->board->SetState(slot, SlotState::kHandling);
  observer.set_trace(&trace);
  FcgiStream stream(fcgi, config);
  if (complete) {
    resp = handler.Handle(req, &trace, &stream);
  } else {
    resp.SetHeader("X-Request-Id", trace.request_id);
  }
  observer.set_trace(nullptr);
  w->board->SetState(slot, SlotState::kWriting);
  size_t bytes = resp.streamed ? stream.bytes_sent() : WriteResponse(fcgi, resp, config, req.method == "HEAD");
  if (!stream.finished()) FCGX_Finish_r(&fcgi);
  const int64_t took = MonotonicMicros() - start;
  w->board->EndRequest(slot);
  w->board->CountRequest(trace.route, resp.status, took);
  w->access_log->Write(req.method, resp.status, took, bytes, trace);
  w->board->SetState(slot, SlotState::kIdle);
}

void ServeThread(WorkerShared* w, int index) {
  const Config& config = *w->config;
  const int slot = w->first_slot + index;
  pthread_sigmask(SIG_SETMASK, &w->held, nullptr);
  ThreadObserver observer(w->board);
  SlotLimits limits(w->board, slot);
  std::unique_ptr<RequestHandler> handler;
  try {
    handler = w->app->make_handler(WorkerContext{config, &observer, &limits, w->info});
  } catch (const std::exception& e) {
    LOG_ERROR("worker: start-up failed: %s", e.what());
    g_failed.store(true);
    g_stop.store(true);
    return;
  }
  FCGX_Request fcgi;
  FCGX_InitRequest(&fcgi, w->listen_fd, 0);
  w->board->Claim(slot, ::getpid());

  const timespec tick{0, 500 * 1000 * 1000};
  while (!g_stop.load()) {
    if (g_reopen_log && index == 0) {
      g_reopen_log = 0;
      std::string error;
      if (!LogReopen(&error) || !w->access_log->Reopen(&error))
        LOG_ERROR("worker: reopening logs failed: %s", error.c_str());
      else
        LOG_INFO("worker: logs reopened");
    }
    // Wait for a connection with the held signals open (ppoll swaps the
    // mask atomically): a stop signal either arrives here, or stays pending
    // until the request in hand is done. Never in the middle of a request.
    pollfd pfd{w->listen_fd, POLLIN, 0};
    int ready = ppoll(&pfd, 1, &tick, &w->waiting);
    if (ready <= 0) {
      if (config.pm == "ondemand" && index == 0 && WorkerIdleTooLong(*w)) {
        LOG_INFO("worker: idle for %d s; exiting", config.idle_timeout_s);
        g_stop.store(true);
      }
      continue;
    }
    int fd = ::accept4(w->listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) {
        LOG_WARN("worker: accept() failed: %s", std::strerror(errno));
        usleep(10000);
      }
      continue;  // Another worker took it.
    }
    ServeConnection(w, slot, fd, fcgi, *handler, observer);
    if (config.max_requests > 0 && g_served.fetch_add(1) + 1 >= config.max_requests) {
      LOG_INFO("worker: served %d requests (max_requests); exiting", config.max_requests);
      g_stop.store(true);
    }
  }
  FCGX_Free(&fcgi, 1);
  w->board->Release(slot);
}

}  // namespace

bool ReadRequest(FCGX_Request& fcgi, const Config& config, HttpRequest* req, HttpResponse* early) {
  for (char** env = fcgi.envp; env && *env; ++env) {
    const char* kv = *env;
    const char* eq = std::strchr(kv, '=');
    if (!eq) continue;
    if (std::strncmp(kv, "HTTP_", 5) == 0) req->headers[HeaderName(kv + 5, eq - kv - 5)] = eq + 1;
  }
  auto param = [&fcgi](const char* name) -> std::string {
    const char* v = FCGX_GetParam(name, fcgi.envp);
    return v ? v : "";
  };
  req->method = param("REQUEST_METHOD");
  std::string uri = param("REQUEST_URI");
  size_t q = uri.find('?');
  req->path = uri.substr(0, q);
  req->query = q == std::string::npos ? "" : uri.substr(q + 1);
  req->remote_addr = param("REMOTE_ADDR");
  std::string content_type = param("CONTENT_TYPE");
  if (!content_type.empty()) req->headers["content-type"] = content_type;

  std::string length_text = param("CONTENT_LENGTH");
  if (length_text.empty()) return true;
  char* end = nullptr;
  errno = 0;
  unsigned long long length = std::strtoull(length_text.c_str(), &end, 10);
  if (*end != '\0' || errno != 0) {
    *early = ErrorResponse(400, "invalid_request", "malformed Content-Length");
    return false;
  }
  if (length > config.max_body_bytes) {
    *early = ErrorResponse(413, "payload_too_large",
                           "request body is larger than " + std::to_string(config.max_body_bytes) + " bytes");
    return false;
  }
  req->body.resize(length);
  size_t got = 0;
  while (got < length) {
    int n = FCGX_GetStr(req->body.data() + got, static_cast<int>(length - got), fcgi.in);
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  if (got < length) {
    *early = ErrorResponse(400, "invalid_request", "request body shorter than Content-Length");
    return false;
  }
  return true;
}

int RunWorker(const Config& config, int listen_fd, Scoreboard* board, int first_slot, int threads,
              const Application& app) {
  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // No SA_RESTART: a waiting ppoll must return.
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGQUIT, &sa, nullptr);
  // Installed before FCGX_Init, whose own SIGUSR1 handler would stop the worker.
  sa.sa_handler = OnReopenSignal;
  sigaction(SIGUSR1, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGHUP, SIG_IGN);

  WorkerShared shared;
  shared.config = &config;
  shared.listen_fd = listen_fd;
  shared.board = board;
  shared.first_slot = first_slot;
  shared.threads = threads;
  sigemptyset(&shared.held);
  for (int s : {SIGTERM, SIGINT, SIGQUIT, SIGUSR1}) sigaddset(&shared.held, s);
  pthread_sigmask(SIG_BLOCK, &shared.held, nullptr);
  pthread_sigmask(SIG_SETMASK, nullptr, &shared.waiting);
  for (int s : {SIGTERM, SIGINT, SIGQUIT, SIGUSR1}) sigdelset(&shared.waiting, s);

  if (FCGX_Init() != 0) {
    LOG_ERROR("worker: FCGX_Init() failed");
    return 1;
  }
  AccessLog access_log;
  std::string error;
  if (!access_log.Open(config.access_log, &error)) LOG_ERROR("worker: access log: %s", error.c_str());
  shared.access_log = &access_log;
  InstanceInfo info(config, board, listen_fd, app.routes);
  shared.info = &info;
  shared.app = &app;

  // Threads 1.. run alongside; this thread is thread 0, so threads = 1 is
  // the classic one-request-per-process model with no extra thread.
  std::vector<std::thread> extra;
  for (int i = 1; i < threads; ++i) extra.emplace_back(ServeThread, &shared, i);
  ServeThread(&shared, 0);
  for (auto& t : extra) t.join();
  return g_failed.load() ? 1 : 0;
}

}  // namespace chatllm
