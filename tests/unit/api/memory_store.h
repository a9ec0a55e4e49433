#pragma once

// A Store in memory, for unit tests of the api room: the contract of
// store/store.h (owners, dense seqs, Idempotency-Keys claimed with the user
// message and completed with the answer, take-over after a failure) without
// shards. Failures are injected with FailNext().

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "base/tokens.h"
#include "store/db_error.h"
#include "store/store.h"

namespace chatllm::testing {

class MemoryStore : public Store {
 public:
  struct Session {
    SessionRecord record;
    std::vector<MessageRecord> messages;
  };
  struct Key {
    std::string request_sha;
    std::string state;  // running, done, failed
    int status = 0;
    std::string response;
    int64_t user_seq = 0, answer_seq = 0, attempt = 0;
  };

  // The next call named `operation` ("append", "read", ...) throws a DbError
  // of `kind` instead of running.
  void FailNext(const std::string& operation, DbErrorKind kind) { fail_[operation] = kind; }
  std::map<std::string, Session>& sessions() { return sessions_; }
  const Key* FindKey(const UserId& user, const IdempotencyKey& k) const {
    auto it = keys_.find({user, k.target_sha, k.key});
    return it == keys_.end() ? nullptr : &it->second;
  }
  int append_calls() const { return append_calls_; }

  IdempotencyResult CreateSession(const SessionId& id, const SessionRecord& session, const IdempotencyKey* idem,
                                  int status, const std::string& response, int64_t max_sessions) override {
    Check("create");
    if (max_sessions > 0 && !sessions_.count(id.bytes()) && CountSessions(session.user_id) >= max_sessions) {
      return {IdempotencyOutcome::kOverLimit, 0, ""};
    }
    if (idem) {
      auto it = keys_.find({session.user_id, idem->target_sha, idem->key});
      if (it != keys_.end()) {
        if (it->second.request_sha != idem->request_sha) return {IdempotencyOutcome::kMismatch};
        return {IdempotencyOutcome::kReplay, it->second.status, it->second.response};
      }
      keys_[{session.user_id, idem->target_sha, idem->key}] = Key{idem->request_sha, "done", status, response};
    }
    sessions_[id.bytes()] = Session{session, {}};
    return {};
  }
  std::optional<SessionRecord> GetSession(const SessionId& id, const UserId& user) override {
    Check("read");
    Session* s = Find(id, user);
    if (!s) return std::nullopt;
    return s->record;
  }
  bool DeleteSession(const SessionId& id, const UserId& user) override {
    Check("delete");
    if (!Find(id, user)) return false;
    sessions_.erase(id.bytes());
    return true;
  }
  AppendResult Append(const SessionId& id, const UserId& user, const AppendRequest& req) override {
    AppendResult r = AppendMessage(id, user, req);
    if (req.open_turn && r.seq != 0 && !r.full && r.idempotency.outcome == IdempotencyOutcome::kNew) {
      r.turn_opened = OpenTurn(id, user, req.open_turn, r.seq, req.producer, req.lease_ms);
    }
    return r;
  }
  AppendResult AppendMessage(const SessionId& id, const UserId& user, const AppendRequest& req) {
    ++append_calls_;
    Check("append");
    AppendResult r;
    Session* s = Find(id, user);
    if (!s) return r;
    Key* key = nullptr;
    if (req.claim) {
      auto [it, fresh] = keys_.try_emplace({user, req.claim->target_sha, req.claim->key});
      key = &it->second;
      if (!fresh) {
        if (key->request_sha != req.claim->request_sha) {
          r.idempotency.outcome = IdempotencyOutcome::kMismatch;
          return r;
        }
        if (key->state == "done") {
          r.idempotency = {IdempotencyOutcome::kReplay, key->status, key->response, key->user_seq, key->answer_seq};
          return r;
        }
        if (key->state == "running") {
          r.idempotency.outcome = IdempotencyOutcome::kInFlight;
          return r;
        }
        key->state = "running";  // Failed: taken over.
        key->attempt = req.attempt;
        r.seq = key->user_seq;
        r.reused = true;
        return r;
      }
      *key = Key{req.claim->request_sha, "running", 0, "", 0, 0, req.attempt};
    }
    if (req.max_messages > 0 && static_cast<int64_t>(s->messages.size()) >= req.max_messages) {
      if (req.claim) keys_.erase({user, req.claim->target_sha, req.claim->key});
      r.full = true;
      return r;
    }
    Turn* closing = nullptr;
    if (req.close_turn) {
      closing = FindTurn(id, req.close_turn);
      if (!closing || closing->record.state != "in_progress" || closing->producer != req.producer ||
          (req.turn_events && !req.turn_events->empty() && closing->record.last_event != req.first_event - 1)) {
        r.turn_lost = true;
        return r;
      }
    }
    if (req.complete) {
      auto it = keys_.find({user, req.complete->target_sha, req.complete->key});
      if (it == keys_.end() || it->second.state != "running" || it->second.attempt != req.attempt) {
        r.taken_over = true;
        return r;
      }
      key = &it->second;
    }
    MessageRecord m{static_cast<int64_t>(s->messages.size()) + 1,
                    std::string(req.role),
                    std::string(req.content),
                    req.reply_to,
                    req.created_us,
                    std::string(req.meta_json)};
    s->messages.push_back(m);
    s->record.message_count = m.seq;
    r.seq = m.seq;
    if (closing) {
      if (req.turn_events) {
        for (const std::string& text : *req.turn_events) {
          closing->events.push_back(TurnEvent{++closing->record.last_event, text});
        }
      }
      closing->record.state = std::string(req.turn_state);
      closing->record.answer_seq = m.seq;
    }
    if (req.claim) key->user_seq = m.seq;
    if (req.complete) {
      key->state = "done";
      key->status = req.complete_status;
      key->response = std::string(req.complete_recipe);
      key->answer_seq = m.seq;
    }
    return r;
  }
  void FailTurnKey(const SessionId&, const UserId& user, const IdempotencyKey& k, int64_t attempt) override {
    auto it = keys_.find({user, k.target_sha, k.key});
    if (it != keys_.end() && it->second.state == "running" && it->second.attempt == attempt)
      it->second.state = "failed";
  }
  std::optional<std::vector<MessageRecord>> ListMessages(const SessionId& id, int64_t after, int limit,
                                                         const UserId& user) override {
    Check("read");
    Session* s = Find(id, user);
    if (!s) return std::nullopt;
    std::vector<MessageRecord> out;
    for (const MessageRecord& m : s->messages) {
      if (m.seq > after && static_cast<int>(out.size()) < limit) out.push_back(m);
    }
    return out;
  }
  std::optional<std::vector<MessageRecord>> ReadMessages(const SessionId& id, const std::vector<int64_t>& seqs,
                                                         const UserId& user) override {
    Check("read");
    Session* s = Find(id, user);
    if (!s) return std::nullopt;
    std::vector<MessageRecord> out;
    for (const MessageRecord& m : s->messages) {
      for (int64_t seq : seqs) {
        if (m.seq == seq) out.push_back(m);
      }
    }
    return out;
  }
  std::optional<TurnContext> LoadContext(const SessionId& id, int limit, int64_t budget, const UserId& user) override {
    Check("read");
    Session* s = Find(id, user);
    if (!s) return std::nullopt;
    TurnContext ctx{s->record.model.value_or(""), s->record.system_prompt.value_or(""), {}};
    int64_t spent = 0;
    for (auto it = s->messages.rbegin(); it != s->messages.rend() && static_cast<int>(ctx.messages.size()) < limit;
         ++it) {
      spent += EstimateTokens(it->content);
      if (spent > budget) break;
      ctx.messages.insert(ctx.messages.begin(), MessageRecord{it->seq, it->role, it->content});
    }
    return ctx;
  }
  SessionPage ListSessions(const UserId& user, const SessionCursor&, int limit) override {
    SessionPage page;
    for (auto& [bytes, s] : sessions_) {
      if (s.record.user_id == user && static_cast<int>(page.sessions.size()) < limit) {
        page.sessions.emplace_back(SessionId::FromBytes(bytes), s.record);
      }
    }
    return page;
  }
  int64_t CountSessions(const UserId& user) const {
    int64_t n = 0;
    for (auto& [bytes, s] : sessions_) n += s.record.user_id == user;
    return n;
  }
  // Durable turns: one map, no leases (the clock does not move here).
  struct Turn {
    TurnRecord record;
    int64_t producer = 0;
    std::vector<TurnEvent> events;
  };
  std::map<std::pair<std::string, int64_t>, Turn>& turns() { return turns_; }
  // Turns opened from now on are born cancelled (a cancel that came at
  // once), or ended 'incomplete' (their producer presumed dead at once).
  bool cancel_on_open = false;
  bool expire_on_open = false;
  bool OpenTurn(const SessionId& id, const UserId& user, int64_t turn_id, int64_t user_seq, int64_t producer,
                int64_t) override {
    Check("turn");
    if (!Find(id, user)) return false;
    Turn& t = turns_[{id.bytes(), turn_id}];
    t.record.turn_id = turn_id;
    t.record.user_seq = user_seq;
    t.record.state = expire_on_open ? "incomplete" : "in_progress";
    t.record.cancel_requested = cancel_on_open;
    t.producer = producer;
    return true;
  }
  TurnWrite FlushTurn(const SessionId& id, const UserId& user, int64_t turn_id, int64_t producer, int64_t first,
                      const std::vector<std::string>& texts, int64_t) override {
    Check("turn");
    Turn* t = Find(id, user) ? FindTurn(id, turn_id) : nullptr;
    if (!t || t->record.state != "in_progress" || t->producer != producer || t->record.last_event != first - 1) {
      return TurnWrite::kLost;
    }
    for (const std::string& text : texts) t->events.push_back(TurnEvent{++t->record.last_event, text});
    return t->record.cancel_requested ? TurnWrite::kCancelRequested : TurnWrite::kOk;
  }
  TurnWrite CloseTurn(const SessionId& id, const UserId& user, int64_t turn_id, int64_t producer,
                      std::string_view state) override {
    Check("turn");
    Turn* t = Find(id, user) ? FindTurn(id, turn_id) : nullptr;
    if (!t || t->record.state != "in_progress" || t->producer != producer) return TurnWrite::kLost;
    t->record.state = std::string(state);
    return TurnWrite::kOk;
  }
  std::optional<TurnRead> ReadTurn(const SessionId& id, const UserId& user, int64_t turn_id, int64_t after,
                                   int limit) override {
    Check("turn");
    if (!Find(id, user)) return std::nullopt;
    TurnRead out;
    Turn* t = FindTurn(id, turn_id);
    if (!t) return out;
    out.turn = t->record;
    for (const TurnEvent& e : t->events) {
      if (e.seq > after && static_cast<int>(out.events.size()) < limit) out.events.push_back(e);
    }
    return out;
  }
  bool CancelTurn(const SessionId& id, const UserId& user, int64_t turn_id) override {
    Check("turn");
    if (!Find(id, user)) return false;
    Turn* t = FindTurn(id, turn_id);
    if (t && t->record.state == "in_progress") t->record.cancel_requested = true;
    return true;
  }
  std::optional<KeyRecord> LookupApiKey(const std::string&) override { return std::nullopt; }
  std::vector<ShardStatus> CheckShards() override { return {ShardStatus{"memory", true, 8, ""}}; }
  uint64_t last_epoch() const override { return 0; }

 private:
  Session* Find(const SessionId& id, const UserId& user) {
    auto it = sessions_.find(id.bytes());
    if (it == sessions_.end() || it->second.record.user_id != user) return nullptr;
    return &it->second;
  }
  Turn* FindTurn(const SessionId& id, int64_t turn_id) {
    auto it = turns_.find({id.bytes(), turn_id});
    return it == turns_.end() ? nullptr : &it->second;
  }
  void Check(const std::string& operation) {
    auto it = fail_.find(operation);
    if (it == fail_.end()) return;
    const DbErrorKind kind = it->second;
    fail_.erase(it);
    throw DbError(kind, 2013, "memory", "injected failure of " + operation);
  }

  std::map<std::string, Session> sessions_;
  std::map<std::tuple<UserId, std::string, std::string>, Key> keys_;
  std::map<std::string, DbErrorKind> fail_;
  std::map<std::pair<std::string, int64_t>, Turn> turns_;
  int append_calls_ = 0;
};

}  // namespace chatllm::testing
