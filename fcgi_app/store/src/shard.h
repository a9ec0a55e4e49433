#pragma once

// Private to the store room: a shard's connection and its statement
// catalogue.

#include <memory>
#include <string>

#include "store/connection.h"
#include "store/mysql_statement.h"
#include "store/sharded_store.h"

namespace chatllm {

// The statements of one connection, prepared once and re-executed. Every
// statement on a session carries the caller (`user_id <=> ?`): another
// user's session reads exactly like a missing one.
struct Prepared {
  Prepared(MYSQL* c, std::string shard_name)
      : conn(c),
        shard(std::move(shard_name)),
        create(c, "SELECT chat_create_session_v3(?, ?, ?, ?, ?, ?, ?, ?)"),
        // Where a keyed create's session may already be (CreateSession):
        // this shard's fence and the session's state here, in one read.
        presence(c,
                 "SELECT f.epoch, COALESCE(s.state, '') FROM shard_fence f "
                 "LEFT JOIN sessions s ON s.session_id = ? WHERE f.id = 1"),
        lock(c, "SELECT state FROM sessions WHERE session_id = ? FOR UPDATE"),
        get(c,
            "SELECT title, metadata, message_count, created_at, updated_at, state, model, system_prompt "
            "FROM sessions WHERE session_id = ? AND user_id <=> ?"),
        del(c, "SELECT chat_delete_session_v3(?, ?, ?, ?, ?)"),
        append(c, "SELECT chat_append_v5(?, ?, ?, ?, ?, ?, ?, ?, ?)"),
        turn_begin(c, "SELECT chat_turn_begin_v2(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
        turn_fail(c, "SELECT chat_turn_fail(?, ?, ?, ?, ?, ?, ?)"),
        // Messages come with their session's state (a primary-key lookup
        // joined to an index range on (session_id, seq) that stops at the
        // LIMIT, whatever the history length). Only an empty page needs the
        // second statement, `place`, to tell "no session" from "no messages".
        list(c,
             "SELECT m.seq, m.role, m.content, COALESCE(m.reply_to, 0), m.created_at, s.state, "
             "COALESCE(m.meta, '') FROM messages m JOIN sessions s ON s.session_id = m.session_id "
             "WHERE m.session_id = ? AND s.user_id <=> ? AND m.seq > ? ORDER BY m.seq LIMIT ?"),
        // Two messages by seq, with their session's state (a replay's).
        pick(c,
             "SELECT m.seq, m.role, m.content, COALESCE(m.reply_to, 0), m.created_at, s.state, "
             "COALESCE(m.meta, '') FROM messages m JOIN sessions s ON s.session_id = m.session_id "
             "WHERE m.session_id = ? AND s.user_id <=> ? AND m.seq IN (?, ?) ORDER BY m.seq"),
        // The newest messages (an index range stopping at the LIMIT) with
        // their session's state and model, and its system prompt on the
        // newest row only (seq = message_count: seqs are dense). A window
        // function summing tokens in SQL cost ~6x the MariaDB CPU of this
        // (derived tables, a temporary table); the budget is applied by the
        // caller instead. `session` answers for a session with no message.
        context(c,
                "SELECT m.seq, m.role, m.content, s.state, COALESCE(s.model, ''), "
                "IF(m.seq = s.message_count, COALESCE(s.system_prompt, ''), '') "
                "FROM messages m JOIN sessions s ON s.session_id = m.session_id "
                "WHERE m.session_id = ? AND s.user_id <=> ? ORDER BY m.seq DESC LIMIT ?"),
        session(c,
                "SELECT state, COALESCE(model, ''), COALESCE(system_prompt, '') FROM sessions "
                "WHERE session_id = ? AND user_id <=> ?"),
        place(c, "SELECT state FROM sessions WHERE session_id = ? AND user_id <=> ?"),
        // A user's sessions after a cursor, newest first (index sessions_by_user).
        // 'incoming' copies are included: the caller merges shards and keeps
        // one row per id, so a session being moved is never missed.
        sessions(c,
                 "SELECT session_id, title, metadata, message_count, created_at, updated_at, model, system_prompt, "
                 "state FROM sessions WHERE user_id <=> ? AND kind = 'session' "
                 "AND state IN ('active', 'moving', 'incoming') "
                 "AND (created_at < ? OR (created_at = ? AND session_id < ?)) "
                 "ORDER BY created_at DESC, session_id DESC LIMIT ?"),
        count(c,
              "SELECT COUNT(*) FROM sessions WHERE user_id <=> ? AND kind = 'session' "
              "AND state IN ('active', 'moving')"),
        // A user's home and its list (sql/009_homes.sql).
        home_create(c, "SELECT chat_home_create(?, ?, ?, ?)"),
        home_add(c, "SELECT chat_home_add(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
        home_set(c, "SELECT chat_home_set(?, ?, ?, ?, ?, ?, ?)"),
        home_remove(c, "SELECT chat_home_remove(?, ?, ?, ?, ?, ?)"),
        home_confirm(c, "SELECT chat_home_confirm(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
        home_disable(c, "SELECT chat_home_disable(?, ?, ?, ?, ?)"),
        // The user's home, for a key lookup: is the user disabled?
        home_flags(c, "SELECT state, disabled_at IS NOT NULL FROM sessions WHERE session_id = ? AND kind = 'home'"),
        // A key's unit (once the homes are complete, the key's only row).
        key_unit(c,
                 "SELECT state, COALESCE(user_id, ''), COALESCE(secret_sha256, ''), expires_at, "
                 "revoked_at IS NOT NULL FROM sessions WHERE session_id = ? AND kind = 'key'"),
        key_create(c, "SELECT chat_key_create(?, ?, ?, ?, ?, ?, ?, ?)"),
        key_revoke(c, "SELECT chat_key_revoke(?, ?, ?)"),
        // The home's state and a page of its entries after a cursor, newest
        // first (index session_list_order); one row with NULL entry columns
        // when there are none.
        // (The page is a derived table: read backwards along the index and
        // stopped at the LIMIT; joined to the home row directly, the server
        // sorted every entry of the home first.)
        home_list(c,
                  "SELECT h.state, l.session_id, l.created_at, l.state, l.title, COALESCE(l.metadata, '{}'), "
                  "l.model, l.system_prompt, TIMESTAMPDIFF(SECOND, l.changed_at, UTC_TIMESTAMP(6)) "
                  "FROM sessions h LEFT JOIN (SELECT * FROM session_list WHERE home_id = ? "
                  "AND (created_at < ? OR (created_at = ? AND session_id < ?)) "
                  "ORDER BY created_at DESC, session_id DESC LIMIT ?) l ON 1 = 1 "
                  "WHERE h.session_id = ? AND h.kind = 'home' AND h.user_id <=> ? "
                  "ORDER BY l.created_at DESC, l.session_id DESC"),
        // Entries a failed create or delete left, old enough to repair.
        home_stale(c,
                   "SELECT h.state, l.session_id, l.state FROM sessions h LEFT JOIN session_list l "
                   "ON l.home_id = h.session_id AND l.state <> 'live' "
                   "AND l.changed_at < UTC_TIMESTAMP(6) - INTERVAL ? SECOND "
                   "WHERE h.session_id = ? AND h.kind = 'home' AND h.user_id <=> ? LIMIT 20"),
        key(c,
            "SELECT k.user_id, k.secret_sha256, k.expires_at, k.revoked_at IS NOT NULL, u.disabled_at IS NOT NULL "
            "FROM api_keys k JOIN users u ON u.user_id = k.user_id WHERE k.key_id = ?"),
        idem_insert(c,
                    "INSERT IGNORE INTO idempotency_keys (user_id, target_sha, idem_key, session_id, request_sha, "
                    "state, status, response, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
                    "UTC_TIMESTAMP(6), UTC_TIMESTAMP(6) + INTERVAL ? SECOND)"),
        idem_select(c,
                    "SELECT request_sha, state, status, COALESCE(response, ''), "
                    "TIMESTAMPDIFF(SECOND, created_at, UTC_TIMESTAMP(6)), expires_at < UTC_TIMESTAMP(6) "
                    "FROM idempotency_keys WHERE user_id = ? AND target_sha = ? AND idem_key = ? FOR UPDATE"),
        idem_reset(c,
                   "UPDATE idempotency_keys SET session_id = ?, request_sha = ?, state = ?, status = ?, "
                   "response = ?, created_at = UTC_TIMESTAMP(6), expires_at = UTC_TIMESTAMP(6) + INTERVAL ? SECOND "
                   "WHERE user_id = ? AND target_sha = ? AND idem_key = ?"),
        // Only the attempt that holds the key completes it: one taken over
        // by a retry (after idempotency_lease_s) no longer matches. The key
        // is kept a whole TTL from its answer.
        idem_complete(c,
                      "UPDATE idempotency_keys SET state = 'done', status = ?, response = ?, answer_seq = ?, "
                      "expires_at = GREATEST(expires_at, UTC_TIMESTAMP(6) + INTERVAL ? SECOND) "
                      "WHERE user_id = ? AND target_sha = ? AND idem_key = ? AND state = 'running' AND attempt = ?"),
        idem_response(c,
                      "SELECT status, COALESCE(response, '') "
                      "FROM idempotency_keys WHERE user_id = ? AND target_sha = ? AND idem_key = ? AND state = 'done'"),
        idem_expire(c, "SELECT chat_expire_keys()"),
        // Durable turns (sql/010_turns.sql).
        turn_open(c, "SELECT chat_turn_open(?, ?, ?, ?, ?, ?, ?)"),
        turn_flush(c, "SELECT chat_turn_flush(?, ?, ?, ?, ?, ?, ?, ?)"),
        turn_close(c, "SELECT chat_turn_close(?, ?, ?, ?, ?, ?, ?)"),
        turn_expire(c, "SELECT chat_turn_expire(?, ?, ?, ?)"),
        turn_cancel(c, "SELECT chat_turn_cancel(?, ?, ?, ?)"),
        // The session's state and the turn (NULL columns when it has none).
        turn_read(c,
                  "SELECT s.state, COALESCE(t.turn_id, 0), t.user_seq, t.state, COALESCE(t.answer_seq, 0), "
                  "t.last_event, t.cancel_requested, t.created_at, t.updated_at, t.lease_until < UTC_TIMESTAMP(6) "
                  "FROM sessions s LEFT JOIN turns t ON t.session_id = s.session_id AND t.turn_id = ? "
                  "WHERE s.session_id = ? AND s.kind = 'session' AND s.user_id <=> ?"),
        turn_events(c,
                    "SELECT seq, text FROM turn_events WHERE session_id = ? AND turn_id = ? AND seq > ? "
                    "ORDER BY seq LIMIT ?"),
        turn_expire_old(c, "SELECT chat_expire_turns(UTC_TIMESTAMP(6) - INTERVAL ? SECOND)"),
        schema(c, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"),
        fence(c, "SELECT epoch FROM shard_fence WHERE id = 1") {}

  // Usage (sql/011_usage.sql): prepared at first use, so that a binary
  // newer than a shard's schema still serves everything else.
  MysqlStatement& Lazy(std::unique_ptr<MysqlStatement>& slot, const char* sql) {
    if (!slot) slot = std::make_unique<MysqlStatement>(conn, sql);
    return *slot;
  }
  std::unique_ptr<MysqlStatement> usage_hold, usage_add, usage_settle, usage_release, usage_budget, usage_home,
      usage_expired, usage_ledger, usage_budgets, usage_all_budgets, usage_sums, usage_answer;

  MYSQL* conn;
  const std::string shard;  // Its name, for errors.
  MysqlStatement create, presence, lock, get, del, append, turn_begin, turn_fail, list, pick, context, session, place,
      sessions, count, home_create, home_add, home_set, home_remove, home_confirm, home_disable, home_flags, key_unit,
      key_create, key_revoke, home_list, home_stale, key, idem_insert, idem_select, idem_reset, idem_complete,
      idem_response, idem_expire, turn_open, turn_flush, turn_close, turn_expire, turn_cancel, turn_read, turn_events,
      turn_expire_old, schema, fence;
};

// One shard of a ShardedStore: its connection and, on it, the statement
// catalogue, rebuilt after a reconnect.
class ShardedStore::Shard {
 public:
  Shard(DbEndpoint endpoint, DbOptions options) : conn_(std::move(endpoint), options) {}

  const std::string& name() const { return conn_.endpoint().shard; }
  const DbEndpoint& endpoint() const { return conn_.endpoint(); }

  // Statements on a live connection. Throws DbError if it cannot connect.
  Prepared& Ready() {
    MYSQL* h = conn_.Get();
    if (!prepared_ || prepared_generation_ != conn_.generation()) {
      prepared_.reset();
      prepared_ = std::make_unique<Prepared>(h, name());
      prepared_generation_ = conn_.generation();
    }
    return *prepared_;
  }

  // A one-off statement on this connection (map reads: rare, and the table
  // may not exist on a shard that is not migrated yet).
  MYSQL* Handle() { return conn_.Get(); }

  // After a failed statement: drop the statements (a failed one may be left
  // mid-result); on connection-level failures, the connection too.
  void AfterError(const DbError& err, int64_t elapsed_us) {
    prepared_.reset();
    if (err.kind() == DbErrorKind::kConnectionLost || err.kind() == DbErrorKind::kUnavailable) {
      conn_.NoteFailure(elapsed_us);
      conn_.Reset();
    }
  }

 private:
  DbConnection conn_;  // Declared first: statements die before their connection.
  std::unique_ptr<Prepared> prepared_;
  uint64_t prepared_generation_ = 0;
};

}  // namespace chatllm
