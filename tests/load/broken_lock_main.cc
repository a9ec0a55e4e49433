// chatllm-fcgi-broken-lock: chatllm-fcgi on a Store whose plain appends skip
// the session row lock — read the session's count, INSERT IGNORE the next
// seq, bump the count: the lost-update race of the service chatllm
// replaced. Everything else is the real API and the real ShardedStore. Test-only: the fault suite runs scenario 1
// against it to show that chatllm-check catches lost acknowledged writes.

#include <map>
#include <memory>

#include "api/router.h"
#include "api/service.h"
#include "prefork/server_main.h"
#include "providers/provider_chain.h"
#include "store/cluster_map.h"
#include "store/connection.h"
#include "store/mysql_statement.h"
#include "store/sharded_store.h"

namespace chatllm {
namespace {

// The real ShardedStore, except that a plain append (no Idempotency-Key)
// skips the session row lock.
class BrokenLockStore : public Store {
 public:
  explicit BrokenLockStore(const Config& config) : config_(config), real_(config), map_(SeedMap(config)) {}
  void SetObserver(Observer* observer) { real_.SetObserver(observer); }

  AppendResult Append(const SessionId& id, const UserId& user, const AppendRequest& request) override {
    if (request.claim || request.complete || request.close_turn) return real_.Append(id, user, request);
    AppendResult r;
    r.seq = UnsafeAppend(Connection(map_->router().Owner(id.text())), id, request);
    return r;
  }

  IdempotencyResult CreateSession(const SessionId& id, const SessionRecord& session, const IdempotencyKey* idem,
                                  int status, const std::string& response, int64_t max_sessions) override {
    return real_.CreateSession(id, session, idem, status, response, max_sessions);
  }
  std::optional<SessionRecord> GetSession(const SessionId& id, const UserId& user) override {
    return real_.GetSession(id, user);
  }
  bool DeleteSession(const SessionId& id, const UserId& user) override { return real_.DeleteSession(id, user); }
  void FailTurnKey(const SessionId& id, const UserId& user, const IdempotencyKey& key, int64_t attempt) override {
    real_.FailTurnKey(id, user, key, attempt);
  }
  std::optional<std::vector<MessageRecord>> ListMessages(const SessionId& id, int64_t after, int limit,
                                                         const UserId& user) override {
    return real_.ListMessages(id, after, limit, user);
  }
  std::optional<std::vector<MessageRecord>> ReadMessages(const SessionId& id, const std::vector<int64_t>& seqs,
                                                         const UserId& user) override {
    return real_.ReadMessages(id, seqs, user);
  }
  std::optional<TurnContext> LoadContext(const SessionId& id, int limit, int64_t token_budget,
                                         const UserId& user) override {
    return real_.LoadContext(id, limit, token_budget, user);
  }
  SessionPage ListSessions(const UserId& user, const SessionCursor& cursor, int limit) override {
    return real_.ListSessions(user, cursor, limit);
  }
  bool OpenTurn(const SessionId& id, const UserId& user, int64_t turn_id, int64_t user_seq, int64_t producer,
                int64_t lease_ms) override {
    return real_.OpenTurn(id, user, turn_id, user_seq, producer, lease_ms);
  }
  TurnWrite FlushTurn(const SessionId& id, const UserId& user, int64_t turn_id, int64_t producer, int64_t first,
                      const std::vector<std::string>& texts, int64_t lease_ms) override {
    return real_.FlushTurn(id, user, turn_id, producer, first, texts, lease_ms);
  }
  TurnWrite CloseTurn(const SessionId& id, const UserId& user, int64_t turn_id, int64_t producer,
                      std::string_view state) override {
    return real_.CloseTurn(id, user, turn_id, producer, state);
  }
  std::optional<TurnRead> ReadTurn(const SessionId& id, const UserId& user, int64_t turn_id, int64_t after,
                                   int limit) override {
    return real_.ReadTurn(id, user, turn_id, after, limit);
  }
  bool CancelTurn(const SessionId& id, const UserId& user, int64_t turn_id) override {
    return real_.CancelTurn(id, user, turn_id);
  }
  std::optional<KeyRecord> LookupApiKey(const std::string& key_id) override { return real_.LookupApiKey(key_id); }
  std::vector<ShardStatus> CheckShards() override { return real_.CheckShards(); }
  uint64_t last_epoch() const override { return real_.last_epoch(); }

 private:
  MYSQL* Connection(const std::string& shard) {
    std::unique_ptr<DbConnection>& conn = connections_[shard];
    if (!conn) {
      const ShardEntry* e = map_->Find(shard);
      conn = std::make_unique<DbConnection>(
          DbEndpoint{shard, e->host, e->port, e->database, config_.db_user, config_.db_password}, DbOptions{});
    }
    return conn->Get();
  }

  // The race: nothing stops two requests from reading the same count.
  static int64_t UnsafeAppend(MYSQL* conn, const SessionId& id, const AppendRequest& request) {
    MysqlStatement read(conn, "SELECT message_count FROM sessions WHERE session_id = ? AND state = 'active'");
    read.BindBytes(0, id.bytes());
    read.Execute();
    if (read.row_count() == 0) return 0;
    const int64_t next = read.Int64(0, 0) + 1;
    MysqlStatement insert(conn,
                          "INSERT IGNORE INTO messages (session_id, seq, role, content, reply_to, created_at, meta) "
                          "VALUES (?, ?, ?, ?, NULLIF(?, 0), ?, NULLIF(?, ''))");
    insert.BindBytes(0, id.bytes());
    insert.BindInt64(1, next);
    insert.BindString(2, request.role);
    insert.BindString(3, request.content);
    insert.BindInt64(4, request.reply_to);
    insert.BindDatetime(5, request.created_us);
    insert.BindString(6, request.meta_json);
    insert.Execute();
    MysqlStatement bump(conn, "UPDATE sessions SET message_count = GREATEST(message_count, ?) WHERE session_id = ?");
    bump.BindInt64(0, next);
    bump.BindBytes(1, id.bytes());
    bump.Execute();
    return next;
  }

  const Config& config_;
  ShardedStore real_;
  std::shared_ptr<const ClusterMap> map_;
  std::map<std::string, std::unique_ptr<DbConnection>> connections_;
};

// The API of chatllm-fcgi on a BrokenLockStore.
class BrokenLockHandler : public RequestHandler {
 public:
  explicit BrokenLockHandler(const WorkerContext& w)
      : store_(w.config),
        providers_(w.config),
        service_(w.config, &store_, &providers_, ServiceHooks{w.report, w.observer, w.limits}) {
    store_.SetObserver(w.observer);
  }
  HttpResponse Handle(const HttpRequest& request, RequestTrace* trace, ResponseStream* stream) override {
    return service_.Handle(request, trace, stream);
  }

 private:
  BrokenLockStore store_;
  ProviderChain providers_;
  Service service_;
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
