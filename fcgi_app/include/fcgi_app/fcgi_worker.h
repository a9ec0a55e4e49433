#pragma once

#include <string>

#include "fcgi_app/config.h"
#include "fcgi_app/scoreboard.h"

namespace chatllm {

// Opens the FastCGI listen socket ("host:port", non-blocking) before the
// workers are forked; they all accept on it. Returns the fd, or -1 with
// *error set ("bind(127.0.0.1:9001) failed: Address already in use").
int OpenListenSocket(const std::string& listen, int backlog, std::string* error);

// The body of a worker process: `threads` threads (the calling thread and
// threads-1 more) each accept FastCGI connections on `listen_fd` and serve
// them with their own database connections and provider, recording their
// state in scoreboard slots first_slot.. and the metrics in `board`.
// Returns (the exit status) on SIGTERM/SIGINT/SIGQUIT once the requests in
// hand are done, after max_requests requests, or (ondemand) after
// idle_timeout without work.
int RunWorker(const Config& config, int listen_fd, Scoreboard* board, int first_slot, int threads);

}  // namespace chatllm
