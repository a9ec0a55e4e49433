// chatllm-admin: users and API keys (docs/security.md), prices (docs/config.md).
//
//   chatllm-admin --config FILE COMMAND [ARGS]     chatllm-admin COMMAND --help
//
// The command line is declared in Commands() (base/options.h); each command
// is a function of a ClusterAdmin for the config and what was parsed.

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "admin/cluster_admin.h"
#include "base/api_key.h"
#include "base/config.h"
#include "base/json.h"
#include "base/options.h"
#include "base/time_util.h"
#include "providers/pricing.h"

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

// "--usd-per-day 1.5" and the like: a non-negative count, or USD as nano-USD.
bool Limit(const ParsedArgs& args, const char* name, bool usd, int64_t* out) {
  *out = -1;
  if (!args.Has(name)) return true;
  std::optional<double> v = chatllm::ParseNumber(args.Value(name));
  if (!v || !(*v >= 0) || *v > (usd ? 9e9 : 1e15)) return false;
  *out = usd ? static_cast<int64_t>(std::llround(*v * 1e9)) : static_cast<int64_t>(*v);
  return usd || *v == std::floor(*v);
}

int BudgetSet(ClusterAdmin& admin, const ParsedArgs& args) {
  chatllm::UsageBudget b;
  struct {
    const char* name;
    bool usd;
    int64_t* field;
  } limits[] = {{"tokens-per-day", false, &b.tokens_day},
                {"tokens-per-month", false, &b.tokens_month},
                {"usd-per-day", true, &b.cost_day},
                {"usd-per-month", true, &b.cost_month},
                {"concurrent", false, &b.concurrent}};
  bool any = false;
  for (const auto& l : limits) {
    if (!Limit(args, l.name, l.usd, l.field)) {
      return Fail(std::string("--") + l.name + (l.usd ? " wants USD, 0 or more" : " wants a whole number, 0 or more"));
    }
    any = any || *l.field >= 0;
  }
  if (!any) return Fail("name at least one limit (or use 'budget clear')");
  std::string key;
  if (args.Has("key")) {
    key = Unhex(args.Value("key"));
    if (key.size() != 8) return Fail("'" + args.Value("key") + "' is not a key id (16 hex digits, see key list)");
  }
  admin.SetBudget(args.Argument("USER"), key, b);
  std::printf("budget of %s%s set\n", args.Argument("USER").c_str(),
              key.empty() ? "" : (" (key " + args.Value("key") + ")").c_str());
  return 0;
}

int BudgetClear(ClusterAdmin& admin, const ParsedArgs& args) {
  std::string key;
  if (args.Has("key")) {
    key = Unhex(args.Value("key"));
    if (key.size() != 8) return Fail("'" + args.Value("key") + "' is not a key id (16 hex digits, see key list)");
  }
  admin.SetBudget(args.Argument("USER"), key, chatllm::UsageBudget{});
  std::printf("budget of %s%s removed\n", args.Argument("USER").c_str(),
              key.empty() ? "" : (" (key " + args.Value("key") + ")").c_str());
  return 0;
}

int BudgetShow(ClusterAdmin& admin, const ParsedArgs& args) {
  auto text = [](int64_t limit, int64_t used, bool usd) {
    if (limit < 0) return std::string("-");
    return (usd ? chatllm::UsdText(used) : std::to_string(used)) + " / " +
           (usd ? chatllm::UsdText(limit) : std::to_string(limit));
  };
  std::printf("%-18s %-24s %-24s %-28s %-28s %-10s\n", "budget of", "tokens today", "tokens this month", "USD today",
              "USD this month", "turns now");
  for (const auto& info : admin.Budgets(args.Argument("USER"))) {
    const chatllm::UsageBudget& b = info.budget;
    const auto& u = info.used;
    const bool user_wide = b.key_id == std::string(8, '\0');
    std::printf("%-18s %-24s %-24s %-28s %-28s %-10s\n", user_wide ? "user" : chatllm::Hex(b.key_id).c_str(),
                text(b.tokens_day, u.tokens_day + u.held_tokens, false).c_str(),
                text(b.tokens_month, u.tokens_month + u.held_tokens, false).c_str(),
                text(b.cost_day, u.cost_day + u.held_cost, true).c_str(),
                text(b.cost_month, u.cost_month + u.held_cost, true).c_str(),
                text(b.concurrent, u.held_count, false).c_str());
  }
  std::printf("(used, held by turns in progress included / limit; days and months are UTC)\n");
  return 0;
}

std::string Today() { return chatllm::FormatRfc3339(chatllm::NowMicros()).substr(0, 10); }

bool ValidDay(const std::string& d) {
  if (d.size() != 10 || d[4] != '-' || d[7] != '-') return false;
  for (size_t i : {0, 1, 2, 3, 5, 6, 8, 9}) {
    if (d[i] < '0' || d[i] > '9') return false;
  }
  return true;
}

int UsageReport(ClusterAdmin& admin, const ParsedArgs& args) {
  const std::string from = args.Has("from") ? args.Value("from") : Today().substr(0, 8) + "01";
  const std::string to = args.Has("to") ? args.Value("to") : Today();
  if (!ValidDay(from) || !ValidDay(to)) return Fail("--from and --to want a day, YYYY-MM-DD (UTC)");
  const std::string format = args.Has("format") ? args.Value("format") : "table";
  if (format != "table" && format != "csv" && format != "json") return Fail("--format is table, csv or json");
  const auto lines = admin.Usage(from, to, args.Has("user") ? args.Value("user") : "");
  if (format == "json") {
    rapidjson::StringBuffer buf;
    chatllm::JsonWriter w(buf);
    w.StartArray();
    for (const auto& l : lines) {
      w.StartObject();
      w.Key("user");
      w.String(l.user);
      w.Key("day");
      w.String(l.row.day);
      w.Key("key_id");
      w.String(l.row.key_id == std::string(8, '\0') ? "" : chatllm::Hex(l.row.key_id));
      w.Key("model");
      w.String(l.row.model);
      for (const auto& [k, v] : {std::pair{"answers", l.row.answers},
                                 {"prompt_tokens", l.row.prompt_tokens},
                                 {"cached_tokens", l.row.cached_tokens},
                                 {"completion_tokens", l.row.completion_tokens}}) {
        w.Key(k);
        w.Int64(v);
      }
      w.Key("cost_usd");
      w.String(chatllm::UsdText(l.row.cost_nanos));
      w.EndObject();
    }
    w.EndArray();
    std::printf("%s\n", buf.GetString());
    return 0;
  }
  const char* head = format == "csv" ? "user,day,key_id,model,answers,prompt_tokens,cached_tokens,completion_tokens,"
                                       "cost_usd\n"
                                     : "%-24s %-10s %-16s %-24s %9s %12s %12s %12s %16s\n";
  if (format == "csv") {
    std::printf("%s", head);
  } else {
    std::printf(head, "user", "day", "key", "model", "answers", "prompt", "cached", "completion", "USD");
  }
  for (const auto& l : lines) {
    const std::string key = l.row.key_id == std::string(8, '\0') ? "" : chatllm::Hex(l.row.key_id);
    if (format == "csv") {
      // Names are [A-Za-z0-9._@-]; a model name may hold anything: quoted.
      std::string model = "\"";
      for (char c : l.row.model) model += c == '"' ? std::string("\"\"") : std::string(1, c);
      model += "\"";
      std::printf("%s,%s,%s,%s,%lld,%lld,%lld,%lld,%s\n", l.user.c_str(), l.row.day.c_str(), key.c_str(), model.c_str(),
                  static_cast<long long>(l.row.answers), static_cast<long long>(l.row.prompt_tokens),
                  static_cast<long long>(l.row.cached_tokens), static_cast<long long>(l.row.completion_tokens),
                  chatllm::UsdText(l.row.cost_nanos).c_str());
    } else {
      std::printf("%-24s %-10s %-16s %-24s %9lld %12lld %12lld %12lld %16s\n", l.user.c_str(), l.row.day.c_str(),
                  key.empty() ? "-" : key.c_str(), l.row.model.c_str(), static_cast<long long>(l.row.answers),
                  static_cast<long long>(l.row.prompt_tokens), static_cast<long long>(l.row.cached_tokens),
                  static_cast<long long>(l.row.completion_tokens), chatllm::UsdText(l.row.cost_nanos).c_str());
    }
  }
  return 0;
}

int Reap(ClusterAdmin& admin, const ParsedArgs&) {
  std::printf("%d expired holds settled or released\n", admin.ReapUsage());
  return 0;
}

// The [price.NAME] sections, in the order they are matched; with MODEL
// (and --provider), the one that prices it.
int Prices(const ParsedArgs& args) {
  try {
    const chatllm::Config config = chatllm::LoadConfig(args.Value("config"));
    if (args.Has("model")) {
      const std::string provider = args.Has("provider") ? args.Value("provider") : "";
      const chatllm::PriceConfig* p = chatllm::FindPrice(config.prices, provider, args.Value("model"));
      if (!p) return Fail("no [price.NAME] section prices model '" + args.Value("model") + "'");
      std::printf("%s\n", p->name.c_str());
      return 0;
    }
    if (args.Has("json")) {
      rapidjson::StringBuffer buf;
      chatllm::JsonWriter w(buf);
      w.StartArray();
      for (const chatllm::PriceConfig& p : config.prices) {
        w.StartObject();
        for (const auto& [k, v] : {std::pair{"name", &p.name}, {"model", &p.model}, {"provider", &p.provider}}) {
          w.Key(k);
          w.String(*v);
        }
        for (const auto& [k, v] :
             {std::pair{"input", p.input}, {"cached_input", p.cached_input}, {"output", p.output}}) {
          w.Key(k);
          w.Double(v);
        }
        w.EndObject();
      }
      w.EndArray();
      std::printf("%s\n", buf.GetString());
      return 0;
    }
    std::printf("%-24s %-24s %-12s %12s %12s %12s\n", "price", "model", "provider", "input", "cached", "output");
    for (const chatllm::PriceConfig& p : config.prices) {
      std::printf("%-24s %-24s %-12s %12.4f %12.4f %12.4f\n", p.name.c_str(), p.model.c_str(), p.provider.c_str(),
                  p.input, p.cached_input, p.output);
    }
    std::printf("(USD per million tokens; the first that matches an answer's provider and model prices it)\n");
    return 0;
  } catch (const chatllm::ConfigError& e) {
    return Fail(std::string("config error: ") + e.what());
  }
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
      .summary = "copy every user and key to every shard (the copies releases before schema 9 read)",
      .description =
          "Copies every user and key to every shard of the map, revocations and disables winning: "
          "the copies that releases before schema 9 read, and that shardctl rebalance merges into the "
          "homes and key units. Run it after a command reported an unreachable shard.",
      .run = WithAdmin(Sync),
  };
  const std::vector<chatllm::OptionSpec> limits = {
      {"key", "KEY_ID", "the budget of this key of the user (16 hex digits, see key list), not the user's"},
      {"tokens-per-day", "N", "prompt and completion tokens a UTC day"},
      {"tokens-per-month", "N", "prompt and completion tokens a UTC calendar month"},
      {"usd-per-day", "USD", "cost a UTC day, at the [price.NAME] prices"},
      {"usd-per-month", "USD", "cost a UTC calendar month"},
      {"concurrent", "N", "turns in progress at once, across every instance"}};
  CommandSpec budget{
      .name = "budget",
      .description =
          "Budgets of a user, or of one of its keys: tokens and cost a day and a month, and turns "
          "at once. Enforced across every instance: a turn holds its worst case on the user's home "
          "before the provider is asked (docs/architecture.md, \"Usage and budgets\").",
      .subcommands = {{.name = "set",
                       .summary = "set a budget (limits left out: none of that kind)",
                       .description = "Sets the budget of USER (or, with --key, of one of its keys). A limit "
                                      "left out is no limit of that kind; set replaces the whole budget.",
                       .options = limits,
                       .arguments = {{"USER"}},
                       .run = WithAdmin(BudgetSet)},
                      {.name = "show",
                       .summary = "the user's budgets and where they stand",
                       .description = "Lists the budgets of USER and its keys, each with what is used (turns in "
                                      "progress included) against its limit.",
                       .arguments = {{"USER"}},
                       .run = WithAdmin(BudgetShow)},
                      {.name = "clear",
                       .summary = "remove a budget",
                       .description = "Removes the budget of USER (or, with --key, of one of its keys).",
                       .options = {limits.front()},
                       .arguments = {{"USER"}},
                       .run = WithAdmin(BudgetClear)}},
  };
  CommandSpec usage{
      .name = "usage",
      .summary = "the usage ledger of every user: tokens and cost by day, key and model",
      .description =
          "Prints the ledger (what the stored answers used, summed per user, UTC day, key and "
          "model) between two days, for every user or one. Asks every shard, in parallel.",
      .options = {{"from", "DAY", "first day, YYYY-MM-DD (default: the first of this month, UTC)"},
                  {"to", "DAY", "last day (default: today, UTC)"},
                  {"user", "NAME", "only this user"},
                  {"format", "FORMAT", "table (default), csv or json"}},
      .run = WithAdmin(UsageReport),
  };
  CommandSpec reap{
      .name = "reap",
      .summary = "settle or release the holds of turns that died",
      .description =
          "A turn whose worker died keeps its hold until its lease ([usage] hold_lease_s) runs out; "
          "the user's next refused turn reaps it, and so does this, for every user: a hold whose "
          "answer is stored is settled into the ledger, any other released. Asks every shard, in "
          "parallel.",
      .run = WithAdmin(Reap),
  };
  CommandSpec prices{
      .name = "prices",
      .summary = "the [price.NAME] sections, in the order they are matched",
      .description =
          "Lists the prices of the config (USD per million prompt, cached prompt and completion "
          "tokens), in file order: the first whose model and provider globs match an answer prices "
          "it. With --model, prints the name of the price that applies. Reads the config only.",
      .options = {{"json", "", "one JSON array instead of the table"},
                  {"model", "MODEL", "print the price that applies to this model"},
                  {"provider", "NAME", "with --model: the provider that answered"}},
      .run = Prices,
  };
  return CommandSpec{
      .name = "chatllm-admin",
      .options = {{"config", "FILE", "chatllm-fcgi's configuration file (docs/config.md)", true}},
      .subcommands = {std::move(user), std::move(key), std::move(sync), std::move(budget), std::move(usage),
                      std::move(reap), std::move(prices)},
      .notes =
          "Once the map's homes are complete (docs/operations.md), a key lives in its own unit and a "
          "user's disable on the user's home: the one row the apps read, on one shard. A command "
          "whose shard does not answer fails and changes nothing; retry it. Before, and for "
          "releases before schema 9, users and keys are also copied to every shard (best effort). "
          "Every command writes with the [cluster] migrate account. Names are 1..64 characters of "
          "[A-Za-z0-9._@-].\n"
          "'chatllm-admin COMMAND --help' describes a command.",
  };
}

}  // namespace

int main(int argc, char** argv) { return chatllm::RunCommandLine(Commands(), argc, argv); }
