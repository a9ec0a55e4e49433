#pragma once

#include <mysql.h>

#include <cstdint>
#include <string>

#include "store/db_error.h"

namespace chatllm {

struct DbEndpoint {
  std::string shard;  // Shard name, for messages.
  std::string host;
  int port = 3306;
  std::string database;
  std::string user;
  std::string password;  // Any bytes: handed to libmariadb as they are.
};

struct DbOptions {
  int connect_timeout_s = 1;
  int read_timeout_s = 2;
  int write_timeout_s = 2;
  double statement_timeout_s = 1.5;  // 0 disables max_statement_time.
  int lock_wait_timeout_s = 1;
  int down_backoff_ms = 1000;
};

// One connection to one shard through libmariadb's C API, owned by one
// thread; not thread-safe. Created after fork (a connection inherited
// across fork corrupts both sides).
//
// One connect per connection, with every timeout set before it, and the
// session settings every statement relies on (READ COMMITTED, the lock wait
// and statement timeouts, utf8mb4). Never reconnects inside a statement
// (that would silently leave a transaction): Get() reconnects between
// statements when there is no connection, or when the server has closed the
// idle one (a zero-timeout poll on the socket, no round trip). After a
// timeout the shard is treated as down for down_backoff_ms, so requests fail
// fast instead of each waiting out the timeout.
class DbConnection {
 public:
  DbConnection(DbEndpoint endpoint, DbOptions options);
  ~DbConnection();
  DbConnection(const DbConnection&) = delete;
  DbConnection& operator=(const DbConnection&) = delete;

  // The live connection's handle. Throws DbError(kUnavailable) if it cannot
  // connect.
  MYSQL* Get();
  // Drops the connection after an error; the next Get() reconnects.
  void Reset();
  // While pinned (a Transaction is open on it), Get() returns the handle as
  // it is and never reconnects: a transaction's statements must all run on
  // the connection that began it, or fail with it.
  void Pin() { ++pinned_; }
  void Unpin() { --pinned_; }
  // Records that a statement failed after `elapsed_us`; a timeout starts the
  // down backoff.
  void NoteFailure(int64_t elapsed_us);
  // Changes on every (re)connect: prepared statements from an older
  // generation must be rebuilt.
  uint64_t generation() const { return generation_; }
  bool connected() const { return mysql_ != nullptr; }
  const DbEndpoint& endpoint() const { return endpoint_; }
  const DbOptions& options() const { return options_; }

 private:
  void Connect();
  bool PeerClosed();

  DbEndpoint endpoint_;
  DbOptions options_;
  MYSQL* mysql_ = nullptr;
  uint64_t generation_ = 0;
  int64_t down_until_us_ = 0;  // Monotonic; 0 when not down.
  int pinned_ = 0;
};

// Runs `sql` over the text protocol and discards any result (statements with
// no parameters: transaction control, session settings, DDL, which cannot
// be prepared). Throws DbError classified by the error number.
void ExecText(MYSQL* conn, const std::string& shard, const std::string& sql);

}  // namespace chatllm
