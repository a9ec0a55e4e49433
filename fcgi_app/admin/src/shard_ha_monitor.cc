// The automatic side of shard high availability (shardctl monitor): watching
// the primaries, failing a dead one over (shard_ha.cc), running a primary
// alone when no replica acknowledges, fencing a returned old primary, and
// the members' metrics file.

#include <cstdio>
#include <set>
#include <thread>

#include "admin/shard_ha.h"
#include "base/log.h"
#include "base/time_util.h"
#include "shard_ha_conn.h"

namespace chatllm {

using namespace ha_detail;

bool ShardHa::Degrade(const ShardEntry& e) {
  // The primary waits for an acknowledgement no listed replica sends (they
  // are dead or cut off): every commit of the shard hangs. The replicas
  // leave the map first (a replica that missed what the primary commits
  // from here must never be promoted; it rejoins later), then the primary
  // stops waiting: its writes are on its own disk only until a rejoin.
  auto map = admin_.LoadMap();
  const ShardEntry* now = map->Find(e.name);
  if (!now || !(now->primary() == e.primary()) || now->replicas.empty()) return false;
  MemberReport p = Report(*now, now->primary(), "primary");
  if (!p.reachable || p.read_only || !p.semi_sync || p.semi_sync_clients > 0) return false;
  auto conn = Connect(*now, now->primary(), 1);
  if (conn->Row("SELECT COALESCE(GET_LOCK('chatllm.degrade', 0), 0) AS got")["got"] != "1") return false;
  std::vector<ShardEntry> shards = map->shards();
  for (ShardEntry& s : shards) {
    if (s.name == e.name) s.replicas.clear();
  }
  auto built = ClusterMap::Build(map->epoch() + 1, std::move(shards), map->homes_state());
  if (!built.ok()) throw AdminError("the new map would be invalid: " + built.status().message());
  std::shared_ptr<const ClusterMap> next = *built;
  // The other shards first: this primary's own write of the map would wait
  // for an acknowledgement like any other. Once they hold it, no decider
  // can promote the replicas; then the primary stops waiting, then takes
  // the map too. (A cluster of one shard has no other: there the map
  // follows a moment after.)
  admin_.PublishWhereReachable(*next, "", e.name);
  RunsAlone(*conn);
  admin_.PublishWhereReachable(*next, e.name);
  RunHook("degrade", e.name,
          MemberText(now->primary()) + " takes writes alone: no replica acknowledged for [ha] down_after_ms; epoch " +
              std::to_string(next->epoch()) + "; rejoin a replica");
  return true;
}

void ShardHa::Fence(const ShardEntry& shard, const DbMember& m) {
  // Asked until it answers (for up to 10 minutes): a cut-off server may
  // come back at any time. Runs on a detached thread of the monitor, which
  // never returns before the process ends.
  for (int attempt = 0; attempt < 600; ++attempt) {
    try {
      if (Connect(shard, m, 1)->Row("SELECT @@global.read_only AS ro")["ro"] != "0") return;
      LOG_WARN("ha: shard %s: %s is writable after it lost the primary role; making it read-only", shard.name.c_str(),
               MemberText(m).c_str());
      // Waits for as long as its hung commits do (until it is restarted).
      Connect(shard, m, 3600)->Exec("SET GLOBAL read_only = ON");
      return;
    } catch (const std::exception&) {
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
  }
}

void ShardHa::WriteMetrics(const ClusterMap& map, const std::string& path, int64_t failovers) {
  std::string out =
      "# HELP chatllm_shard_member_up The member answers (shardctl monitor).\n"
      "# TYPE chatllm_shard_member_up gauge\n"
      "# HELP chatllm_shard_member_writable The member takes writes.\n"
      "# TYPE chatllm_shard_member_writable gauge\n"
      "# HELP chatllm_shard_replica_lag_seconds Seconds_Behind_Master of a replica (-1: not replicating).\n"
      "# TYPE chatllm_shard_replica_lag_seconds gauge\n"
      "# HELP chatllm_shard_replica_replicating Both replication threads of a replica run.\n"
      "# TYPE chatllm_shard_replica_replicating gauge\n"
      "# HELP chatllm_shard_primary_acknowledging_replicas Replicas acknowledging the primary's commits.\n"
      "# TYPE chatllm_shard_primary_acknowledging_replicas gauge\n"
      "# HELP chatllm_shard_primary_waits_for_replica The primary's commits wait for an acknowledgement.\n"
      "# TYPE chatllm_shard_primary_waits_for_replica gauge\n"
      "# HELP chatllm_shard_failovers_total Failovers this monitor made.\n"
      "# TYPE chatllm_shard_failovers_total counter\n";
  for (const ShardHaReport& shard : Status(map)) {
    for (const MemberReport& m : shard.members) {
      const std::string labels =
          "{shard=\"" + shard.shard + "\",member=\"" + MemberText(m.member) + "\",role=\"" + m.role + "\"}";
      out += "chatllm_shard_member_up" + labels + (m.reachable ? " 1\n" : " 0\n");
      out += "chatllm_shard_member_writable" + labels + (m.reachable && !m.read_only ? " 1\n" : " 0\n");
      if (m.role == "replica") {
        out += "chatllm_shard_replica_lag_seconds" + labels + " " + std::to_string(m.lag_s) + "\n";
        out += "chatllm_shard_replica_replicating" + labels + (m.io_running && m.sql_running ? " 1\n" : " 0\n");
      } else {
        out +=
            "chatllm_shard_primary_acknowledging_replicas" + labels + " " + std::to_string(m.semi_sync_clients) + "\n";
        out += "chatllm_shard_primary_waits_for_replica" + labels + (m.semi_sync ? " 1\n" : " 0\n");
      }
    }
  }
  out += "chatllm_shard_failovers_total " + std::to_string(failovers) + "\n";
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (!f) {
    LOG_WARN("ha monitor: cannot write %s", tmp.c_str());
    return;
  }
  const bool ok = std::fwrite(out.data(), 1, out.size(), f) == out.size();
  if (std::fclose(f) != 0 || !ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    LOG_WARN("ha monitor: cannot write %s", path.c_str());
  }
}

void ShardHa::Monitor(int64_t rounds, const std::string& metrics_file) {
  int64_t failovers = 0;
  std::map<std::string, int64_t> bad_since;             // shard -> monotonic us its primary was first seen not serving
  std::map<std::string, std::set<std::string>> former;  // shard -> old primaries (text) to keep read-only
  std::set<std::string> fenced;                         // old primaries told to turn read-only
  std::map<std::string, int64_t> unacked_since;         // shard -> monotonic us its primary first waited for nobody
  std::shared_ptr<const ClusterMap> map;
  for (int64_t round = 0; rounds == 0 || round < rounds; ++round) {
    if (round > 0) std::this_thread::sleep_for(std::chrono::milliseconds(config_.ha_check_ms));
    try {
      auto newest = admin_.LoadMap();
      if (map && newest->epoch() != map->epoch()) {
        for (const ShardEntry& old : map->shards()) {
          const ShardEntry* now = newest->Find(old.name);
          if (now && !(now->primary() == old.primary())) former[old.name].insert(MemberText(old.primary()));
        }
      }
      map = newest;
    } catch (const std::exception& err) {
      LOG_WARN("ha monitor: reading the map: %s", err.what());
      continue;
    }
    for (const ShardEntry& e : map->shards()) {
      MemberReport p = Report(e, e.primary(), "primary");
      const bool serving = p.reachable && !p.read_only;
      if (serving) {
        bad_since.erase(e.name);
        // Waiting for acknowledgements that no replica sends.
        if (!e.replicas.empty() && p.semi_sync && p.semi_sync_clients == 0) {
          const int64_t now = MonotonicMicros();
          auto [it, first] = unacked_since.emplace(e.name, now);
          if (!first && now - it->second >= int64_t{config_.ha_down_after_ms} * 1000) {
            try {
              if (Degrade(e)) unacked_since.erase(e.name);
            } catch (const std::exception& err) {
              LOG_WARN("ha monitor: shard %s: running the primary alone failed: %s", e.name.c_str(), err.what());
            }
          }
        } else {
          unacked_since.erase(e.name);
        }
      } else {
        if (p.reachable && e.replicas.empty()) {
          // Back after a restart, and the map lists no replica that could
          // have been promoted instead: it is the shard's only copy; reopen
          // it. (With a listed replica unreachable, it waits: that replica
          // may hold acknowledged writes the restart dropped here.)
          try {
            Promote(*Connect(e, e.primary(), 1), !e.replicas.empty());
            RunHook("reopen", e.name, MemberText(e.primary()) + " takes writes again (no replica answers)");
          } catch (const std::exception& err) {
            LOG_WARN("ha monitor: shard %s: reopening %s: %s", e.name.c_str(), MemberText(e.primary()).c_str(),
                     err.what());
          }
          bad_since.erase(e.name);
          continue;
        }
        const int64_t now = MonotonicMicros();
        auto [it, first] = bad_since.emplace(e.name, now);
        if (!first && now - it->second >= int64_t{config_.ha_down_after_ms} * 1000) {
          try {
            FailoverResult r = Failover(e.name, false);
            LOG_INFO("ha monitor: shard %s: failover %s: %s", e.name.c_str(), r.promoted ? "done" : "not done",
                     r.reason.c_str());
            if (r.promoted) {
              ++failovers;
              former[e.name].insert(MemberText(e.primary()));
              bad_since.erase(e.name);
            }
          } catch (const std::exception& err) {
            LOG_WARN("ha monitor: shard %s: failover failed: %s", e.name.c_str(), err.what());
          }
        }
      }
      // An old primary that comes back writable (it was cut off, not
      // dead) is told to turn read-only as soon as it is seen. Its commits
      // cannot complete anyway (no replica acknowledges them); the request
      // waits behind the ones hung there and holds new ones back meanwhile,
      // so it runs on a thread of its own, once per member.
      for (auto fit = former[e.name].begin(); fit != former[e.name].end();) {
        DbMember m;
        const bool listed =
            ParseMember(*fit, &m) &&
            (m == e.primary() || std::find(e.replicas.begin(), e.replicas.end(), m) != e.replicas.end());
        if (listed) {
          fenced.erase(*fit);
          fit = former[e.name].erase(fit);  // Rejoined: a member again.
          continue;
        }
        if (fenced.insert(*fit).second) {
          std::thread([this, e, m] { Fence(e, m); }).detach();
        }
        ++fit;
      }
    }
    if (!metrics_file.empty()) WriteMetrics(*map, metrics_file, failovers);
  }
}

}  // namespace chatllm
