// chatllm-fcgi: the prefork FastCGI server (prefork/) serving the HTTP API
// (api/), which keeps histories on the shards (store/) and asks the LLM
// providers (providers/). This file only wires them together.

#include <memory>

#include "api/router.h"
#include "api/service.h"
#include "base/http.h"
#include "prefork/scoreboard.h"
#include "prefork/server_main.h"
#include "providers/provider_chain.h"
#include "store/sharded_store.h"

namespace chatllm {
namespace {

// One worker thread's API: its own shard connections and provider clients,
// made in the thread after fork.
class ApiHandler : public RequestHandler {
 public:
  explicit ApiHandler(const WorkerContext& w)
      : store_(w.config),
        providers_(w.config),
        service_(w.config, &store_, &providers_, ServiceHooks{w.report, w.observer, w.limits}) {
    store_.SetObserver(w.observer);
  }
  HttpResponse Handle(const HttpRequest& request, RequestTrace* trace, ResponseStream* stream) override {
    return service_.Handle(request, trace, stream);
  }

 private:
  ShardedStore store_;
  ProviderChain providers_;
  Service service_;
};

// Every route has its metric slot (routes beyond it were not counted).
static_assert(kRouteCount <= kMetricRoutes, "raise kMetricRoutes in prefork/scoreboard.h");

Application ChatApplication() {
  Application app;
  app.make_handler = [](const WorkerContext& w) { return std::make_unique<ApiHandler>(w); };
  for (int r = 0; r < kRouteCount; ++r) {
    const auto id = static_cast<RouteId>(r);
    app.routes.push_back(RouteLabel{RouteMethod(id), RouteName(id)});
  }
  return app;
}

}  // namespace
}  // namespace chatllm

int main(int argc, char** argv) { return chatllm::RunServer(argc, argv, chatllm::ChatApplication()); }
