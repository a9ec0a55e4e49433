#include "store/mysql_statement.h"

#include <cstdlib>
#include <cstring>

#include "base/time_util.h"

namespace chatllm {
namespace {

// Text columns start here; longer values are fetched whole.
constexpr size_t kInitialTextBuffer = 1024;

MYSQL_TIME ToMysqlTime(int64_t unix_micros) {
  int64_t secs = unix_micros / 1000000;
  int64_t frac = unix_micros % 1000000;
  if (frac < 0) {
    frac += 1000000;
    --secs;
  }
  int64_t days = secs / 86400, rem = secs % 86400;
  if (rem < 0) {
    rem += 86400;
    --days;
  }
  int64_t year;
  unsigned month, day;
  CivilFromDays(days, &year, &month, &day);
  MYSQL_TIME mt;
  std::memset(&mt, 0, sizeof(mt));
  mt.year = static_cast<unsigned>(year);
  mt.month = month;
  mt.day = day;
  mt.hour = static_cast<unsigned>(rem / 3600);
  mt.minute = static_cast<unsigned>(rem / 60 % 60);
  mt.second = static_cast<unsigned>(rem % 60);
  mt.second_part = static_cast<unsigned long>(frac);
  mt.time_type = MYSQL_TIMESTAMP_DATETIME;
  return mt;
}

int64_t FromMysqlTime(const MYSQL_TIME& mt) {
  return UnixMicrosFromCivil(mt.year, mt.month, mt.day, mt.hour, mt.minute, mt.second,
                             static_cast<unsigned>(mt.second_part));
}

}  // namespace

MysqlStatement::MysqlStatement(MYSQL* conn, std::string sql) : conn_(conn), sql_(std::move(sql)) {
  stmt_ = mysql_stmt_init(conn_);
  if (stmt_ == nullptr) throw MysqlError(mysql_errno(conn_), std::string("mysql_stmt_init: ") + mysql_error(conn_));
  if (mysql_stmt_prepare(stmt_, sql_.data(), sql_.size()) != 0) Fail("mysql_stmt_prepare");

  unsigned long nparams = mysql_stmt_param_count(stmt_);
  params_.assign(nparams, MYSQL_BIND{});
  param_ints_.assign(nparams, 0);
  param_times_.assign(nparams, MYSQL_TIME{});
  param_lengths_.assign(nparams, 0);

  MYSQL_RES* meta = mysql_stmt_result_metadata(stmt_);
  if (meta == nullptr) return;  // No result set (INSERT, UPDATE...).
  unsigned int n = mysql_num_fields(meta);
  MYSQL_FIELD* fields = mysql_fetch_fields(meta);
  columns_.resize(n);
  std::vector<MYSQL_BIND> binds(n);
  for (unsigned int i = 0; i < n; ++i) {
    Column& c = columns_[i];
    c.name.assign(fields[i].name, fields[i].name_length);
    c.binary = fields[i].charsetnr == 63;  // The "binary" character set.
    std::memset(&c.bind, 0, sizeof(c.bind));
    switch (fields[i].type) {
      case MYSQL_TYPE_TINY:
      case MYSQL_TYPE_SHORT:
      case MYSQL_TYPE_INT24:
      case MYSQL_TYPE_LONG:
      case MYSQL_TYPE_LONGLONG:
        c.kind = Kind::kInt;
        c.bind.buffer_type = MYSQL_TYPE_LONGLONG;
        c.bind.buffer = &c.int_value;
        c.bind.buffer_length = sizeof(c.int_value);
        break;
      case MYSQL_TYPE_DATETIME:
      case MYSQL_TYPE_TIMESTAMP:
        c.kind = Kind::kDatetime;
        c.bind.buffer_type = MYSQL_TYPE_DATETIME;
        c.bind.buffer = &c.time_value;
        c.bind.buffer_length = sizeof(c.time_value);
        break;
      default:
        c.kind = Kind::kText;
        c.buffer.resize(kInitialTextBuffer);
        c.bind.buffer_type = MYSQL_TYPE_STRING;
        c.bind.buffer = c.buffer.data();
        c.bind.buffer_length = c.buffer.size();
        break;
    }
    c.bind.length = &c.length;
    c.bind.is_null = &c.is_null;
    c.bind.error = &c.error;
    binds[i] = c.bind;
  }
  mysql_free_result(meta);
  if (mysql_stmt_bind_result(stmt_, binds.data()) != 0) Fail("mysql_stmt_bind_result");
}

MysqlStatement::~MysqlStatement() {
  if (stmt_ != nullptr) mysql_stmt_close(stmt_);
}

// An error raised while the server produces rows (inside a stored function
// called by a SELECT: a deadlock, a lock wait timeout, a value too long for
// a parameter) reaches libmariadb as an error packet during the fetch, and
// libmariadb records it on the connection only: mysql_stmt_errno() is 0.
// Both places are read, so that such an error is classified by its real
// errno (a deadlock is retried, not answered 500).
void MysqlStatement::Fail(const char* call) const {
  int code = static_cast<int>(mysql_stmt_errno(stmt_));
  std::string message = mysql_stmt_error(stmt_);
  if (code == 0) {
    code = static_cast<int>(mysql_errno(conn_));
    message = mysql_error(conn_);
  }
  if (message.empty()) message = "no error reported by the client library";
  throw MysqlError(code,
                   std::string(call) + ": " + message + " [" + std::to_string(code) + "] in: " + sql_.substr(0, 120));
}

void MysqlStatement::BindInt64(int pos, int64_t value) {
  param_ints_[pos] = value;
  MYSQL_BIND& b = params_[pos];
  std::memset(&b, 0, sizeof(b));
  b.buffer_type = MYSQL_TYPE_LONGLONG;
  b.buffer = &param_ints_[pos];
}

void MysqlStatement::BindString(int pos, std::string_view value) {
  MYSQL_BIND& b = params_[pos];
  std::memset(&b, 0, sizeof(b));
  b.buffer_type = MYSQL_TYPE_STRING;
  b.buffer = const_cast<char*>(value.data());
  param_lengths_[pos] = value.size();
  b.buffer_length = value.size();
  b.length = &param_lengths_[pos];
}

void MysqlStatement::BindBytes(int pos, std::string_view value) {
  BindString(pos, value);
  params_[pos].buffer_type = MYSQL_TYPE_BLOB;  // Binary: no charset conversion.
}

void MysqlStatement::BindDatetime(int pos, int64_t unix_micros) {
  param_times_[pos] = ToMysqlTime(unix_micros);
  MYSQL_BIND& b = params_[pos];
  std::memset(&b, 0, sizeof(b));
  b.buffer_type = MYSQL_TYPE_DATETIME;
  b.buffer = &param_times_[pos];
  b.buffer_length = sizeof(MYSQL_TIME);
}

void MysqlStatement::BindNull(int pos) {
  MYSQL_BIND& b = params_[pos];
  std::memset(&b, 0, sizeof(b));
  b.buffer_type = MYSQL_TYPE_NULL;
}

void MysqlStatement::Execute() {
  rows_ = 0;  // cells_ keeps its strings' capacity for the next result.
  if (!params_.empty() && mysql_stmt_bind_param(stmt_, params_.data()) != 0) Fail("mysql_stmt_bind_param");
  if (mysql_stmt_execute(stmt_) != 0) Fail("mysql_stmt_execute");
  affected_rows_ = mysql_stmt_affected_rows(stmt_);
  if (!columns_.empty()) FetchAll();
}

void MysqlStatement::FetchAll() {
  while (true) {
    int rc = mysql_stmt_fetch(stmt_);
    if (rc == MYSQL_NO_DATA) break;
    if (rc == 1) {
      // Read the error before freeing the result (which may reset it), and
      // leave the connection usable for the caller's error handling.
      try {
        Fail("mysql_stmt_fetch");
      } catch (...) {
        mysql_stmt_free_result(stmt_);
        throw;
      }
    }
    const size_t need = (rows_ + 1) * columns_.size();
    if (cells_.size() < need) cells_.resize(need);
    Cell* row = &cells_[rows_ * columns_.size()];
    for (size_t i = 0; i < columns_.size(); ++i) {
      Column& c = columns_[i];
      Cell& cell = row[i];
      cell.null = c.is_null;
      if (cell.null) {
        cell.number = 0;
        cell.text.clear();
        continue;
      }
      switch (c.kind) {
        case Kind::kInt:
          cell.number = c.int_value;
          break;
        case Kind::kDatetime:
          cell.number = FromMysqlTime(c.time_value);
          break;
        case Kind::kText:
          if (c.length <= c.buffer.size()) {
            cell.text.assign(c.buffer.data(), c.length);
          } else {
            // Truncated (rc == MYSQL_DATA_TRUNCATED): fetch this column whole.
            cell.text.resize(c.length);
            MYSQL_BIND whole;
            std::memset(&whole, 0, sizeof(whole));
            unsigned long len = 0;
            whole.buffer_type = MYSQL_TYPE_STRING;
            whole.buffer = cell.text.data();
            whole.buffer_length = cell.text.size();
            whole.length = &len;
            if (mysql_stmt_fetch_column(stmt_, &whole, static_cast<unsigned>(i), 0) != 0) {
              try {
                Fail("mysql_stmt_fetch_column");
              } catch (...) {
                mysql_stmt_free_result(stmt_);
                throw;
              }
            }
          }
          break;
      }
    }
    ++rows_;
  }
  mysql_stmt_free_result(stmt_);
}

const MysqlStatement::Cell& MysqlStatement::At(size_t row, int col) const {
  return cells_[row * columns_.size() + static_cast<size_t>(col)];
}
bool MysqlStatement::IsNull(size_t row, int col) const { return At(row, col).null; }
int64_t MysqlStatement::Int64(size_t row, int col) const {
  const Cell& c = At(row, col);
  // DECIMAL and other numeric-as-text results still read as integers.
  return columns_[col].kind == Kind::kText ? std::strtoll(c.text.c_str(), nullptr, 10) : c.number;
}
const std::string& MysqlStatement::Text(size_t row, int col) const { return At(row, col).text; }
int64_t MysqlStatement::DatetimeMicros(size_t row, int col) const { return At(row, col).number; }

}  // namespace chatllm
