// chatllm-fcgi-broken-lock: chatllm-fcgi whose appends skip the session row
// lock — read the session's count, INSERT IGNORE the next seq, bump the
// count: the lost-update race of the service chatllm replaced. Everything
// else is the real API. Test-only: the fault suite runs scenario 1 against
// it to show that chatllm-check catches lost acknowledged writes.

#include <map>
#include <memory>

#include "base/json.h"
#include "api/requests.h"
#include "api/router.h"
#include "api/service.h"
#include "base/ids.h"
#include "base/time_util.h"
#include "prefork/server_main.h"
#include "providers/provider_chain.h"
#include "store/cluster_map.h"
#include "store/db_connection.h"
#include "store/mysql_statement.h"
#include "store/store.h"

namespace chatllm {
namespace {

class BrokenLockHandler : public RequestHandler {
 public:
  explicit BrokenLockHandler(const WorkerContext& w)
      : config_(w.config),
        store_(w.config),
        providers_(w.config),
        service_(w.config, &store_, &providers_, ServiceHooks{w.report, w.observer, w.limits}),
        map_(SeedMap(w.config)) {}

  HttpResponse Handle(const HttpRequest& request, RequestTrace* trace, ResponseStream* stream) override {
    const RouteMatch route = MatchRoute(request.method, request.path);
    AppendMessageRequest req;
    std::optional<SessionId> id = SessionId::Parse(route.session_id);
    if (route.id != RouteId::kAppendMessage || !id || ParseAppendMessage(request.body, config_, &req) || req.stream) {
      return service_.Handle(request, trace, stream);
    }
    trace->route = static_cast<int>(route.id);
    trace->route_name = RouteName(route.id);
    MYSQL* conn = Connection(map_->router().Owner(id->text()));
    const int64_t user_seq = UnsafeAppend(conn, *id, "user", req.content, 0);
    if (user_seq == 0) return ErrorResponse(404, "session_not_found", "no session with this id");
    const int64_t answer_seq = UnsafeAppend(conn, *id, "assistant", req.content, user_seq);
    rapidjson::StringBuffer buf;
    JsonWriter w(buf);
    w.StartObject();
    w.Key("user");
    Message(w, user_seq, "user", req.content, 0);
    w.Key("assistant");
    Message(w, answer_seq, "assistant", req.content, user_seq);
    w.EndObject();
    HttpResponse r;
    r.status = 201;
    r.SetHeader("Content-Type", "application/json");
    r.body.assign(buf.GetString(), buf.GetSize());
    return r;
  }

 private:
  MYSQL* Connection(const std::string& shard) {
    std::unique_ptr<DbConnection>& conn = connections_[shard];
    if (!conn) {
      const ShardEntry* e = map_->Find(shard);
      conn = std::make_unique<DbConnection>(
          DbEndpoint{shard, e->host, e->port, e->database, config_.db_user, config_.db_password}, DbOptions{});
    }
    conn->Get();
    return conn->handle();
  }

  // The race: nothing stops two requests from reading the same count.
  static int64_t UnsafeAppend(MYSQL* conn, const SessionId& id, const std::string& role, const std::string& content,
                              int64_t reply_to) {
    MysqlStatement read(conn, "SELECT message_count FROM sessions WHERE session_id = ? AND state = 'active'");
    read.BindBytes(0, id.bytes());
    read.Execute();
    if (read.row_count() == 0) return 0;
    const int64_t next = read.Int64(0, 0) + 1;
    MysqlStatement insert(conn,
                          "INSERT IGNORE INTO messages (session_id, seq, role, content, reply_to, created_at) "
                          "VALUES (?, ?, ?, ?, NULLIF(?, 0), ?)");
    insert.BindBytes(0, id.bytes());
    insert.BindInt64(1, next);
    insert.BindString(2, role);
    insert.BindString(3, content);
    insert.BindInt64(4, reply_to);
    insert.BindDatetime(5, NowMicros());
    insert.Execute();
    MysqlStatement bump(conn, "UPDATE sessions SET message_count = GREATEST(message_count, ?) WHERE session_id = ?");
    bump.BindInt64(0, next);
    bump.BindBytes(1, id.bytes());
    bump.Execute();
    return next;
  }

  static void Message(JsonWriter& w, int64_t seq, const char* role, const std::string& content, int64_t reply_to) {
    w.StartObject();
    w.Key("seq");
    w.Int64(seq);
    w.Key("role");
    w.String(role);
    w.Key("content");
    w.String(content);
    if (reply_to) {
      w.Key("reply_to");
      w.Int64(reply_to);
    }
    w.EndObject();
  }

  const Config& config_;
  Store store_;
  ProviderChain providers_;
  Service service_;
  std::shared_ptr<const ClusterMap> map_;
  std::map<std::string, std::unique_ptr<DbConnection>> connections_;
};

}  // namespace
}  // namespace chatllm

int main(int argc, char** argv) {
  chatllm::Application app;
  app.make_handler = [](const chatllm::WorkerContext& w) { return std::make_unique<chatllm::BrokenLockHandler>(w); };
  for (int r = 0; r < chatllm::kRouteCount; ++r) {
    const auto id = static_cast<chatllm::RouteId>(r);
    app.routes.push_back(chatllm::RouteLabel{chatllm::RouteMethod(id), chatllm::RouteName(id)});
  }
  return chatllm::RunServer(argc, argv, app);
}
