// chatllm-admin: users and API keys (docs/security.md).
//
//   chatllm-admin --config FILE COMMAND [ARGS]     chatllm-admin COMMAND --help
//
// The command line is declared in Commands() (base/options.h); each command
// is a function of a ClusterAdmin for the config and what was parsed.

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "admin/cluster_admin.h"
#include "base/api_key.h"
#include "base/config.h"
#include "base/options.h"
#include "base/time_util.h"

namespace {

using chatllm::AdminError;
using chatllm::ClusterAdmin;
using chatllm::CommandSpec;
using chatllm::ParsedArgs;

// A command that ran and failed: one line, exit 1.
int Fail(const std::string& message) {
  std::fprintf(stderr, "chatllm-admin: %s\n", message.c_str());
  return chatllm::kExitFailure;
}

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '@' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string Date(int64_t us) { return us == 0 ? "-" : chatllm::FormatRfc3339(us).substr(0, 19) + "Z"; }

std::string Unhex(const std::string& hex) {
  std::string out;
  if (hex.size() % 2 != 0) return "";
  for (size_t i = 0; i < hex.size(); i += 2) {
    char* end = nullptr;
    std::string byte = hex.substr(i, 2);
    long v = std::strtol(byte.c_str(), &end, 16);
    if (*end != '\0') return "";
    out.push_back(static_cast<char>(v));
  }
  return out;
}

int UserAdd(ClusterAdmin& admin, const ParsedArgs& args) {
  const std::string name = args.Argument("NAME");
  if (!ValidName(name)) return Fail("'" + name + "' is not a valid user name");
  ClusterAdmin::UserInfo u = admin.AddUser(name);
  std::printf("user %s (id %s) created %s\n", u.name.c_str(), chatllm::Hex(u.id).c_str(), Date(u.created_us).c_str());
  return 0;
}

int UserList(ClusterAdmin& admin, const ParsedArgs&) {
  std::printf("%-32s %-32s %-20s %-8s %s\n", "name", "id", "created", "state", "keys");
  for (const auto& u : admin.ListUsers()) {
    std::printf("%-32s %-32s %-20s %-8s %d\n", u.name.c_str(), chatllm::Hex(u.id).c_str(), Date(u.created_us).c_str(),
                u.disabled ? "disabled" : "active", u.keys);
  }
  return 0;
}

int UserDisable(ClusterAdmin& admin, const ParsedArgs& args) {
  admin.SetUserDisabled(args.Argument("NAME"), true);
  std::printf("user %s disabled\n", args.Argument("NAME").c_str());
  return 0;
}

int UserEnable(ClusterAdmin& admin, const ParsedArgs& args) {
  admin.SetUserDisabled(args.Argument("NAME"), false);
  std::printf("user %s enabled\n", args.Argument("NAME").c_str());
  return 0;
}

int KeyCreate(ClusterAdmin& admin, const ParsedArgs& args) {
  const std::string user = args.Argument("USER");
  const std::string label = args.Value("label");
  if (label.size() > 64) return Fail("--label is longer than 64 characters");
  int64_t expires_us = 0;
  if (args.Has("expires-in")) {
    std::optional<double> days = chatllm::ParseNumber(args.Value("expires-in"));
    if (!days || !(*days > 0 && *days <= 3650)) {
      return Fail(
          "--expires-in wants a number of days above 0, at most 3650 (fractions allowed); "
          "leave it out for a key that does not expire");
    }
    expires_us = chatllm::NowMicros() + static_cast<int64_t>(*days * 86400e6);
  }
  std::string key = admin.CreateKey(user, label, expires_us);
  std::fprintf(stderr, "key for %s created%s; it is shown once, store it now:\n", user.c_str(),
               expires_us ? (", expires " + Date(expires_us)).c_str() : "");
  std::printf("%s\n", key.c_str());
  return 0;
}

int KeyList(ClusterAdmin& admin, const ParsedArgs& args) {
  std::printf("%-16s %-24s %-20s %-20s %-20s %-20s\n", "key id", "user", "label", "created", "expires", "revoked");
  for (const auto& k : admin.ListKeys(args.Argument("USER"))) {
    std::printf("%-16s %-24s %-20s %-20s %-20s %-20s\n", chatllm::Hex(k.id).c_str(), k.user.c_str(), k.label.c_str(),
                Date(k.created_us).c_str(), Date(k.expires_us).c_str(), Date(k.revoked_us).c_str());
  }
  return 0;
}

int KeyRevoke(ClusterAdmin& admin, const ParsedArgs& args) {
  const std::string hex = args.Argument("KEY_ID");
  std::string id = Unhex(hex);
  if (id.size() != 8) return Fail("'" + hex + "' is not a key id (16 hex digits, see key list)");
  admin.RevokeKey(id);
  std::printf("key %s revoked\n", hex.c_str());
  return 0;
}

int Sync(ClusterAdmin& admin, const ParsedArgs&) {
  std::printf("users and keys copied to %d shards\n", admin.SyncAuth());
  return 0;
}

// The command's run: a ClusterAdmin for the config --config names, then
// `command`. Every error of loading it or of the shards is one line and
// exit 1, as chatllm-admin has always done.
std::function<int(const ParsedArgs&)> WithAdmin(int (*command)(ClusterAdmin&, const ParsedArgs&)) {
  return [command](const ParsedArgs& args) {
    try {
      const chatllm::Config config = chatllm::LoadConfig(args.Value("config"));
      ClusterAdmin admin(config);
      return command(admin, args);
    } catch (const chatllm::ConfigError& e) {
      return Fail(std::string("config error: ") + e.what());
    } catch (const AdminError& e) {
      return Fail(e.what());
    } catch (const std::exception& e) {
      return Fail(e.what());
    }
  };
}

CommandSpec Commands() {
  CommandSpec user{
      .name = "user",
      .description =
          "Users own API keys; a disabled user's keys stop working. Users and keys are written "
          "to every shard, in parallel.",
      .subcommands = {{.name = "add",
                       .summary = "create a user (or show the existing one)",
                       .description = "Creates the user on every shard, or shows it if it exists.",
                       .arguments = {{"NAME", "1..64 characters of [A-Za-z0-9._@-]"}},
                       .run = WithAdmin(UserAdd)},
                      {.name = "list",
                       .summary = "users, with their number of live keys",
                       .description = "Lists every user: name, id, creation, state and number of live keys.",
                       .run = WithAdmin(UserList)},
                      {.name = "disable",
                       .summary = "a disabled user's keys stop working",
                       .description = "Disables the user: its keys stop working (within [auth] "
                                      "key_cache_ttl_ms) until 'user enable'.",
                       .arguments = {{"NAME"}},
                       .run = WithAdmin(UserDisable)},
                      {.name = "enable",
                       .summary = "the keys of a disabled user work again",
                       .description = "Enables a disabled user: its keys that are neither revoked nor expired "
                                      "work again.",
                       .arguments = {{"NAME"}},
                       .run = WithAdmin(UserEnable)}},
  };
  CommandSpec key{
      .name = "key",
      .description = "API keys: made for a user, shown once, listed by id, revoked by id.",
      .subcommands = {{.name = "create",
                       .summary = "a new API key, printed once: store it now; DAYS above 0, at most 3650 "
                                  "(without it: no expiry)",
                       .description = "Makes a new API key for USER and prints it on stdout; it is shown once: "
                                      "store it now.",
                       .options = {{"label", "TEXT", "a note to recognise the key by, at most 64 characters"},
                                   {"expires-in", "DAYS",
                                    "the key stops working after DAYS days: above 0, at most 3650, fractions "
                                    "allowed (without it: no expiry)"}},
                       .arguments = {{"USER", "the user the key belongs to"}},
                       .run = WithAdmin(KeyCreate)},
                      {.name = "list",
                       .summary = "key ids, labels, creation, expiry, revocation",
                       .description = "Lists the keys (of USER, or of every user): id, user, label, creation, "
                                      "expiry and revocation. The secret itself is never shown again.",
                       .arguments = {{"USER", "only this user's keys", true}},
                       .run = WithAdmin(KeyList)},
                      {.name = "revoke",
                       .summary = "the key stops working (within [auth] key_cache_ttl_ms)",
                       .description = "Revokes the key: it stops working within [auth] key_cache_ttl_ms.",
                       .arguments = {{"KEY_ID", "16 hex digits, as 'key list' shows them"}},
                       .run = WithAdmin(KeyRevoke)}},
  };
  CommandSpec sync{
      .name = "sync",
      .summary = "copy every user and key to every shard (after a command reported an unreachable shard)",
      .description =
          "Copies every user and key to every shard of the map: run it after a command reported "
          "an unreachable shard.",
      .run = WithAdmin(Sync),
  };
  return CommandSpec{
      .name = "chatllm-admin",
      .options = {{"config", "FILE", "chatllm-fcgi's configuration file (docs/config.md)", true}},
      .subcommands = {std::move(user), std::move(key), std::move(sync)},
      .notes =
          "Users and keys are copied to every shard of the map; each command writes all of them "
          "with "
          "the [cluster] migrate account. Names are 1..64 characters of [A-Za-z0-9._@-].\n"
          "'chatllm-admin COMMAND --help' describes a command.",
  };
}

}  // namespace

int main(int argc, char** argv) { return chatllm::RunCommandLine(Commands(), argc, argv); }
