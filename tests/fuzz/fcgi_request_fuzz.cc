// libFuzzer target: raw bytes on the FastCGI socket, as a worker reads
// them: the head check (fcgi_guard.h) decides whether libfcgi may see them;
// if so libfcgi parses the records (FCGX_Accept_r on a socketpair, the
// worker's own hand-off), ReadRequest turns the parameters and body into an
// HttpRequest, MatchRoute maps it to a route. Properties: no crash or
// sanitizer report, in our code or libfcgi's; an early answer is an error
// with the uniform body; a request never holds more body than the limit.

#include <fcgiapp.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "api/router.h"
#include "base/config.h"
#include "base/http.h"
#include "fuzz_support.h"
#include "prefork/fcgi_guard.h"
#include "prefork/fcgi_worker.h"

using namespace chatllm;

namespace {

Config FuzzConfig() {
  Config c;
  c.max_body_bytes = 4096;  // Small, so inputs reach past it.
  return c;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  signal(SIGPIPE, SIG_IGN);  // libfcgi answers on a socket whose peer may be gone.
  FCGX_Init();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Config config = FuzzConfig();
  if (size > 65536) return 0;  // Fits a socket buffer: one write, no reader thread.
  std::string why;
  // What the worker drops (or, incomplete, drops after a timeout) never reaches libfcgi.
  switch (CheckFcgiHead(std::string_view(reinterpret_cast<const char*>(data), size), &why)) {
    case FcgiHead::kComplete:
      break;
    case FcgiHead::kIncomplete:
      return 0;
    case FcgiHead::kInvalid:
      FUZZ_CHECK(!why.empty());
      return 0;
  }
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 0;
  int buf = 1 << 20;
  setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
  setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
  size_t sent = 0;
  while (sent < size) {
    ssize_t n = write(sv[1], data + sent, size - sent);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  shutdown(sv[1], SHUT_WR);  // The request ends here; answers still have somewhere to go.

  FCGX_Request fcgi;
  FCGX_InitRequest(&fcgi, sv[0], 0);
  fcgi.ipcFd = sv[0];
  fcgi.keepConnection = 1;
  if (FCGX_Accept_r(&fcgi) == 0) {
    HttpRequest req;
    HttpResponse early;
    if (ReadRequest(fcgi, config, &req, &early)) {
      FUZZ_CHECK(req.body.size() <= config.max_body_bytes);
      RouteMatch route = MatchRoute(req.method, req.path);
      FUZZ_CHECK(route.name != nullptr);
      if (route.id == RouteId::kMethodNotAllowed) FUZZ_CHECK(!route.allow.empty());
    } else {
      fuzz::CheckErrorResponse(early);
    }
  }
  FCGX_Finish_r(&fcgi);
  if (fcgi.ipcFd >= 0) close(fcgi.ipcFd);
  FCGX_Free(&fcgi, 0);
  close(sv[1]);
  return 0;
}
