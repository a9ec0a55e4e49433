// shardctl's replica commands (docs/operations.md, "Replicas, switchover
// and failover"); the work is in admin/shard_ha.h.

#include "shardctl_ha.h"

#include <cstdio>
#include <fstream>
#include <string>

#include "admin/cluster_admin.h"
#include "admin/shard_ha.h"

namespace chatllm {

namespace {

int FailWith(const std::string& message) {
  std::fprintf(stderr, "shardctl: %s\n", message.c_str());
  return kExitFailure;
}

bool MemberArg(const std::string& text, DbMember* m) { return ParseMember(text, m); }

int Members(const Config& config, const ParsedArgs&) { return PrintMembers(config) == 0 ? 0 : 1; }

int Switchover(const Config& config, const ParsedArgs& args) {
  std::optional<DbMember> to;
  if (args.Has("to")) {
    DbMember m;
    if (!MemberArg(args.Value("to"), &m)) return FailWith("--to: '" + args.Value("to") + "' is not HOST:PORT");
    to = m;
  }
  ClusterAdmin admin(config);
  ShardHa ha(config, admin);
  auto map = ha.Switchover(args.Argument("SHARD"), to);
  const ShardEntry* e = map->Find(args.Argument("SHARD"));
  std::printf("shard %s: primary is now %s (map epoch %llu)\n", e->name.c_str(), MemberText(e->primary()).c_str(),
              static_cast<unsigned long long>(map->epoch()));
  return 0;
}

int Failover(const Config& config, const ParsedArgs& args) {
  ClusterAdmin admin(config);
  ShardHa ha(config, admin);
  FailoverResult r = ha.Failover(args.Argument("SHARD"), args.Has("force"));
  if (!r.promoted) return FailWith("failover of shard " + args.Argument("SHARD") + " not done: " + r.reason);
  std::printf("shard %s: %s\n", args.Argument("SHARD").c_str(), r.reason.c_str());
  return 0;
}

int Rejoin(const Config& config, const ParsedArgs& args) {
  DbMember m;
  if (!MemberArg(args.Argument("MEMBER"), &m)) return FailWith("'" + args.Argument("MEMBER") + "' is not HOST:PORT");
  ClusterAdmin admin(config);
  ShardHa ha(config, admin);
  auto map = ha.Rejoin(args.Argument("SHARD"), m);
  std::printf("shard %s: %s replicates from %s (map epoch %llu)\n", args.Argument("SHARD").c_str(),
              MemberText(m).c_str(), MemberText(map->Find(args.Argument("SHARD"))->primary()).c_str(),
              static_cast<unsigned long long>(map->epoch()));
  return 0;
}

int Replicate(const Config& config, const ParsedArgs&) {
  ClusterAdmin admin(config);
  ShardHa ha(config, admin);
  auto map = admin.LoadMap();
  ha.Bootstrap(*map);
  std::printf("every replica of map epoch %llu follows its primary; every primary takes writes\n",
              static_cast<unsigned long long>(map->epoch()));
  return 0;
}

int Monitor(const Config& config, const ParsedArgs& args) {
  ClusterAdmin admin(config);
  // A dead or frozen primary must not hold the monitor up for longer than
  // it takes to notice it.
  admin.SetTimeouts(1, 2);
  ShardHa ha(config, admin);
  const int64_t rounds = args.Has("rounds") ? std::atoll(args.Value("rounds").c_str()) : 0;
  ha.Monitor(rounds, args.Value("metrics-file"));
  return 0;
}

}  // namespace

bool ParseMemberList(const std::string& text, std::vector<DbMember>* out) {
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    std::string item = text.substr(start, end - start);
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (!item.empty()) {
      DbMember m;
      if (!ParseMember(item, &m)) return false;
      out->push_back(std::move(m));
    }
    start = end + 1;
  }
  return true;
}

void PrepareNewShard(const Config& config, const ShardEntry& entry) {
  auto one = ClusterMap::Build(0, {entry});
  if (!one.ok()) throw AdminError("shard " + entry.name + ": " + one.status().message());
  ClusterAdmin admin(config);
  ShardHa ha(config, admin);
  ha.Bootstrap(**one);
}

int PrintMembers(const Config& config) {
  ClusterAdmin admin(config);
  auto map = admin.LoadMap();
  bool any = false;
  for (const ShardEntry& e : map->shards()) any = any || !e.replicas.empty();
  if (!any) return 0;
  ShardHa ha(config, admin);
  int problems = 0;
  std::printf("\n%-12s %-22s %-8s %-9s %-22s %5s %-10s %s\n", "shard", "member", "role", "writable", "replicates from",
              "lag s", "gtid", "notes");
  for (const ShardHaReport& s : ha.Status(*map)) {
    for (const MemberReport& m : s.members) {
      std::string notes = m.error;
      if (m.role == "primary" && m.reachable) {
        if (m.read_only) notes += (notes.empty() ? "" : "; ") + std::string("read-only: not taking writes");
        notes += (notes.empty() ? "" : "; ") +
                 (m.semi_sync ? "semi-sync, " + std::to_string(m.semi_sync_clients) + " replica(s) acknowledging"
                              : std::string("alone: commits wait for no replica"));
      }
      const bool bad = !m.reachable || !m.error.empty() || (m.role == "primary" && m.read_only) ||
                       (m.role == "replica" && (!m.io_running || !m.sql_running));
      problems += bad ? 1 : 0;
      std::printf("%-12s %-22s %-8s %-9s %-22s %5s %-10s %s\n", s.shard.c_str(), MemberText(m.member).c_str(),
                  m.role.c_str(), !m.reachable ? "?" : (m.read_only ? "no" : "yes"),
                  m.source.empty() ? "-" : (m.source + (m.io_running ? "" : " (cut)")).c_str(),
                  m.lag_s < 0 ? "-" : std::to_string(m.lag_s).c_str(),
                  m.gtid_binlog_pos.empty() ? "-" : m.gtid_binlog_pos.c_str(), notes.c_str());
    }
  }
  return problems;
}

std::vector<CommandSpec> HaCommands(
    const std::function<std::function<int(const ParsedArgs&)>(ShardctlCommand)>& with_config) {
  return {
      {.name = "members",
       .summary = "each shard's primary and replicas: role, replication, lag",
       .description = "Prints every member of every shard (asked in parallel): its role in the map, whether it "
                      "takes writes, where it replicates from, its lag in seconds, its GTID position, and for a "
                      "primary whether commits wait for a replica (semi-sync). Exits 1 if a member is "
                      "unreachable, a primary is read-only or a replica does not replicate.",
       .run = with_config(Members)},
      {.name = "switchover",
       .summary = "make a replica the primary, planned: writes pause briefly",
       .description = "The primary turns read-only (the apps hold writes and wait for the new map), the "
                      "replica catches up within [ha] catchup_timeout_ms, becomes the primary, the old primary "
                      "replicates from it, and the map naming the new primary is published. If the replica "
                      "does not catch up in time the old primary takes writes again and nothing changed.",
       .options = {{"to", "HOST:PORT", "the replica to promote (default: the one furthest ahead)"}},
       .arguments = {{"SHARD", "the shard"}},
       .run = with_config(Switchover)},
      {.name = "failover",
       .summary = "promote a replica of a shard whose primary is dead",
       .description = "Promotes the replica furthest ahead after applying all it received, re-points the other "
                      "replicas, and publishes the map. Refuses while the primary takes writes, while a replica "
                      "still hears from it, within [ha] min_failover_interval_s of the last change, and while "
                      "another shardctl is failing the shard over. 'shardctl monitor' runs this by itself.",
       .options = {{"force", "",
                    "skip the liveness checks and the anti-flap window (the old primary must be "
                    "dead or fenced: you decide)"}},
       .arguments = {{"SHARD", "the shard"}},
       .run = with_config(Failover)},
      {.name = "rejoin",
       .summary = "make an old primary (or a new server) a replica of its shard",
       .description = "Points MEMBER at the shard's primary, waits until it has caught up, makes the primary wait "
                      "for its acknowledgements again and lists it in the map as a replica. Refuses a member "
                      "whose history diverged (it committed what the primary never had): rebuild that one "
                      "(docs/operations.md).",
       .arguments = {{"SHARD", "the shard"}, {"MEMBER", "HOST:PORT of the server"}},
       .run = with_config(Rejoin)},
      {.name = "replicate",
       .summary = "first start: every listed replica follows its primary",
       .description = "Points every replica in the map at its shard's primary and makes every primary "
                      "writable; leaves what is already so. Refuses a replica that is writable or follows "
                      "another server (a failover or rejoin is needed there).",
       .run = with_config(Replicate)},
      {.name = "monitor",
       .summary = "watch the primaries; fail over a dead one (run several)",
       .description = "Every [ha] check_ms: reads the map and asks every primary. A primary that does not "
                      "take writes for [ha] down_after_ms, and that its replicas no longer hear from, is "
                      "failed over (as 'shardctl failover'). An old primary seen writable again is made "
                      "read-only. Run one on each of two or more hosts: they cannot both promote (a lock on the "
                      "replicas) and the second sees the new map. Logs to stderr; runs until killed.",
       .options = {{"rounds", "N", "stop after N rounds (tests)"},
                   {"metrics-file", "FILE",
                    "write every member's state there each round, in the Prometheus text format (for "
                    "node_exporter's textfile collector; docs/metrics.md)"}},
       .run = with_config(Monitor)},
  };
}

}  // namespace chatllm
