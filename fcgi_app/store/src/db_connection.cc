#include "store/db_connection.h"

#include <Poco/Data/MySQL/Connector.h>
#include <Poco/Data/MySQL/MySQLException.h>
#include <Poco/Data/MySQL/SessionImpl.h>
#include <mysql.h>
#include <poll.h>

#include <cstdlib>
#include <mutex>

#include "base/log.h"
#include "base/time_util.h"

namespace chatllm {

using Poco::Data::Keywords::now;
using Poco::Data::Keywords::use;

const char* DbErrorKindName(DbErrorKind kind) {
  switch (kind) {
    case DbErrorKind::kUnavailable: return "unavailable";
    case DbErrorKind::kConnectionLost: return "connection_lost";
    case DbErrorKind::kTimeout: return "timeout";
    case DbErrorKind::kRetryable: return "retryable";
    case DbErrorKind::kQuery: return "query";
  }
  return "?";
}

int ExtractMysqlErrno(const std::string& text) {
  for (const char* tag : {"[mysql_stmt_errno]: ", "[mysql_errno]: "}) {
    size_t pos = text.find(tag);
    if (pos == std::string::npos) continue;
    int v = std::atoi(text.c_str() + pos + std::char_traits<char>::length(tag));
    if (v != 0) return v;
  }
  return 0;
}

DbErrorKind ClassifyMysqlErrno(int code) {
  switch (code) {
    case 1205:  // ER_LOCK_WAIT_TIMEOUT
    case 1213:  // ER_LOCK_DEADLOCK
      return DbErrorKind::kRetryable;
    case 1969:  // ER_STATEMENT_TIMEOUT (max_statement_time)
      return DbErrorKind::kTimeout;
    case 2002:  // CR_CONNECTION_ERROR
    case 2003:  // CR_CONN_HOST_ERROR
      return DbErrorKind::kUnavailable;
    case 1053:  // ER_SERVER_SHUTDOWN
    case 1927:  // ER_CONNECTION_KILLED
    case 2006:  // CR_SERVER_GONE_ERROR
    case 2013:  // CR_SERVER_LOST
    case 2055:  // CR_SERVER_LOST_EXTENDED
    case 4031:  // ER_CLIENT_INTERACTION_TIMEOUT
      return DbErrorKind::kConnectionLost;
    default:
      return DbErrorKind::kQuery;
  }
}

DbError ClassifyDbException(const Poco::Exception& e, const std::string& shard) {
  const std::string text = e.displayText();
  int code = ExtractMysqlErrno(text);
  if (dynamic_cast<const Poco::Data::MySQL::ConnectionException*>(&e) != nullptr) {
    return DbError(DbErrorKind::kUnavailable, code, shard, text);
  }
  return DbError(ClassifyMysqlErrno(code), code, shard, text);
}

void RegisterMysqlConnector() {
  static std::once_flag once;
  std::call_once(once, [] { Poco::Data::MySQL::Connector::registerConnector(); });
}

DbConnection::DbConnection(DbEndpoint endpoint, DbOptions options)
    : endpoint_(std::move(endpoint)), options_(options) {
  RegisterMysqlConnector();
}

DbConnection::~DbConnection() { Reset(); }

void DbConnection::Reset() {
  if (!session_) return;
  try {
    session_->close();
  } catch (const Poco::Exception&) {
    // Closing a broken connection can fail; the handle is freed regardless.
  }
  session_.reset();
}

MYSQL* DbConnection::handle() {
  return static_cast<Poco::Data::MySQL::SessionImpl*>(session_->impl())->handle();
}

bool DbConnection::PeerClosed() {
  pollfd pfd{};
  pfd.fd = mysql_get_socket(handle());
  pfd.events = POLLIN | POLLRDHUP;
  // Between statements the server sends nothing, so readable means it closed
  // the connection (restart, kill, wait_timeout) or sent an error before doing so.
  return ::poll(&pfd, 1, 0) != 0;
}

void DbConnection::NoteFailure(int64_t elapsed_us) {
  int64_t limit_us = int64_t{std::min(options_.read_timeout_s, options_.connect_timeout_s)} * 900000;
  if (elapsed_us >= limit_us && options_.down_backoff_ms > 0) {
    down_until_us_ = MonotonicMicros() + int64_t{options_.down_backoff_ms} * 1000;
    LOG_WARN("shard %s: no answer for %.1f s; failing fast for %d ms", endpoint_.shard.c_str(),
             elapsed_us / 1e6, options_.down_backoff_ms);
  }
}

Poco::Data::Session& DbConnection::Get() {
  if (session_ && PeerClosed()) {
    LOG_INFO("shard %s: server closed the idle connection; reconnecting", endpoint_.shard.c_str());
    Reset();
  }
  if (!session_) {
    if (down_until_us_ != 0 && MonotonicMicros() < down_until_us_) {
      throw DbError(DbErrorKind::kUnavailable, 0, endpoint_.shard,
                    "shard " + endpoint_.shard + " is in its down backoff");
    }
    Connect();
  }
  return *session_;
}

void DbConnection::Connect() {
  const std::string conn = "host=" + endpoint_.host + ";port=" + std::to_string(endpoint_.port) +
                           ";db=" + endpoint_.database + ";user=" + endpoint_.user +
                           ";password=" + endpoint_.password +
                           ";character-set=utf8mb4;auto-reconnect=false";
  int64_t start = MonotonicMicros();
  try {
    auto session = std::make_unique<Poco::Data::Session>("MySQL", conn, options_.connect_timeout_s);
    // Poco applies read/write timeouts only after connecting, when libmariadb
    // no longer looks at them. Reconnect on the same handle with them set
    // (see docs/architecture.md, "Poco workarounds").
    auto* impl = static_cast<Poco::Data::MySQL::SessionImpl*>(session->impl());
    impl->close();
    impl->handle().init();
    impl->handle().options(MYSQL_OPT_CONNECT_TIMEOUT, static_cast<unsigned>(options_.connect_timeout_s));
    impl->handle().options(MYSQL_OPT_READ_TIMEOUT, static_cast<unsigned>(options_.read_timeout_s));
    impl->handle().options(MYSQL_OPT_WRITE_TIMEOUT, static_cast<unsigned>(options_.write_timeout_s));
    impl->open();

    // READ COMMITTED: no gap locks, so appends to different sessions never
    // block each other; every write locks the session row it changes.
    std::string isolation = "READ-COMMITTED";
    int lock_wait = options_.lock_wait_timeout_s;
    double statement_timeout = options_.statement_timeout_s;
    *session << "SET SESSION tx_isolation = ?, innodb_lock_wait_timeout = ?, "
                "max_statement_time = ?",
        use(isolation), use(lock_wait), use(statement_timeout), now;
    session_ = std::move(session);
    ++generation_;
    down_until_us_ = 0;
  } catch (const Poco::Exception& e) {
    int64_t elapsed = MonotonicMicros() - start;
    NoteFailure(elapsed);
    throw DbError(DbErrorKind::kUnavailable, ExtractMysqlErrno(e.displayText()), endpoint_.shard,
                  "connect to shard " + endpoint_.shard + " (" + endpoint_.host + ":" +
                      std::to_string(endpoint_.port) + ") failed: " + e.displayText());
  }
}

}  // namespace chatllm
