#pragma once

#include "fcgi_app/config.h"
#include "fcgi_app/http.h"
#include "fcgi_app/instance_info.h"
#include "fcgi_app/observer.h"
#include "fcgi_app/provider.h"
#include "fcgi_app/store.h"

namespace chatllm {

// The HTTP API (docs/api.md) on top of a Store and a Provider. Handle() never
// throws: every failure becomes an HTTP status with a JSON error body.
// One Service per worker thread (it uses its Store and Provider unshared).
class Service {
 public:
  // Borrows everything; it must outlive the Service. `info` (the instance's
  // status and metrics) and `observer` may be null.
  Service(const Config& config, Store* store, Provider* provider, const InstanceInfo* info = nullptr,
          Observer* observer = nullptr);

  // Serves one request. `trace` carries the request id in (the worker takes
  // it from X-Request-Id or makes one) and receives the route, session and
  // timings out; the response echoes X-Request-Id.
  HttpResponse Handle(const HttpRequest& request, RequestTrace* trace);

 private:
  HttpResponse Dispatch(const HttpRequest& request, RequestTrace* trace);
  HttpResponse Healthz();
  HttpResponse Readyz();
  HttpResponse CreateSession(const HttpRequest& request);
  HttpResponse GetSession(const SessionId& id);
  HttpResponse DeleteSession(const SessionId& id);
  HttpResponse ListMessages(const SessionId& id, const HttpRequest& request);
  HttpResponse AppendMessage(const SessionId& id, const HttpRequest& request, RequestTrace* trace);

  const Config& config_;
  Store* store_;
  Provider* provider_;
  const InstanceInfo* info_;
  Observer* observer_;
};

}  // namespace chatllm
