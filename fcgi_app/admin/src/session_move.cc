// Moving one session between shards: the steps of ClusterAdmin's class
// comment, each a method of SessionMove, and the fingerprint the copy is
// checked with.

#include <algorithm>
#include <climits>

#include "admin/cluster_admin.h"
#include "base/ids.h"
#include "failpoint.h"
#include "store/mysql_statement.h"
#include "store/transaction.h"
#include "unit_tables.h"

namespace chatllm {
namespace {

constexpr int kCopyBatch = 500;   // Messages read from the source per query.
constexpr int kInsertRows = 100;  // Messages written per multi-row INSERT.

std::string InsertMessagesSql(int rows) {
  std::string sql = "INSERT INTO messages (session_id, seq, role, content, reply_to, created_at, meta) VALUES ";
  for (int i = 0; i < rows; ++i) sql += i ? ",(?, ?, ?, ?, ?, ?, ?)" : "(?, ?, ?, ?, ?, ?, ?)";
  return sql;
}

// A nullable column of row `i` of `from`, bound at `pos` of `to`.
void BindNullableInt(MysqlStatement& to, int pos, const MysqlStatement& from, size_t i, int col) {
  if (from.IsNull(i, col))
    to.BindNull(pos);
  else
    to.BindInt64(pos, from.Int64(i, col));
}
void BindNullableText(MysqlStatement& to, int pos, const MysqlStatement& from, size_t i, int col) {
  if (from.IsNull(i, col))
    to.BindNull(pos);
  else
    to.BindString(pos, from.Text(i, col));
}

}  // namespace

ClusterAdmin::Fingerprint ClusterAdmin::FingerprintOf(const ShardEntry& shard, const std::string& id,
                                                      int64_t up_to_seq) {
  return OnShard(shard, "checksumming", [&] {
    MysqlStatement& st = Stmt(
        shard,
        "SELECT COUNT(*), COALESCE(MAX(seq), 0), HEX(COALESCE(BIT_XOR(CAST(CONV(LEFT(MD5(CONCAT_WS(0x1f, seq, role, "
        "content, COALESCE(reply_to, 0), created_at, COALESCE(meta, ''))), 16), 16, 10) AS UNSIGNED)), 0)), "
        "(SELECT message_count FROM sessions WHERE session_id = ?), "
        "(SELECT MD5(CONCAT_WS(0x1f, HEX(COALESCE(user_id, '')), created_at, COALESCE(title, ''), metadata, "
        "COALESCE(model, ''), COALESCE(system_prompt, ''), kind, HEX(COALESCE(secret_sha256, '')), "
        "COALESCE(expires_at, '-'))) FROM sessions WHERE session_id = ?) "
        "FROM messages WHERE session_id = ? AND seq <= ?");
    st.BindBytes(0, id);
    st.BindBytes(1, id);
    st.BindBytes(2, id);
    st.BindInt64(3, up_to_seq);
    st.Execute();
    Fingerprint f;
    f.messages = st.Int64(0, 0);
    f.max_seq = st.Int64(0, 1);
    f.digest = st.Text(0, 2);
    f.message_count = st.Int64(0, 3);
    f.row = st.Text(0, 4);
    // A home's entries and their count (a session has none: listed 0).
    MysqlStatement& entries = Stmt(shard, EntriesDigestSql(" = ?"));
    entries.BindBytes(0, id);
    entries.Execute();
    // With what a home or a key unit may change after a move activated its
    // copy (not compared with a copy that has taken writes since).
    MysqlStatement& listed =
        Stmt(shard,
             "SELECT CONCAT_WS(' ', listed, COALESCE(disabled_at, '-'), COALESCE(revoked_at, '-')) "
             "FROM sessions WHERE session_id = ?");
    listed.BindBytes(0, id);
    listed.Execute();
    f.entries = (listed.row_count() ? listed.Text(0, 0) : "-") + " listed, " +
                (entries.row_count() ? std::to_string(entries.Int64(0, 1)) + " entries " + entries.Text(0, 2) : "none");
    // A session's durable turns and their events (they change after a move
    // activated its copy, as a home's entries do).
    for (const char* table : kTurnTables) {
      MysqlStatement& turns = Stmt(shard, TurnsDigestSql(table, " = ?"));
      turns.BindBytes(0, id);
      turns.Execute();
      if (turns.row_count())
        f.entries += std::string(", ") + table + " " + std::to_string(turns.Int64(0, 1)) + " " + turns.Text(0, 2);
    }
    // A home's usage rows (they change after a move activated its copy).
    for (const char* table : kHomeTables) {
      MysqlStatement& rows = Stmt(shard, HomeTableDigestSql(table, " = ?"));
      rows.BindBytes(0, id);
      rows.Execute();
      if (rows.row_count())
        f.entries += std::string(", ") + table + " " + std::to_string(rows.Int64(0, 1)) + " " + rows.Text(0, 2);
    }
    return f;
  });
}

class ClusterAdmin::SessionMove {
 public:
  SessionMove(ClusterAdmin& admin, const std::string& id, const ShardEntry& from, const ShardEntry& to, uint64_t epoch)
      : admin_(admin), id_(id), text_(SessionId::FromBytes(id).text()), from_(from), to_(to), epoch_(epoch) {}

  MoveOutcome Run() {
    std::string on_a = StateOn(from_);
    if (on_a == "deleted") return MoveTombstone();
    // 1. Freeze on the source.
    Freeze();
    on_a = StateOn(from_);
    if (on_a == "absent" || on_a == "moved") {
      if (StateOn(to_) == "incoming") ClearTarget(false);
      return on_a == "absent" ? MoveOutcome::kGone : MoveOutcome::kMoved;
    }
    if (on_a == "deleted") return MoveTombstone();  // Deleted between the scan and the freeze.
    if (on_a != "moving") {
      throw AdminError("shard " + from_.name + ": session " + text_ + " in unexpected state " + on_a);
    }
    const std::string on_b = StateOn(to_);
    if (on_b == "deleted") {
      // An earlier run activated the copy (step 4) and stopped before step
      // 5; the session was deleted on its new shard since. The frozen source
      // is history of a deleted session: it goes, and is never copied again.
      TombstoneSource("moving");
      FinishArrival();
      return MoveOutcome::kGone;
    }
    const Fingerprint source = admin_.FingerprintOf(from_, id_, INT64_MAX);
    if (on_b == "active") {
      CheckActiveCopyContinues(source);
    } else {
      ClearTarget(false);  // 2. Copy.
      Copy("incoming");
      VerifyCopy(source);  // 3. Verify.
      Activate();          // 4. Make the copy authoritative.
      if (FailpointSet("move-after-activate", text_)) {
        throw AdminError("failpoint move-after-activate: stopped after activating session " + text_);
      }
    }
    TombstoneSource("moving");  // 5.
    FinishArrival();            // 6.
    return MoveOutcome::kMoved;
  }

 private:
  // "active", "moving", "incoming", "moved", "deleted" or "absent".
  std::string StateOn(const ShardEntry& shard) { return admin_.SessionState(shard, id_); }

  // Step 1: active -> moving, under the session row lock: appends in flight
  // commit first, later writes wait for the move (or are refused by it).
  void Freeze() {
    admin_.OnShard(from_, "freezing the session", [&] {
      MysqlStatement& st =
          admin_.Stmt(from_, "UPDATE sessions SET state = 'moving' WHERE session_id = ? AND state = 'active'");
      st.BindBytes(0, id_);
      st.Execute();
    });
  }

  void Unfreeze() {
    admin_.OnShard(from_, "unfreezing", [&] {
      MysqlStatement& st =
          admin_.Stmt(from_, "UPDATE sessions SET state = 'active' WHERE session_id = ? AND state = 'moving'");
      st.BindBytes(0, id_);
      st.Execute();
    });
  }

  // Drops whatever an earlier attempt (or an earlier move the other way)
  // left of this session on the target: never a copy that was made active,
  // which may hold writes of its own, nor (unless `tombstone_too`) a
  // 'deleted' one, which says the session was deleted after it arrived
  // (checked under the target's row lock).
  void ClearTarget(bool tombstone_too) {
    admin_.OnShard(to_, "clearing leftovers", [&] {
      Transaction txn(admin_.LinkTo(to_));
      MysqlStatement& lock = admin_.Stmt(to_, "SELECT state FROM sessions WHERE session_id = ? FOR UPDATE");
      lock.BindBytes(0, id_);
      lock.Execute();
      const std::string there = lock.row_count() == 1 ? lock.Text(0, 0) : "absent";
      if (there == "active" || (there == "deleted" && !tombstone_too)) {
        throw AdminError("session " + text_ + " is " + there + " on " + to_.name + " while " + from_.name +
                         " still holds it; left both for an operator (shardctl verify shows them)");
      }
      MysqlStatement& row = admin_.Stmt(to_, "DELETE FROM sessions WHERE session_id = ?");
      row.BindBytes(0, id_);
      row.Execute();
      for (const UnitTable& t : kUnitTables) {
        MysqlStatement& st = admin_.Stmt(to_, DeleteUnitRows(t, " = ?"));
        st.BindBytes(0, id_);
        st.Execute();
      }
      txn.Commit();
    });
  }

  // Step 2: the session row (as `state`: 'incoming', invisible to the app,
  // or 'deleted' for a tombstone), its messages, idempotency keys and
  // durable turns;
  // a home's list entries.
  void Copy(const char* state) {
    admin_.OnShard(to_, "copying the session", [&] {
      CopySessionRow(state);
      CopyMessages();
      CopyKeys();
      for (const char* table : kTurnTables) {
        MysqlStatement& rows = admin_.Stmt(from_, std::string("SELECT * FROM ") + table + " WHERE session_id = ?");
        rows.BindBytes(0, id_);
        rows.Execute();
        admin_.InsertRows(to_, table, rows, {});
      }
      for (const char* table : kHomeTables) {
        MysqlStatement& rows = admin_.Stmt(from_, std::string("SELECT * FROM ") + table + " WHERE home_id = ?");
        rows.BindBytes(0, id_);
        rows.Execute();
        admin_.InsertRows(to_, table, rows, {});
      }
      admin_.CopyEntries(from_, to_, id_);
    });
  }

  // Every column (a home's as well as a session's), but where it stands.
  void CopySessionRow(const char* state) {
    MysqlStatement& read = admin_.Stmt(from_, "SELECT * FROM sessions WHERE session_id = ?");
    read.BindBytes(0, id_);
    read.Execute();
    if (read.row_count() != 1)
      throw AdminError("shard " + from_.name + ": session " + text_ + " vanished while frozen");
    admin_.InsertRows(to_, "sessions", read,
                      {{"state", std::string(state)},
                       {"arrived_from", std::nullopt},
                       {"moved_to", std::nullopt},
                       {"moved_epoch", std::nullopt}});
  }

  // In batches of kCopyBatch, each committed on the target in one
  // transaction of multi-row INSERTs.
  void CopyMessages() {
    MysqlStatement& batch = admin_.Stmt(from_,
                                        "SELECT seq, role, content, reply_to, created_at, meta FROM messages "
                                        "WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?");
    for (int64_t after = 0;;) {
      batch.BindBytes(0, id_);
      batch.BindInt64(1, after);
      batch.BindInt64(2, kCopyBatch);
      batch.Execute();
      const size_t n = batch.row_count();
      if (n == 0) break;
      Transaction txn(admin_.LinkTo(to_));
      for (size_t first = 0; first < n; first += kInsertRows) {
        const int rows = static_cast<int>(std::min<size_t>(kInsertRows, n - first));
        MysqlStatement& insert = admin_.Stmt(to_, InsertMessagesSql(rows));
        for (int r = 0; r < rows; ++r) {
          const size_t i = first + static_cast<size_t>(r);
          const int p = r * 7;
          insert.BindBytes(p, id_);
          insert.BindInt64(p + 1, batch.Int64(i, 0));
          insert.BindString(p + 2, batch.Text(i, 1));
          insert.BindString(p + 3, batch.Text(i, 2));
          BindNullableInt(insert, p + 4, batch, i, 3);
          insert.BindDatetime(p + 5, batch.DatetimeMicros(i, 4));
          BindNullableText(insert, p + 6, batch, i, 5);
        }
        insert.Execute();
      }
      txn.Commit();
      after = batch.Int64(n - 1, 0);
    }
  }

  // Its idempotency keys go with it (a retry after the move must still find
  // them). A plain INSERT: a key row of another session with the same
  // primary key would be a bug to stop at, not a row to drop.
  void CopyKeys() {
    MysqlStatement& keys = admin_.Stmt(from_,
                                       "SELECT user_id, target_sha, idem_key, request_sha, state, status, response, "
                                       "created_at, expires_at, user_seq, attempt, answer_seq FROM idempotency_keys "
                                       "WHERE session_id = ?");
    keys.BindBytes(0, id_);
    keys.Execute();
    for (size_t i = 0; i < keys.row_count(); ++i) {
      MysqlStatement& put = admin_.Stmt(to_,
                                        "INSERT INTO idempotency_keys (user_id, target_sha, idem_key, session_id, "
                                        "request_sha, state, status, response, created_at, expires_at, user_seq, "
                                        "attempt, answer_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
      put.BindBytes(0, keys.Text(i, 0));
      put.BindBytes(1, keys.Text(i, 1));
      put.BindBytes(2, keys.Text(i, 2));
      put.BindBytes(3, id_);
      put.BindBytes(4, keys.Text(i, 3));
      put.BindString(5, keys.Text(i, 4));
      put.BindInt64(6, keys.Int64(i, 5));
      BindNullableText(put, 7, keys, i, 6);
      put.BindDatetime(8, keys.DatetimeMicros(i, 7));
      put.BindDatetime(9, keys.DatetimeMicros(i, 8));
      for (int c = 9; c <= 11; ++c) BindNullableInt(put, c + 1, keys, i, c);  // user_seq, attempt, answer_seq
      put.Execute();
    }
  }

  // Step 3: the same rows on both sides, and the source's count consistent;
  // otherwise the copy goes, the source is thawed and the move fails.
  void VerifyCopy(const Fingerprint& source) {
    const Fingerprint target = admin_.FingerprintOf(to_, id_, INT64_MAX);
    if (target == source && source.messages == source.message_count && source.max_seq == source.message_count) return;
    ClearTarget(false);
    Unfreeze();
    throw AdminError("session " + text_ + ": copy on " + to_.name + " (" + target.Text() + ") does not match " +
                     from_.name + " (" + source.Text() + "); left it on " + from_.name);
  }

  // Step 4: the copy becomes authoritative, marked as arrived from the
  // source until step 5 is done (chat_delete_session_v3 keeps a tombstone
  // then).
  void Activate() {
    admin_.OnShard(to_, "activating the copy", [&] {
      MysqlStatement& st = admin_.Stmt(to_,
                                       "UPDATE sessions SET state = 'active', arrived_from = ? "
                                       "WHERE session_id = ? AND state = 'incoming'");
      st.BindString(0, from_.name);
      st.BindBytes(1, id_);
      st.Execute();
    });
  }

  // A rerun that finds the copy already active (a run stopped between steps
  // 4 and 5): the copy has served writes since, so its history must begin
  // with the frozen source's, row for row; otherwise (a second session made
  // under the same id) the source is not deleted: both stay for an operator.
  void CheckActiveCopyContinues(const Fingerprint& source) {
    const Fingerprint target = admin_.FingerprintOf(to_, id_, source.max_seq);
    if (target.messages != source.messages || target.digest != source.digest || target.row != source.row ||
        target.message_count < source.message_count) {
      throw AdminError("session " + text_ + " is active on " + to_.name + " with a history that does not continue " +
                       "the one frozen on " + from_.name + " (" + target.Text() + " vs " + source.Text() +
                       "); left both for an operator");
    }
  }

  // Step 5: the source becomes a tombstone naming the target, and loses its
  // rows, in one transaction; only from `expected` (the state this move
  // left it in).
  void TombstoneSource(const char* expected) {
    admin_.OnShard(from_, "tombstoning the source", [&] {
      Transaction txn(admin_.LinkTo(from_));
      MysqlStatement& s = admin_.Stmt(from_,
                                      "UPDATE sessions SET state = 'moved', moved_to = ?, moved_epoch = ?, "
                                      "title = NULL, metadata = '{}' WHERE session_id = ? AND state = ?");
      s.BindString(0, to_.name);
      s.BindInt64(1, static_cast<int64_t>(epoch_));
      s.BindBytes(2, id_);
      s.BindString(3, expected);
      s.Execute();
      if (s.affected_rows() != 1) return;  // Changed under us (an expired tombstone): nothing to delete.
      for (const UnitTable& t : kUnitTables) {
        MysqlStatement& st = admin_.Stmt(from_, DeleteUnitRows(t, " = ?"));
        st.BindBytes(0, id_);
        st.Execute();
      }
      txn.Commit();
    });
  }

  // Step 6: the target's arrival marker goes, and a tombstone it kept only
  // because of the marker (a delete while the source still held a frozen
  // copy).
  void FinishArrival() { admin_.FinishArrival(to_, id_); }

  // A 'deleted' tombstone kept for a create's key moves with the ring like a
  // session, so that a late retry of the create finds it on the new owner.
  // It takes no writes; a retry that reads it on the source meanwhile finds
  // it there (its key row is copied before the source lets go).
  MoveOutcome MoveTombstone() {
    ClearTarget(/*tombstone_too=*/true);
    Copy("deleted");
    TombstoneSource("deleted");
    return MoveOutcome::kMoved;
  }

  ClusterAdmin& admin_;
  const std::string& id_;
  const std::string text_;
  const ShardEntry& from_;
  const ShardEntry& to_;
  const uint64_t epoch_;
};

ClusterAdmin::MoveOutcome ClusterAdmin::MoveSession(const std::string& id, const ShardEntry& from, const ShardEntry& to,
                                                    uint64_t epoch) {
  return SessionMove(*this, id, from, to, epoch).Run();
}

std::string ClusterAdmin::SessionState(const ShardEntry& shard, const std::string& id) {
  return OnShard(shard, "reading session state", [&] {
    MysqlStatement& st = Stmt(shard, "SELECT state FROM sessions WHERE session_id = ?");
    st.BindBytes(0, id);
    st.Execute();
    return st.row_count() ? st.Text(0, 0) : std::string("absent");
  });
}

void ClusterAdmin::FinishArrival(const ShardEntry& shard, const std::string& id) {
  OnShard(shard, "finishing the arrival", [&] {
    Transaction txn(LinkTo(shard));
    MysqlStatement& drop = Stmt(shard,
                                "DELETE FROM sessions WHERE session_id = ? AND state = 'deleted' AND NOT EXISTS "
                                "(SELECT 1 FROM idempotency_keys k WHERE k.session_id = sessions.session_id)");
    drop.BindBytes(0, id);
    drop.Execute();
    MysqlStatement& clear = Stmt(shard, "UPDATE sessions SET arrived_from = NULL WHERE session_id = ?");
    clear.BindBytes(0, id);
    clear.Execute();
    txn.Commit();
  });
}

}  // namespace chatllm
