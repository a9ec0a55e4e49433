// shardctl: the operator's tool for the shards (docs/operations.md).
//
//   shardctl --config FILE COMMAND [ARGS]     shardctl COMMAND --help
//
// The command line is declared in Commands() (base/options.h); each command
// is a function of the loaded config and what was parsed.

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "admin/cluster_admin.h"
#include "base/config.h"
#include "base/ids.h"
#include "base/options.h"
#include "base/time_util.h"
#include "shard_router/router.h"
#include "shardctl_ha.h"
#include "store/migrator.h"
#include "store/store.h"

namespace {

using chatllm::AdminError;
using chatllm::ClusterAdmin;
using chatllm::ClusterMap;
using chatllm::CommandSpec;
using chatllm::Config;
using chatllm::ParsedArgs;
using chatllm::ShardEntry;

// A command that ran and failed: one line, exit 1.
int Fail(const std::string& message) {
  std::fprintf(stderr, "shardctl: %s\n", message.c_str());
  return chatllm::kExitFailure;
}

// A shard weight as the ring accepts it (1..Ring::kMaxWeight), or nullopt.
std::optional<uint32_t> Weight(const std::string& text) {
  std::optional<int64_t> w = chatllm::ParseInteger(text);
  if (!w || *w < 1 || *w > shard_router::Ring::kMaxWeight) return std::nullopt;
  return static_cast<uint32_t>(*w);
}

void PrintMap(const ClusterMap& map) {
  auto shares = map.router().to_ring().Shares();
  std::printf("shard map epoch %llu%s\n", static_cast<unsigned long long>(map.epoch()),
              map.router().moving() ? " (a move is in progress: run shardctl rebalance)" : "");
  for (const ShardEntry& s : map.shards()) {
    std::printf("  %-12s %-9s %s:%d/%s weight %u share %.1f%%\n", s.name.c_str(), shard_router::ShardStateName(s.state),
                s.host.c_str(), s.port, s.database.c_str(), s.weight,
                100.0 * (shares.count(s.name) ? shares[s.name] : 0.0));
  }
}

int Status(const Config& config, const ParsedArgs& args) {
  ClusterAdmin admin(config);
  auto map = admin.LoadMap();
  auto shares = map->router().to_ring().Shares();
  std::printf("shard map epoch %llu%s\n\n", static_cast<unsigned long long>(map->epoch()),
              map->router().moving() ? " (a move is in progress: run shardctl rebalance)" : "");
  std::printf("%-12s %-9s %-22s %6s %7s %6s %6s %10s %12s %10s\n", "shard", "state", "address", "weight", "share",
              "fence", "schema", "sessions", "messages", "in transit");
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
  const int member_problems = chatllm::PrintMembers(config);
  return unreachable == 0 && member_problems == 0 ? 0 : 1;
}

int Map(const Config& config, const ParsedArgs& args) {
  ClusterAdmin admin(config);
  std::printf("%s\n", admin.LoadMap()->ToJson().c_str());
  return 0;
}

int Locate(const Config& config, const ParsedArgs& args) {
  const std::string text = args.Argument("SESSION_ID");
  auto id = chatllm::SessionId::Parse(text);
  if (!id) return Fail("'" + text + "' is not a session id (a UUID)");
  ClusterAdmin admin(config);
  auto map = admin.LoadMap();
  const auto& router = map->router();
  std::printf("%s\n", router.Owner(id->text()).c_str());
  if (router.NeedsMove(id->text())) {
    std::printf("  previous owner (epoch %llu is mid-move): %s\n", static_cast<unsigned long long>(map->epoch()),
                router.PreviousOwner(id->text()).c_str());
  }
  const std::map<std::string, std::string> states = admin.Locate(id->text(), id->bytes());
  bool held = false, unknown = false;
  for (const auto& [shard, state] : states) {
    held |= state == "active" || state == "moving" || state == "incoming";
    unknown |= state == "unreachable";
  }
  if (isatty(STDOUT_FILENO)) {  // Scripts read the first line only.
    for (const auto& [shard, state] : states) {
      std::printf("  on %s: %s\n", shard.c_str(), state.c_str());
    }
  }
  if (!held && !unknown) {
    std::fprintf(stderr, "shardctl: locate: no session %s exists (the first line is the shard that would hold it)\n",
                 id->text().c_str());
    return 1;
  }
  return 0;
}

int Ring(const Config& config, const ParsedArgs& args) {
  // NAME or NAME:WEIGHT, read before any shard is asked.
  const std::string spec = args.Value("simulate-add");
  const size_t colon = spec.find(':');
  uint32_t weight = 100;
  if (colon != std::string::npos) {
    std::optional<uint32_t> w = Weight(spec.substr(colon + 1));
    if (!w) {
      return Fail("--simulate-add wants NAME:WEIGHT with WEIGHT 1.." + std::to_string(shard_router::Ring::kMaxWeight));
    }
    weight = *w;
  }
  ClusterAdmin admin(config);
  auto map = admin.LoadMap();
  PrintMap(*map);
  if (!args.Has("simulate-add")) return 0;
  std::vector<shard_router::ShardWeight> weights;
  for (const auto& s : map->router().to_ring().shards()) weights.push_back(s);
  weights.push_back({spec.substr(0, colon), weight});
  shard_router::Ring after;
  shard_router::Status st = shard_router::Ring::Build(weights, &after);
  if (!st.ok()) return Fail(st.message());
  std::printf("\nwith %s added:\n", spec.c_str());
  for (const auto& [name, share] : after.Shares()) {
    std::printf("  %-12s share %.1f%%\n", name.c_str(), 100.0 * share);
  }
  std::printf("sessions that would move: %.1f%% (all of them onto %s)\n",
              100.0 * shard_router::MovedFraction(map->router().to_ring(), after), spec.substr(0, colon).c_str());
  return 0;
}

int AddShard(const Config& config, const ParsedArgs& args) {
  ShardEntry e;
  e.name = args.Argument("NAME");
  e.host = args.Value("host");
  if (args.Has("database")) e.database = args.Value("database");
  if (!shard_router::IsValidShardName(e.name)) {
    return Fail("shard name must be 1..64 characters of [a-z0-9_-]");
  }
  std::optional<int64_t> port = chatllm::ParseInteger(args.Value("port"));
  if (!port || *port < 1 || *port > 65535) return Fail("--port must be 1..65535");
  e.port = static_cast<int>(*port);
  if (args.Has("weight")) {
    std::optional<uint32_t> weight = Weight(args.Value("weight"));
    if (!weight) {
      return Fail("--weight must be 1.." + std::to_string(shard_router::Ring::kMaxWeight));
    }
    e.weight = *weight;
  }
  if (args.Has("replicas") && !chatllm::ParseMemberList(args.Value("replicas"), &e.replicas)) {
    return Fail("--replicas must be HOST:PORT[,HOST:PORT...]");
  }
  chatllm::PrepareNewShard(config, e);
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

// Moves every misplaced session (rebalance, and the second half of drain).
int Rebalance(const Config& config, chatllm::RebalanceOptions opt) {
  int64_t start = chatllm::MonotonicMicros();
  if (!opt.dry_run) {
    opt.progress = [start](int64_t done, int64_t total) { Progress(done, total, start); };
  }
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
  if (r.final_epoch) {
    std::printf("published shard map epoch %llu: the move is complete\n",
                static_cast<unsigned long long>(r.final_epoch));
  }
  if (r.homes_epoch) {
    std::printf(
        "listed %lld sessions on their users' homes, gave %lld API keys their units; published shard map "
        "epoch %llu: lists, the session limit and key lookups are served from the homes and units\n",
        static_cast<long long>(r.listed), static_cast<long long>(r.keys),
        static_cast<unsigned long long>(r.homes_epoch));
  }
  return 0;
}

// --move-batch and --rate (rebalance and drain) into `opt`; false (with a
// message) if one is malformed.
bool ParseMoveOptions(const ParsedArgs& args, chatllm::RebalanceOptions* opt) {
  if (args.Has("move-batch")) {
    std::optional<int64_t> n = chatllm::ParseInteger(args.Value("move-batch"));
    if (!n || *n < 1 || *n > 1000) return Fail("--move-batch wants a number of sessions from 1 to 1000"), false;
    opt->move_batch = static_cast<int>(*n);
  }
  if (args.Has("rate")) {
    std::optional<double> rate = chatllm::ParseNumber(args.Value("rate"));
    if (!rate) return Fail("--rate wants a number of sessions per second"), false;
    opt->rate = *rate;
  }
  return true;
}

int RunRebalance(const Config& config, const ParsedArgs& args) {
  chatllm::RebalanceOptions opt;
  opt.dry_run = args.Has("dry-run");
  if (args.Has("batch")) {
    std::optional<int64_t> batch = chatllm::ParseInteger(args.Value("batch"));
    if (!batch) return Fail("--batch wants a whole number of sessions");
    opt.batch = static_cast<int>(std::clamp<int64_t>(*batch, 1, std::numeric_limits<int>::max()));
  }
  if (!ParseMoveOptions(args, &opt)) return chatllm::kExitUsage;
  return Rebalance(config, std::move(opt));
}

int Drain(const Config& config, const ParsedArgs& args) {
  const std::string name = args.Argument("NAME");
  chatllm::RebalanceOptions opt;
  if (!ParseMoveOptions(args, &opt)) return chatllm::kExitUsage;
  ClusterAdmin admin(config);
  auto map = admin.Drain(name);
  std::printf("shard %s is draining (epoch %llu); moving its sessions\n", name.c_str(),
              static_cast<unsigned long long>(map->epoch()));
  int rc = Rebalance(config, std::move(opt));
  if (rc == 0) {
    std::printf("shard %s is drained; 'shardctl remove-shard %s' removes it from the map\n", name.c_str(),
                name.c_str());
  }
  return rc;
}

int RemoveShard(const Config& config, const ParsedArgs& args) {
  ClusterAdmin admin(config);
  auto map = admin.RemoveShard(args.Argument("NAME"));
  PrintMap(*map);
  return 0;
}

int Relist(const Config& config, const ParsedArgs&) {
  ClusterAdmin admin(config);
  chatllm::RelistResult r = admin.Relist();
  std::printf(
      "relist: %lld sessions listed that were missing; %lld entries of sessions that do not exist left for "
      "the apps to remove\n",
      static_cast<long long>(r.listed), static_cast<long long>(r.marked));
  return 0;
}

int Verify(const Config& config, const ParsedArgs& args) {
  ClusterAdmin admin(config);
  chatllm::VerifyReport r = admin.Verify();
  for (size_t i = 0; i < r.problems.size() && i < 50; ++i) {
    std::printf("PROBLEM %s\n", r.problems[i].c_str());
  }
  if (r.to_move > 0) {
    std::printf("verify: %lld sessions are still on their previous owner (shardctl rebalance moves them)\n",
                static_cast<long long>(r.to_move));
  }
  if (r.unsettled_entries > 0) {
    std::printf("verify: %lld list entries of creates or deletes in flight or cut short (settled when read)\n",
                static_cast<long long>(r.unsettled_entries));
  }
  std::printf("verify: %lld sessions, %lld messages, %zu problems\n", static_cast<long long>(r.sessions),
              static_cast<long long>(r.messages), r.problems.size());
  return r.problems.empty() ? 0 : 1;
}

int Audit(const Config& config, const ParsedArgs& args) {
  ClusterAdmin admin(config);
  int64_t sessions = 0;
  const std::vector<std::string> doubled = admin.Audit(&sessions);
  for (const std::string& id : doubled) {
    std::printf("PROBLEM session %s is active on two shards\n", id.c_str());
  }
  std::printf("audit: %lld sessions, %zu active on two shards\n", static_cast<long long>(sessions), doubled.size());
  return doubled.empty() ? 0 : 1;
}

int Migrate(const Config& config, const ParsedArgs& args) {
  ClusterAdmin admin(config);
  auto map = admin.LoadMap();
  std::vector<ShardEntry> targets = map->shards();
  for (const auto& s : config.shards) {  // Seeds too, even if the map no longer has them.
    if (!map->Find(s.name)) {
      targets.push_back(
          ShardEntry{s.name, s.host, s.port, s.database, s.weight, shard_router::ShardState::kActive, s.replicas, 0});
    }
  }
  int failures = 0;
  for (const ShardEntry& e : targets) {
    try {
      chatllm::DbEndpoint ep{e.name, e.host, e.port, e.database, config.migrate_user, config.migrate_password};
      chatllm::MigrationReport r = chatllm::MigrateShard(ep, chatllm::DbOptions{});
      std::printf("shard %s: schema version %d -> %d (%zu applied)\n", e.name.c_str(), r.from_version, r.to_version,
                  r.applied.size());
    } catch (const std::exception& err) {
      std::fprintf(stderr, "shardctl: migrate: shard %s: %s\n", e.name.c_str(), err.what());
      ++failures;
    }
  }
  return failures == 0 ? 0 : 1;
}

// The command's run: loads the config --config names, then calls `command`.
// Every error of loading it or of the shards is one line and exit 1, as
// shardctl has always done.
std::function<int(const ParsedArgs&)> WithConfig(int (*command)(const Config&, const ParsedArgs&)) {
  return [command](const ParsedArgs& args) {
    try {
      const Config config = chatllm::LoadConfig(args.Value("config"));
      return command(config, args);
    } catch (const chatllm::ConfigError& e) {
      return Fail(std::string("config error: ") + e.what());
    } catch (const AdminError& e) {
      return Fail(e.what());
    } catch (const std::exception& e) {
      return Fail(e.what());
    }
  };
}

// `options` and the two that rebalance and drain share (ParseMoveOptions).
std::vector<chatllm::OptionSpec> WithMoveOptions(std::vector<chatllm::OptionSpec> options) {
  options.push_back({"move-batch", "N", "sessions moved together, 1..1000 (default 100; 1: one by one)"});
  options.push_back({"rate", "R", "move at most R sessions per second"});
  return options;
}

CommandSpec Commands() {
  CommandSpec root{
      .name = "shardctl",
      .options = {{"config", "FILE", "chatllm-fcgi's configuration file (docs/config.md)", true}},
      .notes =
          "The config is chatllm-fcgi's: [cluster] gives the accounts (migrate_user), the\n"
          "[shard.NAME] sections the seed shards the map is read from.\n"
          "'shardctl COMMAND --help' describes a command.",
  };
  root.subcommands = {
      {.name = "status",
       .summary = "epoch; per shard: state, sessions, messages, ring share; members",
       .description = "Prints the newest shard map's epoch and, per shard: state, address, weight, ring "
                      "share, "
                      "fence epoch, schema version, active sessions, their messages, and sessions in transit "
                      "(the shards are asked in parallel). Exits 1 if a shard is unreachable.",
       .run = WithConfig(Status)},
      {.name = "map",
       .summary = "the newest shard map, as JSON",
       .description = "Prints the newest shard map as JSON (the form [cluster] map_file reads).",
       .run = WithConfig(Map)},
      {.name = "locate",
       .summary = "the shard that owns a session (mid-move: also the previous)",
       .description = "Prints the shard that owns the session under the newest map (first line) and, while a "
                      "move is in progress, its previous owner; on a terminal also the session's state on "
                      "each. "
                      "Exits 1, saying so, if no shard holds the session.",
       .arguments = {{"SESSION_ID", "the session's id (a UUID)"}},
       .run = WithConfig(Locate)},
      {.name = "ring",
       .summary = "each shard's share; --simulate-add: what adding one moves",
       .description = "Prints each shard's share of the ring. With --simulate-add, the shares "
                      "after adding that "
                      "shard and the exact fraction of sessions that would move.",
       .options = {{"simulate-add", "NAME:WEIGHT", "a shard to add in the simulation (WEIGHT: default 100)"}},
       .run = WithConfig(Ring)},
      {.name = "add-shard",
       .summary = "migrate a new shard, publish the next map with it joining",
       .description = "Applies the migrations to the new (empty) shard, then publishes the next map epoch "
                      "with "
                      "it joining and raises every shard's fence. New sessions land on it at once; 'shardctl "
                      "rebalance' moves the existing ones. Rerun it if it fails halfway.",
       .options = {{"host", "H", "the shard's MariaDB host", true},
                   {"port", "P", "its port, 1..65535", true},
                   {"database", "D", "its database (default chatllm)"},
                   {"weight", "W", "its ring weight, 1..1000 (default 100)"},
                   {"replicas", "HOST:PORT,...", "its replicas (they follow it before it joins)"}},
       .arguments = {{"NAME", "the shard's name: 1..64 characters of [a-z0-9_-]"}},
       .run = WithConfig(AddShard)},
      {.name = "rebalance",
       .summary = "move every misplaced session; resumable",
       .description = "Moves every session that is not on its owner shard (see docs/operations.md for the "
                      "protocol), showing progress, then publishes the map with joining shards active and "
                      "draining ones drained. The shards are scanned in parallel; sessions that go the same way "
                      "move in batches. Interrupt it at any time and run it again: it finishes what was "
                      "started.",
       .options = WithMoveOptions({{"dry-run", "", "count the sessions to move, move nothing"},
                                   {"batch", "N", "sessions read per scan query (default 200)"}}),
       .run = WithConfig(RunRebalance)},
      {.name = "drain",
       .summary = "move every session off a shard (then remove-shard)",
       .description = "Publishes the next map with NAME draining and moves all its sessions to the other "
                      "shards (a rebalance). Then 'shardctl remove-shard NAME'.",
       .options = WithMoveOptions({}),
       .arguments = {{"NAME", "the shard to drain"}},
       .run = WithConfig(Drain)},
      {.name = "remove-shard",
       .summary = "drop a drained, empty shard from the map",
       .description = "Publishes the next map without NAME, which must be drained and hold no session.",
       .arguments = {{"NAME", "the shard to remove"}},
       .run = WithConfig(RemoveShard)},
      {.name = "verify",
       .summary = "check that every session is on exactly its owner shard",
       .description = "Checks that every session is active on exactly one shard, its owner; that nothing is "
                      "left in transit; that every session's message_count matches its messages; and that every "
                      "user's list matches the user's sessions (the shards are read in parallel; a mismatch is "
                      "read again before it is reported). Prints each problem; exits 1 if there is any.",
       .run = WithConfig(Verify)},
      {.name = "relist",
       .summary = "repair the users' lists against the sessions (what verify reports)",
       .description = "Lists every session missing from its user's list, recounts every user's sessions, and "
                      "marks list entries whose session does not exist so that the apps remove them on their "
                      "next read. Reads every shard (one after another); every shard must be up. Safe to rerun "
                      "and to run under traffic.",
       .run = WithConfig(Relist)},
      {.name = "audit",
       .summary = "while sessions move: is any session active on two shards?",
       .description = "Reads every shard without the rebalance lock (it runs while sessions move) and reports "
                      "any session active on two shards at once, which a move never makes (the shards are "
                      "scanned in parallel, then each candidate is read again shard by shard). Exits 1 if "
                      "there is one.",
       .run = WithConfig(Audit)},
      {.name = "migrate",
       .summary = "apply the sql/ migrations to every shard",
       .description = "Applies every embedded migration (sql/NNN_name.sql) a shard has not applied, to every "
                      "shard of the map and every seed, as [cluster] migrate_user. Safe to rerun and to run "
                      "concurrently.",
       .run = WithConfig(Migrate)},
  };
  for (CommandSpec& c : chatllm::HaCommands(WithConfig)) root.subcommands.push_back(std::move(c));
  return root;
}

}  // namespace

int main(int argc, char** argv) { return chatllm::RunCommandLine(Commands(), argc, argv); }
