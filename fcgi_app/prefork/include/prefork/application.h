#pragma once

// The prefork room's face to the binary that runs it: an Application makes
// one RequestHandler per worker thread. Errors in this room: a system call
// that fails is logged and answered by a return code (a worker that cannot
// serve exits and the master replaces it); nothing throws into the master's
// loop, and a handler's Handle() never throws.

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/config.h"
#include "base/http.h"
#include "base/instance.h"

namespace chatllm {

// What a worker thread hands the request handler it makes: the instance's
// hooks (base/instance.h), all owned by the worker and alive as long as the
// handler. Made in the thread, after fork, like everything with a socket.
struct WorkerContext {
  const Config& config;
  Observer* observer;            // Statement and provider timings: metrics and the request's trace.
  UserLimits* limits;            // Per-user limits across the instance, for this thread.
  const InstanceReport* report;  // The instance's status and metrics.
};

// Serves the requests of one worker thread (not thread-safe: one per
// thread). Handle() never throws; every failure is a response.
class RequestHandler {
 public:
  virtual ~RequestHandler() = default;
  // `trace` carries the request id in and the route, session and timings
  // out (RequestTrace::route indexes Application::routes). With `stream`,
  // the handler may send its answer in pieces and return a response marked
  // `streamed`.
  virtual HttpResponse Handle(const HttpRequest& request, RequestTrace* trace, ResponseStream* stream) = 0;
};

// A metrics label pair of one route.
struct RouteLabel {
  std::string method;  // "GET", "POST", ...; "any" for the catch-alls.
  std::string name;    // The route's template ("/v1/sessions/{id}").
};

// What a server runs: how a worker thread makes its handler, and the
// handler's routes by number (at most kMetricRoutes, prefork/scoreboard.h).
struct Application {
  std::function<std::unique_ptr<RequestHandler>(const WorkerContext&)> make_handler;
  std::vector<RouteLabel> routes;
};

}  // namespace chatllm
