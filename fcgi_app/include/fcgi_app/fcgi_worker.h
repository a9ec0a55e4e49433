#pragma once

#include <string>

#include "fcgi_app/config.h"

namespace chatllm {

// Opens the FastCGI listen socket ("host:port") before the workers are
// forked; they all accept on it. Returns the fd, or -1 with *error set
// ("bind(127.0.0.1:9001) failed: Address already in use").
int OpenListenSocket(const std::string& listen, int backlog, std::string* error);

// The body of a worker process: accepts FastCGI requests on `listen_fd` and
// serves them until SIGTERM, SIGINT or SIGQUIT, finishing the request in
// hand first. Creates its database connections and provider itself (after
// fork). Returns the process exit status.
int RunWorker(const Config& config, int listen_fd);

}  // namespace chatllm
