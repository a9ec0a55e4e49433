// Usage, holds and budgets on the user's home (sql/011_usage.sql): each a
// fenced stored-function call or a read there. Only the reaper also reads
// the session's shard, to find a dead turn's stored answer.

#include <algorithm>
#include <random>
#include <sstream>
#include <string_view>

#include "base/api_key.h"
#include "base/json.h"
#include "base/log.h"
#include "routing.h"
#include "shard.h"
#include "store/sharded_store.h"

namespace chatllm {
namespace {

constexpr int kLedgerSlots = 16;  // sql/011_usage.sql: a busy user's settles spread over these rows.

const std::string& NoKey() {
  static const std::string zeros(8, '\0');
  return zeros;
}

// A model name as the ledger keeps it: at most 128 bytes, cut on a UTF-8
// character boundary.
std::string ModelName(const std::string& model) {
  if (model.size() <= 128) return model;
  size_t n = 128;
  while (n > 0 && (static_cast<unsigned char>(model[n]) & 0xC0) == 0x80) --n;
  return model.substr(0, n);
}

// The usage an answer's stored metadata names for `hold_hex`, if it is that hold's.
std::optional<UsageAmount> AnswerOfHold(const std::string& meta_json, const std::string& hold_hex) {
  rapidjson::Document d;
  if (!ParseJson(meta_json, &d).ok() || !d.IsObject()) return std::nullopt;
  auto hold = d.FindMember("hold");
  if (hold == d.MemberEnd() || !hold->value.IsString() || hold_hex != hold->value.GetString()) return std::nullopt;
  UsageAmount used;
  if (auto m = d.FindMember("model"); m != d.MemberEnd() && m->value.IsString()) used.model = m->value.GetString();
  auto usage = d.FindMember("usage");
  if (usage != d.MemberEnd() && usage->value.IsObject()) {
    const auto& u = usage->value;
    auto num = [&](const char* name) -> int64_t {
      auto it = u.FindMember(name);
      return it != u.MemberEnd() && it->value.IsInt64() ? it->value.GetInt64() : 0;
    };
    used.prompt_tokens = num("prompt_tokens");
    used.cached_tokens = num("cached_tokens");
    used.completion_tokens = num("completion_tokens");
    auto cost = u.FindMember("cost_usd");
    if (cost != u.MemberEnd() && cost->value.IsString()) {
      // "D.DDDDDDDDD": nano-USD without the point.
      std::string digits;
      for (char c : std::string(cost->value.GetString())) {
        if (c >= '0' && c <= '9') digits += c;
      }
      used.cost_nanos = digits.empty() ? -1 : std::stoll(digits);
    }
  }
  return used;
}

}  // namespace

UsageRoom ParseUsageRoom(std::string_view text) {
  UsageRoom room;
  const size_t space = text.find(' ');
  if (space == std::string_view::npos || text.substr(0, space) != "1") return room;
  std::string_view rest = text.substr(space + 1);
  while (!rest.empty()) {
    const size_t end = std::min(rest.find(';'), rest.size());
    std::istringstream part{std::string(rest.substr(0, end))};
    rest.remove_prefix(std::min(end + 1, rest.size()));
    char kind = 0;
    int64_t limit = -1, left = 0;
    std::string period;
    if (!(part >> kind >> limit >> left) || limit < 0) continue;
    part >> period;
    UsageRoom::Figure* f = kind == 't'   ? &room.tokens
                           : kind == 'c' ? &room.cost_nanos
                           : kind == 'n' ? &room.turns
                                         : nullptr;
    if (!f) continue;
    f->limit = limit;
    f->remaining = std::max<int64_t>(left, 0);
    f->monthly = period == "m";
  }
  return room;
}

int ShardedStore::HoldUsage(const UserId& user, const UsageHold& h, UsageRoom* room) {
  const SessionId home = SessionId::HomeOf(user);
  *room = UsageRoom{};
  return HomeCall(user, "hold usage", [&](Prepared& p, uint64_t epoch) {
    MysqlStatement& st = p.Lazy(p.usage_hold, "SELECT chat_usage_hold(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    st.BindBytes(0, home.bytes());
    BindUser(st, 1, user);
    st.BindBytes(2, h.hold_id);
    st.BindInt64(3, h.keyed ? 1 : 0);
    st.BindBytes(4, h.key_id.empty() ? NoKey() : h.key_id);
    st.BindBytes(5, h.session_id);
    st.BindInt64(6, h.tokens);
    st.BindInt64(7, h.cost_nanos);
    st.BindInt64(8, h.lease_ms);
    st.BindInt64(9, h.keep_s);
    st.BindInt64(10, static_cast<int64_t>(epoch));
    st.Execute();
    // The code, and after 1 the room left (sql/011_usage.sql).
    const int64_t code = st.Int64(0, 0);
    if (code == kUsageHeld) *room = ParseUsageRoom(st.Text(0, 0));
    // A refusal is an answer from the home, not a placement.
    const Placement placement = code <= -11 ? Placement::kHere : CodePlacement<Placement>(code);
    return Placed<int>{placement, static_cast<int>(code)};
  });
}

bool ShardedStore::SettleUsage(const UserId& user, const std::string& hold_id, const UsageAmount& used) {
  const SessionId home = SessionId::HomeOf(user);
  thread_local std::minstd_rand rng{std::random_device{}()};
  const int slot = static_cast<int>(rng() % kLedgerSlots);
  return HomeCall(user, "settle usage", [&](Prepared& p, uint64_t epoch) {
           MysqlStatement& st = p.Lazy(p.usage_settle, "SELECT chat_usage_settle(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
           st.BindBytes(0, home.bytes());
           BindUser(st, 1, user);
           st.BindBytes(2, hold_id);
           st.BindString(3, ModelName(used.model));
           st.BindInt64(4, slot);
           st.BindInt64(5, used.prompt_tokens);
           st.BindInt64(6, used.cached_tokens);
           st.BindInt64(7, used.completion_tokens);
           st.BindInt64(8, used.cost_nanos);
           st.BindInt64(9, static_cast<int64_t>(epoch));
           st.Execute();
           const int64_t code = st.Int64(0, 0);
           return Placed<int>{CodePlacement<Placement>(code), static_cast<int>(code)};
         }) == 1;
}

void ShardedStore::ReleaseUsage(const UserId& user, const std::string& hold_id) {
  const SessionId home = SessionId::HomeOf(user);
  HomeCall(user, "release usage", [&](Prepared& p, uint64_t epoch) {
    MysqlStatement& st = p.Lazy(p.usage_release, "SELECT chat_usage_release(?, ?, ?, ?)");
    st.BindBytes(0, home.bytes());
    BindUser(st, 1, user);
    st.BindBytes(2, hold_id);
    st.BindInt64(3, static_cast<int64_t>(epoch));
    st.Execute();
    const int64_t code = st.Int64(0, 0);
    return Placed<int>{CodePlacement<Placement>(code), static_cast<int>(code)};
  });
}

void ShardedStore::AddUsage(const UserId& user, const std::string& key_id, const UsageAmount& used) {
  const SessionId home = SessionId::HomeOf(user);
  thread_local std::minstd_rand rng{std::random_device{}()};
  const int slot = static_cast<int>(rng() % kLedgerSlots);
  HomeCall(user, "count usage", [&](Prepared& p, uint64_t epoch) {
    MysqlStatement& st = p.Lazy(p.usage_add, "SELECT chat_usage_add(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    st.BindBytes(0, home.bytes());
    BindUser(st, 1, user);
    st.BindBytes(2, key_id.empty() ? NoKey() : key_id);
    st.BindString(3, ModelName(used.model));
    st.BindInt64(4, slot);
    st.BindInt64(5, used.prompt_tokens);
    st.BindInt64(6, used.cached_tokens);
    st.BindInt64(7, used.completion_tokens);
    st.BindInt64(8, used.cost_nanos);
    st.BindInt64(9, static_cast<int64_t>(epoch));
    st.Execute();
    const int64_t code = st.Int64(0, 0);
    return Placed<int>{CodePlacement<Placement>(code), static_cast<int>(code)};
  });
}

void ShardedStore::SetBudget(const UserId& user, const UsageBudget& b) {
  const SessionId home = SessionId::HomeOf(user);
  HomeCall(user, "set a budget", [&](Prepared& p, uint64_t epoch) {
    MysqlStatement& st = p.Lazy(p.usage_budget, "SELECT chat_usage_budget(?, ?, ?, ?, ?, ?, ?, ?, ?)");
    st.BindBytes(0, home.bytes());
    BindUser(st, 1, user);
    st.BindBytes(2, b.key_id.empty() ? NoKey() : b.key_id);
    const int64_t limits[] = {b.tokens_day, b.tokens_month, b.cost_day, b.cost_month, b.concurrent};
    for (int i = 0; i < 5; ++i) {
      if (limits[i] < 0)
        st.BindNull(3 + i);
      else
        st.BindInt64(3 + i, limits[i]);
    }
    st.BindInt64(8, static_cast<int64_t>(epoch));
    st.Execute();
    const int64_t code = st.Int64(0, 0);
    return Placed<int>{CodePlacement<Placement>(code), static_cast<int>(code)};
  });
}

// `fn(Prepared&)` on the user's home as a read: the home's state decides
// where it is (routing.h), then `fn` reads.
template <typename T, typename Fn>
std::optional<T> ShardedStore::HomeRead(const UserId& user, const char* what, Fn&& fn) {
  const SessionId home = SessionId::HomeOf(user);
  return Routed<T>(home, true, what, [&](Prepared& p, uint64_t) {
    MysqlStatement& st =
        p.Lazy(p.usage_home, "SELECT state FROM sessions WHERE session_id = ? AND kind = 'home' AND user_id <=> ?");
    st.BindBytes(0, home.bytes());
    BindUser(st, 1, user);
    st.Execute();
    Placed<T> out{st.row_count() == 0 ? Placement::kAbsent : StatePlacement<Placement>(st.Text(0, 0)), T{}};
    if (ServesRead(out.placement)) out.value = fn(p, home);
    return out;
  });
}

std::vector<UsageRow> ShardedStore::ReadUsage(const UserId& user, const std::string& from, const std::string& to) {
  return HomeRead<std::vector<UsageRow>>(user, "read usage",
                                         [&](Prepared& p, const SessionId& home) {
                                           MysqlStatement& st = p.Lazy(
                                               p.usage_ledger,
                                               "SELECT DATE_FORMAT(day, '%Y-%m-%d'), key_id, model, SUM(answers), "
                                               "SUM(prompt_tokens), SUM(cached_tokens), SUM(completion_tokens), "
                                               "SUM(cost_nanos) FROM usage_ledger WHERE home_id = ? AND day >= ? AND "
                                               "day <= ? GROUP BY day, key_id, model ORDER BY day, key_id, model");
                                           st.BindBytes(0, home.bytes());
                                           st.BindString(1, from);
                                           st.BindString(2, to);
                                           st.Execute();
                                           std::vector<UsageRow> rows;
                                           for (size_t i = 0; i < st.row_count(); ++i) {
                                             UsageRow r;
                                             r.day = st.Text(i, 0);
                                             r.key_id = st.Text(i, 1);
                                             r.model = st.Text(i, 2);
                                             r.answers = st.Int64(i, 3);
                                             r.prompt_tokens = st.Int64(i, 4);
                                             r.cached_tokens = st.Int64(i, 5);
                                             r.completion_tokens = st.Int64(i, 6);
                                             r.cost_nanos = st.Int64(i, 7);
                                             rows.push_back(std::move(r));
                                           }
                                           return rows;
                                         })
      .value_or(std::vector<UsageRow>{});
}

std::vector<UsageBudget> ShardedStore::ReadBudgets(const UserId& user) {
  return HomeRead<std::vector<UsageBudget>>(
             user, "read budgets",
             [&](Prepared& p, const SessionId& home) {
               MysqlStatement& b = p.Lazy(p.usage_all_budgets,
                                          "SELECT key_id, COALESCE(tokens_day, -1), COALESCE(tokens_month, -1), "
                                          "COALESCE(cost_day, -1), COALESCE(cost_month, -1), COALESCE(concurrent, -1) "
                                          "FROM usage_budgets WHERE home_id = ? ORDER BY key_id");
               b.BindBytes(0, home.bytes());
               b.Execute();
               std::vector<UsageBudget> out;
               for (size_t i = 0; i < b.row_count(); ++i) {
                 out.push_back(UsageBudget{b.Text(i, 0), b.Int64(i, 1), b.Int64(i, 2), b.Int64(i, 3), b.Int64(i, 4),
                                           b.Int64(i, 5)});
               }
               return out;
             })
      .value_or(std::vector<UsageBudget>{});
}

UsageState ShardedStore::ReadUsageState(const UserId& user, const std::string& key_id) {
  const std::string& key = key_id.empty() ? NoKey() : key_id;
  return HomeRead<UsageState>(
             user, "read budgets",
             [&](Prepared& p, const SessionId& home) {
               UsageState state;
               MysqlStatement& b = p.Lazy(p.usage_budgets,
                                          "SELECT key_id, COALESCE(tokens_day, -1), COALESCE(tokens_month, -1), "
                                          "COALESCE(cost_day, -1), COALESCE(cost_month, -1), COALESCE(concurrent, -1) "
                                          "FROM usage_budgets WHERE home_id = ? AND key_id IN (?, ?) ORDER BY key_id");
               b.BindBytes(0, home.bytes());
               b.BindBytes(1, NoKey());
               b.BindBytes(2, key);
               b.Execute();
               for (size_t i = 0; i < b.row_count(); ++i) {
                 UsageBudget budget;
                 budget.key_id = b.Text(i, 0);
                 budget.tokens_day = b.Int64(i, 1);
                 budget.tokens_month = b.Int64(i, 2);
                 budget.cost_day = b.Int64(i, 3);
                 budget.cost_month = b.Int64(i, 4);
                 budget.concurrent = b.Int64(i, 5);
                 state.budgets.push_back(std::move(budget));
               }
               // The same sums as chat_usage_check, per budget.
               MysqlStatement& s = p.Lazy(
                   p.usage_sums,
                   "SELECT COALESCE(SUM(IF(l.day = UTC_DATE(), l.prompt_tokens + l.completion_tokens, 0)), 0), "
                   "COALESCE(SUM(l.prompt_tokens + l.completion_tokens), 0), "
                   "COALESCE(SUM(IF(l.day = UTC_DATE(), l.cost_nanos, 0)), 0), COALESCE(SUM(l.cost_nanos), 0), "
                   "(SELECT COALESCE(SUM(h.tokens), 0) FROM usage_holds h WHERE h.home_id = ? AND h.state = 'held' "
                   "AND (? = 0 OR h.key_id = ?)), "
                   "(SELECT COALESCE(SUM(h.cost_nanos), 0) FROM usage_holds h WHERE h.home_id = ? AND h.state = "
                   "'held' AND (? = 0 OR h.key_id = ?)), "
                   "(SELECT COUNT(*) FROM usage_holds h WHERE h.home_id = ? AND h.state = 'held' "
                   "AND (? = 0 OR h.key_id = ?)) "
                   "FROM usage_ledger l WHERE l.home_id = ? AND l.day >= DATE_FORMAT(UTC_DATE(), '%Y-%m-01') "
                   "AND l.day <= UTC_DATE() AND (? = 0 OR l.key_id = ?)");
               for (const UsageBudget& budget : state.budgets) {
                 const int64_t per_key = budget.key_id == NoKey() ? 0 : 1;
                 for (int i = 0; i < 4; ++i) {
                   s.BindBytes(i * 3, home.bytes());
                   s.BindInt64(i * 3 + 1, per_key);
                   s.BindBytes(i * 3 + 2, budget.key_id);
                 }
                 s.Execute();
                 UsageState::Used u;
                 u.tokens_day = s.Int64(0, 0);
                 u.tokens_month = s.Int64(0, 1);
                 u.cost_day = s.Int64(0, 2);
                 u.cost_month = s.Int64(0, 3);
                 u.held_tokens = s.Int64(0, 4);
                 u.held_cost = s.Int64(0, 5);
                 u.held_count = s.Int64(0, 6);
                 state.used.push_back(u);
               }
               return state;
             })
      .value_or(UsageState{});
}

namespace {
struct Expired {
  std::string hold_id, session_id;
};
}  // namespace

int ShardedStore::ReapUsage(const UserId& user) {
  std::vector<Expired> expired =
      HomeRead<std::vector<Expired>>(user, "find expired holds", [&](Prepared& p, const SessionId& home) {
        MysqlStatement& st = p.Lazy(p.usage_expired,
                                    "SELECT hold_id, session_id FROM usage_holds WHERE home_id = "
                                    "? AND state = 'held' AND expires_at < UTC_TIMESTAMP(6) LIMIT 50");
        st.BindBytes(0, home.bytes());
        st.Execute();
        std::vector<Expired> out;
        for (size_t i = 0; i < st.row_count(); ++i) {
          out.push_back({st.Text(i, 0), st.Text(i, 1)});
        }
        return out;
      }).value_or(std::vector<Expired>{});
  int reaped = 0;
  for (const Expired& e : expired) {
    try {
      ReapOne(user, e.hold_id, e.session_id);
      ++reaped;
    } catch (const DbError& err) {
      // That session's shard does not answer: the hold waits for the next reap.
      LOG_WARN("usage: an expired hold could not be reaped yet: %s", err.what());
    }
  }
  if (reaped) LOG_INFO("usage: %d expired holds settled or released", reaped);
  return reaped;
}

void ShardedStore::ReapOne(const UserId& user, const std::string& hold_id, const std::string& session_id) {
  const Expired e{hold_id, session_id};
  // Its answer, if the turn stored one before it died: the newest
  // answers of the session since the hold, marked with its id.
  const std::string hex = Hex(e.hold_id);
  const SessionId session = SessionId::FromBytes(e.session_id);
  std::optional<UsageAmount> found;
  Routed<int>(session, true, "find a held turn's answer", [&](Prepared& p, uint64_t) {
    // The session's newest answers (not by time: the hold's clock is the
    // home's, a message's the app's).
    MysqlStatement& st = p.Lazy(p.usage_answer,
                                "SELECT COALESCE(m.meta, ''), s.state FROM sessions s LEFT JOIN messages m ON "
                                "m.session_id = s.session_id AND m.role = 'assistant' "
                                "WHERE s.session_id = ? AND s.user_id <=> ? ORDER BY m.seq DESC LIMIT 1000");
    st.BindBytes(0, session.bytes());
    BindUser(st, 1, user);
    st.Execute();
    if (st.row_count() == 0) return Placed<int>{Placement::kAbsent, 0};
    const Placement placement = StatePlacement<Placement>(st.Text(0, 1));
    if (!ServesRead(placement)) return Placed<int>{placement, 0};
    for (size_t i = 0; i < st.row_count() && !found; ++i) found = AnswerOfHold(st.Text(i, 0), hex);
    return Placed<int>{placement, 0};
  });
  if (found) {
    SettleUsage(user, e.hold_id, *found);
  } else {
    ReleaseUsage(user, e.hold_id);
  }
}

}  // namespace chatllm
