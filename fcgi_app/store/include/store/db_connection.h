#pragma once

#include <Poco/Data/Session.h>
#include <Poco/Exception.h>
#include <mysql.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

namespace chatllm {

struct DbEndpoint {
  std::string shard;  // Shard name, for messages.
  std::string host;
  int port = 3306;
  std::string database;
  std::string user;
  std::string password;  // Must not contain ';' (Poco connection-string syntax).
};

struct DbOptions {
  int connect_timeout_s = 1;
  int read_timeout_s = 2;
  int write_timeout_s = 2;
  double statement_timeout_s = 1.5;  // 0 disables max_statement_time.
  int lock_wait_timeout_s = 1;
  int down_backoff_ms = 1000;
};

enum class DbErrorKind {
  kUnavailable,     // Could not connect, or the shard is in its down backoff: nothing ran.
  kConnectionLost,  // The connection broke during a statement: it may or may not have run.
  kTimeout,         // The server aborted the statement (max_statement_time): rolled back.
  kRetryable,       // Deadlock or lock wait timeout: rolled back; running it again is safe.
  kQuery,           // Any other SQL error: a bug, a schema mismatch, a constraint.
};

const char* DbErrorKindName(DbErrorKind kind);

class DbError : public std::runtime_error {
 public:
  DbError(DbErrorKind kind, int mysql_errno, std::string shard, const std::string& message)
      : std::runtime_error(message), kind_(kind), errno_(mysql_errno), shard_(std::move(shard)) {}
  DbErrorKind kind() const { return kind_; }
  int mysql_errno() const { return errno_; }  // 0 when unknown.
  const std::string& shard() const { return shard_; }

 private:
  DbErrorKind kind_;
  int errno_;
  std::string shard_;
};

// What an error number means for the caller (see DbErrorKind).
DbErrorKind ClassifyMysqlErrno(int code);

// The MySQL error number inside a Poco exception's text ("[mysql_stmt_errno]:
// 1213"), or 0. Poco's code() is always 0 for MySQL errors.
int ExtractMysqlErrno(const std::string& display_text);
// Maps an exception from a statement on `shard` to a DbError.
DbError ClassifyDbException(const Poco::Exception& e, const std::string& shard);

// One connection to one shard, owned by one thread; not thread-safe. Created
// after fork (a connection inherited across fork corrupts both sides).
//
// Never auto-reconnects inside a statement (Poco's auto-reconnect silently
// leaves a transaction). Instead Get() reconnects between statements when
// there is no connection, or when the server has closed the idle one (a
// zero-timeout poll on the socket, no round trip). After a timeout the shard
// is treated as down for down_backoff_ms, so requests fail fast instead of
// each waiting out the timeout.
class DbConnection {
 public:
  DbConnection(DbEndpoint endpoint, DbOptions options);
  ~DbConnection();
  DbConnection(const DbConnection&) = delete;
  DbConnection& operator=(const DbConnection&) = delete;

  // A live session. Throws DbError(kUnavailable) if it cannot connect.
  Poco::Data::Session& Get();
  // Drops the connection after an error; the next Get() reconnects.
  void Reset();
  // Records that a statement failed after `elapsed_us`; a timeout starts the
  // down backoff.
  void NoteFailure(int64_t elapsed_us);
  // Changes on every (re)connect: prepared statements from an older
  // generation must be rebuilt.
  uint64_t generation() const { return generation_; }
  bool connected() const { return session_ != nullptr; }
  // The libmariadb handle of the live session (after Get()).
  MYSQL* handle();
  const DbEndpoint& endpoint() const { return endpoint_; }
  const DbOptions& options() const { return options_; }

 private:
  void Connect();
  bool PeerClosed();

  DbEndpoint endpoint_;
  DbOptions options_;
  std::unique_ptr<Poco::Data::Session> session_;
  uint64_t generation_ = 0;
  int64_t down_until_us_ = 0;  // Monotonic; 0 when not down.
};

// Registers Poco's MySQL connector once per process; idempotent.
void RegisterMysqlConnector();

}  // namespace chatllm
