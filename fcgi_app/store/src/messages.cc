// Messages: a turn's appends (with its Idempotency-Key: claimed with the
// user message, completed with the answer), the key's failure mark, and the
// reads of a history.

#include <algorithm>
#include <optional>

#include "base/json.h"
#include "base/tokens.h"
#include "routing.h"
#include "store/sharded_store.h"
#include "store/transaction.h"

namespace chatllm {
namespace {

constexpr int64_t kTakenOver = int64_t{1} << 40;  // chat_turn_begin_v2: 2^40 + the stored user seq.
constexpr int64_t kFull = -4;                     // sql/006_auth.sql
constexpr int64_t kTurnLost = -20;                // sql/010_turns.sql: the producer no longer holds the turn.

// chat_turn_begin's codes for a key that stops the turn (nothing stored).
std::optional<IdempotencyOutcome> KeyOutcome(int64_t code) {
  switch (code) {
    case -10:
      return IdempotencyOutcome::kReplay;
    case -11:
      return IdempotencyOutcome::kInFlight;
    case -12:
      return IdempotencyOutcome::kMismatch;
    default:
      return std::nullopt;
  }
}

// How a keyed turn's answer is kept (sql/008_replay_recipe.sql): the
// response column holds {"recipe":R,"user_seq":U,"answer_seq":A}, whole in
// itself (a copy that lost the answer_seq column still replays), and the
// answer_seq column marks the row for chat_turn_begin as one an older binary
// cannot render.
std::string RecipeJson(std::string_view recipe, int64_t user_seq, int64_t answer_seq) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  w.Key("recipe");
  w.String(recipe.data(), recipe.size());
  w.Key("user_seq");
  w.Int64(user_seq);
  w.Key("answer_seq");
  w.Int64(answer_seq);
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

// A stored response: a recipe (its parts into *out), or a body a binary
// before schema 8 stored (left as it is).
void ReadRecipe(const std::string& response, IdempotencyResult* out) {
  if (response.rfind("{\"recipe\":", 0) != 0) return;
  rapidjson::Document d;
  d.Parse(response.data(), response.size());
  if (!d.IsObject() || !d.HasMember("recipe") || !d["recipe"].IsString() || !d.HasMember("user_seq") ||
      !d["user_seq"].IsInt64() || !d.HasMember("answer_seq") || !d["answer_seq"].IsInt64()) {
    return;
  }
  out->response = d["recipe"].GetString();
  out->user_seq = d["user_seq"].GetInt64();
  out->answer_seq = d["answer_seq"].GetInt64();
}

// The response a finished keyed request left (chat_turn_begin_v2 said -10).
IdempotencyResult StoredResponse(Prepared& p, const UserId& user, const IdempotencyKey& key) {
  const std::string idem_user = IdemUser(user);
  MysqlStatement& st = p.idem_response;
  st.BindBytes(0, idem_user);
  st.BindBytes(1, key.target_sha);
  st.BindBytes(2, key.key);
  st.Execute();
  if (st.row_count() != 1) {
    // Expired between the two statements (a day after it was written).
    return IdempotencyResult{IdempotencyOutcome::kInFlight, 0, "", 0, 0};
  }
  IdempotencyResult out{IdempotencyOutcome::kReplay, static_cast<int>(st.Int64(0, 0)), st.Text(0, 1), 0, 0};
  ReadRecipe(out.response, &out);
  return out;
}

}  // namespace

ShardedStore::Placed<AppendResult> ShardedStore::ClaimTurn(Prepared& p, uint64_t epoch, const SessionId& id,
                                                           const UserId& user, const AppendRequest& req) {
  // The key and the user message in one statement (autocommit: atomic).
  AppendResult r;
  MysqlStatement& st = p.turn_begin;
  st.BindBytes(0, id.bytes());
  st.BindString(1, req.content);
  st.BindDatetime(2, req.created_us);
  st.BindInt64(3, static_cast<int64_t>(epoch));
  st.BindString(4, req.meta_json);
  BindUser(st, 5, user);
  st.BindInt64(6, req.max_messages);
  const std::string idem_user = IdemUser(user);
  st.BindBytes(7, idem_user);
  st.BindBytes(8, req.claim->target_sha);
  st.BindBytes(9, req.claim->key);
  st.BindBytes(10, req.claim->request_sha);
  st.BindInt64(11, config_.idempotency_ttl_s);
  st.BindInt64(12, config_.idempotency_lease_s);
  st.BindInt64(13, req.attempt);
  st.Execute();
  const int64_t code = st.Int64(0, 0);
  if (std::optional<IdempotencyOutcome> outcome = KeyOutcome(code)) {
    r.idempotency.outcome = *outcome;
    if (*outcome == IdempotencyOutcome::kReplay) r.idempotency = StoredResponse(p, user, *req.claim);
    return Placed<AppendResult>{Placement::kHere, r};
  }
  if (code == kFull) {
    r.full = true;
    return Placed<AppendResult>{Placement::kHere, r};
  }
  const Placement placement = CodePlacement<Placement>(code);
  if (placement != Placement::kHere) return Placed<AppendResult>{placement, r};
  r.reused = code > kTakenOver;
  r.seq = r.reused ? code - kTakenOver : code;
  return Placed<AppendResult>{Placement::kHere, r};
}

ShardedStore::Placed<AppendResult> ShardedStore::StoreMessage(Prepared& p, uint64_t epoch, const SessionId& id,
                                                              const UserId& user, const AppendRequest& req) {
  // An answer completing a key or closing a durable turn commits with
  // them; any other append is one autocommitted statement.
  AppendResult r;
  std::optional<Transaction> txn;
  if (req.complete || req.close_turn) txn.emplace(p.conn, p.shard);
  MysqlStatement& st = p.append;
  st.BindBytes(0, id.bytes());
  st.BindString(1, req.role);
  st.BindString(2, req.content);
  st.BindDatetime(3, req.created_us);
  st.BindInt64(4, req.reply_to);
  st.BindInt64(5, static_cast<int64_t>(epoch));
  st.BindString(6, req.meta_json);
  BindUser(st, 7, user);
  st.BindInt64(8, req.max_messages);
  st.Execute();
  const int64_t code = st.Int64(0, 0);
  if (code == kFull) {
    r.full = true;
    return Placed<AppendResult>{Placement::kHere, r};
  }
  const Placement placement = CodePlacement<Placement>(code);
  if (placement != Placement::kHere) return Placed<AppendResult>{placement, r};
  r.seq = code;
  if (req.close_turn && req.turn_events && !req.turn_events->empty()) {
    // Its last events first, in the same transaction (the text is whole:
    // a cancel asked for meanwhile changes nothing).
    const std::string events = EventsJson(*req.turn_events);  // Bound by reference: outlives Execute.
    MysqlStatement& flush = p.turn_flush;
    flush.BindBytes(0, id.bytes());
    BindUser(flush, 1, user);
    flush.BindInt64(2, static_cast<int64_t>(epoch));
    flush.BindInt64(3, req.close_turn);
    flush.BindInt64(4, req.producer);
    flush.BindInt64(5, req.first_event);
    flush.BindString(6, events);
    flush.BindInt64(7, req.lease_ms);
    flush.Execute();
    const int64_t flushed = flush.Int64(0, 0);
    if (flushed == kTurnLost) {
      r = AppendResult{};  // Rolled back.
      r.turn_lost = true;
      return Placed<AppendResult>{Placement::kHere, r};
    }
    if (flushed < 1) {
      const Placement moved = CodePlacement<Placement>(flushed);
      return Placed<AppendResult>{moved == Placement::kHere ? Placement::kStale : moved, AppendResult{}};
    }
  }
  if (req.close_turn) {
    // The turn ends with its answer, if its producer still holds it (the
    // session's placement was checked by the append, under its row lock).
    MysqlStatement& close = p.turn_close;
    close.BindBytes(0, id.bytes());
    BindUser(close, 1, user);
    close.BindInt64(2, static_cast<int64_t>(epoch));
    close.BindInt64(3, req.close_turn);
    close.BindInt64(4, req.producer);
    close.BindString(5, req.turn_state);
    close.BindInt64(6, r.seq);
    close.Execute();
    const int64_t closed = close.Int64(0, 0);
    if (closed == kTurnLost) {
      r = AppendResult{};  // Rolled back.
      r.turn_lost = true;
      return Placed<AppendResult>{Placement::kHere, r};
    }
    if (closed != 1) {
      // A placement (a map published since the append's look): rolled
      // back and routed again, as the append would have been.
      const Placement moved = CodePlacement<Placement>(closed);
      return Placed<AppendResult>{moved == Placement::kHere ? Placement::kStale : moved, AppendResult{}};
    }
  }
  if (!req.complete) {
    if (txn) txn->Commit();
    return Placed<AppendResult>{Placement::kHere, r};
  }
  const std::string idem_user = IdemUser(user);
  const std::string recipe = RecipeJson(req.complete_recipe, req.reply_to, r.seq);
  MysqlStatement& done = p.idem_complete;
  done.BindInt64(0, req.complete_status);
  done.BindString(1, recipe);
  done.BindInt64(2, r.seq);
  done.BindInt64(3, config_.idempotency_ttl_s);
  done.BindBytes(4, idem_user);
  done.BindBytes(5, req.complete->target_sha);
  done.BindBytes(6, req.complete->key);
  done.BindInt64(7, req.attempt);
  done.Execute();
  if (done.affected_rows() != 1) {
    // A retry took the key over (this attempt outlived its lease): its
    // answer is the one kept, not this one (rolled back).
    r = AppendResult{};
    r.taken_over = true;
    return Placed<AppendResult>{Placement::kHere, r};
  }
  txn->Commit();
  return Placed<AppendResult>{Placement::kHere, r};
}

AppendResult ShardedStore::Append(const SessionId& id, const UserId& user, const AppendRequest& req) {
  auto result = Routed<AppendResult>(id, false, "append message", [&](Prepared& p, uint64_t epoch) {
    if (!req.open_turn) return req.claim ? ClaimTurn(p, epoch, id, user, req) : StoreMessage(p, epoch, id, user, req);
    // The user message and its durable turn commit together: one commit.
    Transaction txn(p.conn, p.shard);
    Placed<AppendResult> r = req.claim ? ClaimTurn(p, epoch, id, user, req) : StoreMessage(p, epoch, id, user, req);
    if (r.placement != Placement::kHere) return r;  // Nothing written; rolled back.
    if (r.value.seq != 0 && !r.value.full && r.value.idempotency.outcome == IdempotencyOutcome::kNew) {
      MysqlStatement& open = p.turn_open;
      open.BindBytes(0, id.bytes());
      BindUser(open, 1, user);
      open.BindInt64(2, static_cast<int64_t>(epoch));
      open.BindInt64(3, req.open_turn);
      open.BindInt64(4, r.value.seq);
      open.BindInt64(5, req.producer);
      open.BindInt64(6, req.lease_ms);
      open.Execute();
      const int64_t opened = open.Int64(0, 0);
      if (opened != 1) {
        // The append checked the placement under the row lock: a map
        // published since. Rolled back, routed again.
        const Placement moved = CodePlacement<Placement>(opened);
        return Placed<AppendResult>{moved == Placement::kHere ? Placement::kStale : moved, AppendResult{}};
      }
      r.value.turn_opened = true;
    }
    txn.Commit();
    return r;
  });
  if (req.claim && result && result->seq != 0) MaybeExpireKeys(last_shard_);
  if (result && result->turn_opened) MaybeExpireTurns(last_shard_);
  return result.value_or(AppendResult{});
}

void ShardedStore::MaybeExpireKeys(const std::string& shard) {
  // Each run forgets up to 200 keys; one in 16 claims runs it, so keys are
  // forgotten faster than turns make them.
  if (++claims_ % 16 != 0) return;
  try {
    OnShard(ShardNamed(shard), false, "expire idempotency keys", [](Prepared& p) {
      p.idem_expire.Execute();
      return 0;
    });
  } catch (const DbError& e) {
    LOG_WARN("shard %s: expiring idempotency keys failed (the next claims try again): %s", shard.c_str(), e.what());
  }
}

void ShardedStore::FailTurnKey(const SessionId& id, const UserId& user, const IdempotencyKey& key, int64_t attempt) {
  try {
    const std::string idem_user = IdemUser(user);
    Routed<bool>(id, false, "mark an idempotency key failed", [&](Prepared& p, uint64_t epoch) {
      MysqlStatement& st = p.turn_fail;
      st.BindBytes(0, id.bytes());
      st.BindInt64(1, static_cast<int64_t>(epoch));
      BindUser(st, 2, user);
      st.BindBytes(3, idem_user);
      st.BindBytes(4, key.target_sha);
      st.BindBytes(5, key.key);
      st.BindInt64(6, attempt);
      st.Execute();
      return Placed<bool>{CodePlacement<Placement>(st.Int64(0, 0)), true};
    });
  } catch (const DbError& e) {
    LOG_WARN("session %s: marking an idempotency key failed did not work (a retry takes it over after %d s): %s",
             id.text().c_str(), config_.idempotency_lease_s, e.what());
  }
}

std::optional<std::vector<MessageRecord>> ShardedStore::ListMessages(const SessionId& id, int64_t after, int limit,
                                                                     const UserId& user) {
  return Routed<std::vector<MessageRecord>>(id, true, "list messages", [&](Prepared& p, uint64_t) {
    MysqlStatement& st = p.list;
    st.BindBytes(0, id.bytes());
    BindUser(st, 1, user);
    st.BindInt64(2, after);
    st.BindInt64(3, limit);
    st.Execute();
    Placed<std::vector<MessageRecord>> out{Placement::kAbsent, {}};
    out.placement = MessagesPlacement<Placement>(st, p.place, id, user, &out.value);
    return out;
  });
}

std::optional<std::vector<MessageRecord>> ShardedStore::ReadMessages(const SessionId& id,
                                                                     const std::vector<int64_t>& seqs,
                                                                     const UserId& user) {
  std::vector<MessageRecord> out;
  for (size_t i = 0; i < seqs.size(); i += 2) {  // Two per statement.
    auto pair = Routed<std::vector<MessageRecord>>(id, true, "read messages", [&](Prepared& p, uint64_t) {
      MysqlStatement& st = p.pick;
      st.BindBytes(0, id.bytes());
      BindUser(st, 1, user);
      st.BindInt64(2, seqs[i]);
      st.BindInt64(3, i + 1 < seqs.size() ? seqs[i + 1] : seqs[i]);
      st.Execute();
      Placed<std::vector<MessageRecord>> found{Placement::kAbsent, {}};
      found.placement = MessagesPlacement<Placement>(st, p.place, id, user, &found.value);
      return found;
    });
    if (!pair) return std::nullopt;
    for (MessageRecord& m : *pair) out.push_back(std::move(m));
  }
  std::sort(out.begin(), out.end(), [](const MessageRecord& a, const MessageRecord& b) { return a.seq < b.seq; });
  return out;
}

std::optional<TurnContext> ShardedStore::LoadContext(const SessionId& id, int limit, int64_t token_budget,
                                                     const UserId& user) {
  return Routed<TurnContext>(id, true, "load context", [&](Prepared& p, uint64_t) {
    Placed<TurnContext> out{Placement::kAbsent, {}};
    MysqlStatement& st = p.context;
    st.BindBytes(0, id.bytes());
    BindUser(st, 1, user);
    st.BindInt64(2, limit);
    st.Execute();
    if (st.row_count() == 0) {  // No message yet, or no session.
      MysqlStatement& s = p.session;
      s.BindBytes(0, id.bytes());
      BindUser(s, 1, user);
      s.Execute();
      if (s.row_count() == 0) return out;
      out.placement = StatePlacement<Placement>(s.Text(0, 0));
      out.value.model = s.Text(0, 1);
      out.value.system_prompt = s.Text(0, 2);
      return out;
    }
    out.placement = StatePlacement<Placement>(st.Text(0, 3));
    if (!ServesRead(out.placement)) return out;
    out.value.model = st.Text(0, 4);
    out.value.system_prompt = st.Text(0, 5);
    // Newest first: keep messages while the estimate fits the budget.
    int64_t spent = 0;
    size_t keep = 0;
    for (; keep < st.row_count(); ++keep) {
      spent += EstimateTokens(st.Text(keep, 2));
      if (spent > token_budget) break;
    }
    out.value.messages.resize(keep);
    for (size_t i = 0; i < keep; ++i) {
      MessageRecord& m = out.value.messages[keep - 1 - i];  // Oldest first.
      m.seq = st.Int64(i, 0);
      m.role = st.Text(i, 1);
      m.content = st.Text(i, 2);
    }
    return out;
  });
}

}  // namespace chatllm
