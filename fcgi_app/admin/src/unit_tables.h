#pragma once

// Private to the admin room: the rows a placement unit (a session, or a
// user's home: sql/009_homes.sql) owns besides its row in `sessions`, which
// every move copies, verifies and deletes with it.

#include <string>

namespace chatllm {

struct UnitTable {
  const char* table;
  const char* unit_column;  // The column holding the unit's id.
};

// A session's messages, idempotency keys, durable turns and their events;
// a home's list entries.
inline constexpr UnitTable kUnitTables[] = {
    {"messages", "session_id"},    {"idempotency_keys", "session_id"}, {"turns", "session_id"},
    {"turn_events", "session_id"}, {"session_list", "home_id"},        {"usage_ledger", "home_id"},
    {"usage_holds", "home_id"},    {"usage_budgets", "home_id"},
};

// A home's usage rows (sql/011_usage.sql), which a move copies with
// `SELECT *` by home_id, and compares by HomeTableDigestSql.
inline constexpr const char* kHomeTables[] = {"usage_ledger", "usage_holds", "usage_budgets"};

// The tables a move copies with `SELECT *` (every column, as it is).
inline constexpr const char* kTurnTables[] = {"turns", "turn_events"};

// "DELETE FROM <table> WHERE <unit column> " followed by the caller's
// condition on the unit (" = ?" or " IN (...)").
inline std::string DeleteUnitRows(const UnitTable& t, const std::string& condition) {
  return std::string("DELETE FROM ") + t.table + " WHERE " + t.unit_column + condition;
}

// Per home among the bound ids (`in`: " = ?" or " IN (...)"): home_id, the
// number of its list entries, and a digest of their every column (NULL
// differs from '' in it).
inline std::string EntriesDigestSql(const std::string& in) {
  auto cell = [](const char* c) { return std::string("IFNULL(CONCAT('=', ") + c + "), '-')"; };
  return "SELECT home_id, COUNT(*), HEX(BIT_XOR(CAST(CONV(LEFT(MD5(CONCAT_WS(0x1f, HEX(session_id), " +
         cell("created_at") + ", " + cell("state") + ", " + cell("changed_at") + ", " + cell("title") + ", " +
         cell("metadata") + ", " + cell("model") + ", " + cell("system_prompt") +
         ")), 16), 16, 10) AS UNSIGNED))) FROM session_list WHERE home_id" + in + " GROUP BY home_id";
}

// Per session among the bound ids (`in`: " = ?" or " IN (...)"): session_id,
// the number of its durable turns or of their events (`table`: "turns" or
// "turn_events"), and a digest of their every column.
inline std::string TurnsDigestSql(const std::string& table, const std::string& in) {
  const std::string cells = table == "turns"
                                ? "turn_id, user_seq, state, producer, lease_until, cancel_requested, last_event, "
                                  "IFNULL(answer_seq, '-'), created_at, updated_at"
                                : "turn_id, seq, text";
  return "SELECT session_id, COUNT(*), HEX(BIT_XOR(CAST(CONV(LEFT(MD5(CONCAT_WS(0x1f, " + cells +
         ")), 16), 16, 10) AS UNSIGNED))) FROM " + table + " WHERE session_id" + in + " GROUP BY session_id";
}

// Per home among the bound ids (`in`: " = ?" or " IN (...)"): home_id, the
// number of its rows in `table` (one of kHomeTables), and a digest of their
// every column.
inline std::string HomeTableDigestSql(const std::string& table, const std::string& in) {
  const std::string cells =
      table == "usage_ledger"
          ? "day, HEX(key_id), model, slot, answers, prompt_tokens, cached_tokens, completion_tokens, cost_nanos"
      : table == "usage_holds"
          ? "HEX(hold_id), keyed, HEX(key_id), HEX(session_id), state, tokens, cost_nanos, created_at, expires_at"
          : "HEX(key_id), IFNULL(tokens_day, '-'), IFNULL(tokens_month, '-'), IFNULL(cost_day, '-'), "
            "IFNULL(cost_month, '-'), IFNULL(concurrent, '-'), updated_at";
  return "SELECT home_id, COUNT(*), HEX(BIT_XOR(CAST(CONV(LEFT(MD5(CONCAT_WS(0x1f, " + cells +
         ")), 16), 16, 10) AS UNSIGNED))) FROM " + table + " WHERE home_id" + in + " GROUP BY home_id";
}

}  // namespace chatllm
