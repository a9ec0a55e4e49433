#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/config.h"
#include "base/instance.h"
#include "store/cluster_map.h"
#include "store/connection.h"
#include "store/store.h"

namespace chatllm {

struct Prepared;  // A connection's statement catalogue (src/shard.h).

// The Store on the shards. One per worker thread: it owns one connection per
// shard and the prepared statements on it (not thread-safe).
//
// Routing (src/routing.h): the newest shard map the store has seen
// (ClusterMap) names each session's owner and, during a move, its previous
// owner; an operation tries them in that order. Each shard answers for
// itself where the session stands (sql/002, 005, 007): here, absent, moving
// (a write waits up to move_wait_ms and retries), frozen (a read is served
// once the shard's fence shows the map is the newest), moved or fenced (the
// map is stale: reload it from the shards and retry), deleted (gone: no
// other shard is asked). Writes carry the map's epoch and run as one fenced
// stored-function call, or a Transaction on the session's shard.
//
// Deadlocks and lock waits are re-run up to max_retries; reads are re-run
// once on a lost connection; writes never are, because a lost connection
// leaves their outcome unknown.
class ShardedStore : public Store {
 public:
  // Starts from map_file if configured (trusted until the first periodic
  // refresh or a shard's refusal), else from the seed shards (all active,
  // epoch 0), which the first operation replaces with the newest stored map.
  // No I/O here. Throws ConfigError if the seeds or the file are invalid.
  explicit ShardedStore(const Config& config);
  ~ShardedStore() override;
  ShardedStore(const ShardedStore&) = delete;
  ShardedStore& operator=(const ShardedStore&) = delete;

  // A keyed create's id is derived from its key: before it is created on its
  // owner, the shard the map may still hold it on (a move in progress) is
  // asked first, so a retry finds the earlier attempt's session instead of
  // making a second one.
  //
  // Lists it on the user's home first (sql/009_homes.sql: the entry
  // 'pending', counted against `max_sessions` under the home row's lock),
  // then creates it, then marks the entry 'live': the session's shard and
  // the home's, whatever the number of shards.
  IdempotencyResult CreateSession(const SessionId& id, const SessionRecord& session, const IdempotencyKey* idem,
                                  int status, const std::string& response, int64_t max_sessions) override;
  std::optional<SessionRecord> GetSession(const SessionId& id, const UserId& user) override;
  // Marks the home's entry 'deleting', deletes the session, removes the entry.
  bool DeleteSession(const SessionId& id, const UserId& user) override;
  AppendResult Append(const SessionId& id, const UserId& user, const AppendRequest& request) override;
  void FailTurnKey(const SessionId& id, const UserId& user, const IdempotencyKey& key, int64_t attempt) override;
  std::optional<std::vector<MessageRecord>> ListMessages(const SessionId& id, int64_t after, int limit,
                                                         const UserId& user) override;
  std::optional<std::vector<MessageRecord>> ReadMessages(const SessionId& id, const std::vector<int64_t>& seqs,
                                                         const UserId& user) override;
  // One statement: a primary-key read and a bounded index range, whatever
  // the history length.
  std::optional<TurnContext> LoadContext(const SessionId& id, int limit, int64_t token_budget,
                                         const UserId& user) override;
  // One index range read on the user's home (plus, for an entry a failed
  // create or delete left, a look at its session's shard). Until the map
  // says homes are complete (ClusterMap::homes), every shard's sessions
  // instead, merged.
  SessionPage ListSessions(const UserId& user, const SessionCursor& cursor, int limit) override;
  // The key's unit and the user's home: two shards, found like sessions,
  // whatever the number of shards. Before the homes are complete: from the
  // shard the key id hashes to, or from any other when that one cannot
  // answer (every shard has a copy), then from its unit if no copy has it.
  std::optional<KeyRecord> LookupApiKey(const std::string& key_id) override;
  // Durable turns (src/turns.cc): each one fenced statement on the
  // session's shard (ReadTurn two reads, and a third to end a turn whose
  // lease ran out).
  bool OpenTurn(const SessionId& id, const UserId& user, int64_t turn_id, int64_t user_seq, int64_t producer,
                int64_t lease_ms) override;
  TurnWrite FlushTurn(const SessionId& id, const UserId& user, int64_t turn_id, int64_t producer, int64_t first,
                      const std::vector<std::string>& texts, int64_t lease_ms) override;
  TurnWrite CloseTurn(const SessionId& id, const UserId& user, int64_t turn_id, int64_t producer,
                      std::string_view state) override;
  std::optional<TurnRead> ReadTurn(const SessionId& id, const UserId& user, int64_t turn_id, int64_t after,
                                   int limit) override;
  bool CancelTurn(const SessionId& id, const UserId& user, int64_t turn_id) override;
  // Usage (src/usage.cc): one fenced call or read on the user's home each;
  // ReapUsage also reads each expired hold's session.
  int HoldUsage(const UserId& user, const UsageHold& hold, UsageRoom* room) override;
  bool SettleUsage(const UserId& user, const std::string& hold_id, const UsageAmount& used) override;
  void ReleaseUsage(const UserId& user, const std::string& hold_id) override;
  void AddUsage(const UserId& user, const std::string& key_id, const UsageAmount& used) override;
  int ReapUsage(const UserId& user) override;
  std::vector<UsageRow> ReadUsage(const UserId& user, const std::string& from, const std::string& to) override;
  UsageState ReadUsageState(const UserId& user, const std::string& key_id) override;
  // For chatllm-admin: sets (every limit -1: removes) a budget on the user's
  // home; the user's budgets (its own and its keys').
  void SetBudget(const UserId& user, const UsageBudget& budget);
  std::vector<UsageBudget> ReadBudgets(const UserId& user);
  // Connects to (or pings) every shard of the map and reads its schema version.
  std::vector<ShardStatus> CheckShards() override;
  uint64_t last_epoch() const override { return last_epoch_; }

  // API keys as placement units, for chatllm-admin (sql/009_homes.sql; the
  // copies in api_keys are chatllm-admin's business): a new key's unit is
  // created on its owner under the newest map; a revocation is written
  // there (false: no unit for that key); a user's disable on the user's
  // home. Each touches one shard, found like a session's.
  void CreateKeyUnit(const std::string& key_id, const UserId& user, const std::string& secret_sha256,
                     const std::string& label, int64_t expires_us, int64_t created_us);
  bool RevokeKeyUnit(const std::string& key_id);
  void SetUserDisabled(const UserId& user, bool disabled);

  // Reads the newest map stored on the reachable shards and adopts it if it
  // is newer. Returns true if the map changed.
  bool RefreshMap();
  // Receives the timing of every statement; may be null. Not owned.
  void SetObserver(Observer* observer) { observer_ = observer; }
  // The map in use.
  std::shared_ptr<const ClusterMap> map() const { return map_; }

 private:
  // Creates unit `id` on its owner (src/routing.h).
  template <typename Create>
  void CreateUnit(const SessionId& id, const char* what, Create&& create);
  // Before the homes are complete: the copies of the key on every shard.
  std::optional<KeyRecord> LookupKeyCopies(const std::string& key_id);
  // The key's unit, and whether the user's home says the user is disabled.
  std::optional<KeyRecord> LookupKeyUnit(const std::string& key_id);
  // The key's row on shard `name` (DbError if it cannot be asked).
  std::optional<KeyRecord> LookupKeyOn(const std::string& name, const std::string& key_id);
  // The key on its joining owner and on the first of `others` that answers,
  // merged (found on either; revoked, disabled or expiring as the stricter
  // says); DbError if none of `others` answers.
  std::optional<KeyRecord> LookupKeyWhileJoining(const std::string& joining, const std::vector<std::string>& others,
                                                 const std::string& key_id);
  class Shard;

  // The user's home (src/homes.cc). HomeCall runs `fn(Prepared&, epoch)`
  // -> Placed<int> on the home like Routed, creating the home first if no
  // shard holds it.
  template <typename Fn>
  int HomeCall(const UserId& user, const char* what, Fn&& fn);
  // Creates the home on its owner, unless a shard it may be moving from
  // still holds it or may still take its creation (that shard's fence is
  // behind our map): then waits, as a keyed create does.
  void EnsureHome(const SessionId& home, const UserId& user);
  // chat_home_add / _set / _remove / _confirm (sql/009_homes.sql); `from`
  // empty: any state; `min_age_s`: only an entry unchanged for that long.
  int HomeAdd(const SessionId& id, const SessionRecord& session, int64_t max_sessions);
  int HomeSet(const UserId& user, const SessionId& id, const std::string& from, const std::string& to, int min_age_s);
  int HomeRemove(const UserId& user, const SessionId& id, const std::string& from, int min_age_s);
  int HomeConfirm(const UserId& user, const SessionId& id, const SessionRecord& session, const std::string& from);
  // After a delete found the session: its entry goes, in whatever state (best effort).
  void HomeRemoveAfterDelete(const UserId& user, const SessionId& id);
  // An entry that is not 'live' (`state`, last changed `age_s` ago), read
  // by a list: whether the list shows it (its session exists); repaired
  // when its session says what it is and it is older than the orphan age.
  enum class Settled { kShown, kHidden, kRemoved };
  Settled SettleEntry(const UserId& user, const SessionId& id, const std::string& state, int64_t age_s);
  // At the limit: settles up to 20 entries old enough to be left by a
  // failed create or delete. True if one was removed.
  bool RepairStaleEntries(const UserId& user);
  SessionPage ListFromHome(const UserId& user, const SessionCursor& cursor, int limit);
  // Before homes are complete (ClusterMap::homes): every shard, merged.
  SessionPage ListEveryShard(const UserId& user, const SessionCursor& cursor, int limit);
  int64_t CountEveryShard(const UserId& user);
  bool DeleteOnItsShard(const SessionId& id, const UserId& user);
  IdempotencyResult CreateOnItsShard(const SessionId& id, const SessionRecord& session, const IdempotencyKey* idem,
                                     int status, const std::string& response);
  // kGone: deleted here; no other shard is asked (sql/007_acknowledged.sql).
  // kFrozen: a read found the session frozen here by a move: served, once
  // this shard's fence shows the map used is the newest.
  enum class Placement { kHere, kAbsent, kMoving, kMoved, kStale, kGone, kFrozen };
  template <typename T>
  struct Placed {
    Placement placement;
    T value;
  };

  Shard& ShardNamed(const std::string& name);
  // Runs `fn(Prepared&, epoch)` on the shards that may hold `id`, in order,
  // until one says the session is here (src/routing.h).
  template <typename T, typename Fn>
  std::optional<T> Routed(const SessionId& id, bool is_read, const char* what, Fn&& fn);
  // Runs `fn(Prepared&)` on one shard with the retry policy above.
  template <typename Fn>
  auto OnShard(Shard& shard, bool is_read, const char* what, Fn&& fn);
  bool FenceAhead(const std::string& shard, uint64_t epoch);
  // `shard`'s fence is ahead of every map we can read (one is being
  // published, or its shards do not answer): waits `*backoff_us` (doubled
  // up to 20 ms), or throws kUnavailable once `deadline` (monotonic us,
  // [cluster] move_wait_ms from the request's start) would pass.
  void WaitForNewerMap(const std::string& shard, int64_t deadline, int64_t* backoff_us);
  // `shard` refused a write as read-only: its primary is being switched or
  // has failed over. Adopts a newer map if one is readable (its primary may
  // be another server), else waits as WaitForNewerMap; throws kUnavailable
  // at `deadline`. Nothing was written, so the caller tries again.
  void WaitForPrimary(const std::string& shard, int64_t deadline, int64_t* backoff_us);
  // The newest map stored on `entry`'s replicas, for when its primary does
  // not answer (the map of a failover is on the promoted replica).
  std::shared_ptr<const ClusterMap> MapFromReplicas(const ShardEntry& entry, std::shared_ptr<const ClusterMap> newest);
  // Makes `newest` the map in use (RefreshMap, WaitForPrimary).
  void Adopt(std::shared_ptr<const ClusterMap> newest);
  std::vector<std::string> AllShardNames() const;
  // `fn(Prepared&, home) -> T` as a read on the user's home (src/usage.cc).
  template <typename T, typename Fn>
  std::optional<T> HomeRead(const UserId& user, const char* what, Fn&& fn);
  // One expired hold: settled from its stored answer, else released.
  void ReapOne(const UserId& user, const std::string& hold_id, const std::string& session_id);
  void MaybeRefresh();
  // Now and then, after a keyed claim on `shard`: forgets expired keys
  // there (chat_expire_keys), in a statement of its own whose failure is
  // only logged.
  void MaybeExpireKeys(const std::string& shard);
  // Now and then, after a turn opened on `shard`: forgets turns that ended
  // more than [turns] retention_s ago, with their events.
  void MaybeExpireTurns(const std::string& shard);
  // One attempt at creating `id` on `owner` (with its key, in one
  // transaction): {true, outcome} when the shard decided, {false, ...} when
  // its fence says the map used is stale (src/sessions.cc).
  std::pair<bool, IdempotencyResult> CreateOnOwner(const std::string& owner, uint64_t epoch, const SessionId& id,
                                                   const SessionRecord& session, const IdempotencyKey* idem, int status,
                                                   const std::string& response);
  // Append's two kinds of statement on the shard it was routed to
  // (src/messages.cc): a keyed turn's claim with its user message, and any
  // other message (an answer completing its key in the same transaction).
  Placed<AppendResult> ClaimTurn(Prepared& p, uint64_t epoch, const SessionId& id, const UserId& user,
                                 const AppendRequest& req);
  Placed<AppendResult> StoreMessage(Prepared& p, uint64_t epoch, const SessionId& id, const UserId& user,
                                    const AppendRequest& req);
  // A keyed create's earlier attempt on a shard the session may be moving
  // away from: its key's answer, if the session is there (src/sessions.cc).
  std::optional<IdempotencyResult> EarlierCreate(const std::string& shard, uint64_t epoch, const SessionId& id,
                                                 const SessionRecord& session, const IdempotencyKey& idem, int status,
                                                 const std::string& response, bool* wait);

  const Config config_;  // A copy: callers may pass a temporary.
  DbOptions options_;
  std::shared_ptr<const ClusterMap> map_;
  std::shared_ptr<const ClusterMap> seed_map_;
  std::map<std::string, std::unique_ptr<Shard>> shards_;
  int64_t next_refresh_us_ = 0;  // 0: load the stored map before the first operation.
  Observer* observer_ = nullptr;
  uint64_t last_epoch_ = 0;
  std::string last_shard_;  // Where the last routed operation was served.
  uint32_t claims_ = 0;     // Keyed claims, for MaybeExpireKeys.
  uint32_t opened_ = 0;     // Turns opened, for MaybeExpireTurns.
};

}  // namespace chatllm
