// Durable turns (sql/010_turns.sql): a streamed turn's row and its events
// on the session's shard, each write one fenced function call that holds
// the session row's shared lock, so a move never leaves one behind.

#include "base/json.h"
#include "base/log.h"
#include "routing.h"
#include "store/sharded_store.h"

namespace chatllm {

std::string EventsJson(const std::vector<std::string>& texts) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartArray();
  for (const std::string& t : texts) w.String(t.data(), static_cast<rapidjson::SizeType>(t.size()));
  w.EndArray();
  return std::string(buf.GetString(), buf.GetSize());
}

namespace {

constexpr int64_t kLost = -20;  // sql/010_turns.sql: the producer no longer holds the turn.

// A write's code: 1 (or 2: a cancel was asked for), kLost, or placement.
template <typename P>
P WritePlacement(int64_t code) {
  return code >= 1 || code == kLost ? P::kHere : CodePlacement<P>(code);
}

TurnWrite WriteOutcome(int64_t code) {
  if (code == 2) return TurnWrite::kCancelRequested;
  return code == 1 ? TurnWrite::kOk : TurnWrite::kLost;
}

}  // namespace

bool ShardedStore::OpenTurn(const SessionId& id, const UserId& user, int64_t turn_id, int64_t user_seq,
                            int64_t producer, int64_t lease_ms) {
  auto opened = Routed<bool>(id, false, "open a turn", [&](Prepared& p, uint64_t epoch) {
    MysqlStatement& st = p.turn_open;
    st.BindBytes(0, id.bytes());
    BindUser(st, 1, user);
    st.BindInt64(2, static_cast<int64_t>(epoch));
    st.BindInt64(3, turn_id);
    st.BindInt64(4, user_seq);
    st.BindInt64(5, producer);
    st.BindInt64(6, lease_ms);
    st.Execute();
    const int64_t code = st.Int64(0, 0);
    return Placed<bool>{code == 1 ? Placement::kHere : CodePlacement<Placement>(code), true};
  });
  if (opened) MaybeExpireTurns(last_shard_);
  return opened.has_value();
}

TurnWrite ShardedStore::FlushTurn(const SessionId& id, const UserId& user, int64_t turn_id, int64_t producer,
                                  int64_t first, const std::vector<std::string>& texts, int64_t lease_ms) {
  const std::string events = EventsJson(texts);
  auto code = Routed<int64_t>(id, false, "store a turn's events", [&](Prepared& p, uint64_t epoch) {
    MysqlStatement& st = p.turn_flush;
    st.BindBytes(0, id.bytes());
    BindUser(st, 1, user);
    st.BindInt64(2, static_cast<int64_t>(epoch));
    st.BindInt64(3, turn_id);
    st.BindInt64(4, producer);
    st.BindInt64(5, first);
    st.BindString(6, events);
    st.BindInt64(7, lease_ms);
    st.Execute();
    const int64_t c = st.Int64(0, 0);
    return Placed<int64_t>{WritePlacement<Placement>(c), c};
  });
  return code ? WriteOutcome(*code) : TurnWrite::kLost;
}

TurnWrite ShardedStore::CloseTurn(const SessionId& id, const UserId& user, int64_t turn_id, int64_t producer,
                                  std::string_view state) {
  auto code = Routed<int64_t>(id, false, "end a turn", [&](Prepared& p, uint64_t epoch) {
    MysqlStatement& st = p.turn_close;
    st.BindBytes(0, id.bytes());
    BindUser(st, 1, user);
    st.BindInt64(2, static_cast<int64_t>(epoch));
    st.BindInt64(3, turn_id);
    st.BindInt64(4, producer);
    st.BindString(5, state);
    st.BindInt64(6, 0);
    st.Execute();
    const int64_t c = st.Int64(0, 0);
    return Placed<int64_t>{WritePlacement<Placement>(c), c};
  });
  return code ? WriteOutcome(*code) : TurnWrite::kLost;
}

std::optional<TurnRead> ShardedStore::ReadTurn(const SessionId& id, const UserId& user, int64_t turn_id, int64_t after,
                                               int limit) {
  for (int round = 0; round < 2; ++round) {
    bool expired = false;
    auto read = Routed<TurnRead>(id, true, "read a turn", [&](Prepared& p, uint64_t) {
      Placed<TurnRead> out{Placement::kAbsent, {}};
      MysqlStatement& st = p.turn_read;
      st.BindInt64(0, turn_id);
      st.BindBytes(1, id.bytes());
      BindUser(st, 2, user);
      st.Execute();
      if (st.row_count() == 0) return out;
      out.placement = StatePlacement<Placement>(st.Text(0, 0));
      if (!ServesRead(out.placement) || st.Int64(0, 1) == 0) return out;
      TurnRecord& t = out.value.turn;
      t.turn_id = st.Int64(0, 1);
      t.user_seq = st.Int64(0, 2);
      t.state = st.Text(0, 3);
      t.answer_seq = st.Int64(0, 4);
      t.last_event = st.Int64(0, 5);
      t.cancel_requested = st.Int64(0, 6) != 0;
      t.created_us = st.DatetimeMicros(0, 7);
      t.updated_us = st.DatetimeMicros(0, 8);
      expired = t.state == "in_progress" && st.Int64(0, 9) != 0;
      MysqlStatement& ev = p.turn_events;
      ev.BindBytes(0, id.bytes());
      ev.BindInt64(1, turn_id);
      ev.BindInt64(2, after);
      ev.BindInt64(3, limit);
      ev.Execute();
      out.value.events.reserve(ev.row_count());
      for (size_t i = 0; i < ev.row_count(); ++i) out.value.events.push_back(TurnEvent{ev.Int64(i, 0), ev.Text(i, 1)});
      return out;
    });
    if (!read || !expired || round == 1) return read;
    // Its producer is presumed dead: end it (conditionally: a producer that
    // renewed its lease meanwhile keeps it), then read it again.
    LOG_WARN("session %s: turn %016llx outlived its lease; marking it incomplete", id.text().c_str(),
             static_cast<unsigned long long>(turn_id));
    Routed<bool>(id, false, "end a turn whose producer died", [&](Prepared& p, uint64_t epoch) {
      MysqlStatement& st = p.turn_expire;
      st.BindBytes(0, id.bytes());
      BindUser(st, 1, user);
      st.BindInt64(2, static_cast<int64_t>(epoch));
      st.BindInt64(3, turn_id);
      st.Execute();
      const int64_t c = st.Int64(0, 0);
      return Placed<bool>{c == 1 ? Placement::kHere : CodePlacement<Placement>(c), true};
    });
  }
  return std::nullopt;  // Not reached.
}

bool ShardedStore::CancelTurn(const SessionId& id, const UserId& user, int64_t turn_id) {
  auto done = Routed<bool>(id, false, "cancel a turn", [&](Prepared& p, uint64_t epoch) {
    MysqlStatement& st = p.turn_cancel;
    st.BindBytes(0, id.bytes());
    BindUser(st, 1, user);
    st.BindInt64(2, static_cast<int64_t>(epoch));
    st.BindInt64(3, turn_id);
    st.Execute();
    const int64_t c = st.Int64(0, 0);
    return Placed<bool>{c == 1 ? Placement::kHere : CodePlacement<Placement>(c), true};
  });
  return done.has_value();
}

void ShardedStore::MaybeExpireTurns(const std::string& shard) {
  // Each run forgets up to 100 turns; one in 16 opens runs it.
  if (++opened_ % 16 != 0) return;
  try {
    OnShard(ShardNamed(shard), false, "expire turns", [&](Prepared& p) {
      p.turn_expire_old.BindInt64(0, config_.turn_retention_s);
      p.turn_expire_old.Execute();
      return 0;
    });
  } catch (const DbError& e) {
    LOG_WARN("shard %s: expiring old turns failed (the next opens try again): %s", shard.c_str(), e.what());
  }
}

}  // namespace chatllm
