#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "base/config.h"
#include "store/cluster_map.h"
#include "store/connection.h"
#include "store/mysql_statement.h"
#include "store/shard_link.h"
#include "store/sharded_store.h"

namespace chatllm {

// An operator command that cannot proceed; the message is one line for the
// operator ("shard c is unreachable: ...").
class AdminError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ShardReport {
  std::string name;
  bool reachable = false;
  std::string error;
  int64_t fence = 0;
  int schema_version = 0;
  int64_t sessions = 0;    // Active sessions.
  int64_t messages = 0;    // Messages of active sessions.
  int64_t in_transit = 0;  // Sessions moving away or incoming.
};

struct RebalanceOptions {
  bool dry_run = false;
  int batch = 200;       // Sessions read per scan query.
  int move_batch = 100;  // Sessions moved together (frozen, copied, activated); 1: one by one.
  double rate = 0;       // Max sessions moved per second; 0 = as fast as possible.
  // Called after every moved session and at the end: (moved, total).
  std::function<void(int64_t, int64_t)> progress;
};

struct RebalanceResult {
  int64_t misplaced = 0;  // Sessions found on a shard that does not own them.
  int64_t moved = 0;
  int64_t gone = 0;  // Deleted by a client before they could be moved.
  double seconds = 0;
  uint64_t final_epoch = 0;  // Epoch published when the move completed; 0 if none.
  // Upgrading to homes (ClusterMap::homes): sessions listed on their homes,
  // and the epoch of the map that says the homes are complete (0: none).
  int64_t listed = 0;
  int64_t keys = 0;  // API keys given their units.
  uint64_t homes_epoch = 0;
};

struct RelistResult {
  int64_t listed = 0;  // Sessions that were missing from their user's list.
  int64_t marked = 0;  // Live entries of sessions that do not exist, left for the apps to remove.
};

struct VerifyReport {
  int64_t sessions = 0;
  int64_t messages = 0;
  int64_t to_move = 0;     // On their previous owner while the map is moving: rebalance moves them.
  int64_t in_transit = 0;  // Frozen or half-copied by an interrupted move.
  // List entries 'pending' or 'deleting': creates and deletes in flight, or
  // ones that failed half way (the app settles them when it reads them).
  int64_t unsettled_entries = 0;
  // Empty when everything is in place. A session active on two shards is
  // always one (with whether the copies agree); sessions still to move in a
  // join or drain are counted in `to_move`, not listed.
  std::vector<std::string> problems;
};

// The operator's side of the cluster (shardctl): reads and publishes shard
// maps, raises fences, moves sessions between shards and verifies placement.
// Connects to every shard with the migrate account. Not thread-safe.
//
// Publishing epoch E writes the map to every shard, then raises every
// shard's fence to E. Raising a fence takes the fence row's exclusive lock,
// so it waits for every write in flight; after it, a write routed with an
// older map is refused by the shard itself.
//
// Moving a session from A to B (MoveSession) survives a crash between any
// two steps; rerunning it finishes or redoes the move:
//   1. A: state active -> moving (under the session row lock: appends in
//      flight commit first; later writes wait for the move).
//   2. B: drop any leftover of an earlier attempt (never an active copy);
//      copy the session row as 'incoming' (invisible to the app), its
//      messages in batches and its idempotency keys.
//   3. Verify: message count, max seq, a checksum of every column of every
//      message and of the session row equal on A and B, and the count equal
//      to the session's message_count.
//   4. B: incoming -> active, marked as arrived from A. From here B is
//      authoritative; a delete on B keeps a 'deleted' tombstone while the
//      mark is there (A still holds a frozen copy).
//   5. A: moving -> moved (a tombstone naming B) and its rows deleted, in
//      one transaction.
//   6. B: the mark goes (and a tombstone that only the mark kept).
// A rerun that finds B already active (a crash between 4 and 5) deletes A's
// rows only if B's history begins with A's frozen one, row for row; a
// source is never deleted on the strength of a copy that differs. One that
// finds B 'deleted' (deleted after step 4) deletes A's frozen copy and never
// copies it again: a deleted session does not come back. Reads meanwhile
// take B's 'deleted' as final (Store: placement kGone).
// A 'deleted' tombstone (kept for a create's Idempotency-Key) moves by
// copying it to B as it is, then tombstoning A: it takes no writes.
// At any time at most one shard holds the session 'active', and only an
// active session accepts writes: history is never split.
class ClusterAdmin {
 public:
  explicit ClusterAdmin(const Config& config);
  ~ClusterAdmin();

  // Connect and read timeouts of the links made from now on (the monitor
  // must not wait 10 s on a frozen primary; the defaults suit moves).
  void SetTimeouts(int connect_s, int read_s) {
    options_.connect_timeout_s = connect_s;
    options_.read_timeout_s = read_s;
    options_.write_timeout_s = read_s;
  }

  // Newest map stored on any reachable shard (a shard whose primary does
  // not answer: on its replicas), or the seed map (epoch 0).
  std::shared_ptr<const ClusterMap> LoadMap();
  // See the class comment. Throws AdminError if a shard cannot be updated
  // (rerun the command when it is back).
  void Publish(const ClusterMap& map, const ClusterMap* previous);
  // The same, for a change of primary (shard_ha.cc): shards that do not
  // answer are skipped (a failover must not wait for another shard's
  // outage; they read the map from the others when they are back), but
  // `required` (the shard whose primary changed) must take it; `except` is
  // not written. Returns the shards skipped.
  std::vector<std::string> PublishWhereReachable(const ClusterMap& map, const std::string& required,
                                                 const std::string& except = "");

  std::vector<ShardReport> Status(const ClusterMap& map);
  // Applies sql/ migrations to `entry` with the migrate account.
  void Migrate(const ShardEntry& entry);

  // Migrates the new shard and publishes the next epoch with it joining.
  // Idempotent: rerun after a failure republishes the same map.
  std::shared_ptr<const ClusterMap> AddShard(const ShardEntry& entry);
  // Publishes the next epoch with `name` draining.
  std::shared_ptr<const ClusterMap> Drain(const std::string& name);
  // Publishes the next epoch without `name`, which must be drained and empty.
  std::shared_ptr<const ClusterMap> RemoveShard(const std::string& name);
  // Moves every session that is not on its owner shard, then publishes the
  // map with joining shards active and draining ones drained. Resumable.
  // On a deployment upgraded from a release without homes, then lists every
  // session on its user's home and publishes the map that says so.
  RebalanceResult Rebalance(const RebalanceOptions& options);
  // Repairs the users' lists against the sessions (what verify reports):
  // lists every session missing from its user's list, recounts every home,
  // and marks live entries of sessions that do not exist for the apps to
  // remove on their next read. Every shard must be up; under the rebalance
  // lock.
  RelistResult Relist();
  // Every session active on exactly one shard, its owner; nothing in
  // transit; counts consistent.
  VerifyReport Verify();

  // Sessions active on more than one shard right now, read without the
  // rebalance lock, so it can run while sessions move. A move never makes a
  // session active on two shards at once, but shards are read one after the
  // other: a session seen active on X, then on Y, is reported only if X
  // still holds it active when read again after Y (a move from X to Y
  // freezes it on X before Y holds it). Returns the ids (text) and sets
  // *sessions to how many sessions were seen active. (A 'deleted' tombstone
  // is briefly on two shards while it moves: harmless, both hold the same
  // key; verify reports one left so.)
  std::vector<std::string> Audit(int64_t* sessions);

  // Where `session_text` is on each candidate shard ("active", "moving",
  // "incoming", "moved", "absent").
  std::map<std::string, std::string> Locate(const std::string& session_text, const std::string& session_bytes);

  // Users and API keys (chatllm-admin; auth_admin.cc). They are copied to
  // every shard of the map: each write goes to all of them, and throws
  // AdminError naming the shards it could not reach (after writing the
  // others; `SyncAuth` repairs them once they are back).
  struct UserInfo {
    std::string id;  // 16 raw bytes.
    std::string name;
    int64_t created_us = 0;
    bool disabled = false;
    int keys = 0;
  };
  struct KeyInfo {
    std::string id;  // 8 raw bytes.
    std::string user;
    std::string label;
    int64_t created_us = 0, expires_us = 0, revoked_us = 0;  // 0: none.
  };
  // Creates the user, or returns the existing one of that name.
  UserInfo AddUser(const std::string& name);
  std::vector<UserInfo> ListUsers();
  void SetUserDisabled(const std::string& name, bool disabled);
  // A new key for the user; returns it in full (the only time it is shown).
  std::string CreateKey(const std::string& user, const std::string& label, int64_t expires_us);
  std::vector<KeyInfo> ListKeys(const std::string& user);
  void RevokeKey(const std::string& key_id);
  // Usage and budgets (src/usage_admin.cc; sql/011_usage.sql). A budget of
  // the user (`key_id` empty) or of one of its keys (8 raw bytes); every
  // limit -1 removes it. Written on the user's home.
  void SetBudget(const std::string& user, const std::string& key_id, const UsageBudget& budget);
  struct BudgetInfo {
    UsageBudget budget;
    UsageState::Used used;
  };
  std::vector<BudgetInfo> Budgets(const std::string& user);
  struct UsageLine {
    std::string user;  // Its name ("" when no user of that id is known).
    UsageRow row;
    std::string user_id;  // 16 raw bytes.
    bool moving = false;  // Read from a home frozen by a move.
  };
  // Every user's ledger (or `user`'s) between two UTC days, every shard at once.
  std::vector<UsageLine> Usage(const std::string& from, const std::string& to, const std::string& user);
  // Settles or releases every expired hold (their turns died); how many.
  int ReapUsage();
  // Copies every user and key to every shard (upserts: revocations win).
  // Returns how many shards were written.
  int SyncAuth();
  // Copies the users and keys of an active shard to `to` (add-shard does).
  void CopyAuth(const ClusterMap& map, const ShardEntry& to);

 private:
  enum class MoveOutcome { kMoved, kGone };
  // One session's move (the steps of the class comment), in
  // src/session_move.cc.
  class SessionMove;
  // What a session's copy on one shard holds: its messages (up to a seq),
  // a digest of their every column, and its session row; for a user's home,
  // its list entries and their count (`entries`).
  struct Fingerprint {
    int64_t messages = 0, max_seq = 0, message_count = 0;
    std::string digest, row, entries;
    bool operator==(const Fingerprint& o) const {
      return messages == o.messages && max_seq == o.max_seq && message_count == o.message_count && digest == o.digest &&
             row == o.row && entries == o.entries;
    }
    std::string Text() const {
      return std::to_string(messages) + " messages to seq " + std::to_string(max_seq) + ", count " +
             std::to_string(message_count) + ", digest " + digest;
    }
  };
  Fingerprint FingerprintOf(const ShardEntry& shard, const std::string& id, int64_t up_to_seq);

  MoveOutcome MoveSession(const std::string& id, const ShardEntry& from, const ShardEntry& to, uint64_t epoch);
  // Many sessions from one shard to another, each step in a few round trips
  // for the whole batch (src/batch_move.cc); the sessions it cannot move
  // that way go through MoveSession. Throws AdminError after moving the
  // rest if a copy did not match its source (those stay on the source).
  class BatchMove;
  struct BatchOutcome {
    int64_t moved = 0, gone = 0;
    std::vector<std::string> mismatched;  // Session ids (text) left on the source.
  };
  BatchOutcome MoveBatch(const std::vector<std::string>& ids, const ShardEntry& from, const ShardEntry& to,
                         uint64_t epoch);
  // Step 6 for a batch on `shard`.
  void FinishBatchArrival(const ShardEntry& shard, const std::vector<std::string>& ids);
  // The rows `read` returned, every column by name, INSERTed into `table` on
  // `to` (multi-row); `replace` gives some columns another value (nullopt:
  // NULL).
  void InsertRows(const ShardEntry& to, const std::string& table, const MysqlStatement& read,
                  const std::map<std::string, std::optional<std::string>>& replace);
  // A session found on a shard that does not own it (Rebalance).
  struct Misplaced {
    std::string id;
    const ShardEntry* from;
    const ShardEntry* to;
    int64_t messages;  // Its message_count (a home: its list entries) when scanned.
  };
  // The upgrade to homes (src/homes_fill.cc): every active session listed on
  // its user's home, which is created if needed; returns the entries added.
  // ListOnHome: one home's, from rows `rows` of `scan` (FillHomes' query).
  int64_t FillHomes(const ClusterMap& map);
  int64_t MarkPhantoms(const ClusterMap& map);
  // Publishes `map` at the next epoch with the homes at `homes`.
  std::shared_ptr<const ClusterMap> PublishHomes(const ClusterMap& map, ClusterMap::Homes homes);
  int64_t ListOnHome(const ClusterMap& map, const std::string& home, const MysqlStatement& scan,
                     const std::vector<size_t>& rows);
  // Copies home `id`'s list entries from `from` to `to`, in pages by
  // session id, each page one transaction of multi-row INSERTs.
  void CopyEntries(const ShardEntry& from, const ShardEntry& to, const std::string& id);
  // A batch holds at most this many messages (and at least one session):
  // copying them takes a few tens of milliseconds, which is how long a write
  // to a session of the batch may have to wait.
  static constexpr int64_t kMessagesPerBatch = 2000;
  // Every shard's sessions that `map` places elsewhere; thaws (unless
  // `dry_run`) sessions frozen on their owner by an interrupted move.
  std::vector<Misplaced> FindMisplaced(const ClusterMap& map, int batch, bool dry_run);
  // Where session `id` (bytes) stands on `shard`: "active", "moving",
  // "incoming", "moved", "deleted" or "absent".
  std::string SessionState(const ShardEntry& shard, const std::string& id);
  // Step 6 for session `id` on `shard`: its arrival marker goes, and a
  // 'deleted' tombstone that only the marker kept.
  void FinishArrival(const ShardEntry& shard, const std::string& id);
  // Step 6 for every marker a rebalance stopped between steps 5 and 6 left
  // behind (see the class comment).
  void FinishArrivals(const ClusterMap& map);
  // What verify reads of the users' lists (sql/009_homes.sql): each
  // active session's entry as it must be, (home id, session id), the homes
  // held, and the entries held, with their state.
  struct ListFacts {
    std::vector<std::pair<std::string, std::string>> expected;
    std::set<std::string> homes;
    std::map<std::pair<std::string, std::string>, std::string> entries;
  };
  // Verify's reading of one shard: where each session stands (into
  // *where: id -> (shard, state)), its lists, and its per-shard
  // consistency problems.
  void VerifyShard(const ShardEntry& shard,
                   std::map<std::string, std::vector<std::pair<std::string, std::string>>>* where, ListFacts* lists,
                   VerifyReport* report);
  // Verify's check of the lists against the sessions, across shards.
  void VerifyLists(const ClusterMap& map, const std::vector<ListFacts>& lists, VerifyReport* report);
  // Runs `fn(shard)` for each of `shards` at once, a thread each, each on
  // its shard's own connection (made here first: the threads only look
  // theirs up). Returns each shard's failure (null: none), in their order.
  std::vector<std::exception_ptr> InParallel(const std::vector<ShardEntry>& shards,
                                             const std::function<void(const ShardEntry&)>& fn);
  // Runs `fn` on every shard of the current map, in parallel, and on any
  // shard the map gains meanwhile; AdminError naming the shards that failed,
  // after trying all.
  void OnEveryShard(const char* what, const std::function<void(const ShardEntry&)>& fn);
  const ShardEntry* FirstActiveShard(const ClusterMap& map, const std::string& except);
  void CopyAuthBetween(const ShardEntry& from, const ShardEntry& to);
  // The migrate account's connection to `entry` (remade if its address
  // changed), with its prepared statements.
  ShardLink& LinkTo(const ShardEntry& entry);
  MYSQL* Handle(const ShardEntry& entry) { return LinkTo(entry).Handle(); }
  // `sql` prepared on the shard's connection once and reused.
  MysqlStatement& Stmt(const ShardEntry& entry, const std::string& sql) { return LinkTo(entry).Statement(sql); }
  // Runs `fn`, turning database errors into AdminErrors naming the shard and
  // dropping the shard's prepared statements (a failed one may be
  // mid-result; on a lost connection the connection too).
  template <typename Fn>
  auto OnShard(const ShardEntry& entry, const char* what, Fn&& fn) -> decltype(fn());
  std::shared_ptr<const ClusterMap> Next(const ClusterMap& map, std::vector<ShardEntry> shards);
  // Every shard of `map` but `except` is reachable and at exactly the schema
  // this binary expects: a move copies every column it knows, so an older
  // schema lacks some and a newer one has some it would drop. Throws
  // AdminError naming the first that is not.
  void RequireSchemas(const ClusterMap& map, const std::string& except = "");
  // Takes (or releases) the 'chatllm.rebalance' lock on every shard: one
  // rebalance or verify at a time.
  void LockAll(const ClusterMap& map);
  void UnlockAll(const ClusterMap& map);

  const Config config_;  // A copy: callers may pass a temporary.
  DbOptions options_;
  std::map<std::string, std::unique_ptr<ShardLink>> links_;
  // The app's store (the app's account): keys and users as placement units,
  // written where the app reads them (ShardedStore::CreateKeyUnit...).
  std::unique_ptr<ShardedStore> units_;
  ShardedStore& Units();
  // Until the homes are complete, chatllm-admin's writes of users and keys
  // and rebalance's merge of their copies into units (FillKeys, up to the
  // publish of "complete") exclude each other: a named lock on the map's
  // first shard by name. Held from the constructor (if `map` is not
  // complete) to the destructor.
  class AuthLock {
   public:
    AuthLock(ClusterAdmin& admin, const ClusterMap& map);
    ~AuthLock();
    AuthLock(const AuthLock&) = delete;
    AuthLock& operator=(const AuthLock&) = delete;

   private:
    ClusterAdmin& admin_;
    std::optional<ShardEntry> shard_;
  };
  // The map, and the auth lock if the homes are not complete (the map is
  // read again under it).
  std::shared_ptr<const ClusterMap> MapForAuth(std::optional<AuthLock>* lock);
  // Every id the name has (with its creation time), from every shard that
  // answers (two concurrent `user add` can leave two); AdminError if none
  // answers.
  std::vector<UserInfo> UsersNamed(const std::string& name);
  // Best effort, once the homes are complete: the copies too, for a binary
  // of an older release still reading them (a warning if a shard misses it).
  void CopiesToo(const char* what, const std::function<void(const ShardEntry&)>& fn);
  // Once the homes are complete: every key unit (of `user_id`, all if
  // empty) and every home's disabled flag, from every shard in parallel.
  std::vector<KeyInfo> ListKeyUnits(const std::string& user_id);
  std::map<std::string, bool> HomesDisabled();
  // The upgrade's merge of the copies of users and keys into their units
  // (src/homes_fill.cc): every key gets its unit (revoked if any copy is),
  // every user disabled on any copy is disabled on the home.
  int64_t FillKeys(const ClusterMap& map);
};

template <typename Fn>
auto ClusterAdmin::OnShard(const ShardEntry& entry, const char* what, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const MysqlError& e) {
    if (auto it = links_.find(entry.name); it != links_.end()) it->second->AfterError(ClassifyMysqlErrno(e.code()));
    throw AdminError("shard " + entry.name + ": " + what + " failed: " + e.what());
  } catch (const DbError& e) {
    if (auto it = links_.find(entry.name); it != links_.end()) it->second->AfterError(e.kind());
    if (e.kind() == DbErrorKind::kQuery) throw AdminError("shard " + entry.name + ": " + what + " failed: " + e.what());
    throw AdminError("shard " + entry.name + " is unreachable (" + what + "): " + e.what());
  }
}

}  // namespace chatllm
