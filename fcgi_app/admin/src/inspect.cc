// Checks of the cluster's placement: verify (under the rebalance lock) and
// audit (while sessions move).

#include "admin/cluster_admin.h"
#include "base/ids.h"
#include "store/mysql_statement.h"

namespace chatllm {

void ClusterAdmin::VerifyShard(const ShardEntry& shard,
                               std::map<std::string, std::vector<std::pair<std::string, std::string>>>* where,
                               ListFacts* lists, VerifyReport* report) {
  MYSQL* h = Handle(shard);
  MysqlStatement scan(h,
                      "SELECT session_id, state, kind, COALESCE(user_id, '') FROM sessions WHERE session_id > ? "
                      "ORDER BY session_id LIMIT 1000");
  std::string after;
  while (true) {
    scan.BindBytes(0, after);
    scan.Execute();
    if (scan.row_count() == 0) break;
    for (size_t i = 0; i < scan.row_count(); ++i) {
      const std::string& id = scan.Text(i, 0);
      const std::string& state = scan.Text(i, 1);
      (*where)[id].emplace_back(shard.name, state);
      const bool held = state == "active" || state == "moving";
      if (held && scan.Text(i, 2) == "home") lists->homes.insert(id);
      if (held && scan.Text(i, 2) == "session" && !scan.Text(i, 3).empty()) {  // No user: no home.
        lists->expected.emplace_back(SessionId::HomeOf(scan.Text(i, 3)).bytes(), id);
      }
    }
    after = scan.Text(scan.row_count() - 1, 0);
  }
  MysqlStatement entries(h,
                         "SELECT home_id, session_id, state FROM session_list WHERE (home_id, session_id) > (?, ?) "
                         "ORDER BY home_id, session_id LIMIT 1000");
  std::string home_after, id_after;
  while (true) {
    entries.BindBytes(0, home_after);
    entries.BindBytes(1, id_after);
    entries.Execute();
    if (entries.row_count() == 0) break;
    for (size_t i = 0; i < entries.row_count(); ++i) {
      lists->entries[{entries.Text(i, 0), entries.Text(i, 1)}] = entries.Text(i, 2);
    }
    home_after = entries.Text(entries.row_count() - 1, 0);
    id_after = entries.Text(entries.row_count() - 1, 1);
  }
  MysqlStatement miscounted(h,
                            "SELECT COUNT(*) FROM sessions h WHERE h.kind = 'home' AND h.state = 'active' AND h.listed "
                            "<> (SELECT COUNT(*) FROM session_list l WHERE l.home_id = h.session_id)");
  miscounted.Execute();
  if (miscounted.Int64(0, 0) != 0) {
    report->problems.push_back("shard " + shard.name + ": " + std::to_string(miscounted.Int64(0, 0)) +
                               " users' session counts do not match their lists");
  }
  MysqlStatement counts(h,
                        "SELECT COUNT(*) FROM sessions s WHERE s.state = 'active' AND (s.message_count <> "
                        "(SELECT COUNT(*) FROM messages m WHERE m.session_id = s.session_id) OR s.message_count <> "
                        "(SELECT COALESCE(MAX(seq), 0) FROM messages m WHERE m.session_id = s.session_id))");
  counts.Execute();
  if (counts.Int64(0, 0) != 0) {
    report->problems.push_back("shard " + shard.name + ": " + std::to_string(counts.Int64(0, 0)) +
                               " sessions whose message_count does not match their messages");
  }
  MysqlStatement orphans(h,
                         "SELECT COUNT(*) FROM messages m WHERE NOT EXISTS (SELECT 1 FROM sessions s "
                         "WHERE s.session_id = m.session_id AND s.state IN ('active', 'moving'))");
  orphans.Execute();
  if (orphans.Int64(0, 0) != 0) {
    report->problems.push_back("shard " + shard.name + ": " + std::to_string(orphans.Int64(0, 0)) +
                               " messages belong to no session held here");
  }
  MysqlStatement homeless(h,
                          "SELECT COUNT(*) FROM session_list l WHERE NOT EXISTS (SELECT 1 FROM sessions s "
                          "WHERE s.session_id = l.home_id AND s.state IN ('active', 'moving'))");
  homeless.Execute();
  if (homeless.Int64(0, 0) != 0) {
    report->problems.push_back("shard " + shard.name + ": " + std::to_string(homeless.Int64(0, 0)) +
                               " list entries belong to no home held here");
  }
  MysqlStatement total(h, "SELECT COUNT(*) FROM messages");
  total.Execute();
  report->messages += total.Int64(0, 0);
  MysqlStatement marked(h, "SELECT COUNT(*) FROM sessions WHERE arrived_from IS NOT NULL");
  marked.Execute();
  report->in_transit += marked.Int64(0, 0);  // A move stopped before its last step.
}

VerifyReport ClusterAdmin::Verify() {
  VerifyReport report;
  auto map = LoadMap();
  // A rebalance running meanwhile would make the shards' answers disagree
  // (each shard is read at a different moment): exclude it.
  LockAll(*map);
  if (map->router().moving()) {
    report.problems.push_back("map epoch " + std::to_string(map->epoch()) +
                              " has shards joining or draining: rebalance has not finished");
  }
  // Every shard read at once, each into its own part; merged below.
  using Where = std::map<std::string, std::vector<std::pair<std::string, std::string>>>;  // id -> (shard, state)
  std::vector<Where> parts(map->shards().size());
  std::vector<ListFacts> lists(map->shards().size());
  std::vector<VerifyReport> reports(map->shards().size());
  const std::vector<std::exception_ptr> errors = InParallel(map->shards(), [&](const ShardEntry& shard) {
    const size_t i = static_cast<size_t>(&shard - map->shards().data());
    VerifyShard(shard, &parts[i], &lists[i], &reports[i]);
  });
  Where where;
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string& name = map->shards()[i].name;
    if (errors[i]) {
      try {
        std::rethrow_exception(errors[i]);
      } catch (const std::exception& e) {
        report.problems.push_back("shard " + name + ": " + e.what());
      }
      continue;
    }
    for (auto& [id, places] : parts[i]) {
      for (auto& place : places) where[id].push_back(std::move(place));
    }
    report.messages += reports[i].messages;
    report.in_transit += reports[i].in_transit;
    for (std::string& p : reports[i].problems) report.problems.push_back(std::move(p));
  }
  VerifyLists(*map, lists, &report);
  std::set<std::string> homes;
  for (const ListFacts& l : lists) homes.insert(l.homes.begin(), l.homes.end());
  const bool moving = map->router().moving();
  for (const auto& [id, places] : where) {
    const std::string text = SessionId::FromBytes(id).text();
    std::vector<std::string> active, kept;  // kept: active or a 'deleted' tombstone.
    for (const auto& [shard, state] : places) {
      if (state == "active") active.push_back(shard);
      if (state == "active" || state == "deleted") kept.push_back(shard);
      if (state == "moving" || state == "incoming") {
        // Left by an interrupted move: the next rebalance finishes or undoes it.
        ++report.in_transit;
      }
    }
    if (!active.empty() && !homes.count(id)) ++report.sessions;
    if (active.size() > 1) {
      // Never right, whatever the map: say whether the copies even agree.
      std::string detail;
      for (const std::string& shard : active) {
        detail += (detail.empty() ? "" : "; ") + shard + ": " + FingerprintOf(*map->Find(shard), id, INT64_MAX).Text();
      }
      report.problems.push_back("session " + text + " is active on " + std::to_string(active.size()) + " shards (" +
                                detail + ")");
      continue;
    }
    if (kept.size() > 1) {
      report.problems.push_back("session " + text + " is held on " + std::to_string(kept.size()) + " shards");
      continue;
    }
    if (kept.empty()) continue;  // Deleted after a move: only tombstones remain.
    const std::string& owner = map->router().Owner(text);
    if (kept[0] == owner) continue;
    if (moving && map->router().PreviousOwner(text) == kept[0]) {
      ++report.to_move;  // Expected until rebalance moves it.
    } else {
      report.problems.push_back("session " + text + " is on " + kept[0] + ", its owner is " + owner);
    }
  }
  if (report.in_transit > 0) {
    report.problems.push_back(std::to_string(report.in_transit) +
                              " sessions are frozen or half-copied by an interrupted move (rerun shardctl rebalance)");
  }
  UnlockAll(*map);
  return report;
}

void ClusterAdmin::VerifyLists(const ClusterMap& map, const std::vector<ListFacts>& lists, VerifyReport* report) {
  std::map<std::pair<std::string, std::string>, std::string> entries;
  for (const ListFacts& l : lists) entries.insert(l.entries.begin(), l.entries.end());
  std::set<std::pair<std::string, std::string>> expected;
  for (const ListFacts& l : lists) expected.insert(l.expected.begin(), l.expected.end());
  // Suspects: a session with no entry, a live entry with no session. The
  // shards were read at different moments while the apps kept writing: a
  // suspect is looked at again (entry, session, entry) and reported only
  // if it still is one, with the entry unchanged around the session's look.
  std::vector<std::pair<std::string, std::string>> unlisted, orphans;
  int64_t unsettled = 0;
  for (const auto& e : expected) {
    if (!entries.count(e)) unlisted.push_back(e);
  }
  for (const auto& [e, state] : entries) {
    if (state != "live") {
      ++unsettled;  // A create or delete in flight, or one that failed half way: settled when read.
    } else if (!expected.count(e)) {
      orphans.push_back(e);
    }
  }
  auto entry_state = [&](const std::pair<std::string, std::string>& e) {
    const ShardEntry& owner = *map.Find(map.router().Owner(SessionId::FromBytes(e.first).text()));
    return OnShard(owner, "reading a list entry", [&] {
      MysqlStatement& st = Stmt(owner, "SELECT state FROM session_list WHERE home_id = ? AND session_id = ?");
      st.BindBytes(0, e.first);
      st.BindBytes(1, e.second);
      st.Execute();
      return st.row_count() ? st.Text(0, 0) : std::string();
    });
  };
  auto session_held = [&](const std::string& id) {
    for (const std::string& name : map.router().Candidates(SessionId::FromBytes(id).text())) {
      const std::string state = SessionState(*map.Find(name), id);
      if (state == "active" || state == "moving") return true;
    }
    return false;
  };
  auto still = [&](const std::vector<std::pair<std::string, std::string>>& suspects, bool want_entry) {
    std::vector<std::string> out;
    for (const auto& e : suspects) {
      if (out.size() >= 1000) break;
      const std::string before = entry_state(e);
      const bool held = session_held(e.second);
      if (entry_state(e) != before) continue;  // Changed meanwhile: a request at work.
      if (want_entry ? (held && before.empty()) : (!held && before == "live")) {
        out.push_back(SessionId::FromBytes(e.second).text());
      }
    }
    return out;
  };
  // Before the homes are complete (`shardctl rebalance` fills them), older
  // sessions are not listed yet: not a problem then.
  const std::vector<std::string> missing = map.homes() ? still(unlisted, true) : std::vector<std::string>{};
  const std::vector<std::string> phantom = still(orphans, false);
  if (!missing.empty()) {
    report->problems.push_back(std::to_string(missing.size()) +
                               " sessions are missing from their user's list (first: " + missing.front() +
                               "; shardctl relist lists them)");
  }
  if (!phantom.empty()) {
    report->problems.push_back(std::to_string(phantom.size()) +
                               " list entries name a session that does not exist (first: " + phantom.front() +
                               "; shardctl relist has the app settle them)");
  }
  report->unsettled_entries += unsettled;
}

std::vector<std::string> ClusterAdmin::Audit(int64_t* sessions) {
  auto map = LoadMap();
  // Every shard scanned at once; the check below reads them in turn.
  std::vector<std::vector<std::string>> active(map->shards().size());
  const std::vector<std::exception_ptr> errors = InParallel(map->shards(), [&](const ShardEntry& shard) {
    std::vector<std::string>& ids = active[static_cast<size_t>(&shard - map->shards().data())];
    OnShard(shard, "scanning sessions", [&] {
      MysqlStatement scan(Handle(shard),
                          "SELECT session_id FROM sessions WHERE session_id > ? AND state = 'active' "
                          "ORDER BY session_id LIMIT 1000");
      std::string after;
      while (true) {
        scan.BindBytes(0, after);
        scan.Execute();
        if (scan.row_count() == 0) break;
        for (size_t i = 0; i < scan.row_count(); ++i) ids.push_back(scan.Text(i, 0));
        after = scan.Text(scan.row_count() - 1, 0);
      }
    });
  });
  for (const std::exception_ptr& e : errors) {
    if (e) std::rethrow_exception(e);
  }
  std::map<std::string, std::vector<const ShardEntry*>> held;  // id -> shards
  for (size_t i = 0; i < active.size(); ++i) {
    for (const std::string& id : active[i]) held[id].push_back(&map->shards()[i]);
  }
  *sessions = static_cast<int64_t>(held.size());
  auto holds = [&](const ShardEntry& shard, const std::string& id) {
    return OnShard(shard, "reading session state", [&] {
      MysqlStatement& st = Stmt(shard, "SELECT state = 'active' FROM sessions WHERE session_id = ?");
      st.BindBytes(0, id);
      st.Execute();
      return st.row_count() == 1 && st.Int64(0, 0) == 1;
    });
  };
  std::vector<std::string> doubled;
  for (const auto& [id, shards] : held) {
    if (shards.size() < 2) continue;
    // X, then each other Y, then X again: held on X before and after Y.
    const ShardEntry& x = *shards[0];
    if (!holds(x, id)) continue;
    bool twice = false;
    for (size_t i = 1; i < shards.size() && !twice; ++i) twice = holds(*shards[i], id) && holds(x, id);
    if (twice) doubled.push_back(SessionId::FromBytes(id).text());
  }
  return doubled;
}

}  // namespace chatllm
