// shardctl: operator tool for the shards (docs/operations.md).
//
//   shardctl --config FILE migrate     apply sql/ migrations to every shard
//   shardctl --config FILE locate ID   which shard owns a session
//   shardctl --config FILE ring        each shard's share of the ring

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "fcgi_app/config.h"
#include "fcgi_app/db_connection.h"
#include "fcgi_app/ids.h"
#include "fcgi_app/migrator.h"
#include "shard_router/ring.h"

namespace {

constexpr const char* kUsage =
    "usage: shardctl --config FILE COMMAND [ARGS]\n"
    "\n"
    "Commands:\n"
    "  migrate        apply the embedded sql/ migrations to every shard (idempotent)\n"
    "  locate ID      print the shard that owns session ID\n"
    "  ring           print each shard's weight and share of the hash ring\n"
    "\n"
    "Run 'shardctl COMMAND --help' for a command's details.\n";

int Fail(const std::string& message) {
  std::fprintf(stderr, "shardctl: %s\n", message.c_str());
  return 1;
}

bool WantsHelp(const std::vector<std::string>& args) {
  for (const auto& a : args) {
    if (a == "--help" || a == "-h") return true;
  }
  return false;
}

shard_router::Ring BuildRing(const chatllm::Config& config) {
  std::vector<shard_router::ShardWeight> weights;
  for (const auto& s : config.shards) weights.push_back({s.name, s.weight});
  shard_router::Ring ring;
  shard_router::Status st = shard_router::Ring::Build(weights, &ring);
  if (!st.ok()) throw chatllm::ConfigError(config.path + ": " + st.message());
  return ring;
}

int Migrate(const chatllm::Config& config, const std::vector<std::string>& args) {
  if (WantsHelp(args)) {
    std::puts("usage: shardctl --config FILE migrate\n\n"
              "Applies every embedded migration (sql/NNN_name.sql) that a shard has not yet\n"
              "applied, as the shard's migrate_user. Safe to rerun and to run concurrently.");
    return 0;
  }
  chatllm::DbOptions options;
  options.connect_timeout_s = config.connect_timeout_s;
  int failures = 0;
  for (const auto& s : config.shards) {
    chatllm::DbEndpoint ep{s.name, s.host, s.port, s.database, s.migrate_user, s.migrate_password};
    try {
      chatllm::MigrationReport r = chatllm::MigrateShard(ep, options);
      std::printf("shard %s: schema version %d -> %d (%zu applied)\n", s.name.c_str(),
                  r.from_version, r.to_version, r.applied.size());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "shardctl: migrate: %s\n", e.what());
      ++failures;
    }
  }
  return failures == 0 ? 0 : 1;
}

int Locate(const chatllm::Config& config, const std::vector<std::string>& args) {
  if (WantsHelp(args) || args.size() != 1) {
    std::puts("usage: shardctl --config FILE locate SESSION_ID\n\n"
              "Prints the shard that owns the session under the configured ring.");
    return WantsHelp(args) ? 0 : 2;
  }
  auto id = chatllm::SessionId::Parse(args[0]);
  if (!id) return Fail("'" + args[0] + "' is not a session id (a UUID)");
  std::printf("%s\n", BuildRing(config).Lookup(id->text()).c_str());
  return 0;
}

int Ring(const chatllm::Config& config, const std::vector<std::string>& args) {
  if (WantsHelp(args)) {
    std::puts("usage: shardctl --config FILE ring\n\n"
              "Prints each shard's weight, ring points and share of the hash space.");
    return 0;
  }
  shard_router::Ring ring = BuildRing(config);
  auto shares = ring.Shares();
  std::printf("%-20s %8s %8s %8s\n", "shard", "weight", "points", "share");
  for (const auto& s : ring.shards()) {
    std::printf("%-20s %8u %8u %7.2f%%\n", s.name.c_str(), s.weight,
                s.weight * shard_router::Ring::kPointsPerWeight, 100.0 * shares[s.name]);
  }
  return 0;
}

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
  if (command.empty()) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  if (config_path.empty() && !WantsHelp(args)) return Fail("--config FILE is required");
  try {
    chatllm::Config config;
    if (!config_path.empty()) config = chatllm::LoadConfig(config_path);
    if (command == "migrate") return Migrate(config, args);
    if (command == "locate") return Locate(config, args);
    if (command == "ring") return Ring(config, args);
  } catch (const chatllm::ConfigError& e) {
    return Fail(std::string("config error: ") + e.what());
  }
  std::fprintf(stderr, "shardctl: unknown command '%s'\n\n%s", command.c_str(), kUsage);
  return 2;
}
