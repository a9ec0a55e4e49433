#pragma once

#include <mysql.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace chatllm {

// A server-side prepared statement on a libmariadb connection, reused across
// executions. Used for every statement on the request path instead of Poco
// Data's statements: Poco 1.11 allocates each text result column at its
// declared maximum (64 MiB for a utf8mb4 MEDIUMTEXT, per statement per
// connection), and over-reads computed text columns. Here text columns start
// in a small buffer and are fetched whole (mysql_stmt_fetch_column) when
// longer. See docs/architecture.md, "Poco workarounds".
//
// Not thread-safe; belongs to the connection it was prepared on and must be
// destroyed before that connection is closed.
class MysqlStatement {
 public:
  // Prepares `sql` on `conn`. Throws MysqlError on failure.
  MysqlStatement(MYSQL* conn, std::string sql);
  ~MysqlStatement();
  MysqlStatement(const MysqlStatement&) = delete;
  MysqlStatement& operator=(const MysqlStatement&) = delete;

  // Parameters by position (0-based). String and byte values are borrowed:
  // they must stay alive until Execute() returns.
  void BindInt64(int pos, int64_t value);
  void BindString(int pos, std::string_view value);  // Text in the connection charset.
  void BindBytes(int pos, std::string_view value);   // Binary (BINARY/BLOB columns).
  void BindDatetime(int pos, int64_t unix_micros);   // DATETIME(6), UTC.
  void BindNull(int pos);

  // Runs the statement and, if it returns rows, reads them all into memory
  // (results are small and bounded by LIMITs). Throws MysqlError.
  void Execute();

  size_t row_count() const { return rows_; }
  bool IsNull(size_t row, int col) const;
  int64_t Int64(size_t row, int col) const;            // Integer columns; 0 for NULL.
  const std::string& Text(size_t row, int col) const;  // Any other column, raw bytes.
  int64_t DatetimeMicros(size_t row, int col) const;   // DATETIME columns, UTC.
  uint64_t affected_rows() const { return affected_rows_; }

  // The result's columns, as the server described them (copying rows whose
  // columns are not listed in the code: shardctl's moves).
  int column_count() const { return static_cast<int>(columns_.size()); }
  const std::string& column_name(int col) const { return columns_[col].name; }
  bool column_is_int(int col) const { return columns_[col].kind == Kind::kInt; }
  bool column_is_datetime(int col) const { return columns_[col].kind == Kind::kDatetime; }
  bool column_is_binary(int col) const { return columns_[col].binary; }  // BINARY, VARBINARY, BLOB.

 private:
  enum class Kind { kInt, kDatetime, kText };
  struct Cell {
    bool null = false;
    int64_t number = 0;  // kInt value, or kDatetime as unix micros.
    std::string text;
  };
  struct Column {
    Kind kind;
    std::string name;
    bool binary = false;
    MYSQL_BIND bind;
    int64_t int_value;
    MYSQL_TIME time_value;
    std::vector<char> buffer;
    unsigned long length;
    my_bool is_null;
    my_bool error;
  };

  [[noreturn]] void Fail(const char* call) const;
  void FetchAll();
  const Cell& At(size_t row, int col) const;

  MYSQL* conn_;
  std::string sql_;
  MYSQL_STMT* stmt_ = nullptr;
  std::vector<MYSQL_BIND> params_;
  std::vector<int64_t> param_ints_;
  std::vector<MYSQL_TIME> param_times_;
  std::vector<unsigned long> param_lengths_;
  std::vector<Column> columns_;
  std::vector<Cell> cells_;  // rows_ x columns_, row-major; reused across executions.
  size_t rows_ = 0;
  uint64_t affected_rows_ = 0;
};

// An error from libmariadb with its error number (mysql_stmt_errno).
class MysqlError : public std::exception {
 public:
  MysqlError(int code, std::string message) : code_(code), message_(std::move(message)) {}
  int code() const { return code_; }
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  int code_;
  std::string message_;
};

}  // namespace chatllm
