// chatllm-admin: users and API keys (docs/security.md).
//
//   chatllm-admin --config FILE COMMAND [ARGS]

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "base/api_key.h"
#include "admin/cluster_admin.h"
#include "base/config.h"
#include "base/time_util.h"

namespace {

using chatllm::AdminError;
using chatllm::ClusterAdmin;

constexpr const char* kUsage =
    "usage: chatllm-admin --config FILE COMMAND [ARGS]\n"
    "\n"
    "Commands:\n"
    "  user add NAME                     create a user (or show the existing one)\n"
    "  user list                         users, with their number of live keys\n"
    "  user disable NAME | enable NAME   a disabled user's keys stop working\n"
    "  key create USER [--label TEXT] [--expires-in DAYS]\n"
    "                                    a new API key, printed once: store it now;\n"
    "                                    DAYS above 0, at most 3650 (without it: no expiry)\n"
    "  key list [USER]                   key ids, labels, creation, expiry, revocation\n"
    "  key revoke KEY_ID                 the key stops working (within [auth] key_cache_ttl_ms)\n"
    "  sync                              copy every user and key to every shard (after a\n"
    "                                    command reported an unreachable shard)\n"
    "\n"
    "Users and keys are copied to every shard of the map; each command writes all\n"
    "of them with the [cluster] migrate account. Names are 1..64 characters of\n"
    "[A-Za-z0-9._@-].\n";

int Fail(const std::string& message) {
  std::fprintf(stderr, "chatllm-admin: %s\n", message.c_str());
  return 1;
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

int Run(ClusterAdmin& admin, const std::vector<std::string>& a) {
  auto arg = [&](size_t i) { return i < a.size() ? a[i] : std::string(); };
  if (arg(0) == "user" && arg(1) == "add" && a.size() == 3) {
    if (!ValidName(arg(2))) return Fail("'" + arg(2) + "' is not a valid user name");
    ClusterAdmin::UserInfo u = admin.AddUser(arg(2));
    std::printf("user %s (id %s) created %s\n", u.name.c_str(), chatllm::Hex(u.id).c_str(), Date(u.created_us).c_str());
    return 0;
  }
  if (arg(0) == "user" && arg(1) == "list" && a.size() == 2) {
    std::printf("%-32s %-32s %-20s %-8s %s\n", "name", "id", "created", "state", "keys");
    for (const auto& u : admin.ListUsers()) {
      std::printf("%-32s %-32s %-20s %-8s %d\n", u.name.c_str(), chatllm::Hex(u.id).c_str(), Date(u.created_us).c_str(),
                  u.disabled ? "disabled" : "active", u.keys);
    }
    return 0;
  }
  if (arg(0) == "user" && (arg(1) == "disable" || arg(1) == "enable") && a.size() == 3) {
    admin.SetUserDisabled(arg(2), arg(1) == "disable");
    std::printf("user %s %sd\n", arg(2).c_str(), arg(1).c_str());
    return 0;
  }
  if (arg(0) == "key" && arg(1) == "create" && a.size() >= 3) {
    std::string label;
    int64_t expires_us = 0;
    for (size_t i = 3; i < a.size(); i += 2) {
      if (i + 1 >= a.size()) return Fail(a[i] + " needs a value");
      if (a[i] == "--label") {
        label = a[i + 1];
        if (label.size() > 64) return Fail("--label is longer than 64 characters");
      } else if (a[i] == "--expires-in") {
        char* end = nullptr;
        double days = std::strtod(a[i + 1].c_str(), &end);
        if (end == a[i + 1].c_str() || *end != '\0' || !(days > 0 && days <= 3650)) {
          return Fail("--expires-in wants a number of days above 0, at most 3650 (fractions allowed); "
                      "leave it out for a key that does not expire");
        }
        expires_us = chatllm::NowMicros() + static_cast<int64_t>(days * 86400e6);
      } else {
        return Fail("unknown option " + a[i]);
      }
    }
    std::string key = admin.CreateKey(arg(2), label, expires_us);
    std::fprintf(stderr, "key for %s created%s; it is shown once, store it now:\n", arg(2).c_str(),
                 expires_us ? (", expires " + Date(expires_us)).c_str() : "");
    std::printf("%s\n", key.c_str());
    return 0;
  }
  if (arg(0) == "key" && arg(1) == "list" && a.size() <= 3) {
    std::printf("%-16s %-24s %-20s %-20s %-20s %-20s\n", "key id", "user", "label", "created", "expires", "revoked");
    for (const auto& k : admin.ListKeys(arg(2))) {
      std::printf("%-16s %-24s %-20s %-20s %-20s %-20s\n", chatllm::Hex(k.id).c_str(), k.user.c_str(), k.label.c_str(),
                  Date(k.created_us).c_str(), Date(k.expires_us).c_str(), Date(k.revoked_us).c_str());
    }
    return 0;
  }
  if (arg(0) == "key" && arg(1) == "revoke" && a.size() == 3) {
    std::string id = Unhex(arg(2));
    if (id.size() != 8) return Fail("'" + arg(2) + "' is not a key id (16 hex digits, see key list)");
    admin.RevokeKey(id);
    std::printf("key %s revoked\n", arg(2).c_str());
    return 0;
  }
  if (arg(0) == "sync" && a.size() == 1) {
    std::printf("users and keys copied to %d shards\n", admin.SyncAuth());
    return 0;
  }
  std::fprintf(stderr, "chatllm-admin: unknown command\n\n%s", kUsage);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path;
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (a == "--config" && i + 1 < argc && config_path.empty()) {
      config_path = argv[++i];
    } else {
      args.push_back(a);
    }
  }
  if (config_path.empty()) return Fail("--config FILE is required");
  if (args.empty()) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  try {
    chatllm::Config config = chatllm::LoadConfig(config_path);
    ClusterAdmin admin(config);
    return Run(admin, args);
  } catch (const chatllm::ConfigError& e) {
    return Fail(std::string("config error: ") + e.what());
  } catch (const AdminError& e) {
    return Fail(e.what());
  } catch (const std::exception& e) {
    return Fail(e.what());
  }
}
