#pragma once

#include <string>

#include "base/config.h"
#include "base/http.h"
#include "prefork/application.h"
#include "prefork/scoreboard.h"

struct FCGX_Request;

namespace chatllm {

// Opens the FastCGI listen socket ("host:port", non-blocking) before the
// workers are forked; they all accept on it. Returns the fd, or -1 with
// *error set ("bind(127.0.0.1:9001) failed: Address already in use").
int OpenListenSocket(const std::string& listen, int backlog, std::string* error);

// The body of a worker process: `threads` threads (the calling thread and
// threads-1 more) each accept FastCGI connections on `listen_fd` and serve
// them with a handler `app` makes for each thread, recording their
// state in scoreboard slots first_slot.. and the metrics in `board`.
// Returns (the exit status) on SIGTERM/SIGINT/SIGQUIT once the requests in
// hand are done, after max_requests requests, or (ondemand) after
// idle_timeout without work.
// Reads the CGI-style parameters and body of a FastCGI request libfcgi has
// accepted into *req. Returns false, with *early set, when the request must
// be answered without its body (too large, bad length). Every byte comes
// from nginx or whoever reached the socket: fuzzed (tests/fuzz).
bool ReadRequest(FCGX_Request& fcgi, const Config& config, HttpRequest* req, HttpResponse* early);

int RunWorker(const Config& config, int listen_fd, Scoreboard* board, int first_slot, int threads,
              const Application& app);

}  // namespace chatllm
