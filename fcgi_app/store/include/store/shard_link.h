#pragma once

#include <map>
#include <memory>
#include <string>

#include "store/connection.h"
#include "store/mysql_statement.h"

namespace chatllm {

// A connection to one shard and the statements prepared on it, each once per
// connection and reused; rebuilt after a reconnect. For code that runs many
// different statements (shardctl's operations); the request path keeps a
// fixed catalogue of its own (store/src/shard.h). Not thread-safe.
class ShardLink {
 public:
  ShardLink(DbEndpoint endpoint, DbOptions options) : conn_(std::move(endpoint), options) {}

  // The live connection (Get() semantics of DbConnection). Throws DbError.
  MYSQL* Handle();
  // `sql` prepared on the live connection, once. Throws MysqlError.
  MysqlStatement& Statement(const std::string& sql);
  // After a failed statement: its prepared statements go (a failed one may
  // be left mid-result), and on a lost connection the connection too.
  void AfterError(DbErrorKind kind);
  const DbEndpoint& endpoint() const { return conn_.endpoint(); }
  DbConnection& connection() { return conn_; }

 private:
  DbConnection conn_;  // Declared first: statements die before their connection.
  uint64_t generation_ = 0;
  std::map<std::string, std::unique_ptr<MysqlStatement>> statements_;
};

}  // namespace chatllm
