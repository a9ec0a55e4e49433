#include "support/worker_status.h"

#include <httplib.h>
#include <rapidjson/document.h>

#include "support/fcgi_client.h"
#include "support/stack_env.h"

namespace chatllm::testing {

std::vector<WorkerThread> ParseWorkerThreads(const std::string& status_json) {
  std::vector<WorkerThread> out;
  rapidjson::Document d;
  d.Parse(status_json.c_str());
  if (d.HasParseError() || !d.IsObject() || !d.HasMember("workers") || !d["workers"].IsArray()) {
    return out;
  }
  for (const auto& w : d["workers"].GetArray()) {
    if (!w.IsObject()) continue;
    WorkerThread t;
    if (w.HasMember("pid") && w["pid"].IsInt()) t.pid = w["pid"].GetInt();
    if (w.HasMember("slot") && w["slot"].IsInt()) t.slot = w["slot"].GetInt();
    if (w.HasMember("state") && w["state"].IsString()) t.state = w["state"].GetString();
    if (w.HasMember("request") && w["request"].IsString()) t.request = w["request"].GetString();
    out.push_back(t);
  }
  return out;
}

std::vector<WorkerThread> WorkerThreadsAt(int port) {
  FcgiResponse r = FcgiRequest(port, "GET", "/status?full", "", {}, 1000);
  return r.status == 200 ? ParseWorkerThreads(r.body) : std::vector<WorkerThread>{};
}

std::vector<WorkerThread> WorkerThreadsOf(const std::string& name) {
  httplib::Client nginx(StackEnv::Get().url());
  nginx.set_read_timeout(2, 0);
  auto r = nginx.Get("/_instances/" + name + "/status?full");
  return r && r->status == 200 ? ParseWorkerThreads(r->body) : std::vector<WorkerThread>{};
}

std::vector<WorkerThread> Handling(const std::vector<WorkerThread>& threads, const std::string& method_and_path) {
  std::vector<WorkerThread> out;
  // The scoreboard's description is "<method> <path> id=<request id>".
  const std::string prefix = method_and_path + " ";
  for (const WorkerThread& t : threads) {
    if (t.state == "handling" && t.request.rfind(prefix, 0) == 0) out.push_back(t);
  }
  return out;
}

}  // namespace chatllm::testing
