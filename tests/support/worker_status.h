#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace chatllm::testing {

// One worker thread as an instance's `/status?full` lists it: what tests
// poll instead of sleeping while a request is in a worker's hands.
struct WorkerThread {
  pid_t pid = 0;
  int slot = 0;
  std::string state;    // "idle", "reading", "handling", "writing".
  std::string request;  // "POST /v1/sessions/<id>/messages id=<request id>"; "" between requests.
};

// The worker threads listed by a `/status?full` body; empty if it is not one.
std::vector<WorkerThread> ParseWorkerThreads(const std::string& status_json);
// Those of the instance listening on 127.0.0.1:`port`, asked by FastCGI (one
// of its idle workers answers); empty if none answered within a second.
std::vector<WorkerThread> WorkerThreadsAt(int port);
// Those of the stack's app instance `name`, asked through nginx
// (/_instances/<name>/status?full); empty if it did not answer.
std::vector<WorkerThread> WorkerThreadsOf(const std::string& name);

// The threads of `threads` handling a request to `method_and_path`
// ("POST /v1/sessions/<id>/messages"; the path must match whole).
std::vector<WorkerThread> Handling(const std::vector<WorkerThread>& threads, const std::string& method_and_path);

}  // namespace chatllm::testing
