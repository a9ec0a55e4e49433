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
  IdempotencyResult CreateSession(const SessionId& id, const SessionRecord& session, const IdempotencyKey* idem,
                                  int status, const std::string& response) override;
  std::optional<SessionRecord> GetSession(const SessionId& id, const UserId& user) override;
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
  // One index range read (user_id, created_at, session_id) per shard of the
  // map, merged: its cost grows with the number of shards, not with the
  // number of sessions.
  SessionPage ListSessions(const UserId& user, const SessionCursor& cursor, int limit) override;
  int64_t CountSessions(const UserId& user) override;
  // From the shard the key id hashes to, or from any other when that one
  // cannot answer (every shard has a copy).
  std::optional<KeyRecord> LookupApiKey(const std::string& key_id) override;
  // Connects to (or pings) every shard of the map and reads its schema version.
  std::vector<ShardStatus> CheckShards() override;
  uint64_t last_epoch() const override { return last_epoch_; }

  // Reads the newest map stored on the reachable shards and adopts it if it
  // is newer. Returns true if the map changed.
  bool RefreshMap();
  // Receives the timing of every statement; may be null. Not owned.
  void SetObserver(Observer* observer) { observer_ = observer; }
  // The map in use.
  std::shared_ptr<const ClusterMap> map() const { return map_; }

 private:
  // The key's row on shard `name` (DbError if it cannot be asked).
  std::optional<KeyRecord> LookupKeyOn(const std::string& name, const std::string& key_id);
  // The key on its joining owner and on the first of `others` that answers,
  // merged (found on either; revoked, disabled or expiring as the stricter
  // says); DbError if none of `others` answers.
  std::optional<KeyRecord> LookupKeyWhileJoining(const std::string& joining, const std::vector<std::string>& others,
                                                 const std::string& key_id);
  class Shard;
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
  std::vector<std::string> AllShardNames() const;
  void MaybeRefresh();
  // Now and then, after a keyed claim on `shard`: forgets expired keys
  // there (chat_expire_keys), in a statement of its own whose failure is
  // only logged.
  void MaybeExpireKeys(const std::string& shard);
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
};

}  // namespace chatllm
