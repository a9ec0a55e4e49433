#include "store/db_error.h"

namespace chatllm {

const char* DbErrorKindName(DbErrorKind kind) {
  switch (kind) {
    case DbErrorKind::kUnavailable:
      return "unavailable";
    case DbErrorKind::kConnectionLost:
      return "connection_lost";
    case DbErrorKind::kTimeout:
      return "timeout";
    case DbErrorKind::kRetryable:
      return "retryable";
    case DbErrorKind::kReadOnly:
      return "read_only";
    case DbErrorKind::kQuery:
      return "query";
  }
  return "?";
}

DbErrorKind ClassifyMysqlErrno(int code) {
  switch (code) {
    case 1205:  // ER_LOCK_WAIT_TIMEOUT
    case 1213:  // ER_LOCK_DEADLOCK
      return DbErrorKind::kRetryable;
    case 1290:  // ER_OPTION_PREVENTS_STATEMENT (--read-only)
    case 1836:  // ER_READ_ONLY_MODE
      return DbErrorKind::kReadOnly;
    case 1969:  // ER_STATEMENT_TIMEOUT (max_statement_time)
      return DbErrorKind::kTimeout;
    case 2002:  // CR_CONNECTION_ERROR
    case 2003:  // CR_CONN_HOST_ERROR
    case 2005:  // CR_UNKNOWN_HOST
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

}  // namespace chatllm
