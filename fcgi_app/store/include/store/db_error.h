#pragma once

#include <stdexcept>
#include <string>

namespace chatllm {

// How the store reports a failure: every function of this room that talks
// to a shard throws DbError (and nothing else) when the database did not do
// what was asked; what a caller can expect to happen — no such session, a
// session being moved, a key in use — is a return value, never an exception.

enum class DbErrorKind {
  kUnavailable,     // Could not connect, or the shard is in its down backoff: nothing ran.
  kConnectionLost,  // The connection broke during a statement: it may or may not have run.
  kTimeout,         // The server aborted the statement (max_statement_time): rolled back.
  kRetryable,       // Deadlock or lock wait timeout: rolled back; running it again is safe.
  kReadOnly,        // The server is read-only (a replica, or a primary being switched): nothing
                    // written; running it again on the shard's primary, once the map names it, is safe.
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

// What a server or client error number means for the caller (see DbErrorKind).
DbErrorKind ClassifyMysqlErrno(int code);

}  // namespace chatllm
