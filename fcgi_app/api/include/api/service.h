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

struct ResponseView;  // src/responses.h

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
  // Also names the key (`key_id`, 8 raw bytes) for the usage ledger.
  std::optional<HttpResponse> Authenticate(const HttpRequest& request, UserId* user, std::string* key_id);
  // The request's Idempotency-Key, if any, or the 400 to answer. `target`
  // names what the request writes (its scope): the key and the body are
  // bound to it, so the same key on another session is another request.
  std::optional<HttpResponse> IdempotencyOf(const HttpRequest& request, const std::string& target,
                                            std::optional<IdempotencyKey>* out);
  HttpResponse Healthz();
  HttpResponse Readyz();
  HttpResponse CreateSession(const HttpRequest& request, const UserId& user);
  HttpResponse ListSessions(const HttpRequest& request, const UserId& user);
  // GET /v1/usage?from=&to=&group_by=day|model|key (src/service_usage.cc).
  HttpResponse GetUsage(const HttpRequest& request, const UserId& user, const RequestTrace& trace);
  HttpResponse GetSession(const SessionId& id, const UserId& user);
  HttpResponse DeleteSession(const SessionId& id, const UserId& user);
  HttpResponse ListMessages(const SessionId& id, const HttpRequest& request, const UserId& user);
  HttpResponse AppendMessage(const SessionId& id, const HttpRequest& request, const UserId& user, RequestTrace* trace,
                             ResponseStream* stream);
  HttpResponse ChatCompletions(const HttpRequest& request, const UserId& user, RequestTrace* trace,
                               ResponseStream* stream);
  // Durable turns (src/service_durable.cc).
  HttpResponse GetTurn(const SessionId& id, int64_t turn_id, const UserId& user);
  HttpResponse TurnEvents(const SessionId& id, int64_t turn_id, const HttpRequest& request, const UserId& user,
                          RequestTrace* trace, ResponseStream* stream);
  HttpResponse CancelTurn(const SessionId& id, int64_t turn_id, const UserId& user);
  // OpenAI's Responses and Conversations APIs (src/service_responses.cc).
  HttpResponse CreateResponse(const HttpRequest& request, const UserId& user, RequestTrace* trace,
                              ResponseStream* stream);
  HttpResponse GetResponse(const std::string& raw_id, const HttpRequest& request, const UserId& user,
                           RequestTrace* trace, ResponseStream* stream);
  HttpResponse CancelResponse(const std::string& raw_id, const UserId& user, RequestTrace* trace);
  HttpResponse ShowResponse(const SessionId& id, int64_t turn_id, const UserId& user);
  // The events after sequence number `after` (-1: all), then the live ones.
  HttpResponse StreamResponse(const SessionId& id, int64_t turn_id, int64_t after, const UserId& user,
                              RequestTrace* trace, ResponseStream* stream);
  // The response of turn `t` from what is stored (`with_text`: its output
  // so far; else only what its first events show). nullopt: no session.
  std::optional<ResponseView> ViewResponse(const SessionId& id, const TurnRecord& t, const UserId& user,
                                           bool with_text);
  HttpResponse CreateConversation(const HttpRequest& request, const UserId& user);
  HttpResponse GetConversation(const std::string& raw_id, const UserId& user, RequestTrace* trace);
  HttpResponse DeleteConversation(const std::string& raw_id, const UserId& user, RequestTrace* trace);
  HttpResponse ListConversationItems(const std::string& raw_id, const HttpRequest& request, const UserId& user,
                                     RequestTrace* trace);
  const Config& config_;
  Store* store_;
  ProviderChain* providers_;
  const InstanceReport* report_;
  UserLimits* limits_;
  KeyCache keys_;
  TurnRunner turns_;
};

}  // namespace chatllm
