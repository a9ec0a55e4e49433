// Sessions: create (with an Idempotency-Key: claimed in the same
// transaction, looked for where an earlier attempt may have left it), get,
// delete, list and count.

#include <unistd.h>

#include <algorithm>
#include <map>

#include "base/api_key.h"
#include "base/time_util.h"
#include "routing.h"
#include "store/sharded_store.h"
#include "store/transaction.h"

namespace chatllm {
namespace {

// Claims `key` for a create inside the caller's transaction: a new row
// (state 'done', answered by `status`/`response`), or what an earlier
// request with the same key left. A key that expired is claimed anew.
IdempotencyResult ClaimKey(Prepared& p, const UserId& user, const SessionId& session, const IdempotencyKey& key,
                           int status, const std::string& response, int ttl_s) {
  const std::string idem_user = IdemUser(user);
  p.idem_insert.BindBytes(0, idem_user);
  p.idem_insert.BindBytes(1, key.target_sha);
  p.idem_insert.BindBytes(2, key.key);
  p.idem_insert.BindBytes(3, session.bytes());
  p.idem_insert.BindBytes(4, key.request_sha);
  p.idem_insert.BindString(5, "done");
  p.idem_insert.BindInt64(6, status);
  p.idem_insert.BindString(7, response);
  p.idem_insert.BindInt64(8, ttl_s);
  p.idem_insert.Execute();
  if (p.idem_insert.affected_rows() == 1) return IdempotencyResult{};
  MysqlStatement& st = p.idem_select;
  st.BindBytes(0, idem_user);
  st.BindBytes(1, key.target_sha);
  st.BindBytes(2, key.key);
  st.Execute();
  if (st.row_count() == 1 && st.Int64(0, 5) == 0) {
    if (!SameBytes(st.Text(0, 0), key.request_sha)) return IdempotencyResult{IdempotencyOutcome::kMismatch, 0, ""};
    // A create's key is written 'done' with its session; never 'running'.
    return IdempotencyResult{IdempotencyOutcome::kReplay, static_cast<int>(st.Int64(0, 2)), st.Text(0, 3)};
  }
  MysqlStatement& reset = p.idem_reset;
  reset.BindBytes(0, session.bytes());
  reset.BindBytes(1, key.request_sha);
  reset.BindString(2, "done");
  reset.BindInt64(3, status);
  reset.BindString(4, response);
  reset.BindInt64(5, ttl_s);
  reset.BindBytes(6, idem_user);
  reset.BindBytes(7, key.target_sha);
  reset.BindBytes(8, key.key);
  reset.Execute();
  return IdempotencyResult{};
}

}  // namespace

std::optional<IdempotencyResult> ShardedStore::EarlierCreate(const std::string& shard, uint64_t epoch,
                                                             const SessionId& id, const SessionRecord& session,
                                                             const IdempotencyKey& idem, int status,
                                                             const std::string& response, bool* wait) {
  return OnShard(
      ShardNamed(shard), false, "look for an earlier create", [&](Prepared& p) -> std::optional<IdempotencyResult> {
        p.presence.BindBytes(0, id.bytes());
        p.presence.Execute();
        // Until this shard's fence reaches our epoch, a request
        // routed by the older map may still create the session
        // here: wait for the fence.
        if (static_cast<uint64_t>(p.presence.Int64(0, 0)) < epoch) *wait = true;
        const std::string& state = p.presence.Text(0, 1);
        if (state == "moving") *wait = true;
        if (state != "active" && state != "deleted") return std::nullopt;
        Transaction txn(p.conn, shard);
        // Under the session row lock: a move cannot take the
        // session and its key away meanwhile.
        p.lock.BindBytes(0, id.bytes());
        p.lock.Execute();
        const std::string now = p.lock.row_count() ? p.lock.Text(0, 0) : "";
        if (now != "active" && now != "deleted") return std::nullopt;  // Moved on: ask the owner.
        IdempotencyResult r = ClaimKey(p, session.user_id, id, idem, status, response, config_.idempotency_ttl_s);
        if (r.outcome == IdempotencyOutcome::kNew) {
          // The session is here but its key expired: a different
          // request, not a second session (the claim is rolled back).
          r.outcome = IdempotencyOutcome::kMismatch;
          return r;
        }
        txn.Commit();
        return r;
      });
}

std::pair<bool, IdempotencyResult> ShardedStore::CreateOnOwner(const std::string& owner, uint64_t epoch,
                                                               const SessionId& id, const SessionRecord& session,
                                                               const IdempotencyKey* idem, int status,
                                                               const std::string& response) {
  return OnShard(ShardNamed(owner), false, "create session", [&](Prepared& p) {
    std::optional<Transaction> txn;
    if (idem) txn.emplace(p.conn, owner);  // The key and the session commit together.
    try {
      if (idem) {
        IdempotencyResult claimed =
            ClaimKey(p, session.user_id, id, *idem, status, response, config_.idempotency_ttl_s);
        if (claimed.outcome != IdempotencyOutcome::kNew) return std::make_pair(true, claimed);
      }
      MysqlStatement& st = p.create;
      st.BindBytes(0, id.bytes());
      if (session.title)
        st.BindString(1, *session.title);
      else
        st.BindNull(1);
      st.BindString(2, session.metadata_json);
      st.BindDatetime(3, session.created_us);
      st.BindInt64(4, static_cast<int64_t>(epoch));
      if (session.model)
        st.BindString(5, *session.model);
      else
        st.BindNull(5);
      if (session.system_prompt)
        st.BindString(6, *session.system_prompt);
      else
        st.BindNull(6);
      BindUser(st, 7, session.user_id);
      st.Execute();
      if (st.Int64(0, 0) != 1) return std::make_pair(false, IdempotencyResult{});  // Rolls the key back.
      if (txn) txn->Commit();
      return std::make_pair(true, IdempotencyResult{});
    } catch (const MysqlError& e) {
      // The key's session exists (its key row expired and was claimed
      // again): a mismatch, not a second session.
      if (idem && e.code() == 1062) {
        return std::make_pair(true, IdempotencyResult{IdempotencyOutcome::kMismatch, 0, ""});
      }
      throw;
    }
  });
}

IdempotencyResult ShardedStore::CreateOnItsShard(const SessionId& id, const SessionRecord& session,
                                                 const IdempotencyKey* idem, int status, const std::string& response) {
  // Created only on the owner under the newest map: a session created while
  // a move is in progress already lands on its new shard.
  MaybeRefresh();
  const int64_t deadline = MonotonicMicros() + int64_t{config_.move_wait_ms} * 1000;
  int64_t backoff_us = 1000;
  bool refreshed_after_failure = false;
  int changes = 0;
  for (int attempt = 0;; ++attempt) {
    std::shared_ptr<const ClusterMap> map = map_;
    const uint64_t epoch = map->epoch();
    const std::string& owner = map->router().Owner(id.text());
    try {
      if (idem) {
        // A keyed id is derived from the key: an earlier attempt of this
        // request, routed by an older map, may have created the session on
        // a shard it is moving away from. Its key row is there with it.
        bool wait = false;
        for (const std::string& name : map->router().Candidates(id.text())) {
          if (name == owner) continue;
          if (auto earlier = EarlierCreate(name, epoch, id, session, *idem, status, response, &wait)) {
            last_epoch_ = epoch;
            return *earlier;
          }
        }
        if (wait) {
          if (MonotonicMicros() + backoff_us > deadline) {
            throw DbError(DbErrorKind::kUnavailable, 0, owner, "the shard map is still being published; retry");
          }
          ::usleep(static_cast<useconds_t>(backoff_us));
          backoff_us = std::min<int64_t>(backoff_us * 2, 20000);
          if (attempt % 4 == 3) RefreshMap();
          continue;
        }
      }
      // Created (true), fenced: our map is stale (false), or the key's outcome.
      std::pair<bool, IdempotencyResult> out = CreateOnOwner(owner, epoch, id, session, idem, status, response);
      if (out.first) {
        last_epoch_ = epoch;
        return out.second;
      }
    } catch (const DbError& e) {
      // Read-only: its primary is changing; nothing was written.
      if (e.kind() == DbErrorKind::kReadOnly) {
        WaitForPrimary(owner, deadline, &backoff_us);
        continue;
      }
      // A shard is unreachable: perhaps it left the map. Look once.
      if (e.kind() != DbErrorKind::kUnavailable || refreshed_after_failure || !RefreshMap()) throw;
      refreshed_after_failure = true;
      continue;
    }
    // Fenced: our map is stale.
    if (RefreshMap()) {
      if (++changes > 8) throw DbError(DbErrorKind::kUnavailable, 0, owner, "shard map keeps changing; retry");
    } else {
      WaitForNewerMap(owner, deadline, &backoff_us);
    }
  }
}

std::optional<SessionRecord> ShardedStore::GetSession(const SessionId& id, const UserId& user) {
  return Routed<SessionRecord>(id, true, "get session", [&](Prepared& p, uint64_t) {
    MysqlStatement& st = p.get;
    st.BindBytes(0, id.bytes());
    BindUser(st, 1, user);
    st.Execute();
    Placed<SessionRecord> out{Placement::kAbsent, {}};
    if (st.row_count() == 0) return out;
    out.placement = StatePlacement<Placement>(st.Text(0, 5));
    if (!ServesRead(out.placement)) return out;
    if (!st.IsNull(0, 0)) out.value.title = st.Text(0, 0);
    out.value.metadata_json = st.Text(0, 1);
    out.value.message_count = st.Int64(0, 2);
    out.value.created_us = st.DatetimeMicros(0, 3);
    out.value.updated_us = st.DatetimeMicros(0, 4);
    if (!st.IsNull(0, 6)) out.value.model = st.Text(0, 6);
    if (!st.IsNull(0, 7)) out.value.system_prompt = st.Text(0, 7);
    out.value.user_id = user;
    return out;
  });
}

bool ShardedStore::DeleteOnItsShard(const SessionId& id, const UserId& user) {
  static const std::string create_target = IdempotencyTargetSha(kCreateSessionTarget);  // Kept by a tombstone.
  return Routed<bool>(id, false, "delete session",
                      [&](Prepared& p, uint64_t epoch) {
                        p.del.BindBytes(0, id.bytes());
                        p.del.BindInt64(1, static_cast<int64_t>(epoch));
                        BindUser(p.del, 2, user);
                        p.del.BindBytes(3, create_target);
                        p.del.BindDatetime(4, NowMicros());
                        p.del.Execute();
                        return Placed<bool>{CodePlacement<Placement>(p.del.Int64(0, 0)), true};
                      })
      .has_value();
}

SessionPage ShardedStore::ListEveryShard(const UserId& user, const SessionCursor& cursor, int limit) {
  // Each shard's newest `limit + 1` after the cursor; the merge keeps one
  // row per id (a session being moved can be on two shards at once).
  std::map<std::pair<int64_t, std::string>, std::pair<SessionId, SessionRecord>, std::greater<>> merged;
  std::map<std::string, bool> frozen_only;  // id -> seen only as a 'moving' (frozen) copy
  for (const std::string& name : AllShardNames()) {
    OnShard(ShardNamed(name), true, "list sessions", [&](Prepared& p) {
      MysqlStatement& st = p.sessions;
      BindUser(st, 0, user);
      st.BindDatetime(
          1, cursor.created_us == INT64_MAX ? UnixMicrosFromCivil(9999, 12, 31, 23, 59, 59, 0) : cursor.created_us);
      st.BindDatetime(
          2, cursor.created_us == INT64_MAX ? UnixMicrosFromCivil(9999, 12, 31, 23, 59, 59, 0) : cursor.created_us);
      const std::string top(16, '\xff');
      st.BindBytes(3, cursor.id_bytes.empty() ? std::string_view(top) : std::string_view(cursor.id_bytes));
      st.BindInt64(4, limit + 1);
      st.Execute();
      for (size_t i = 0; i < st.row_count(); ++i) {
        SessionRecord r;
        if (!st.IsNull(i, 1)) r.title = st.Text(i, 1);
        r.metadata_json = st.Text(i, 2);
        r.message_count = st.Int64(i, 3);
        r.created_us = st.DatetimeMicros(i, 4);
        r.updated_us = st.DatetimeMicros(i, 5);
        if (!st.IsNull(i, 6)) r.model = st.Text(i, 6);
        if (!st.IsNull(i, 7)) r.system_prompt = st.Text(i, 7);
        r.user_id = user;
        auto key = std::make_pair(r.created_us, st.Text(i, 0));
        auto seen = frozen_only.emplace(st.Text(i, 0), true).first;
        seen->second = seen->second && st.Text(i, 8) == "moving";
        auto it = merged.find(key);
        if (it == merged.end() || r.message_count > it->second.second.message_count) {
          merged.insert_or_assign(key, std::make_pair(SessionId::FromBytes(st.Text(i, 0)), std::move(r)));
        }
      }
      return 0;
    });
  }
  // A frozen copy is the session only if its new owner has not deleted it
  // meanwhile (a move interrupted after activating the copy): ask where it
  // stands (rare: only while sessions move).
  for (auto it = merged.begin(); it != merged.end();) {
    if (frozen_only[it->first.second] && !GetSession(it->second.first, user))
      it = merged.erase(it);
    else
      ++it;
  }
  SessionPage page;
  for (auto& [key, value] : merged) {
    if (static_cast<int>(page.sessions.size()) == limit) {
      page.has_more = true;
      break;
    }
    page.next = SessionCursor{value.second.created_us, value.first.bytes()};
    page.sessions.push_back(std::move(value));
  }
  return page;
}

int64_t ShardedStore::CountEveryShard(const UserId& user) {
  int64_t total = 0;
  for (const std::string& name : AllShardNames()) {
    total += OnShard(ShardNamed(name), true, "count sessions", [&](Prepared& p) {
      BindUser(p.count, 0, user);
      p.count.Execute();
      return p.count.Int64(0, 0);
    });
  }
  return total;
}

}  // namespace chatllm
