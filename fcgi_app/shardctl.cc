// shardctl: the operator's tool for the shards (docs/operations.md).
//
//   shardctl --config FILE COMMAND [ARGS]     shardctl COMMAND --help

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "admin/cluster_admin.h"
#include "base/config.h"
#include "base/ids.h"
#include "store/migrator.h"
#include "store/store.h"
#include "base/time_util.h"
#include "shard_router/router.h"

namespace {

using chatllm::AdminError;
using chatllm::ClusterAdmin;
using chatllm::ClusterMap;
using chatllm::Config;
using chatllm::ShardEntry;

constexpr const char* kUsage =
    "usage: shardctl --config FILE COMMAND [ARGS]\n"
    "\n"
    "Commands:\n"
    "  status                 epoch, shards, state, sessions and messages per shard, ring share\n"
    "  map                    the newest shard map, as JSON\n"
    "  locate ID              the shard that owns a session (and, mid-move, its previous one)\n"
    "  ring [--simulate-add NAME:WEIGHT]\n"
    "                         share of each shard; with --simulate-add, what adding one would move\n"
    "  add-shard NAME --host H --port P [--database D] [--weight W]\n"
    "                         migrate a new shard and publish the next map with it joining\n"
    "  rebalance [--dry-run] [--batch N] [--rate R]\n"
    "                         move every misplaced session; resumable\n"
    "  drain NAME             move every session off a shard (then remove-shard)\n"
    "  remove-shard NAME      drop a drained, empty shard from the map\n"
    "  verify                 check that every session is on exactly its owner shard\n"
    "  audit                  while sessions move: is any session active on two shards?\n"
    "  migrate                apply the sql/ migrations to every shard\n"
    "\n"
    "The config is chatllm-fcgi's: [cluster] gives the accounts (migrate_user), the\n"
    "[shard.NAME] sections the seed shards the map is read from.\n";

struct Command {
  const char* name;
  const char* help;
  int (*run)(const Config&, const std::vector<std::string>&);
};

int Fail(const std::string& message) {
  std::fprintf(stderr, "shardctl: %s\n", message.c_str());
  return 1;
}

// Reads --flag VALUE pairs and positional arguments. Returns false on a flag
// not in `known` or without its value.
bool ParseArgs(const std::vector<std::string>& args, const std::vector<std::string>& known,
               const std::vector<std::string>& switches, std::map<std::string, std::string>* flags,
               std::vector<std::string>* positional, std::string* error) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0) {
      positional->push_back(a);
      continue;
    }
    if (std::find(switches.begin(), switches.end(), a) != switches.end()) {
      (*flags)[a] = "1";
    } else if (std::find(known.begin(), known.end(), a) != known.end()) {
      if (i + 1 >= args.size()) {
        *error = a + " needs a value";
        return false;
      }
      (*flags)[a] = args[++i];
    } else {
      *error = "unknown option " + a;
      return false;
    }
  }
  return true;
}

void PrintMap(const ClusterMap& map) {
  auto shares = map.router().to_ring().Shares();
  std::printf("shard map epoch %llu%s\n", static_cast<unsigned long long>(map.epoch()),
              map.router().moving() ? " (a move is in progress: run shardctl rebalance)" : "");
  for (const ShardEntry& s : map.shards()) {
    std::printf("  %-12s %-9s %s:%d/%s weight %u share %.1f%%\n", s.name.c_str(),
                shard_router::ShardStateName(s.state), s.host.c_str(), s.port, s.database.c_str(), s.weight,
                100.0 * (shares.count(s.name) ? shares[s.name] : 0.0));
  }
}

int Status(const Config& config, const std::vector<std::string>& args) {
  if (!args.empty()) return Fail("status takes no arguments");
  ClusterAdmin admin(config);
  auto map = admin.LoadMap();
  auto shares = map->router().to_ring().Shares();
  std::printf("shard map epoch %llu%s\n\n", static_cast<unsigned long long>(map->epoch()),
              map->router().moving() ? " (a move is in progress: run shardctl rebalance)" : "");
  std::printf("%-12s %-9s %-22s %6s %7s %6s %6s %10s %12s %10s\n", "shard", "state", "address", "weight",
              "share", "fence", "schema", "sessions", "messages", "in transit");
  int unreachable = 0;
  auto reports = admin.Status(*map);
  for (size_t i = 0; i < reports.size(); ++i) {
    const ShardEntry& s = map->shards()[i];
    const chatllm::ShardReport& r = reports[i];
    std::string address = s.host + ":" + std::to_string(s.port);
    if (!r.error.empty()) {
      ++unreachable;
      std::printf("%-12s %-9s %-22s %6u %6.1f%%  %s\n", s.name.c_str(), shard_router::ShardStateName(s.state),
                  address.c_str(), s.weight, 100.0 * (shares.count(s.name) ? shares[s.name] : 0.0), r.error.c_str());
      continue;
    }
    std::printf("%-12s %-9s %-22s %6u %6.1f%% %6lld %6d %10lld %12lld %10lld\n", s.name.c_str(),
                shard_router::ShardStateName(s.state), address.c_str(), s.weight,
                100.0 * (shares.count(s.name) ? shares[s.name] : 0.0), static_cast<long long>(r.fence),
                r.schema_version, static_cast<long long>(r.sessions), static_cast<long long>(r.messages),
                static_cast<long long>(r.in_transit));
  }
  return unreachable == 0 ? 0 : 1;
}

int Map(const Config& config, const std::vector<std::string>& args) {
  if (!args.empty()) return Fail("map takes no arguments");
  ClusterAdmin admin(config);
  std::printf("%s\n", admin.LoadMap()->ToJson().c_str());
  return 0;
}

int Locate(const Config& config, const std::vector<std::string>& args) {
  if (args.size() != 1) return Fail("usage: shardctl locate SESSION_ID");
  auto id = chatllm::SessionId::Parse(args[0]);
  if (!id) return Fail("'" + args[0] + "' is not a session id (a UUID)");
  ClusterAdmin admin(config);
  auto map = admin.LoadMap();
  const auto& router = map->router();
  std::printf("%s\n", router.Owner(id->text()).c_str());
  if (router.NeedsMove(id->text())) {
    std::printf("  previous owner (epoch %llu is mid-move): %s\n",
                static_cast<unsigned long long>(map->epoch()), router.PreviousOwner(id->text()).c_str());
  }
  const std::map<std::string, std::string> states = admin.Locate(id->text(), id->bytes());
  bool held = false, unknown = false;
  for (const auto& [shard, state] : states) {
    held |= state == "active" || state == "moving" || state == "incoming";
    unknown |= state == "unreachable";
  }
  if (isatty(STDOUT_FILENO)) {  // Scripts read the first line only.
    for (const auto& [shard, state] : states) std::printf("  on %s: %s\n", shard.c_str(), state.c_str());
  }
  if (!held && !unknown) {
    std::fprintf(stderr, "shardctl: locate: no session %s exists (the first line is the shard that would hold it)\n",
                 id->text().c_str());
    return 1;
  }
  return 0;
}

int Ring(const Config& config, const std::vector<std::string>& args) {
  std::map<std::string, std::string> flags;
  std::vector<std::string> pos;
  std::string error;
  if (!ParseArgs(args, {"--simulate-add"}, {}, &flags, &pos, &error) || !pos.empty()) {
    return Fail(error.empty() ? "usage: shardctl ring [--simulate-add NAME:WEIGHT]" : error);
  }
  ClusterAdmin admin(config);
  auto map = admin.LoadMap();
  PrintMap(*map);
  if (!flags.count("--simulate-add")) return 0;
  std::string spec = flags["--simulate-add"];
  size_t colon = spec.find(':');
  std::vector<shard_router::ShardWeight> weights;
  for (const auto& s : map->router().to_ring().shards()) weights.push_back(s);
  weights.push_back({spec.substr(0, colon), colon == std::string::npos ? 100u
                                                                       : static_cast<uint32_t>(std::atoi(spec.c_str() + colon + 1))});
  shard_router::Ring after;
  shard_router::Status st = shard_router::Ring::Build(weights, &after);
  if (!st.ok()) return Fail(st.message());
  std::printf("\nwith %s added:\n", spec.c_str());
  for (const auto& [name, share] : after.Shares()) std::printf("  %-12s share %.1f%%\n", name.c_str(), 100.0 * share);
  std::printf("sessions that would move: %.1f%% (all of them onto %s)\n",
              100.0 * shard_router::MovedFraction(map->router().to_ring(), after), spec.substr(0, colon).c_str());
  return 0;
}

int AddShard(const Config& config, const std::vector<std::string>& args) {
  std::map<std::string, std::string> flags;
  std::vector<std::string> pos;
  std::string error;
  if (!ParseArgs(args, {"--host", "--port", "--database", "--weight"}, {}, &flags, &pos, &error) ||
      pos.size() != 1 || !flags.count("--host") || !flags.count("--port")) {
    return Fail(error.empty() ? "usage: shardctl add-shard NAME --host H --port P [--database D] [--weight W]" : error);
  }
  ShardEntry e;
  e.name = pos[0];
  e.host = flags["--host"];
  e.port = std::atoi(flags["--port"].c_str());
  if (flags.count("--database")) e.database = flags["--database"];
  if (flags.count("--weight")) e.weight = static_cast<uint32_t>(std::atoi(flags["--weight"].c_str()));
  if (!shard_router::IsValidShardName(e.name)) return Fail("shard name must be 1..64 characters of [a-z0-9_-]");
  if (e.port < 1 || e.port > 65535) return Fail("--port must be 1..65535");
  ClusterAdmin admin(config);
  auto map = admin.AddShard(e);
  PrintMap(*map);
  std::printf("\nshard %s is joining; run 'shardctl rebalance' to move its sessions onto it\n", e.name.c_str());
  return 0;
}

void Progress(int64_t done, int64_t total, int64_t start_us) {
  double secs = (chatllm::MonotonicMicros() - start_us) / 1e6;
  double rate = secs > 0 ? done / secs : 0;
  double eta = rate > 0 ? (total - done) / rate : 0;
  constexpr int kWidth = 30;
  int filled = total > 0 ? static_cast<int>(kWidth * done / total) : kWidth;
  std::string bar(filled, '#');
  bar.resize(kWidth, '.');
  bool tty = isatty(STDERR_FILENO);
  static int64_t last_print = 0;
  if (!tty && done != total && chatllm::MonotonicMicros() - last_print < 1000000) return;
  last_print = chatllm::MonotonicMicros();
  std::fprintf(stderr, "%s[%s] %lld/%lld sessions  %.0f/s  ETA %.0fs%s", tty ? "\r" : "", bar.c_str(),
               static_cast<long long>(done), static_cast<long long>(total), rate, eta, tty ? "" : "\n");
  if (tty && done == total) std::fputc('\n', stderr);
}

int RunRebalance(const Config& config, const std::vector<std::string>& args) {
  std::map<std::string, std::string> flags;
  std::vector<std::string> pos;
  std::string error;
  if (!ParseArgs(args, {"--batch", "--rate"}, {"--dry-run"}, &flags, &pos, &error) || !pos.empty()) {
    return Fail(error.empty() ? "usage: shardctl rebalance [--dry-run] [--batch N] [--rate R]" : error);
  }
  chatllm::RebalanceOptions opt;
  opt.dry_run = flags.count("--dry-run") > 0;
  if (flags.count("--batch")) opt.batch = std::max(1, std::atoi(flags["--batch"].c_str()));
  if (flags.count("--rate")) opt.rate = std::atof(flags["--rate"].c_str());
  int64_t start = chatllm::MonotonicMicros();
  if (!opt.dry_run) opt.progress = [start](int64_t done, int64_t total) { Progress(done, total, start); };
  ClusterAdmin admin(config);
  chatllm::RebalanceResult r = admin.Rebalance(opt);
  if (opt.dry_run) {
    std::printf("%lld sessions are not on their owner shard (dry run: nothing moved)\n",
                static_cast<long long>(r.misplaced));
    return 0;
  }
  std::printf("moved %lld sessions (%lld deleted meanwhile) in %.1f s (%.0f sessions/s)\n",
              static_cast<long long>(r.moved), static_cast<long long>(r.gone), r.seconds,
              r.seconds > 0 ? (r.moved + r.gone) / r.seconds : 0.0);
  if (r.final_epoch) std::printf("published shard map epoch %llu: the move is complete\n", static_cast<unsigned long long>(r.final_epoch));
  return 0;
}

int Drain(const Config& config, const std::vector<std::string>& args) {
  if (args.size() != 1) return Fail("usage: shardctl drain NAME");
  ClusterAdmin admin(config);
  auto map = admin.Drain(args[0]);
  std::printf("shard %s is draining (epoch %llu); moving its sessions\n", args[0].c_str(),
              static_cast<unsigned long long>(map->epoch()));
  int rc = RunRebalance(config, {});
  if (rc == 0) std::printf("shard %s is drained; 'shardctl remove-shard %s' removes it from the map\n", args[0].c_str(), args[0].c_str());
  return rc;
}

int RemoveShard(const Config& config, const std::vector<std::string>& args) {
  if (args.size() != 1) return Fail("usage: shardctl remove-shard NAME");
  ClusterAdmin admin(config);
  auto map = admin.RemoveShard(args[0]);
  PrintMap(*map);
  return 0;
}

int Verify(const Config& config, const std::vector<std::string>& args) {
  if (!args.empty()) return Fail("verify takes no arguments");
  ClusterAdmin admin(config);
  chatllm::VerifyReport r = admin.Verify();
  for (size_t i = 0; i < r.problems.size() && i < 50; ++i) std::printf("PROBLEM %s\n", r.problems[i].c_str());
  if (r.to_move > 0) {
    std::printf("verify: %lld sessions are still on their previous owner (shardctl rebalance moves them)\n",
                static_cast<long long>(r.to_move));
  }
  std::printf("verify: %lld sessions, %lld messages, %zu problems\n", static_cast<long long>(r.sessions),
              static_cast<long long>(r.messages), r.problems.size());
  return r.problems.empty() ? 0 : 1;
}

int Audit(const Config& config, const std::vector<std::string>& args) {
  if (!args.empty()) return Fail("audit takes no arguments");
  ClusterAdmin admin(config);
  int64_t sessions = 0;
  const std::vector<std::string> doubled = admin.Audit(&sessions);
  for (const std::string& id : doubled) std::printf("PROBLEM session %s is active on two shards\n", id.c_str());
  std::printf("audit: %lld sessions, %zu active on two shards\n", static_cast<long long>(sessions), doubled.size());
  return doubled.empty() ? 0 : 1;
}

int Migrate(const Config& config, const std::vector<std::string>& args) {
  if (!args.empty()) return Fail("migrate takes no arguments");
  ClusterAdmin admin(config);
  auto map = admin.LoadMap();
  std::vector<ShardEntry> targets = map->shards();
  for (const auto& s : config.shards) {  // Seeds too, even if the map no longer has them.
    if (!map->Find(s.name)) targets.push_back(ShardEntry{s.name, s.host, s.port, s.database, s.weight});
  }
  int failures = 0;
  for (const ShardEntry& e : targets) {
    try {
      chatllm::DbEndpoint ep{e.name, e.host, e.port, e.database, config.migrate_user, config.migrate_password};
      chatllm::MigrationReport r = chatllm::MigrateShard(ep, chatllm::DbOptions{});
      std::printf("shard %s: schema version %d -> %d (%zu applied)\n", e.name.c_str(), r.from_version,
                  r.to_version, r.applied.size());
    } catch (const std::exception& err) {
      std::fprintf(stderr, "shardctl: migrate: shard %s: %s\n", e.name.c_str(), err.what());
      ++failures;
    }
  }
  return failures == 0 ? 0 : 1;
}

const Command kCommands[] = {
    {"status", "usage: shardctl status\n\nPrints the newest shard map's epoch and, per shard: state, address,\n"
               "weight, ring share, fence epoch, schema version, active sessions, their\n"
               "messages, and sessions in transit. Exits 1 if a shard is unreachable.", Status},
    {"map", "usage: shardctl map\n\nPrints the newest shard map as JSON (the form [cluster] map_file reads).", Map},
    {"locate", "usage: shardctl locate SESSION_ID\n\nPrints the shard that owns the session under the newest map (first\n"
               "line) and, while a move is in progress, its previous owner; on a terminal also\nthe session's state on each. "
               "Exits 1, saying so, if no shard holds the session.", Locate},
    {"ring", "usage: shardctl ring [--simulate-add NAME:WEIGHT]\n\nPrints each shard's share of the ring. With "
             "--simulate-add, the shares after\nadding that shard and the exact fraction of sessions that would move.", Ring},
    {"add-shard", "usage: shardctl add-shard NAME --host H --port P [--database D] [--weight W]\n\n"
                  "Applies the migrations to the new (empty) shard, then publishes the next\n"
                  "map epoch with it joining and raises every shard's fence. New sessions\n"
                  "land on it at once; 'shardctl rebalance' moves the existing ones. Rerun it\n"
                  "if it fails halfway.", AddShard},
    {"rebalance", "usage: shardctl rebalance [--dry-run] [--batch N] [--rate R]\n\n"
                  "Moves every session that is not on its owner shard (see\n"
                  "docs/operations.md for the protocol), showing progress, then publishes\n"
                  "the map with joining shards active and draining ones drained.\n"
                  "Interrupt it at any time and run it again: it finishes what was started.\n"
                  "  --dry-run   count the sessions to move, move nothing\n"
                  "  --batch N   sessions read per scan query (default 200)\n"
                  "  --rate R    move at most R sessions per second", RunRebalance},
    {"drain", "usage: shardctl drain NAME\n\nPublishes the next map with NAME draining and moves all its sessions\n"
              "to the other shards (a rebalance). Then 'shardctl remove-shard NAME'.", Drain},
    {"remove-shard", "usage: shardctl remove-shard NAME\n\nPublishes the next map without NAME, which must be "
                     "drained and hold no\nsession.", RemoveShard},
    {"verify", "usage: shardctl verify\n\nChecks that every session is active on exactly one shard, its owner;\n"
               "that nothing is left in transit; and that every session's message_count\n"
               "matches its messages. Prints each problem; exits 1 if there is any.", Verify},
    {"audit", "usage: shardctl audit\n\nReads every shard without the rebalance lock (it runs while sessions move)\n"
              "and reports any session active on two shards at once, which a move never\n"
              "makes. Exits 1 if there is one.", Audit},
    {"migrate", "usage: shardctl migrate\n\nApplies every embedded migration (sql/NNN_name.sql) a shard has not "
                "applied,\nto every shard of the map and every seed, as [cluster] migrate_user.\n"
                "Safe to rerun and to run concurrently.", Migrate},
};

}  // namespace

int main(int argc, char** argv) {
  std::string config_path;
  std::string command;
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (command.empty() && arg == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (command.empty() && (arg == "--help" || arg == "-h")) {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (command.empty()) {
      command = arg;
    } else {
      args.push_back(arg);
    }
  }
  const Command* cmd = nullptr;
  for (const Command& c : kCommands) {
    if (command == c.name) cmd = &c;
  }
  if (!cmd) {
    std::fprintf(stderr, command.empty() ? "%s" : "shardctl: unknown command '%s'\n\n%s",
                 command.empty() ? kUsage : command.c_str(), kUsage);
    return 2;
  }
  for (const std::string& a : args) {
    if (a == "--help" || a == "-h") {
      std::printf("%s\n", cmd->help);
      return 0;
    }
  }
  if (config_path.empty()) return Fail("--config FILE is required");
  try {
    Config config = chatllm::LoadConfig(config_path);
    return cmd->run(config, args);
  } catch (const chatllm::ConfigError& e) {
    return Fail(std::string("config error: ") + e.what());
  } catch (const AdminError& e) {
    return Fail(e.what());
  } catch (const std::exception& e) {
    return Fail(e.what());
  }
}
