// Moving many sessions between two shards at once: the steps of
// ClusterAdmin's class comment, each done for a whole batch in a few round
// trips (multi-row reads and INSERTs, IN lists), so that a rebalance moves
// thousands of sessions a second. Only the common case takes this path: a
// session active (or frozen) on the source, and on the target absent or
// only what an earlier move left (a tombstone of a move away, an
// interrupted copy). Every other one (a deletion tombstone, a copy active on
// the target, a session deleted since the scan) goes through SessionMove,
// one by one, which knows every state.

#include <algorithm>
#include <map>
#include <optional>
#include <set>

#include "admin/cluster_admin.h"
#include "base/ids.h"
#include "base/log.h"
#include "base/time_util.h"
#include "failpoint.h"
#include "store/mysql_statement.h"
#include "store/transaction.h"
#include "unit_tables.h"

namespace chatllm {
namespace {

constexpr int64_t kMessagesPerRead = 2000;   // Messages read from the source per query.
constexpr int kRowsPerInsert = 100;          // Rows written per multi-row INSERT, at most,
constexpr size_t kBytesPerInsert = 2 << 20;  // and this many bytes plus a row (max_allowed_packet: 16 MiB+).
// Keys that expire before this long after the copy are left out of the
// comparison: the app's expiry may delete them on either side meanwhile.
constexpr int kKeyMarginS = 3600;

// Statements here are assembled from constant text, table names from this
// file, column names the server reported for those tables, and these
// placeholder lists; every value (ids, rows, epochs) is bound.
// "(?, ?, ...)" with `n` placeholders.
std::string Placeholders(size_t n) {
  std::string s = "(";
  for (size_t i = 0; i < n; ++i) s += i ? ", ?" : "?";
  return s + ")";
}

void BindAll(MysqlStatement& st, const std::vector<std::string>& ids, int first = 0) {
  for (size_t i = 0; i < ids.size(); ++i) st.BindBytes(first + static_cast<int>(i), ids[i]);
}

// A column's value for a digest in which NULL differs from '' and 0.
std::string Cell(const std::string& column) { return "IFNULL(CONCAT('=', " + column + "), '-')"; }
std::string BinaryCell(const std::string& column) { return "IFNULL(HEX(" + column + "), '-')"; }

// The rows' bytes, about (the size of the INSERT that carries them).
size_t RowBytes(const MysqlStatement& read, size_t row) {
  size_t n = 16;
  for (int c = 0; c < read.column_count(); ++c) n += read.IsNull(row, c) ? 1 : read.Text(row, c).size() + 8;
  return n;
}

}  // namespace

void ClusterAdmin::InsertRows(const ShardEntry& to, const std::string& table, const MysqlStatement& read,
                              const std::map<std::string, std::optional<std::string>>& replace) {
  const int cols = read.column_count();
  std::vector<const std::optional<std::string>*> replaced(cols, nullptr);
  std::string names;
  for (int c = 0; c < cols; ++c) {
    names += (c ? ", " : "") + read.column_name(c);
    if (auto it = replace.find(read.column_name(c)); it != replace.end()) replaced[c] = &it->second;
  }
  // Statements are prepared for each INSERT and closed after it: their
  // shapes (row counts) vary, and cached ones would pile up on the server
  // (max_prepared_stmt_count is shared with every app connection).
  for (size_t first = 0, rows = 0; first < read.row_count(); first += rows) {
    size_t bytes = 0;
    for (rows = 0; first + rows < read.row_count() && rows < kRowsPerInsert; ++rows) {
      bytes += RowBytes(read, first + rows);
      if (rows > 0 && bytes > kBytesPerInsert) break;
    }
    std::string sql = "INSERT INTO " + table + " (" + names + ") VALUES ";
    for (size_t r = 0; r < rows; ++r) sql += (r ? ", " : "") + Placeholders(cols);
    MysqlStatement insert(Handle(to), sql);
    for (size_t r = 0; r < rows; ++r) {
      const size_t i = first + r;
      for (int c = 0; c < cols; ++c) {
        const int p = static_cast<int>(r) * cols + c;
        if (replaced[c]) {
          if (*replaced[c])
            insert.BindString(p, **replaced[c]);
          else
            insert.BindNull(p);
        } else if (read.IsNull(i, c)) {
          insert.BindNull(p);
        } else if (read.column_is_int(c)) {
          insert.BindInt64(p, read.Int64(i, c));
        } else if (read.column_is_datetime(c)) {
          insert.BindDatetime(p, read.DatetimeMicros(i, c));
        } else if (read.column_is_binary(c)) {
          insert.BindBytes(p, read.Text(i, c));
        } else {
          insert.BindString(p, read.Text(i, c));
        }
      }
    }
    insert.Execute();
  }
}

class ClusterAdmin::BatchMove {
 public:
  BatchMove(ClusterAdmin& admin, const std::vector<std::string>& ids, const ShardEntry& from, const ShardEntry& to,
            uint64_t epoch)
      : admin_(admin), ids_(ids), from_(from), to_(to), epoch_(epoch) {}

  BatchOutcome Run() {
    BatchOutcome out;
    // The target may hold what an earlier move left (a tombstone of a move
    // away, an interrupted copy): cleared below. A copy that is active or
    // deleted there is the slow path's to judge, and is not frozen here.
    std::vector<std::string> clear;
    const std::map<std::string, std::string> before = States(to_, ids_);
    for (const std::string& id : ids_) {
      auto b = before.find(id);
      (b == before.end() || b->second == "moved" || b->second == "incoming" ? clear : slow_).push_back(id);
    }
    std::vector<std::string> fast;
    if (!clear.empty()) {
      Freeze(clear);  // 1.
      const std::map<std::string, std::string> on_a = States(from_, clear);
      std::vector<std::string> frozen;
      for (const std::string& id : clear) {
        auto a = on_a.find(id);
        (a != on_a.end() && a->second == "moving" ? frozen : slow_).push_back(id);
      }
      if (!frozen.empty()) fast = ClearTargets(frozen);
    }
    if (!fast.empty() && !CopyOrHandBack(fast)) fast.clear();
    if (!fast.empty()) {
      std::vector<std::string> verified = Verify(fast, &out);  // 3.
      if (!verified.empty()) {
        Activate(verified);  // 4.
        for (const std::string& id : verified) {
          const std::string text = SessionId::FromBytes(id).text();
          if (FailpointSet("move-after-activate", text)) {
            throw AdminError("failpoint move-after-activate: stopped after activating session " + text);
          }
        }
        const std::vector<std::string> done = TombstoneSources(verified);  // 5.
        admin_.FinishBatchArrival(to_, done);                              // 6.
        out.moved += static_cast<int64_t>(done.size());
        // Not tombstoned (changed under the move): the slow path sorts them out.
        for (const std::string& id : verified) {
          if (std::find(done.begin(), done.end(), id) == done.end()) slow_.push_back(id);
        }
      }
    }
    for (const std::string& id : slow_) {
      if (admin_.MoveSession(id, from_, to_, epoch_) == MoveOutcome::kGone)
        ++out.gone;
      else
        ++out.moved;
    }
    if (!out.mismatched.empty()) {
      throw AdminError(std::to_string(out.mismatched.size()) + " session(s) copied to " + to_.name + " did not match " +
                       from_.name + " (or " + from_.name +
                       "'s count disagrees with its messages) and were left there (first: " + out.mismatched.front() +
                       "); rerun shardctl rebalance");
    }
    return out;
  }

 private:
  // Step 1: active -> moving, under each session's row lock: appends in
  // flight commit first, later writes wait for the move. Unfreeze undoes it.
  void Freeze(const std::vector<std::string>& ids) { SwapState(ids, "active", "moving", "freezing sessions"); }
  void Unfreeze(const std::vector<std::string>& ids) { SwapState(ids, "moving", "active", "unfreezing"); }
  void SwapState(const std::vector<std::string>& ids, const char* from, const char* to, const char* what) {
    admin_.OnShard(from_, what, [&] {
      MysqlStatement st(admin_.Handle(from_),
                        "UPDATE sessions SET state = ? WHERE state = ? AND session_id IN " + Placeholders(ids.size()));
      st.BindString(0, to);
      st.BindString(1, from);
      BindAll(st, ids, 2);
      st.Execute();
    });
  }

  // Drops what the target holds of the frozen sessions (tombstones of
  // earlier moves away, copies an interrupted run left), under the target's
  // row locks; one found active or deleted there since the first look goes
  // to the slow path. Returns the sessions cleared.
  std::vector<std::string> ClearTargets(const std::vector<std::string>& ids) {
    return admin_.OnShard(to_, "clearing leftovers", [&] {
      Transaction txn(admin_.LinkTo(to_));
      MysqlStatement lock(admin_.Handle(to_), "SELECT session_id, state FROM sessions WHERE session_id IN " +
                                                  Placeholders(ids.size()) + " FOR UPDATE");
      BindAll(lock, ids);
      lock.Execute();
      std::set<std::string> kept;
      for (size_t i = 0; i < lock.row_count(); ++i) {
        const std::string state = lock.Text(i, 1);
        if (state != "moved" && state != "incoming") kept.insert(lock.Text(i, 0));
      }
      std::vector<std::string> cleared;
      for (const std::string& id : ids) (kept.count(id) ? slow_ : cleared).push_back(id);
      if (cleared.empty()) return cleared;
      MysqlStatement rows(admin_.Handle(to_),
                          "DELETE FROM sessions WHERE session_id IN " + Placeholders(cleared.size()));
      BindAll(rows, cleared);
      rows.Execute();
      for (const UnitTable& t : kUnitTables) {
        MysqlStatement del(admin_.Handle(to_), DeleteUnitRows(t, " IN " + Placeholders(cleared.size())));
        BindAll(del, cleared);
        del.Execute();
      }
      txn.Commit();
      return cleared;
    });
  }

  std::map<std::string, std::string> States(const ShardEntry& shard, const std::vector<std::string>& ids) {
    return admin_.OnShard(shard, "reading session states", [&] {
      MysqlStatement st(admin_.Handle(shard),
                        "SELECT session_id, state FROM sessions WHERE session_id IN " + Placeholders(ids.size()));
      BindAll(st, ids);
      st.Execute();
      std::map<std::string, std::string> out;
      for (size_t i = 0; i < st.row_count(); ++i) out[st.Text(i, 0)] = st.Text(i, 1);
      return out;
    });
  }

  // Step 2, for the batch: false if it failed for a reason of the batch's
  // own (a statement the server refused); its sessions, still frozen, then
  // go one by one (the slow path clears what this left on the target). A
  // shard that cannot be reached fails the slow path as well: rethrown there.
  bool CopyOrHandBack(const std::vector<std::string>& ids) {
    try {
      Copy(ids);
      return true;
    } catch (const AdminError& e) {
      LOG_WARN("moving %zu sessions from %s to %s together failed (%s); moving them one by one", ids.size(),
               from_.name.c_str(), to_.name.c_str(), e.what());
      slow_.insert(slow_.end(), ids.begin(), ids.end());
      return false;
    }
  }

  // Step 2: the session rows (as 'incoming', invisible to the app), their
  // messages, idempotency keys and durable turns, and the list entries of homes,
  // every column, in multi-row INSERTs.
  void Copy(const std::vector<std::string>& ids) {
    std::vector<std::pair<std::string, int64_t>> counts;   // (id, message_count)
    std::vector<std::pair<std::string, int64_t>> entries;  // (home id, listed)
    admin_.OnShard(to_, "copying sessions", [&] {
      MysqlStatement rows(admin_.Handle(from_),
                          "SELECT * FROM sessions WHERE session_id IN " + Placeholders(ids.size()));
      BindAll(rows, ids);
      rows.Execute();
      int id_col = -1, count_col = -1, listed_col = -1, kind_col = -1;
      for (int c = 0; c < rows.column_count(); ++c) {
        if (rows.column_name(c) == "session_id") id_col = c;
        if (rows.column_name(c) == "message_count") count_col = c;
        if (rows.column_name(c) == "listed") listed_col = c;
        if (rows.column_name(c) == "kind") kind_col = c;
      }
      for (size_t i = 0; i < rows.row_count(); ++i) {
        counts.emplace_back(rows.Text(i, id_col), rows.Int64(i, count_col));
        // Every home's entries, whatever its count says (the count only
        // sizes the reads).
        if (rows.Text(i, kind_col) == "home") entries.emplace_back(rows.Text(i, id_col), rows.Int64(i, listed_col));
      }
      admin_.InsertRows(to_, "sessions", rows,
                        {{"state", std::string("incoming")},
                         {"arrived_from", std::nullopt},
                         {"moved_to", std::nullopt},
                         {"moved_epoch", std::nullopt}});
      CopyMessages(counts);
      MysqlStatement keys(admin_.Handle(from_),
                          "SELECT * FROM idempotency_keys WHERE session_id IN " + Placeholders(ids.size()));
      BindAll(keys, ids);
      keys.Execute();
      admin_.InsertRows(to_, "idempotency_keys", keys, {});
      for (const char* table : kTurnTables) {
        MysqlStatement turns(admin_.Handle(from_), std::string("SELECT * FROM ") + table + " WHERE session_id IN " +
                                                       Placeholders(ids.size()));
        BindAll(turns, ids);
        turns.Execute();
        admin_.InsertRows(to_, table, turns, {});
      }
      for (const char* table : kHomeTables) {
        MysqlStatement rows(admin_.Handle(from_),
                            std::string("SELECT * FROM ") + table + " WHERE home_id IN " + Placeholders(ids.size()));
        BindAll(rows, ids);
        rows.Execute();
        admin_.InsertRows(to_, table, rows, {});
      }
      CopyEntries(entries);
    });
  }

  // Homes grouped like CopyMessages: a larger home is read in pages.
  void CopyEntries(const std::vector<std::pair<std::string, int64_t>>& homes) {
    std::vector<std::string> group;
    int64_t in_group = 0;
    auto flush = [&] {
      if (group.empty()) return;
      MysqlStatement read(admin_.Handle(from_),
                          "SELECT * FROM session_list WHERE home_id IN " + Placeholders(group.size()));
      BindAll(read, group);
      read.Execute();
      Transaction txn(admin_.LinkTo(to_));
      admin_.InsertRows(to_, "session_list", read, {});
      txn.Commit();
      group.clear();
      in_group = 0;
    };
    for (const auto& [id, listed] : homes) {
      if (listed > kMessagesPerRead) {
        admin_.CopyEntries(from_, to_, id);
        continue;
      }
      if (in_group + listed > kMessagesPerRead) flush();
      group.push_back(id);
      in_group += listed;
    }
    flush();
  }

  // Sessions grouped so that one read brings at most kMessagesPerRead
  // messages (a longer history is read in pages of its own); each group is
  // written in one transaction.
  void CopyMessages(const std::vector<std::pair<std::string, int64_t>>& counts) {
    std::vector<std::string> group;
    int64_t in_group = 0;
    auto flush = [&] {
      if (group.empty()) return;
      MysqlStatement read(admin_.Handle(from_),
                          "SELECT * FROM messages WHERE session_id IN " + Placeholders(group.size()));
      BindAll(read, group);
      read.Execute();
      Transaction txn(admin_.LinkTo(to_));
      admin_.InsertRows(to_, "messages", read, {});
      txn.Commit();
      group.clear();
      in_group = 0;
    };
    for (const auto& [id, count] : counts) {
      if (count > kMessagesPerRead) {
        CopyLongHistory(id);
        continue;
      }
      if (in_group + count > kMessagesPerRead) flush();
      group.push_back(id);
      in_group += count;
    }
    flush();
  }

  void CopyLongHistory(const std::string& id) {
    MysqlStatement read(admin_.Handle(from_),
                        "SELECT * FROM messages WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?");
    int seq_col = -1;
    for (int64_t after = 0;;) {
      read.BindBytes(0, id);
      read.BindInt64(1, after);
      read.BindInt64(2, kMessagesPerRead);
      read.Execute();
      if (read.row_count() == 0) return;
      if (seq_col < 0) {
        for (int c = 0; c < read.column_count(); ++c) {
          if (read.column_name(c) == "seq") seq_col = c;
        }
      }
      Transaction txn(admin_.LinkTo(to_));
      admin_.InsertRows(to_, "messages", read, {});
      txn.Commit();
      after = read.Int64(read.row_count() - 1, seq_col);
    }
  }

  // What a copy holds, per session: its row (a digest of every column but
  // those that say where it stands), its messages (count, last seq, a
  // digest of every column) and its keys (count, digest; those expiring
  // before `keys_from` left out). NULL differs from '' and 0 in every digest.
  struct Print {
    int64_t message_count = 0, messages = 0, max_seq = 0;
    std::string text;
    bool Consistent() const { return messages == message_count && max_seq == message_count; }
  };
  std::map<std::string, Print> Fingerprints(const ShardEntry& shard, const std::vector<std::string>& ids,
                                            int64_t keys_from_us) {
    return admin_.OnShard(shard, "checksumming", [&] {
      std::map<std::string, Print> out;
      const std::string in = Placeholders(ids.size());
      MysqlStatement rows(admin_.Handle(shard),
                          "SELECT session_id, message_count, MD5(CONCAT_WS(0x1f, " + BinaryCell("user_id") + ", " +
                              Cell("created_at") + ", " + Cell("updated_at") + ", " + Cell("title") + ", " +
                              Cell("metadata") + ", " + Cell("model") + ", " + Cell("system_prompt") + ", " +
                              BinaryCell("last_user_digest") + ", message_count, kind, listed, " + Cell("disabled_at") +
                              ", " + BinaryCell("secret_sha256") + ", " + Cell("expires_at") + ", " +
                              Cell("revoked_at") + ")) FROM sessions WHERE session_id IN " + in);
      BindAll(rows, ids);
      rows.Execute();
      for (size_t i = 0; i < rows.row_count(); ++i) {
        Print& p = out[rows.Text(i, 0)];
        p.message_count = rows.Int64(i, 1);
        p.text = "row " + rows.Text(i, 2);
      }
      const std::string message_digest = "CONCAT_WS(0x1f, seq, " + Cell("role") + ", " + Cell("content") + ", " +
                                         Cell("reply_to") + ", " + Cell("created_at") + ", " + Cell("meta") + ")";
      MysqlStatement messages(admin_.Handle(shard),
                              "SELECT session_id, COUNT(*), MAX(seq), HEX(BIT_XOR(CAST(CONV(LEFT(MD5(" +
                                  message_digest + "), 16), 16, 10) AS UNSIGNED))) FROM messages WHERE session_id IN " +
                                  in + " GROUP BY session_id");
      BindAll(messages, ids);
      messages.Execute();
      for (size_t i = 0; i < messages.row_count(); ++i) {
        Print& p = out[messages.Text(i, 0)];
        p.messages = messages.Int64(i, 1);
        p.max_seq = messages.Int64(i, 2);
        p.text +=
            " messages " + std::to_string(p.messages) + " to " + std::to_string(p.max_seq) + " " + messages.Text(i, 3);
      }
      const std::string key_digest = "CONCAT_WS(0x1f, " + BinaryCell("user_id") + ", " + BinaryCell("target_sha") +
                                     ", " + BinaryCell("idem_key") + ", " + BinaryCell("request_sha") + ", " +
                                     Cell("state") + ", " + Cell("status") + ", " + Cell("response") + ", " +
                                     Cell("created_at") + ", " + Cell("expires_at") + ", " + Cell("user_seq") + ", " +
                                     Cell("attempt") + ", " + Cell("answer_seq") + ")";
      MysqlStatement keys(admin_.Handle(shard),
                          "SELECT session_id, COUNT(*), HEX(BIT_XOR(CAST(CONV(LEFT(MD5(" + key_digest +
                              "), 16), 16, 10) AS UNSIGNED))) FROM idempotency_keys WHERE expires_at >= ? AND "
                              "session_id IN " +
                              in + " GROUP BY session_id");
      keys.BindDatetime(0, keys_from_us);
      BindAll(keys, ids, 1);
      keys.Execute();
      for (size_t i = 0; i < keys.row_count(); ++i) {
        out[keys.Text(i, 0)].text += " keys " + std::to_string(keys.Int64(i, 1)) + " " + keys.Text(i, 2);
      }
      for (const char* table : kTurnTables) {
        MysqlStatement turns(admin_.Handle(shard), TurnsDigestSql(table, " IN " + in));
        BindAll(turns, ids);
        turns.Execute();
        for (size_t i = 0; i < turns.row_count(); ++i) {
          out[turns.Text(i, 0)].text +=
              std::string(" ") + table + " " + std::to_string(turns.Int64(i, 1)) + " " + turns.Text(i, 2);
        }
      }
      for (const char* table : kHomeTables) {
        MysqlStatement rows(admin_.Handle(shard), HomeTableDigestSql(table, " IN " + in));
        BindAll(rows, ids);
        rows.Execute();
        for (size_t i = 0; i < rows.row_count(); ++i) {
          out[rows.Text(i, 0)].text +=
              std::string(" ") + table + " " + std::to_string(rows.Int64(i, 1)) + " " + rows.Text(i, 2);
        }
      }
      MysqlStatement entries(admin_.Handle(shard), EntriesDigestSql(" IN " + in));
      BindAll(entries, ids);
      entries.Execute();
      for (size_t i = 0; i < entries.row_count(); ++i) {
        out[entries.Text(i, 0)].text += " entries " + std::to_string(entries.Int64(i, 1)) + " " + entries.Text(i, 2);
      }
      return out;
    });
  }

  // Step 3: the same rows on both sides, and the source consistent (as many
  // messages as its count says, seqs 1..count). A copy that differs goes,
  // its source is thawed.
  std::vector<std::string> Verify(const std::vector<std::string>& ids, BatchOutcome* out) {
    const int64_t keys_from = NowMicros() + int64_t{kKeyMarginS} * 1000000;
    const std::map<std::string, Print> a = Fingerprints(from_, ids, keys_from);
    const std::map<std::string, Print> b = Fingerprints(to_, ids, keys_from);
    std::vector<std::string> good, bad;
    for (const std::string& id : ids) {
      auto x = a.find(id), y = b.find(id);
      const bool same = x != a.end() && y != b.end() && x->second.Consistent() && x->second.text == y->second.text;
      (same ? good : bad).push_back(id);
    }
    if (!bad.empty()) {
      admin_.OnShard(to_, "dropping copies that do not match", [&] {
        Transaction txn(admin_.LinkTo(to_));
        for (const UnitTable& t : kUnitTables) {
          MysqlStatement st(admin_.Handle(to_), DeleteUnitRows(t, " IN " + Placeholders(bad.size())));
          BindAll(st, bad);
          st.Execute();
        }
        MysqlStatement st(admin_.Handle(to_), "DELETE FROM sessions WHERE state = 'incoming' AND session_id IN " +
                                                  Placeholders(bad.size()));
        BindAll(st, bad);
        st.Execute();
        txn.Commit();
      });
      Unfreeze(bad);
      for (const std::string& id : bad) out->mismatched.push_back(SessionId::FromBytes(id).text());
    }
    return good;
  }

  // Step 4: the copies become authoritative, marked as arrived from the
  // source until step 6.
  void Activate(const std::vector<std::string>& ids) {
    admin_.OnShard(to_, "activating copies", [&] {
      MysqlStatement st(admin_.Handle(to_),
                        "UPDATE sessions SET state = 'active', arrived_from = ? "
                        "WHERE state = 'incoming' AND session_id IN " +
                            Placeholders(ids.size()));
      st.BindString(0, from_.name);
      BindAll(st, ids, 1);
      st.Execute();
    });
  }

  // Step 5: the sources that are still frozen become tombstones naming the
  // target and lose their rows, in one transaction. Returns them.
  std::vector<std::string> TombstoneSources(const std::vector<std::string>& ids) {
    return admin_.OnShard(from_, "tombstoning sources", [&] {
      Transaction txn(admin_.LinkTo(from_));
      MysqlStatement lock(admin_.Handle(from_),
                          "SELECT session_id FROM sessions WHERE state = 'moving' AND session_id IN " +
                              Placeholders(ids.size()) + " FOR UPDATE");
      BindAll(lock, ids);
      lock.Execute();
      std::vector<std::string> frozen;
      for (size_t i = 0; i < lock.row_count(); ++i) frozen.push_back(lock.Text(i, 0));
      if (frozen.empty()) return frozen;
      const std::string in = Placeholders(frozen.size());
      MysqlStatement st(admin_.Handle(from_),
                        "UPDATE sessions SET state = 'moved', moved_to = ?, moved_epoch = ?, "
                        "title = NULL, metadata = '{}' WHERE state = 'moving' AND session_id IN " +
                            in);
      st.BindString(0, to_.name);
      st.BindInt64(1, static_cast<int64_t>(epoch_));
      BindAll(st, frozen, 2);
      st.Execute();
      for (const UnitTable& t : kUnitTables) {
        MysqlStatement del(admin_.Handle(from_), DeleteUnitRows(t, " IN " + in));
        BindAll(del, frozen);
        del.Execute();
      }
      txn.Commit();
      return frozen;
    });
  }

  ClusterAdmin& admin_;
  const std::vector<std::string>& ids_;
  const ShardEntry& from_;
  const ShardEntry& to_;
  const uint64_t epoch_;
  std::vector<std::string> slow_;
};

void ClusterAdmin::CopyEntries(const ShardEntry& from, const ShardEntry& to, const std::string& id) {
  MysqlStatement read(Handle(from),
                      "SELECT * FROM session_list WHERE home_id = ? AND session_id > ? ORDER BY session_id LIMIT ?");
  int id_col = -1;
  for (std::string after;;) {
    read.BindBytes(0, id);
    read.BindBytes(1, after);
    read.BindInt64(2, kMessagesPerRead);
    read.Execute();
    if (read.row_count() == 0) return;
    if (id_col < 0) {
      for (int c = 0; c < read.column_count(); ++c) {
        if (read.column_name(c) == "session_id") id_col = c;
      }
    }
    Transaction txn(LinkTo(to));
    InsertRows(to, "session_list", read, {});
    txn.Commit();
    after = read.Text(read.row_count() - 1, id_col);
  }
}

ClusterAdmin::BatchOutcome ClusterAdmin::MoveBatch(const std::vector<std::string>& ids, const ShardEntry& from,
                                                   const ShardEntry& to, uint64_t epoch) {
  return BatchMove(*this, ids, from, to, epoch).Run();
}

void ClusterAdmin::FinishBatchArrival(const ShardEntry& shard, const std::vector<std::string>& ids) {
  if (ids.empty()) return;
  OnShard(shard, "finishing arrivals", [&] {
    const std::string in = Placeholders(ids.size());
    Transaction txn(LinkTo(shard));
    MysqlStatement drop(Handle(shard), "DELETE FROM sessions WHERE state = 'deleted' AND session_id IN " + in +
                                           " AND NOT EXISTS (SELECT 1 FROM idempotency_keys k "
                                           "WHERE k.session_id = sessions.session_id)");
    BindAll(drop, ids);
    drop.Execute();
    MysqlStatement clear(Handle(shard), "UPDATE sessions SET arrived_from = NULL WHERE session_id IN " + in);
    BindAll(clear, ids);
    clear.Execute();
    txn.Commit();
  });
}

}  // namespace chatllm
