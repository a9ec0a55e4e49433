// chatllm-admin's usage and budgets (sql/011_usage.sql): budgets are
// written on the user's home like a disable; reports and the reaper ask
// every shard at once.

#include <algorithm>
#include <map>
#include <mutex>
#include <set>
#include <tuple>

#include "admin/cluster_admin.h"
#include "store/db_error.h"
#include "store/sharded_store.h"

namespace chatllm {

void ClusterAdmin::SetBudget(const std::string& name, const std::string& key_id, const UsageBudget& budget) {
  const std::vector<UserInfo> users = UsersNamed(name);
  if (users.empty()) throw AdminError("no user named '" + name + "'");
  if (!key_id.empty()) {
    bool owned = false;
    for (const KeyInfo& k : ListKeys(name)) owned = owned || k.id == key_id;
    if (!owned) throw AdminError("user '" + name + "' has no key with that id (see 'key list " + name + "')");
  }
  UsageBudget b = budget;
  b.key_id = key_id;
  for (const UserInfo& user : users) {
    try {
      Units().SetBudget(user.id, b);
    } catch (const DbError& e) {
      throw AdminError(std::string("the budget was not set: the shard of the user's home did not answer (") + e.what() +
                       "); retry when it does");
    }
  }
}

std::vector<ClusterAdmin::BudgetInfo> ClusterAdmin::Budgets(const std::string& name) {
  const std::vector<UserInfo> users = UsersNamed(name);
  if (users.empty()) throw AdminError("no user named '" + name + "'");
  std::vector<BudgetInfo> out;
  try {
    for (const UserInfo& user : users) {
      for (const UsageBudget& b : Units().ReadBudgets(user.id)) {
        const UsageState state = Units().ReadUsageState(user.id, b.key_id);
        BudgetInfo info{b, {}};
        for (size_t i = 0; i < state.budgets.size() && i < state.used.size(); ++i) {
          if (state.budgets[i].key_id == b.key_id) info.used = state.used[i];
        }
        out.push_back(info);
      }
    }
  } catch (const DbError& e) {
    throw AdminError(std::string("the shard of the user's home did not answer (") + e.what() + ")");
  }
  return out;
}

std::vector<ClusterAdmin::UsageLine> ClusterAdmin::Usage(const std::string& from, const std::string& to,
                                                         const std::string& only) {
  std::map<std::string, std::string> names;  // user id -> name
  for (const UserInfo& u : ListUsers()) names[u.id] = u.name;
  std::mutex mu;
  std::vector<UsageLine> out;
  std::set<std::string> active;  // Users whose home answered as 'active' somewhere.
  // A home counts where it is active, or frozen by a move: on the move's
  // source, unless its copy is already active elsewhere (then there), so no
  // home is counted twice.
  OnEveryShard("reading usage", [&](const ShardEntry& shard) {
    MysqlStatement& st =
        Stmt(shard,
             "SELECT s.user_id, DATE_FORMAT(l.day, '%Y-%m-%d'), l.key_id, l.model, SUM(l.answers), "
             "SUM(l.prompt_tokens), SUM(l.cached_tokens), SUM(l.completion_tokens), SUM(l.cost_nanos), "
             "s.state FROM usage_ledger l JOIN sessions s ON s.session_id = l.home_id AND s.kind = "
             "'home' AND s.state IN ('active', 'moving') WHERE l.day >= ? AND l.day <= ? "
             "GROUP BY s.user_id, l.day, l.key_id, l.model, s.state");
    st.BindString(0, from);
    st.BindString(1, to);
    st.Execute();
    std::lock_guard<std::mutex> lock(mu);
    for (size_t i = 0; i < st.row_count(); ++i) {
      auto name = names.find(st.Text(i, 0));
      UsageLine line{name == names.end() ? "" : name->second, {}};
      if (!only.empty() && line.user != only) continue;
      line.user_id = st.Text(i, 0);
      line.moving = st.Text(i, 9) == "moving";
      if (!line.moving) active.insert(line.user_id);
      line.row.day = st.Text(i, 1);
      line.row.key_id = st.Text(i, 2);
      line.row.model = st.Text(i, 3);
      line.row.answers = st.Int64(i, 4);
      line.row.prompt_tokens = st.Int64(i, 5);
      line.row.cached_tokens = st.Int64(i, 6);
      line.row.completion_tokens = st.Int64(i, 7);
      line.row.cost_nanos = st.Int64(i, 8);
      out.push_back(std::move(line));
    }
  });
  out.erase(std::remove_if(out.begin(), out.end(),
                           [&](const UsageLine& l) { return l.moving && active.count(l.user_id) > 0; }),
            out.end());
  std::sort(out.begin(), out.end(), [](const UsageLine& a, const UsageLine& b) {
    return std::tie(a.user, a.row.day, a.row.key_id, a.row.model) <
           std::tie(b.user, b.row.day, b.row.key_id, b.row.model);
  });
  return out;
}

int ClusterAdmin::ReapUsage() {
  std::mutex mu;
  std::vector<std::string> users;
  OnEveryShard("finding expired holds", [&](const ShardEntry& shard) {
    MysqlStatement& st = Stmt(shard,
                              "SELECT DISTINCT s.user_id FROM usage_holds h JOIN sessions s ON s.session_id = "
                              "h.home_id AND s.kind = 'home' AND s.state = 'active' "
                              "WHERE h.state = 'held' AND h.expires_at < UTC_TIMESTAMP(6)");
    st.Execute();
    std::lock_guard<std::mutex> lock(mu);
    for (size_t i = 0; i < st.row_count(); ++i) users.push_back(st.Text(i, 0));
  });
  int reaped = 0;
  for (const std::string& user : users) {
    try {
      // Fifty a call: until none is left.
      for (int n, round = 0; round < 1000 && (n = Units().ReapUsage(user)) > 0; ++round) reaped += n;
    } catch (const DbError& e) {
      throw AdminError(std::string("reaping stopped: a shard did not answer (") + e.what() + "); run it again");
    }
  }
  return reaped;
}

}  // namespace chatllm
