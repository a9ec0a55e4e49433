// A user's home (sql/009_homes.sql): the placement unit that holds the
// user's session list and its count. Create, delete and list each touch the
// home's shard and the session's, whatever the number of shards; the list
// is kept consistent with the sessions the way Vitess's consistent lookup
// vindex keeps a lookup table: the entry is written before the session and
// removed after it, and an entry that is not 'live' is checked against the
// session's shard when it is read.

#include <unistd.h>

#include <algorithm>

#include "base/log.h"
#include "base/time_util.h"
#include "routing.h"
#include "store/sharded_store.h"

namespace chatllm {
namespace {

// chat_home_* results besides the placement codes (CodePlacement).
constexpr int kAdded = 1;
constexpr int kAlreadyListed = 2;
constexpr int kNoEntry = 3;
constexpr int kAtLimit = -4;

void BindOptionalText(MysqlStatement& st, int pos, const std::optional<std::string>& value) {
  if (value)
    st.BindString(pos, *value);
  else
    st.BindNull(pos);
}

// A home function's code: a placement (0, -1, -2, -3) or its own result.
template <typename P>
P HomePlacement(int64_t code) {
  return code == kAtLimit ? P::kHere : CodePlacement<P>(code);
}

}  // namespace

void ShardedStore::EnsureHome(const SessionId& home, const UserId& user) {
  CreateUnit(home, "create a home", [&](Prepared& p, uint64_t epoch) {
    p.home_create.BindBytes(0, home.bytes());
    BindUser(p.home_create, 1, user);
    p.home_create.BindDatetime(2, NowMicros());
    p.home_create.BindInt64(3, static_cast<int64_t>(epoch));
    p.home_create.Execute();
    return p.home_create.Int64(0, 0);
  });
}

int ShardedStore::HomeAdd(const SessionId& id, const SessionRecord& s, int64_t max_sessions) {
  const SessionId home = SessionId::HomeOf(s.user_id);
  return HomeCall(s.user_id, "list a new session", [&](Prepared& p, uint64_t epoch) {
    MysqlStatement& st = p.home_add;
    st.BindBytes(0, home.bytes());
    BindUser(st, 1, s.user_id);
    st.BindBytes(2, id.bytes());
    st.BindDatetime(3, s.created_us);
    BindOptionalText(st, 4, s.title);
    st.BindString(5, s.metadata_json);
    BindOptionalText(st, 6, s.model);
    BindOptionalText(st, 7, s.system_prompt);
    // The limit is the home's once the homes are complete, decided by the
    // map this statement is fenced with: an app still on an older map is
    // refused by the fence and comes back here with the newer one.
    st.BindInt64(8, map_->epoch() == epoch && map_->homes() ? max_sessions : 0);
    st.BindInt64(9, static_cast<int64_t>(epoch));
    st.Execute();
    const int64_t code = st.Int64(0, 0);
    return Placed<int>{HomePlacement<Placement>(code), static_cast<int>(code)};
  });
}

int ShardedStore::HomeSet(const UserId& user, const SessionId& id, const std::string& from, const std::string& to,
                          int min_age_s) {
  const SessionId home = SessionId::HomeOf(user);
  return HomeCall(user, "update a list entry", [&](Prepared& p, uint64_t epoch) {
    MysqlStatement& st = p.home_set;
    st.BindBytes(0, home.bytes());
    BindUser(st, 1, user);
    st.BindBytes(2, id.bytes());
    if (from.empty())
      st.BindNull(3);
    else
      st.BindString(3, from);
    st.BindString(4, to);
    st.BindInt64(5, min_age_s);
    st.BindInt64(6, static_cast<int64_t>(epoch));
    st.Execute();
    const int64_t code = st.Int64(0, 0);
    return Placed<int>{HomePlacement<Placement>(code), static_cast<int>(code)};
  });
}

int ShardedStore::HomeRemove(const UserId& user, const SessionId& id, const std::string& from, int min_age_s) {
  const SessionId home = SessionId::HomeOf(user);
  return HomeCall(user, "remove a list entry", [&](Prepared& p, uint64_t epoch) {
    MysqlStatement& st = p.home_remove;
    st.BindBytes(0, home.bytes());
    BindUser(st, 1, user);
    st.BindBytes(2, id.bytes());
    if (from.empty())
      st.BindNull(3);
    else
      st.BindString(3, from);
    st.BindInt64(4, min_age_s);
    st.BindInt64(5, static_cast<int64_t>(epoch));
    st.Execute();
    const int64_t code = st.Int64(0, 0);
    return Placed<int>{HomePlacement<Placement>(code), static_cast<int>(code)};
  });
}

int ShardedStore::HomeConfirm(const UserId& user, const SessionId& id, const SessionRecord& s,
                              const std::string& from) {
  const SessionId home = SessionId::HomeOf(user);
  return HomeCall(user, "confirm a list entry", [&](Prepared& p, uint64_t epoch) {
    MysqlStatement& st = p.home_confirm;
    st.BindBytes(0, home.bytes());
    BindUser(st, 1, user);
    st.BindBytes(2, id.bytes());
    st.BindDatetime(3, s.created_us);
    BindOptionalText(st, 4, s.title);
    st.BindString(5, s.metadata_json);
    BindOptionalText(st, 6, s.model);
    BindOptionalText(st, 7, s.system_prompt);
    if (from.empty())
      st.BindNull(8);
    else
      st.BindString(8, from);
    st.BindInt64(9, static_cast<int64_t>(epoch));
    st.Execute();
    const int64_t code = st.Int64(0, 0);
    return Placed<int>{HomePlacement<Placement>(code), static_cast<int>(code)};
  });
}

IdempotencyResult ShardedStore::CreateSession(const SessionId& id, const SessionRecord& session,
                                              const IdempotencyKey* idem, int status, const std::string& response,
                                              int64_t max_sessions) {
  MaybeRefresh();
  const UserId& user = session.user_id;
  // Sessions of no user (authentication off) have no home: no limit applies.
  if (user.empty()) return CreateOnItsShard(id, session, idem, status, response);
  // Before homes are complete the count asks every shard (check, then create).
  if (!map_->homes() && max_sessions > 0 && CountEveryShard(user) >= max_sessions) {
    return IdempotencyResult{IdempotencyOutcome::kOverLimit, 0, ""};
  }
  int added = 0;
  if (map_->homes_written()) {
    added = HomeAdd(id, session, max_sessions);
    if (added == kAtLimit && RepairStaleEntries(user)) added = HomeAdd(id, session, max_sessions);
    if (added == kAtLimit) return IdempotencyResult{IdempotencyOutcome::kOverLimit, 0, ""};
  }
  IdempotencyResult r;
  try {
    r = CreateOnItsShard(id, session, idem, status, response);
  } catch (const DbError& e) {
    // Unavailable: no statement of this create ran, so the entry it added
    // belongs to no session, unless a retry with the same key (the same id)
    // is creating it at this moment: a keyed entry is left to be settled.
    // Any other failure leaves the outcome unknown: settled when read.
    if (added == kAdded && !idem && e.kind() == DbErrorKind::kUnavailable) {
      try {
        HomeRemove(user, id, "pending", 0);
      } catch (const DbError&) {
      }
    }
    throw;
  }
  // The map may have changed during the create (a fence refused it): from a
  // map whose apps keep homes on, the entry is confirmed even if this
  // request did not add it.
  if (!map_->homes_written()) return r;
  try {
    if (r.outcome == IdempotencyOutcome::kNew) {
      HomeConfirm(user, id, session, "");
    } else if (r.outcome == IdempotencyOutcome::kReplay) {
      // The session made by the first attempt, or deleted since.
      if (std::optional<SessionRecord> made = GetSession(id, user)) {
        HomeConfirm(user, id, *made, "");
      } else if (added == kAdded) {
        HomeRemove(user, id, "pending", 0);  // Deleted: its id cannot be created again.
      }
    }
    // kMismatch, kInFlight: the other request's own create confirms the
    // entry; a read settles it from the session otherwise.
  } catch (const DbError& e) {
    LOG_WARN("session %s: its list entry is left to be settled when read: %s", id.text().c_str(), e.what());
  }
  return r;
}

bool ShardedStore::DeleteSession(const SessionId& id, const UserId& user) {
  MaybeRefresh();
  if (user.empty() || !map_->homes_written()) {
    const bool found = DeleteOnItsShard(id, user);
    if (found && !user.empty() && map_->homes_written()) HomeRemoveAfterDelete(user, id);
    return found;
  }
  // 'deleting' first: from here on a list asks the session's shard.
  const int marked = HomeSet(user, id, "", "deleting", 0);
  const bool found = DeleteOnItsShard(id, user);
  if (found) {
    HomeRemoveAfterDelete(user, id);
  } else if (marked == kAdded) {
    // Not there: an orphan, or a create still in flight. A pending entry
    // is what both are (settled when read).
    try {
      HomeSet(user, id, "deleting", "pending", 0);
    } catch (const DbError& e) {
      LOG_WARN("session %s: its list entry stays deleting: %s", id.text().c_str(), e.what());
    }
  }
  return found;
}

void ShardedStore::HomeRemoveAfterDelete(const UserId& user, const SessionId& id) {
  // In whatever state: a repair or the upgrade's fill may have made or
  // changed the entry since this delete began.
  try {
    HomeRemove(user, id, "", 0);
  } catch (const DbError& e) {
    LOG_WARN("session %s: its list entry stays until settled: %s", id.text().c_str(), e.what());
  }
}

ShardedStore::Settled ShardedStore::SettleEntry(const UserId& user, const SessionId& id, const std::string& state,
                                                int64_t age_s) {
  std::optional<SessionRecord> session;
  try {
    session = GetSession(id, user);
  } catch (const DbError&) {
    // Its shard cannot say: a session being deleted is still shown (it
    // existed), one being created is not (it may never have).
    return state == "deleting" ? Settled::kShown : Settled::kHidden;
  }
  const int age = config_.orphan_entry_age_s;
  try {
    if (session && state == "pending") {
      HomeConfirm(user, id, *session, "pending");
    } else if (session && age_s >= age) {
      // A delete that failed before its session went: live again, unless a
      // delete has marked it since (its mark is younger than `age`).
      HomeSet(user, id, "deleting", "live", age);
    } else if (!session && age_s >= age && HomeRemove(user, id, state, age) == kAdded) {
      // Absent, and older than any create or delete can take (a retry
      // makes its entry young again): no request will make it exist.
      return Settled::kRemoved;
    }
  } catch (const DbError& e) {
    LOG_WARN("session %s: repairing its list entry failed: %s", id.text().c_str(), e.what());
  }
  return session ? Settled::kShown : Settled::kHidden;
}

bool ShardedStore::RepairStaleEntries(const UserId& user) {
  const SessionId home = SessionId::HomeOf(user);
  std::vector<std::pair<SessionId, std::string>> stale;
  Routed<int>(home, true, "find stale list entries", [&](Prepared& p, uint64_t) {
    MysqlStatement& st = p.home_stale;
    st.BindInt64(0, config_.orphan_entry_age_s);
    st.BindBytes(1, home.bytes());
    BindUser(st, 2, user);
    st.Execute();
    stale.clear();
    if (st.row_count() == 0) return Placed<int>{Placement::kAbsent, 0};
    for (size_t i = 0; i < st.row_count(); ++i) {
      if (!st.IsNull(i, 1)) stale.emplace_back(SessionId::FromBytes(st.Text(i, 1)), st.Text(i, 2));
    }
    return Placed<int>{StatePlacement<Placement>(st.Text(0, 0)), 0};
  });
  bool removed = false;
  for (const auto& [id, state] : stale) {
    removed |= SettleEntry(user, id, state, config_.orphan_entry_age_s) == Settled::kRemoved;
  }
  return removed;
}

SessionPage ShardedStore::ListSessions(const UserId& user, const SessionCursor& cursor, int limit) {
  MaybeRefresh();
  if (user.empty() || !map_->homes()) return ListEveryShard(user, cursor, limit);
  return ListFromHome(user, cursor, limit);
}

SessionPage ShardedStore::ListFromHome(const UserId& user, const SessionCursor& cursor, int limit) {
  const SessionId home = SessionId::HomeOf(user);
  struct Entry {
    SessionId id;
    SessionRecord record;
    std::string state;
    int64_t age_s;
  };
  SessionPage page;
  SessionCursor after = cursor;
  // Entries left out (not confirmed) can leave a page short: read on, a
  // few rounds at most; then the page ends short, with has_more.
  for (int round = 0;; ++round) {
    std::vector<Entry> entries;
    Routed<int>(home, true, "list sessions", [&](Prepared& p, uint64_t) {
      MysqlStatement& st = p.home_list;
      const int64_t top = UnixMicrosFromCivil(9999, 12, 31, 23, 59, 59, 0);
      const std::string top_id(16, '\xff');
      st.BindBytes(0, home.bytes());
      st.BindDatetime(1, after.created_us == INT64_MAX ? top : after.created_us);
      st.BindDatetime(2, after.created_us == INT64_MAX ? top : after.created_us);
      st.BindBytes(3, after.id_bytes.empty() ? std::string_view(top_id) : std::string_view(after.id_bytes));
      st.BindInt64(4, limit + 1);
      st.BindBytes(5, home.bytes());
      BindUser(st, 6, user);
      st.Execute();
      entries.clear();
      if (st.row_count() == 0) return Placed<int>{Placement::kAbsent, 0};
      for (size_t i = 0; i < st.row_count(); ++i) {
        if (st.IsNull(i, 1)) continue;  // The home has no entry after the cursor.
        Entry e{SessionId::FromBytes(st.Text(i, 1)), {}, st.Text(i, 3), st.Int64(i, 8)};
        e.record.created_us = e.record.updated_us = st.DatetimeMicros(i, 2);
        if (!st.IsNull(i, 4)) e.record.title = st.Text(i, 4);
        e.record.metadata_json = st.Text(i, 5);
        if (!st.IsNull(i, 6)) e.record.model = st.Text(i, 6);
        if (!st.IsNull(i, 7)) e.record.system_prompt = st.Text(i, 7);
        e.record.user_id = user;
        entries.push_back(std::move(e));
      }
      return Placed<int>{StatePlacement<Placement>(st.Text(0, 0)), 0};
    });
    const bool more = static_cast<int>(entries.size()) > limit;
    for (Entry& e : entries) {
      if (static_cast<int>(page.sessions.size()) == limit) {
        page.has_more = true;
        return page;
      }
      SessionCursor here{e.record.created_us, e.id.bytes()};
      if (e.state != "live" && SettleEntry(user, e.id, e.state, e.age_s) != Settled::kShown) {
        after = here;
        continue;
      }
      page.sessions.emplace_back(std::move(e.id), std::move(e.record));
      after = page.next = here;
    }
    if (!more) return page;
    if (round == 2) {
      page.has_more = true;
      page.next = after;
      return page;
    }
  }
}

}  // namespace chatllm
