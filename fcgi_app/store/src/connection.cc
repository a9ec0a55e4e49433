#include "store/connection.h"

#include <poll.h>

#include <cstdio>

#include "base/log.h"
#include "base/time_util.h"

namespace chatllm {

DbConnection::DbConnection(DbEndpoint endpoint, DbOptions options)
    : endpoint_(std::move(endpoint)), options_(options) {}

DbConnection::~DbConnection() { Reset(); }

void DbConnection::Reset() {
  if (mysql_ == nullptr) return;
  mysql_close(mysql_);
  mysql_ = nullptr;
}

bool DbConnection::PeerClosed() {
  pollfd pfd{};
  pfd.fd = mysql_get_socket(mysql_);
  pfd.events = POLLIN | POLLRDHUP;
  // Between statements the server sends nothing, so readable means it closed
  // the connection (restart, kill, wait_timeout) or sent an error before doing so.
  return ::poll(&pfd, 1, 0) != 0;
}

void DbConnection::NoteFailure(int64_t elapsed_us) {
  int64_t limit_us = int64_t{std::min(options_.read_timeout_s, options_.connect_timeout_s)} * 900000;
  if (elapsed_us >= limit_us && options_.down_backoff_ms > 0) {
    down_until_us_ = MonotonicMicros() + int64_t{options_.down_backoff_ms} * 1000;
    LOG_WARN("shard %s: no answer for %.1f s; failing fast for %d ms", endpoint_.shard.c_str(), elapsed_us / 1e6,
             options_.down_backoff_ms);
  }
}

MYSQL* DbConnection::Get() {
  if (mysql_ != nullptr && pinned_ > 0) return mysql_;
  if (mysql_ != nullptr && PeerClosed()) {
    LOG_INFO("shard %s: server closed the idle connection; reconnecting", endpoint_.shard.c_str());
    Reset();
  }
  if (mysql_ == nullptr) {
    if (down_until_us_ != 0 && MonotonicMicros() < down_until_us_) {
      throw DbError(DbErrorKind::kUnavailable, 0, endpoint_.shard,
                    "shard " + endpoint_.shard + " is in its down backoff");
    }
    Connect();
  }
  return mysql_;
}

void DbConnection::Connect() {
  const int64_t start = MonotonicMicros();
  MYSQL* m = mysql_init(nullptr);
  if (m == nullptr) throw DbError(DbErrorKind::kUnavailable, 0, endpoint_.shard, "mysql_init: out of memory");
  const unsigned connect = static_cast<unsigned>(options_.connect_timeout_s);
  const unsigned read = static_cast<unsigned>(options_.read_timeout_s);
  const unsigned write = static_cast<unsigned>(options_.write_timeout_s);
  const my_bool no = 0;
  mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &connect);
  mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &read);
  mysql_options(m, MYSQL_OPT_WRITE_TIMEOUT, &write);
  mysql_options(m, MYSQL_OPT_RECONNECT, &no);  // Never behind our back, inside a transaction.
  mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
  // READ COMMITTED: no gap locks, so appends to different sessions never
  // block each other; every write locks the session row it changes.
  char init[160];
  std::snprintf(init, sizeof(init),
                "SET SESSION tx_isolation = 'READ-COMMITTED', innodb_lock_wait_timeout = %d, "
                "max_statement_time = %.3f, autocommit = 1",
                options_.lock_wait_timeout_s, options_.statement_timeout_s);
  mysql_options(m, MYSQL_INIT_COMMAND, init);
  if (mysql_real_connect(m, endpoint_.host.c_str(), endpoint_.user.c_str(), endpoint_.password.c_str(),
                         endpoint_.database.c_str(), static_cast<unsigned>(endpoint_.port), nullptr, 0) == nullptr) {
    const int code = static_cast<int>(mysql_errno(m));
    const std::string why = mysql_error(m);
    mysql_close(m);
    NoteFailure(MonotonicMicros() - start);
    throw DbError(DbErrorKind::kUnavailable, code, endpoint_.shard,
                  "connect to shard " + endpoint_.shard + " (" + endpoint_.host + ":" + std::to_string(endpoint_.port) +
                      ") failed: " + why + " (errno " + std::to_string(code) + ")");
  }
  mysql_ = m;
  ++generation_;
  down_until_us_ = 0;
}

void ExecText(MYSQL* conn, const std::string& shard, const std::string& sql) {
  if (mysql_real_query(conn, sql.data(), sql.size()) != 0) {
    const int code = static_cast<int>(mysql_errno(conn));
    throw DbError(ClassifyMysqlErrno(code), code, shard,
                  "shard " + shard + ": " + mysql_error(conn) + " (errno " + std::to_string(code) +
                      ") in: " + sql.substr(0, 200));
  }
  do {
    MYSQL_RES* res = mysql_store_result(conn);
    if (res) mysql_free_result(res);
  } while (mysql_next_result(conn) == 0);
}

}  // namespace chatllm
