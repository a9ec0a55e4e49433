#pragma once

#include "fcgi_app/config.h"
#include "fcgi_app/http.h"
#include "fcgi_app/provider.h"
#include "fcgi_app/store.h"

namespace chatllm {

// The HTTP API (docs/api.md) on top of a Store and a Provider. Handle() never
// throws: every failure becomes an HTTP status with a JSON error body.
// One Service per worker thread (it uses its Store and Provider unshared).
class Service {
 public:
  // Borrows all three; they must outlive the Service.
  Service(const Config& config, Store* store, Provider* provider);

  HttpResponse Handle(const HttpRequest& request);

 private:
  HttpResponse Dispatch(const HttpRequest& request);
  HttpResponse Healthz();
  HttpResponse Readyz();
  HttpResponse CreateSession(const HttpRequest& request);
  HttpResponse GetSession(const SessionId& id);
  HttpResponse DeleteSession(const SessionId& id);
  HttpResponse ListMessages(const SessionId& id, const HttpRequest& request);
  HttpResponse AppendMessage(const SessionId& id, const HttpRequest& request);

  const Config& config_;
  Store* store_;
  Provider* provider_;
};

}  // namespace chatllm
