#pragma once

#include <mysql.h>

#include <string>

namespace chatllm {

class ShardLink;

// A transaction on one connection: START TRANSACTION when made, ROLLBACK when
// destroyed unless Commit() succeeded first. The one way this project runs a
// transaction of several statements (the store and shardctl alike), so that
// no path can leave one open: an exception, an early return, a decision
// not to keep the work (Rollback()) all end it.
class Transaction {
 public:
  // Throws DbError if the transaction cannot start.
  Transaction(MYSQL* conn, std::string shard);
  // On a ShardLink's connection, pinned while the transaction is open: the
  // link cannot reconnect under it (DbConnection::Pin), so a connection lost
  // midway fails the statements that follow instead of running them, one by
  // one, on a new one.
  explicit Transaction(ShardLink& link);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  // Throws DbError; after a lost connection the outcome is unknown.
  void Commit();
  // Ends it now, keeping nothing (best effort: a broken connection has
  // already rolled back on the server).
  void Rollback();

 private:
  MYSQL* conn_;
  std::string shard_;
  bool open_ = true;
  ShardLink* link_ = nullptr;  // Pinned by this transaction, when made on one.
};

}  // namespace chatllm
