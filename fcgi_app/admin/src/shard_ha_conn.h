#pragma once

// Private to the admin room: what shard_ha.cc and shard_ha_monitor.cc share
// (a member connection with text queries, and checks of what goes into
// replication statements).

#include <mysql.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <string>

#include "admin/shard_ha.h"
#include "store/connection.h"
#include "store/mysql_statement.h"

namespace chatllm {

namespace ha_detail {

inline int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

inline bool SafeHost(const std::string& host) {
  return !host.empty() && host.size() <= 255 && std::all_of(host.begin(), host.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
           c == ':';
  });
}

inline bool SafeGtid(const std::string& gtid) {
  return std::all_of(gtid.begin(), gtid.end(), [](char c) { return (c >= '0' && c <= '9') || c == '-' || c == ','; });
}

// The highest sequence number of any domain in a GTID position
// ("0-1-42,1-2-7" -> 42): the shards write one domain, so this orders
// positions of one shard's members.
inline int64_t GtidSeq(const std::string& pos) {
  int64_t best = -1;
  size_t start = 0;
  while (start <= pos.size()) {
    size_t end = pos.find(',', start);
    if (end == std::string::npos) end = pos.size();
    const std::string one = pos.substr(start, end - start);
    const size_t dash = one.rfind('-');
    if (dash != std::string::npos) best = std::max<int64_t>(best, std::atoll(one.c_str() + dash + 1));
    start = end + 1;
  }
  return best;
}

}  // namespace ha_detail

// One connection to one member as the [ha] account, with text queries
// (SHOW SLAVE STATUS and friends are not all preparable).
class ShardHa::Conn {
 public:
  Conn(DbEndpoint ep, DbOptions options) : conn_(std::move(ep), options) {}
  MYSQL* Handle() { return conn_.Get(); }

  void Exec(const std::string& sql) {
    MYSQL* h = Handle();
    if (mysql_real_query(h, sql.data(), sql.size()) != 0) Throw(h);
    while (true) {  // Drain any result so the connection stays usable.
      if (MYSQL_RES* res = mysql_store_result(h)) mysql_free_result(res);
      if (mysql_next_result(h) != 0) break;
    }
  }

  // The first row of `sql`'s result, by column name; empty if no row. NULL is "".
  std::map<std::string, std::string> Row(const std::string& sql) {
    MYSQL* h = Handle();
    if (mysql_real_query(h, sql.data(), sql.size()) != 0) Throw(h);
    MYSQL_RES* res = mysql_store_result(h);
    if (!res) {
      if (mysql_errno(h) != 0) Throw(h);
      return {};
    }
    std::map<std::string, std::string> out;
    if (MYSQL_ROW row = mysql_fetch_row(res)) {
      const unsigned n = mysql_num_fields(res);
      MYSQL_FIELD* fields = mysql_fetch_fields(res);
      unsigned long* lengths = mysql_fetch_lengths(res);
      for (unsigned i = 0; i < n; ++i) {
        out[fields[i].name] = row[i] ? std::string(row[i], lengths[i]) : std::string();
      }
    }
    mysql_free_result(res);
    return out;
  }

  std::string Escape(const std::string& s) {
    std::string out(s.size() * 2 + 1, '\0');
    const unsigned long n = mysql_real_escape_string(Handle(), out.data(), s.data(), s.size());
    out.resize(n);
    return out;
  }

 private:
  [[noreturn]] static void Throw(MYSQL* h) { throw MysqlError(static_cast<int>(mysql_errno(h)), mysql_error(h)); }
  DbConnection conn_;
};

}  // namespace chatllm
