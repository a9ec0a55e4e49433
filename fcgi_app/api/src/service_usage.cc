// GET /v1/usage: the caller's usage ledger (sql/011_usage.sql) between two
// UTC days, grouped by day, model or key, with the budgets that apply to
// the calling key and where they stand. One read on the user's home (two
// with budgets).

#include <ctime>
#include <map>

#include "api/api_json.h"
#include "api/service.h"
#include "base/api_key.h"
#include "base/time_util.h"
#include "providers/pricing.h"

namespace chatllm {
namespace {

bool ValidDay(const std::string& d) {
  if (d.size() != 10 || d[4] != '-' || d[7] != '-') return false;
  for (size_t i : {0, 1, 2, 3, 5, 6, 8, 9}) {
    if (d[i] < '0' || d[i] > '9') return false;
  }
  std::tm t{};
  t.tm_year = std::stoi(d.substr(0, 4)) - 1900;
  t.tm_mon = std::stoi(d.substr(5, 2)) - 1;
  t.tm_mday = std::stoi(d.substr(8, 2));
  const int mon = t.tm_mon, mday = t.tm_mday;
  timegm(&t);  // Normalizes: a day that does not exist moves.
  return t.tm_mon == mon && t.tm_mday == mday;
}

struct Totals {
  int64_t answers = 0, prompt = 0, cached = 0, completion = 0, cost = 0;
  void Add(const UsageRow& r) {
    answers += r.answers;
    prompt += r.prompt_tokens;
    cached += r.cached_tokens;
    completion += r.completion_tokens;
    cost += r.cost_nanos;
  }
  void Write(JsonWriter& w) const {
    w.Key("answers");
    w.Int64(answers);
    w.Key("prompt_tokens");
    w.Int64(prompt);
    w.Key("cached_tokens");
    w.Int64(cached);
    w.Key("completion_tokens");
    w.Int64(completion);
    w.Key("total_tokens");
    w.Int64(prompt + completion);
    w.Key("cost_usd");
    w.String(UsdText(cost));
  }
};

void WriteBudgets(JsonWriter& w, const UsageState& state) {
  w.Key("budgets");
  w.StartArray();
  for (size_t i = 0; i < state.budgets.size() && i < state.used.size(); ++i) {
    const UsageBudget& b = state.budgets[i];
    const UsageState::Used& u = state.used[i];
    w.StartObject();
    const bool of_key = b.key_id != std::string(8, '\0');
    w.Key("scope");
    w.String(of_key ? "key" : "user");
    if (of_key) {
      w.Key("key_id");
      w.String(Hex(b.key_id));
    }
    auto limit = [&](const char* name, int64_t lim, int64_t used, bool usd, const char* reset) {
      if (lim < 0) return;
      w.Key(name);
      w.StartObject();
      auto amount = [&](int64_t v) {
        if (usd)
          w.String(UsdText(v));
        else
          w.Int64(v);
      };
      w.Key("limit");
      amount(lim);
      w.Key("used");  // Held by turns in progress included.
      amount(used);
      w.Key("remaining");
      amount(std::max<int64_t>(lim - used, 0));
      if (reset) {
        w.Key("resets_at");
        w.String(reset);
      }
      w.EndObject();
    };
    const std::string day = FormatRfc3339(NextUtcPeriodStart(false) * 1000000),
                      month = FormatRfc3339(NextUtcPeriodStart(true) * 1000000);
    limit("tokens_per_day", b.tokens_day, u.tokens_day + u.held_tokens, false, day.c_str());
    limit("tokens_per_month", b.tokens_month, u.tokens_month + u.held_tokens, false, month.c_str());
    limit("usd_per_day", b.cost_day, u.cost_day + u.held_cost, true, day.c_str());
    limit("usd_per_month", b.cost_month, u.cost_month + u.held_cost, true, month.c_str());
    limit("concurrent_turns", b.concurrent, u.held_count, false, nullptr);
    w.EndObject();
  }
  w.EndArray();
}

}  // namespace

HttpResponse Service::GetUsage(const HttpRequest& request, const UserId& user, const RequestTrace& trace) {
  std::map<std::string, std::string> q;
  if (Status s = ParseQuery(request.query, &q); !s.ok()) return FromStatus(s);
  const std::string today = FormatRfc3339(NowMicros()).substr(0, 10);
  std::string from = today.substr(0, 8) + "01", to = today, group_by = "day";
  for (const auto& [k, v] : q) {
    if (k == "from") {
      from = v;
    } else if (k == "to") {
      to = v;
    } else if (k == "group_by") {
      group_by = v;
    } else {
      return ErrorResponse(400, "invalid_request", "unknown query parameter '" + k + "' (from, to, group_by)");
    }
  }
  if (!ValidDay(from) || !ValidDay(to)) {
    return ErrorResponse(400, "invalid_request", "'from' and 'to' are days, YYYY-MM-DD (UTC)");
  }
  if (from > to) return ErrorResponse(400, "invalid_request", "'from' is after 'to'");
  if (group_by != "day" && group_by != "model" && group_by != "key") {
    return ErrorResponse(400, "invalid_request", "'group_by' is day, model or key");
  }
  std::vector<UsageRow> rows;
  UsageState state;
  if (!user.empty()) {
    rows = store_->ReadUsage(user, from, to);
    state = store_->ReadUsageState(user, trace.key_id);
  }
  std::map<std::string, Totals> groups;  // Ordered by the group's name.
  Totals total;
  for (const UsageRow& r : rows) {
    const std::string name = group_by == "day"                  ? r.day
                             : group_by == "model"              ? r.model
                             : r.key_id == std::string(8, '\0') ? ""
                                                                : Hex(r.key_id);
    groups[name].Add(r);
    total.Add(r);
  }
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  w.Key("object");
  w.String("usage");
  w.Key("from");
  w.String(from);
  w.Key("to");
  w.String(to);
  w.Key("group_by");
  w.String(group_by);
  w.Key("data");
  w.StartArray();
  for (const auto& [name, t] : groups) {
    w.StartObject();
    w.Key(group_by == "key" ? "key_id" : group_by.c_str());
    w.String(name);
    t.Write(w);
    w.EndObject();
  }
  w.EndArray();
  w.Key("total");
  w.StartObject();
  total.Write(w);
  w.EndObject();
  WriteBudgets(w, state);
  w.EndObject();
  return JsonResponse(200, buf);
}

}  // namespace chatllm
