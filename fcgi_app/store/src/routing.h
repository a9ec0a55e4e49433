#pragma once

// Private to the store room: how ShardedStore finds the shard that holds a
// session and runs statements there (the placement protocol of
// sql/002_shard_map.sql, 005 and 007, and the retry policy of
// store/sharded_store.h).

#include <unistd.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "base/log.h"
#include "base/time_util.h"
#include "shard.h"

namespace chatllm {

// The owner column: NULL for no user.
inline void BindUser(MysqlStatement& st, int pos, const UserId& user) {
  if (user.empty())
    st.BindNull(pos);
  else
    st.BindBytes(pos, user);
}

// idempotency_keys.user_id is NOT NULL (part of the primary key): no user is 16 zero bytes.
inline std::string IdemUser(const UserId& user) { return user.empty() ? std::string(16, '\0') : user; }

// A turn's events as chat_turn_flush takes them: a JSON array of the texts,
// in order (turns.cc).
std::string EventsJson(const std::vector<std::string>& texts);

// Columns: seq, role, content, reply_to, created_at, state, meta.
inline MessageRecord RowToMessage(const MysqlStatement& st, size_t row) {
  return MessageRecord{st.Int64(row, 0), st.Text(row, 1),           st.Text(row, 2),
                       st.Int64(row, 3), st.DatetimeMicros(row, 4), st.Text(row, 6)};
}

// What a fenced function's result code says about placement.
template <typename P>
P CodePlacement(int64_t code) {
  switch (code) {
    case 0:
      return P::kAbsent;
    case -1:
      return P::kMoving;
    case -2:
      return P::kMoved;
    case -3:
      return P::kStale;
    case -5:
      return P::kGone;
    default:
      return P::kHere;
  }
}

// A read is answered from a session that is active here, or frozen here by
// a move (Routed checks that the frozen copy is still current).
template <typename P>
bool ServesRead(P placement) {
  return placement == P::kHere || placement == P::kFrozen;
}

template <typename P>
P StatePlacement(const std::string& state) {
  if (state == "active") return P::kHere;
  if (state == "moving") return P::kFrozen;
  if (state == "moved") return P::kMoved;
  if (state == "deleted") return P::kGone;
  return P::kAbsent;  // incoming: being copied here, not yet ours.
}

// Reads a list/recent result (messages with their session's state); an
// empty one is placed by the session row alone.
template <typename P>
P MessagesPlacement(MysqlStatement& st, MysqlStatement& place, const SessionId& id, const UserId& user,
                    std::vector<MessageRecord>* out) {
  out->clear();
  if (st.row_count() == 0) {
    place.BindBytes(0, id.bytes());
    BindUser(place, 1, user);
    place.Execute();
    return place.row_count() == 0 ? P::kAbsent : StatePlacement<P>(place.Text(0, 0));
  }
  out->reserve(st.row_count());
  for (size_t i = 0; i < st.row_count(); ++i) out->push_back(RowToMessage(st, i));
  return StatePlacement<P>(st.Text(0, 5));
}

// Runs `fn(Prepared&)` on `shard`: deadlocks and lock waits re-run up to
// max_retries (with jitter), a read re-run once on a lost connection; a
// write never is (its outcome is unknown). Every failure comes out as
// DbError naming the shard; the observer sees each statement's time.
template <typename Fn>
auto ShardedStore::OnShard(Shard& shard, bool is_read, const char* what, Fn&& fn) {
  for (int attempt = 0;; ++attempt) {
    const int64_t start = MonotonicMicros();
    std::optional<DbError> failed;
    try {
      Prepared& p = shard.Ready();
      auto result = fn(p);
      if (observer_) observer_->OnQuery(shard.name(), MonotonicMicros() - start, true);
      return result;
    } catch (const DbError& e) {
      failed = e;  // From the connection or a Transaction.
    } catch (const MysqlError& e) {
      failed = DbError(ClassifyMysqlErrno(e.code()), e.code(), shard.name(), e.what());
    }
    const int64_t took = MonotonicMicros() - start;
    if (observer_) observer_->OnQuery(shard.name(), took, false);
    const DbError& err = *failed;
    shard.AfterError(err, took);
    const bool retry = (err.kind() == DbErrorKind::kRetryable && attempt < config_.max_retries) ||
                       (err.kind() == DbErrorKind::kConnectionLost && is_read && attempt == 0);
    LOG_WARN("shard %s: %s failed (%s, errno %d)%s: %s", shard.name().c_str(), what, DbErrorKindName(err.kind()),
             err.mysql_errno(), retry ? ", retrying" : "", err.what());
    if (!retry) throw err;
    if (err.kind() == DbErrorKind::kRetryable) {
      // Jittered backoff so that the transactions that deadlocked do not
      // collide again in lockstep.
      const unsigned spread = 1000u << std::min(attempt, 5);
      ::usleep(500 + static_cast<unsigned>(MonotonicMicros()) % spread);
    }
  }
}

// One function on purpose (~85 lines): the placement protocol is one loop
// over the candidate shards in which every branch answers one placement
// code, and the loop's budget (the move deadline, map refreshes, tombstone
// rounds, the one refresh after a failure) is shared by all of them.
template <typename T, typename Fn>
std::optional<T> ShardedStore::Routed(const SessionId& id, bool is_read, const char* what, Fn&& fn) {
  MaybeRefresh();
  const int64_t deadline = MonotonicMicros() + int64_t{config_.move_wait_ms} * 1000;
  // Moving one session takes milliseconds: poll for it often.
  int64_t backoff_us = 1000;
  int refreshes = 0;
  int tombstone_rounds = 0;
  bool fence_checked = false;
  bool refreshed_after_failure = false;
  while (true) {
    std::shared_ptr<const ClusterMap> map = map_;
    const uint64_t epoch = map->epoch();
    bool retry = false;
    for (const std::string& name : map->router().Candidates(id.text())) {
      std::optional<Placed<T>> placed;
      try {
        placed.emplace(OnShard(ShardNamed(name), is_read, what, [&](Prepared& p) { return fn(p, epoch); }));
      } catch (const DbError& e) {
        // Read-only: a switchover or failover is changing the shard's
        // primary. Nothing was written: wait for the map that names the new
        // one (within the move budget) and go again.
        if (e.kind() == DbErrorKind::kReadOnly) {
          WaitForPrimary(name, deadline, &backoff_us);
          retry = true;
          break;
        }
        // Unreachable (the statement never ran): perhaps the shard left the
        // map since we read it (drained, removed, stopped, failed over). Look once.
        if (e.kind() != DbErrorKind::kUnavailable || refreshed_after_failure) throw;
        refreshed_after_failure = true;
        if (!RefreshMap()) throw;
        retry = true;
        break;
      }
      Placed<T>& r = *placed;
      if (r.placement == Placement::kFrozen && FenceAhead(name, epoch)) {
        // A frozen copy (a move in progress) is current only under the
        // newest map: under a newer one its move may have made another copy
        // authoritative (which may have taken writes, or been deleted, since
        // a rebalance stopped mid-move). Read again under that map.
        if (++refreshes > 8 || !RefreshMap()) {
          throw DbError(DbErrorKind::kUnavailable, 0, name, "shard map keeps changing; retry");
        }
        retry = true;
        break;
      }
      if (r.placement == Placement::kHere || r.placement == Placement::kFrozen) {
        last_epoch_ = epoch;
        last_shard_ = name;
        return std::move(r.value);
      }
      if (r.placement == Placement::kGone) {
        // Deleted: whatever another shard still holds of it (a frozen copy
        // an interrupted move left behind) is not the session any more.
        last_epoch_ = epoch;
        return std::nullopt;
      }
      if (r.placement == Placement::kAbsent) continue;
      if (r.placement == Placement::kMoving) {
        // A write to a session being copied waits until it is made active
        // on its new shard (milliseconds for ordinary sessions).
        if (MonotonicMicros() + backoff_us > deadline) {
          throw DbError(DbErrorKind::kUnavailable, 0, name,
                        "session " + id.text() + " is still being moved to another shard");
        }
        ::usleep(static_cast<useconds_t>(backoff_us));
        backoff_us = std::min<int64_t>(backoff_us * 2, 20000);
      } else {  // kMoved or kStale: our map is out of date.
        if (RefreshMap()) {
          if (++refreshes > 8) {
            throw DbError(DbErrorKind::kUnavailable, 0, name, "shard map keeps changing; retry");
          }
        } else {
          // Our map is the newest we can read. kMoved: either the move
          // finished between our look at its new shard and this one (look
          // again), or the session was moved and later deleted (then it
          // stays absent: 404). kStale: the newer map is not readable yet
          // (its shards are busy or being restarted): wait for it, as for a
          // move, instead of failing at once.
          if (r.placement == Placement::kMoved && ++tombstone_rounds > 3) continue;
          WaitForNewerMap(name, deadline, &backoff_us);
        }
      }
      retry = true;
      break;
    }
    if (retry) continue;
    // Absent everywhere. Before answering "no such session", make sure a
    // newer map does not put it somewhere else.
    if (!fence_checked) {
      fence_checked = true;
      if (FenceAhead(map->router().Owner(id.text()), epoch) && RefreshMap()) continue;
    }
    last_epoch_ = epoch;
    return std::nullopt;
  }
}

// Creates a placement unit whose id is derived (a home, a key) on its owner:
// `create(Prepared&, epoch)` runs there and returns 1, or -3 when the
// shard's fence says our map is stale. A unit is created only when no
// other candidate holds it or can still be given it by a request routed
// with an older map (that shard's fence is behind ours: wait, as a keyed
// create does): two copies of one unit would split what it holds.
template <typename Create>
void ShardedStore::CreateUnit(const SessionId& id, const char* what, Create&& create) {
  const int64_t deadline = MonotonicMicros() + int64_t{config_.move_wait_ms} * 1000;
  int64_t backoff_us = 1000;
  int changes = 0;
  for (int attempt = 0;; ++attempt) {
    std::shared_ptr<const ClusterMap> map = map_;
    const uint64_t epoch = map->epoch();
    const std::string& owner = map->router().Owner(id.text());
    bool wait = false, elsewhere = false;
    for (const std::string& name : map->router().Candidates(id.text())) {
      if (name == owner) continue;
      OnShard(ShardNamed(name), true, "look for a unit elsewhere", [&](Prepared& p) {
        p.presence.BindBytes(0, id.bytes());
        p.presence.Execute();
        if (static_cast<uint64_t>(p.presence.Int64(0, 0)) < epoch) wait = true;
        const std::string& state = p.presence.Text(0, 1);
        if (state == "moving") wait = true;
        if (state == "active") elsewhere = true;
        return 0;
      });
    }
    if (elsewhere) return;  // The caller's next look finds it there.
    if (wait) {
      if (MonotonicMicros() + backoff_us > deadline) {
        throw DbError(DbErrorKind::kUnavailable, 0, owner, "the shard map is still being published; retry");
      }
      ::usleep(static_cast<useconds_t>(backoff_us));
      backoff_us = std::min<int64_t>(backoff_us * 2, 20000);
      if (attempt % 4 == 3) RefreshMap();
      continue;
    }
    int64_t code = 0;
    try {
      code = OnShard(ShardNamed(owner), false, what, [&](Prepared& p) { return create(p, epoch); });
    } catch (const DbError& e) {
      if (e.kind() != DbErrorKind::kReadOnly) throw;
      WaitForPrimary(owner, deadline, &backoff_us);
      continue;
    }
    if (code == 1) return;
    // Fenced: our map is stale.
    if (RefreshMap()) {
      if (++changes > 8) throw DbError(DbErrorKind::kUnavailable, 0, owner, "shard map keeps changing; retry");
    } else {
      WaitForNewerMap(owner, deadline, &backoff_us);
    }
  }
}

// Runs `fn` on `user`'s home (see sharded_store.h), creating the home
// first if no shard holds it.
template <typename Fn>
int ShardedStore::HomeCall(const UserId& user, const char* what, Fn&& fn) {
  const SessionId home = SessionId::HomeOf(user);
  for (int round = 0; round < 3; ++round) {
    std::optional<int> code = Routed<int>(home, false, what, fn);
    if (code) return *code;
    EnsureHome(home, user);
  }
  throw DbError(DbErrorKind::kUnavailable, 0, "", std::string(what) + ": the user's home keeps moving; retry");
}

}  // namespace chatllm
