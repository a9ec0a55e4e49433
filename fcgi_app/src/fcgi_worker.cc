#include "fcgi_app/fcgi_worker.h"

#include <arpa/inet.h>
#include <fcgiapp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <memory>

#include "fcgi_app/http.h"
#include "fcgi_app/log.h"
#include "fcgi_app/provider.h"
#include "fcgi_app/service.h"
#include "fcgi_app/store.h"

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
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
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

volatile sig_atomic_t g_stop = 0;
volatile sig_atomic_t g_reopen_log = 0;

void OnStopSignal(int) {
  g_stop = 1;
  FCGX_ShutdownPending();  // Makes a blocked FCGX_Accept_r return instead of retrying.
}

void OnReopenSignal(int) { g_reopen_log = 1; }

// "HTTP_X_REQUEST_ID" -> "x-request-id".
std::string HeaderName(const char* env_name, size_t len) {
  std::string out(env_name, len);
  for (char& c : out) c = (c == '_') ? '-' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Reads the CGI-style parameters nginx sent into an HttpRequest. Returns
// false, with *early set, when the request must be answered without
// reading the body (too large, bad length).
bool ReadRequest(FCGX_Request& fcgi, const Config& config, HttpRequest* req, HttpResponse* early) {
  for (char** env = fcgi.envp; env && *env; ++env) {
    const char* kv = *env;
    const char* eq = std::strchr(kv, '=');
    if (!eq) continue;
    if (std::strncmp(kv, "HTTP_", 5) == 0) {
      req->headers[HeaderName(kv + 5, eq - kv - 5)] = eq + 1;
    }
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
                           "request body is larger than " + std::to_string(config.max_body_bytes) +
                               " bytes");
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

void WriteResponse(FCGX_Request& fcgi, const HttpResponse& resp, const Config& config, bool head) {
  std::string out;
  out.reserve(256 + resp.body.size());
  out += "Status: " + std::to_string(resp.status) + " " + StatusReason(resp.status) + "\r\n";
  for (const auto& [name, value] : resp.headers) out += name + ": " + value + "\r\n";
  out += "X-Served-By: " + config.instance_name + "\r\n";
  out += "Cache-Control: no-store\r\n";
  if (resp.status != 204) out += "Content-Length: " + std::to_string(resp.body.size()) + "\r\n";
  out += "\r\n";
  if (!head) out += resp.body;
  // A failed write means nginx gave up on the request (client gone): there
  // is nobody left to tell, and the worker carries on.
  FCGX_PutStr(out.data(), static_cast<int>(out.size()), fcgi.out);
}

}  // namespace

int RunWorker(const Config& config, int listen_fd) {
  struct sigaction sa{};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // No SA_RESTART: a blocked accept() must return.
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGQUIT, &sa, nullptr);
  // Installed before FCGX_Init, whose own SIGUSR1 handler would stop the worker.
  sa.sa_handler = OnReopenSignal;
  sigaction(SIGUSR1, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGHUP, SIG_IGN);

  // Signals are held while a request is handled and delivered only while
  // waiting in accept: a request in hand always completes, and no signal
  // interrupts a database read halfway.
  sigset_t held;
  sigemptyset(&held);
  for (int s : {SIGTERM, SIGINT, SIGQUIT, SIGUSR1}) sigaddset(&held, s);
  sigprocmask(SIG_BLOCK, &held, nullptr);

  if (FCGX_Init() != 0) {
    LOG_ERROR("worker: FCGX_Init() failed");
    return 1;
  }
  std::unique_ptr<Store> store;
  std::unique_ptr<Provider> provider;
  try {
    store = std::make_unique<Store>(config);
    provider = MakeProvider(config);
  } catch (const std::exception& e) {
    LOG_ERROR("worker: start-up failed: %s", e.what());
    return 1;
  }
  Service service(config, store.get(), provider.get());

  FCGX_Request fcgi;
  FCGX_InitRequest(&fcgi, listen_fd, FCGI_FAIL_ACCEPT_ON_INTR);
  while (!g_stop) {
    sigprocmask(SIG_UNBLOCK, &held, nullptr);  // Pending signals are delivered here.
    int rc = g_stop ? -1 : FCGX_Accept_r(&fcgi);
    sigprocmask(SIG_BLOCK, &held, nullptr);
    if (g_reopen_log) {
      g_reopen_log = 0;
      std::string error;
      if (!LogReopen(&error)) LOG_ERROR("worker: reopening the log failed: %s", error.c_str());
    }
    if (rc < 0) {
      if (g_stop) break;
      if (errno == EINTR) continue;
      LOG_WARN("worker: FCGX_Accept_r failed (%d: %s); retrying", rc, std::strerror(errno));
      usleep(10000);
      continue;
    }
    HttpRequest req;
    HttpResponse resp;
    if (ReadRequest(fcgi, config, &req, &resp)) resp = service.Handle(req);
    WriteResponse(fcgi, resp, config, req.method == "HEAD");
    FCGX_Finish_r(&fcgi);
  }
  FCGX_Free(&fcgi, 1);
  return 0;
}

}  // namespace chatllm
