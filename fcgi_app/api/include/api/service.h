#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "api/key_cache.h"
#include "api/requests.h"
#include "api/turn.h"
#include "base/config.h"
#include "base/http.h"
#include "base/instance.h"
#include "providers/provider_chain.h"
#include "store/store.h"

namespace chatllm {

// What the instance offers a Service (base/instance.h); each may be null:
// without `report` /status and /metrics are 404, without `limits` no
// per-user limit applies.
struct ServiceHooks {
  const InstanceReport* report = nullptr;
  Observer* observer = nullptr;
  UserLimits* limits = nullptr;
};

// The HTTP API (docs/api.md) on top of a Store and a ProviderChain. Handle()
// never throws: every failure becomes an HTTP status with a JSON error body.
// One Service per worker thread (it uses its Store and providers unshared).
class Service {
 public:
  // Borrows everything; it must outlive the Service.
  Service(const Config& config, Store* store, ProviderChain* providers, ServiceHooks hooks = {});

  // Serves one request. `trace` carries the request id in (the worker takes
  // it from X-Request-Id or makes one) and receives the route, session and
  // timings out; the response echoes X-Request-Id. `stream`, when given,
  // lets a streaming request (text/event-stream) send its answer as it
  // comes: the returned response is then marked `streamed`. Without it,
  // streaming requests are refused.
  HttpResponse Handle(const HttpRequest& request, RequestTrace* trace, ResponseStream* stream = nullptr);

 private:
  HttpResponse Dispatch(const HttpRequest& request, RequestTrace* trace, ResponseStream* stream);
  // The caller of a /v1 request (empty when [auth] required = false), or
  // the 401 to answer.
  std::optional<HttpResponse> Authenticate(const HttpRequest& request, UserId* user);
  // The request's Idempotency-Key, if any, or the 400 to answer. `target`
  // names what the request writes (its scope): the key and the body are
  // bound to it, so the same key on another session is another request.
  std::optional<HttpResponse> IdempotencyOf(const HttpRequest& request, const std::string& target,
                                            std::optional<IdempotencyKey>* out);
  HttpResponse Healthz();
  HttpResponse Readyz();
  HttpResponse CreateSession(const HttpRequest& request, const UserId& user);
  HttpResponse ListSessions(const HttpRequest& request, const UserId& user);
  HttpResponse GetSession(const SessionId& id, const UserId& user);
  HttpResponse DeleteSession(const SessionId& id, const UserId& user);
  HttpResponse ListMessages(const SessionId& id, const HttpRequest& request, const UserId& user);
  HttpResponse AppendMessage(const SessionId& id, const HttpRequest& request, const UserId& user, RequestTrace* trace,
                             ResponseStream* stream);
  HttpResponse ChatCompletions(const HttpRequest& request, const UserId& user, RequestTrace* trace,
                               ResponseStream* stream);
  const Config& config_;
  Store* store_;
  ProviderChain* providers_;
  const InstanceReport* report_;
  UserLimits* limits_;
  KeyCache keys_;
  TurnRunner turns_;
};

}  // namespace chatllm
