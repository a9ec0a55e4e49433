#include "store/transaction.h"

#include "store/connection.h"

namespace chatllm {

Transaction::Transaction(MYSQL* conn, std::string shard) : conn_(conn), shard_(std::move(shard)) {
  ExecText(conn_, shard_, "START TRANSACTION");
}

Transaction::~Transaction() { Rollback(); }

void Transaction::Commit() {
  open_ = false;  // Whatever COMMIT answers, ROLLBACK after it means nothing.
  ExecText(conn_, shard_, "COMMIT");
}

void Transaction::Rollback() {
  if (!open_) return;
  open_ = false;
  mysql_query(conn_, "ROLLBACK");  // Best effort: the connection may be gone.
}

}  // namespace chatllm
