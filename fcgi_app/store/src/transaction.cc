#include "store/transaction.h"

#include "store/connection.h"
#include "store/shard_link.h"

namespace chatllm {

Transaction::Transaction(MYSQL* conn, std::string shard) : conn_(conn), shard_(std::move(shard)) {
  ExecText(conn_, shard_, "START TRANSACTION");
}

Transaction::Transaction(ShardLink& link) : conn_(link.Handle()), shard_(link.endpoint().shard), link_(&link) {
  link_->connection().Pin();
  try {
    ExecText(conn_, shard_, "START TRANSACTION");
  } catch (...) {
    link_->connection().Unpin();
    throw;
  }
}

Transaction::~Transaction() {
  Rollback();
  if (link_) link_->connection().Unpin();
}

void Transaction::Commit() {
  open_ = false;
  try {
    ExecText(conn_, shard_, "COMMIT");
  } catch (...) {
    // A failed COMMIT has rolled back; say so again in case the server left
    // the transaction open, so that no later statement on this connection
    // joins it.
    mysql_query(conn_, "ROLLBACK");
    throw;
  }
}

void Transaction::Rollback() {
  if (!open_) return;
  open_ = false;
  mysql_query(conn_, "ROLLBACK");  // Best effort: the connection may be gone.
}

}  // namespace chatllm
