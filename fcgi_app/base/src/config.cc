#include "base/config.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "base/url.h"
#include "ini.h"
#include "shard_router/ring.h"

namespace chatllm {
namespace {

std::string ResolvePath(const std::string& config_path, const std::string& p) {
  if (p.empty() || p[0] == '/') return p;
  size_t slash = config_path.rfind('/');
  if (slash == std::string::npos) return p;
  return config_path.substr(0, slash + 1) + p;
}

// Reads a secret from `password` or `password_file` (first line, trailing
// newline stripped). Setting both is an error.
std::string ReadSecret(Ini& ini, const std::string& section, const std::string& key, const std::string& def) {
  const IniEntry* inline_value = ini.Find(section, key);
  const IniEntry* file = ini.Find(section, key + "_file");
  if (inline_value && file) {
    ini.Fail(file->line, section, key + "_file", "set either " + key + " or " + key + "_file, not both");
  }
  // Any bytes: libmariadb takes the password as it is (an inline value
  // cannot hold " ;" or " #", which start a comment; a file can).
  if (inline_value) return inline_value->value;
  if (!file) return def;
  std::string path = ResolvePath(ini.path(), file->value);
  std::ifstream in(path);
  if (!in) {
    ini.Fail(file->line, section, key + "_file", "cannot read '" + path + "': " + std::strerror(errno));
  }
  std::string secret;
  std::getline(in, secret);
  while (!secret.empty() && (secret.back() == '\r' || secret.back() == '\n')) secret.pop_back();
  return secret;
}

bool ValidListen(const std::string& listen) {
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  std::string port = listen.substr(colon + 1);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) return false;
  int p = std::stoi(port);
  return p >= 1 && p <= 65535;
}

std::string HostName() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "chatllm";
  return buf;
}

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-';
  });
}

std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream in(text);
  while (std::getline(in, item, ',')) {
    item = Trim(item);
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

// "http[s]://host[:port][/path]" with a non-empty host and no query.

// The API key of a provider section: api_key_env (the variable must be set
// and non-empty) or api_key_file (first line), or none.
std::string ReadApiKey(Ini& ini, const std::string& s) {
  const IniEntry* env = ini.Find(s, "api_key_env");
  const IniEntry* file = ini.Find(s, "api_key_file");
  if (env && file) ini.Fail(file->line, s, "api_key_file", "set either api_key_env or api_key_file, not both");
  std::string key;
  if (env) {
    const char* v = std::getenv(env->value.c_str());
    if (env->value.empty() || !v || !*v) {
      ini.Fail(env->line, s, "api_key_env", "environment variable '" + env->value + "' is not set");
    }
    key = v;
  } else if (file) {
    std::string path = ResolvePath(ini.path(), file->value);
    std::ifstream in(path);
    if (!in) ini.Fail(file->line, s, "api_key_file", "cannot read '" + path + "': " + std::strerror(errno));
    std::getline(in, key);
    while (!key.empty() && (key.back() == '\r' || key.back() == '\n' || key.back() == ' ')) key.pop_back();
    if (key.empty()) ini.Fail(file->line, s, "api_key_file", "'" + path + "' is empty");
  }
  // Sent in an HTTP header: a line break would split it.
  if (key.find_first_of("\r\n") != std::string::npos) {
    ini.Fail((env ? env : file)->line, s, env ? "api_key_env" : "api_key_file", "the key contains a line break");
  }
  return key;
}

ProviderConfig ParseProvider(Ini& ini, const std::string& s, const std::string& name, int echo_delay_ms) {
  ProviderConfig p;
  p.delay_ms = echo_delay_ms;
  p.name = name;
  p.type = ini.String(s, "type", "", false);
  const IniEntry* type = ini.Find(s, "type");
  if (!type) ini.Fail(ini.SectionLine(s), s, "type", "required (openai, anthropic or echo)");
  if (p.type != "openai" && p.type != "anthropic" && p.type != "echo") {
    ini.Fail(type->line, s, "type", "'" + p.type + "' is not openai, anthropic or echo");
  }
  const char* default_url = p.type == "openai"      ? "https://api.openai.com/v1"
                            : p.type == "anthropic" ? "https://api.anthropic.com"
                                                    : "";
  const char* default_model = p.type == "openai"      ? "gpt-4o-mini"
                              : p.type == "anthropic" ? "claude-3-5-haiku-latest"
                                                      : "echo";
  p.base_url = ini.String(s, "base_url", default_url, false);
  while (p.base_url.size() > 1 && p.base_url.back() == '/') p.base_url.pop_back();
  if (p.type != "echo") {
    if (StatusOr<HttpUrl> url = ParseHttpUrl(p.base_url); !url.ok()) {
      const IniEntry* e = ini.Find(s, "base_url");
      ini.Fail(e ? e->line : 0, s, "base_url", "'" + p.base_url + "' " + url.status().message());
    }
  }
  p.api_key = ReadApiKey(ini, s);
  p.model = ini.String(s, "model", default_model, false);
  if (const IniEntry* e = ini.Find(s, "models")) {
    p.models = SplitList(e->value);
    if (p.models.empty()) ini.Fail(e->line, s, "models", "must list at least one model name or glob");
  } else if (p.type == "echo") {
    // Echo answers anything; by default it claims only its own name, so that
    // a model nobody serves is refused (model_not_supported) on a stack that
    // runs echo alone, as it would be with real providers.
    p.models = {p.model};
  }
  p.connect_timeout_ms = static_cast<int>(ini.Int(s, "connect_timeout_ms", p.connect_timeout_ms, 1, 600000));
  p.read_timeout_ms = static_cast<int>(ini.Int(s, "read_timeout_ms", p.read_timeout_ms, 1, 3600000));
  p.total_timeout_ms = static_cast<int>(ini.Int(s, "total_timeout_ms", p.total_timeout_ms, 1, 3600000));
  p.max_retries = static_cast<int>(ini.Int(s, "max_retries", p.max_retries, 0, 10));
  p.retry_base_ms = static_cast<int>(ini.Int(s, "retry_base_ms", p.retry_base_ms, 1, 60000));
  p.retry_max_ms = static_cast<int>(ini.Int(s, "retry_max_ms", p.retry_max_ms, p.retry_base_ms, 600000));
  p.max_response_bytes = ini.Int(s, "max_response_bytes", p.max_response_bytes, 1024, kMediumTextColumnBytes,
                                 "an answer is stored in messages.content, a MEDIUMTEXT");
  p.max_tokens = static_cast<int>(ini.Int(s, "max_tokens", p.max_tokens, 1, 1000000));
  p.ca_file = ResolvePath(ini.path(), ini.String(s, "ca_file", ""));
  if (!p.ca_file.empty() && !std::ifstream(p.ca_file)) {
    ini.Fail(ini.Find(s, "ca_file")->line, s, "ca_file", "cannot read '" + p.ca_file + "'");
  }
  p.anthropic_version = ini.String(s, "anthropic_version", p.anthropic_version, false);
  p.delay_ms = static_cast<int>(ini.Int(s, "delay_ms", p.delay_ms, 0, 600000));
  return p;
}

// [provider] chain = a, b, ... names [provider.NAME] sections (or the
// built-in echo) in the order they are tried. Every section must be in it.
void ParseProviders(Ini& ini, Config* c) {
  const IniEntry* chain_entry = ini.Find("provider", "chain");
  std::vector<std::string> chain = SplitList(chain_entry ? chain_entry->value : "echo");
  const int chain_line = chain_entry ? chain_entry->line : 0;
  if (chain.empty()) ini.Fail(chain_line, "provider", "chain", "must name at least one provider");
  const int echo_delay_ms = static_cast<int>(ini.Int("provider", "echo_delay_ms", 0, 0, 600000));
  for (const std::string& name : chain) {
    if (std::count(chain.begin(), chain.end(), name) > 1) {
      ini.Fail(chain_line, "provider", "chain", "'" + name + "' appears twice");
    }
    const std::string section = "provider." + name;
    if (ini.HasSection(section)) {
      c->providers.push_back(ParseProvider(ini, section, name, echo_delay_ms));
    } else if (name == "echo") {
      ProviderConfig echo;
      echo.name = echo.type = echo.model = "echo";
      echo.models = {"echo"};
      echo.delay_ms = echo_delay_ms;
      c->providers.push_back(echo);
    } else {
      ini.Fail(chain_line, "provider", "chain", "'" + name + "' has no [provider." + name + "] section");
    }
  }
  for (const std::string& s : ini.sections()) {
    if (s.rfind("provider.", 0) != 0) continue;
    const std::string name = s.substr(9);
    if (!ValidName(name)) ini.Fail(ini.SectionLine(s), s, "", "provider name must be 1..64 characters of [a-z0-9_-]");
    if (std::find(chain.begin(), chain.end(), name) == chain.end()) {
      ini.Fail(ini.SectionLine(s), s, "", "not in [provider] chain (a provider nobody can reach is a typo)");
    }
  }
}

// [server]: the listen socket, the pool, logs.
void ReadServer(Ini& ini, const std::string& path, Config& c) {
  c.instance_name = ini.String("server", "instance_name", HostName(), false);
  c.listen = ini.String("server", "listen", c.listen, false);
  if (!ValidListen(c.listen)) {
    const IniEntry* e = ini.Find("server", "listen");
    ini.Fail(e ? e->line : 0, "server", "listen", "'" + c.listen + "' is not host:port");
  }
  c.backlog = static_cast<int>(ini.Int("server", "backlog", c.backlog, 1, 65535));
  c.pm = ini.String("server", "pm", c.pm, false);
  if (c.pm != "static" && c.pm != "dynamic" && c.pm != "ondemand") {
    ini.Fail(ini.Find("server", "pm")->line, "server", "pm", "'" + c.pm + "' is not static, dynamic or ondemand");
  }
  c.workers = static_cast<int>(ini.Int("server", "workers", c.workers, 1, 1024));
  c.start_workers =
      static_cast<int>(ini.Int("server", "start_workers", std::min(c.start_workers, c.workers), 1, c.workers));
  c.min_spare_workers =
      static_cast<int>(ini.Int("server", "min_spare_workers", std::min(c.min_spare_workers, c.workers), 1, c.workers));
  c.max_spare_workers = static_cast<int>(ini.Int("server", "max_spare_workers",
                                                 std::clamp(c.max_spare_workers, c.min_spare_workers, c.workers),
                                                 c.min_spare_workers, c.workers));
  c.idle_timeout_s = static_cast<int>(ini.Int("server", "idle_timeout", c.idle_timeout_s, 1, 86400));
  c.max_requests = static_cast<int>(ini.Int("server", "max_requests", c.max_requests, 0, 1000000000));
  c.threads = static_cast<int>(ini.Int("server", "threads", c.threads, 1, 256));
  c.request_timeout_s = static_cast<int>(ini.Int("server", "request_timeout", c.request_timeout_s, 0, 86400));
  c.slowlog_timeout_s = static_cast<int>(ini.Int("server", "slowlog_timeout", c.slowlog_timeout_s, 0, 86400));
  c.shutdown_timeout_s = static_cast<int>(ini.Int("server", "shutdown_timeout", c.shutdown_timeout_s, 0, 3600));
  c.pid_file = ResolvePath(path, ini.String("server", "pid_file", ""));
  c.log_file = ResolvePath(path, ini.String("server", "log_file", ""));
  c.access_log = ResolvePath(path, ini.String("server", "access_log", ""));
  std::string level = ini.String("server", "log_level", "info");
  if (!ParseLogLevel(level, &c.log_level)) {
    ini.Fail(ini.Find("server", "log_level")->line, "server", "log_level",
             "'" + level + "' is not one of debug, info, warn, error");
  }
}

// [limits]: what one request, session or user may do.
void ReadLimits(Ini& ini, Config& c) {
  c.max_body_bytes = ini.Int("limits", "max_body_bytes", c.max_body_bytes, 1024, 64 << 20);
  // Limits the schema imposes are checked here: a value the database cannot
  // hold would fail only when a request reaches it (a 500).
  c.max_content_bytes = ini.Int("limits", "max_content_bytes", c.max_content_bytes, 1, kMediumTextColumnBytes,
                                "messages.content is a MEDIUMTEXT");
  c.max_title_chars = ini.Int("limits", "max_title_chars", c.max_title_chars, 1, kTitleColumnChars,
                              "sessions.title is a VARCHAR(1000)");
  c.max_metadata_bytes =
      ini.Int("limits", "max_metadata_bytes", c.max_metadata_bytes, 2, kTextColumnBytes, "sessions.metadata is a TEXT");
  c.context_messages = static_cast<int>(ini.Int("limits", "context_messages", c.context_messages, 1, 1000));
  c.context_tokens = static_cast<int>(ini.Int("limits", "context_tokens", c.context_tokens, 100, 10000000));
  c.max_system_prompt_bytes = ini.Int("limits", "max_system_prompt_bytes", c.max_system_prompt_bytes, 1, 1 << 20);
  c.max_sessions_per_user = ini.Int("limits", "max_sessions_per_user", c.max_sessions_per_user, 0, int64_t{1} << 40);
  c.max_messages_per_session =
      ini.Int("limits", "max_messages_per_session", c.max_messages_per_session, 0, int64_t{1} << 39);
  c.max_concurrent_turns_per_user =
      static_cast<int>(ini.Int("limits", "max_concurrent_turns_per_user", c.max_concurrent_turns_per_user, 0, 100000));
  c.user_requests_per_second =
      static_cast<int>(ini.Int("limits", "user_requests_per_second", c.user_requests_per_second, 0, 1000000));
  c.user_burst = static_cast<int>(ini.Int("limits", "user_burst", c.user_burst, 1, 1000000));
}

// [auth]: API keys and Idempotency-Keys.
void ReadAuth(Ini& ini, Config& c) {
  std::string required = ini.String("auth", "required", "true");
  if (required != "true" && required != "false") {
    ini.Fail(ini.Find("auth", "required")->line, "auth", "required", "'" + required + "' is not true or false");
  }
  c.auth_required = required == "true";
  c.key_cache_ttl_ms = static_cast<int>(ini.Int("auth", "key_cache_ttl_ms", c.key_cache_ttl_ms, 0, 3600000));
  c.idempotency_ttl_s = static_cast<int>(ini.Int("auth", "idempotency_ttl_s", c.idempotency_ttl_s, 86400, 86400 * 30));
  c.idempotency_lease_s = static_cast<int>(ini.Int("auth", "idempotency_lease_s", c.idempotency_lease_s, 1, 86400));
}

// [turns]: durable streamed turns. The lease must outlast the longest a
// live producer can go without writing: the providers' read_timeout_ms (a
// stream with no bytes for that long fails), plus a batch's flush_ms, plus
// move_wait_ms (a write to a session a move has frozen waits that long for
// it, then fails), else a live producer's turn would be taken for dead.
// Read after [cluster] and the providers.
void ReadTurns(Ini& ini, Config& c) {
  std::string durable = ini.String("turns", "durable", "true");
  if (durable != "true" && durable != "false") {
    ini.Fail(ini.Find("turns", "durable")->line, "turns", "durable", "'" + durable + "' is not true or false");
  }
  c.durable_turns = durable == "true";
  c.turn_flush_ms = static_cast<int>(ini.Int("turns", "flush_ms", c.turn_flush_ms, 10, 10000));
  c.turn_flush_events = static_cast<int>(ini.Int("turns", "flush_events", c.turn_flush_events, 1, 10000));
  c.turn_poll_ms = static_cast<int>(ini.Int("turns", "poll_ms", c.turn_poll_ms, 10, 10000));
  c.turn_retention_s = static_cast<int>(ini.Int("turns", "retention_s", c.turn_retention_s, 60, 86400 * 30));
  int64_t silent_ms = 0;
  for (const ProviderConfig& p : c.providers) {
    silent_ms = std::max<int64_t>(silent_ms, p.type == "echo" ? p.delay_ms : p.read_timeout_ms);
  }
  const int64_t lease = ini.Int("turns", "lease_ms", 0, 0, 3600000);
  const int64_t quiet_ms = silent_ms + c.turn_flush_ms + c.move_wait_ms;
  if (lease == 0) {
    c.turn_lease_ms = static_cast<int>(quiet_ms + 5000);
  } else if (lease <= quiet_ms) {
    ini.Fail(ini.Find("turns", "lease_ms")->line, "turns", "lease_ms",
             std::to_string(lease) + " ms is not longer than a live producer may go without writing (" +
                 std::to_string(quiet_ms) +
                 " ms: the providers' read_timeout_ms, flush_ms and [cluster] move_wait_ms): a live turn would be "
                 "taken for dead");
  } else {
    c.turn_lease_ms = static_cast<int>(lease);
  }
}

// [db]: how the shards are talked to.
void ReadDb(Ini& ini, Config& c) {
  c.connect_timeout_s = static_cast<int>(ini.Int("db", "connect_timeout", c.connect_timeout_s, 1, 60));
  c.read_timeout_s = static_cast<int>(ini.Int("db", "read_timeout", c.read_timeout_s, 1, 3600));
  c.write_timeout_s = static_cast<int>(ini.Int("db", "write_timeout", c.write_timeout_s, 1, 3600));
  c.statement_timeout_s = ini.Double("db", "statement_timeout", c.statement_timeout_s, 0, 3600);
  c.lock_wait_timeout_s = static_cast<int>(ini.Int("db", "lock_wait_timeout", c.lock_wait_timeout_s, 1, 3600));
  c.max_retries = static_cast<int>(ini.Int("db", "max_retries", c.max_retries, 0, 100));
  c.down_backoff_ms = static_cast<int>(ini.Int("db", "down_backoff_ms", c.down_backoff_ms, 0, 60000));
}

// [cluster]: the accounts and the shard map.
void ReadCluster(Ini& ini, const std::string& path, Config& c) {
  c.db_user = ini.String("cluster", "user", c.db_user, false);
  c.db_password = ReadSecret(ini, "cluster", "password", "");
  c.migrate_user = ini.String("cluster", "migrate_user", c.db_user, false);
  c.migrate_password = ReadSecret(ini, "cluster", "migrate_password", c.db_password);
  c.map_refresh_ms = static_cast<int>(ini.Int("cluster", "map_refresh_ms", c.map_refresh_ms, 100, 3600000));
  c.move_wait_ms = static_cast<int>(ini.Int("cluster", "move_wait_ms", c.move_wait_ms, 0, 600000));
  c.map_file = ResolvePath(path, ini.String("cluster", "map_file", ""));
  c.orphan_entry_age_s = static_cast<int>(ini.Int("cluster", "orphan_entry_age_s", c.orphan_entry_age_s, 1, 86400 * 7));
  // A create waits up to move_wait_ms and then runs a few statements of at
  // most a couple of seconds each: an entry younger than that may still
  // belong to one in flight.
  if (int64_t{c.orphan_entry_age_s} * 1000 < int64_t{c.move_wait_ms} + 5000) {
    const IniEntry* age = ini.Find("cluster", "orphan_entry_age_s");
    ini.Fail(age ? age->line : 0, "cluster", "orphan_entry_age_s",
             std::to_string(c.orphan_entry_age_s) + " s is shorter than move_wait_ms + 5 s: an entry of a create " +
                 "still in flight could be taken for an orphan");
  }
}

// The lease of a keyed turn against the providers' timeouts.
void CheckIdempotencyLease(Ini& ini, const Config& c) {
  // A keyed turn's key stays 'running' while the turn runs, and a retry
  // takes it over after idempotency_lease_s (sql/007_acknowledged.sql). A
  // turn still running then would be answered twice, so the lease must
  // outlast the longest a turn can take: every provider of the chain in
  // turn, each to its total_timeout_ms, unless request_timeout ends the
  // worker sooner.
  int64_t longest_turn_ms = 0;
  for (const ProviderConfig& p : c.providers) longest_turn_ms += p.type == "echo" ? p.delay_ms : p.total_timeout_ms;
  if (c.request_timeout_s > 0)
    longest_turn_ms = std::min<int64_t>(longest_turn_ms, int64_t{c.request_timeout_s} * 1000);
  if (int64_t{c.idempotency_lease_s} * 1000 <= longest_turn_ms) {
    const IniEntry* lease = ini.Find("auth", "idempotency_lease_s");
    ini.Fail(lease ? lease->line : 0, "auth", "idempotency_lease_s",
             std::to_string(c.idempotency_lease_s) + " s is shorter than the longest a turn can run (" +
                 std::to_string((longest_turn_ms + 999) / 1000) +
                 " s: the providers' total_timeout_ms over the chain, or [server] request_timeout)");
  }
}

// [ha]: the replication accounts and the monitor's timing.
void ReadHa(Ini& ini, const std::string& path, Config& c) {
  c.ha_user = ini.String("ha", "user", c.migrate_user, false);
  c.ha_password = ReadSecret(ini, "ha", "password", c.migrate_password);
  c.repl_user = ini.String("ha", "repl_user", c.repl_user, false);
  c.repl_password = ReadSecret(ini, "ha", "repl_password", "");
  c.ha_check_ms = static_cast<int>(ini.Int("ha", "check_ms", c.ha_check_ms, 50, 60000));
  c.ha_down_after_ms = static_cast<int>(ini.Int("ha", "down_after_ms", c.ha_down_after_ms, c.ha_check_ms, 600000));
  c.ha_min_failover_interval_s =
      static_cast<int>(ini.Int("ha", "min_failover_interval_s", c.ha_min_failover_interval_s, 0, 86400 * 7));
  c.ha_catchup_timeout_ms = static_cast<int>(ini.Int("ha", "catchup_timeout_ms", c.ha_catchup_timeout_ms, 100, 600000));
  c.ha_hook = ResolvePath(path, ini.String("ha", "hook", ""));
}

// [usage]: the ledger and budgets (docs/config.md).
void ReadUsage(Ini& ini, Config& c) {
  std::string ledger = ini.String("usage", "ledger", "true");
  if (ledger != "true" && ledger != "false") {
    ini.Fail(ini.Find("usage", "ledger")->line, "usage", "ledger", "'" + ledger + "' is not true or false");
  }
  c.usage_ledger = ledger == "true";
  c.usage_budget_cache_ms = static_cast<int>(ini.Int("usage", "budget_cache_ms", c.usage_budget_cache_ms, 0, 600000));
  // A hold outlives any turn: every provider of the chain tried in turn
  // to its total timeout (retries included), the waits for moving sessions
  // around it, and a minute more.
  int64_t chain_ms = 0;
  for (const ProviderConfig& p : c.providers) chain_ms += p.total_timeout_ms;
  const int64_t floor_s = (chain_ms + 4 * int64_t{c.move_wait_ms} + 999) / 1000 + 60;
  c.usage_hold_lease_s = static_cast<int>(ini.Int("usage", "hold_lease_s", floor_s, 1, 86400));
}

// [price.NAME]: prices of models' tokens, in file order.
void ReadPrices(Ini& ini, Config& c) {
  constexpr double kMaxUsd = 1e6;  // Per million tokens: far above any real price.
  for (const std::string& s : ini.sections()) {
    if (s.rfind("price.", 0) != 0) continue;
    PriceConfig p;
    p.name = s.substr(6);
    if (p.name.empty() || p.name.size() > 128)
      ini.Fail(ini.SectionLine(s), s, "", "price name must be 1..128 characters");
    p.model = ini.String(s, "model", p.name, false);
    p.provider = ini.String(s, "provider", p.provider, false);
    if (!ini.Find(s, "input") || !ini.Find(s, "output")) {
      ini.Fail(ini.SectionLine(s), s, "", "a price needs input and output (USD per million tokens)");
    }
    p.input = ini.Double(s, "input", 0, 0, kMaxUsd);
    p.output = ini.Double(s, "output", 0, 0, kMaxUsd);
    p.cached_input = ini.Double(s, "cached_input", p.input, 0, kMaxUsd);
    c.prices.push_back(std::move(p));
  }
}

// [shard.NAME]: the seed shards.
void ReadShards(Ini& ini, Config& c) {
  for (const std::string& s : ini.sections()) {
    if (s.rfind("shard.", 0) != 0) continue;
    ShardConfig sh;
    sh.name = s.substr(6);
    if (!shard_router::IsValidShardName(sh.name)) {
      ini.Fail(ini.SectionLine(s), s, "", "shard name must be 1..64 characters of [a-z0-9_-]");
    }
    sh.host = ini.String(s, "host", sh.host, false);
    sh.port = static_cast<int>(ini.Int(s, "port", sh.port, 1, 65535));
    sh.database = ini.String(s, "database", sh.database, false);
    sh.weight = static_cast<uint32_t>(ini.Int(s, "weight", sh.weight, 1, shard_router::Ring::kMaxWeight));
    if (const IniEntry* e = ini.Find(s, "replicas")) {
      for (const std::string& item : SplitList(e->value)) {
        DbMember m;
        if (!ParseMember(item, &m)) ini.Fail(e->line, s, "replicas", "'" + item + "' is not host:port");
        if (m == DbMember{sh.host, sh.port} ||
            std::find(sh.replicas.begin(), sh.replicas.end(), m) != sh.replicas.end()) {
          ini.Fail(e->line, s, "replicas", "'" + item + "' is listed twice, or is the shard's own host and port");
        }
        sh.replicas.push_back(std::move(m));
      }
    }
    c.shards.push_back(std::move(sh));
  }
  if (c.shards.empty()) ini.Fail(0, "", "", "no [shard.NAME] section: at least one shard is required");
}

}  // namespace

std::string MemberText(const DbMember& m) {
  const bool v6 = m.host.find(':') != std::string::npos;
  return (v6 ? "[" + m.host + "]" : m.host) + ":" + std::to_string(m.port);
}

bool ParseMember(std::string_view text, DbMember* out) {
  const size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 >= text.size()) return false;
  std::string_view host = text.substr(0, colon), port = text.substr(colon + 1);
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return false;
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string_view::npos) {
    return false;  // An IPv6 host needs its brackets.
  }
  int p = 0;
  for (char ch : port) {
    if (ch < '0' || ch > '9' || p > 65535) return false;
    p = p * 10 + (ch - '0');
  }
  if (p < 1 || p > 65535) return false;
  out->host = std::string(host);
  out->port = p;
  return true;
}

Config ParseConfig(std::string_view text, const std::string& path) {
  Ini ini(text, path);
  Config c;
  c.path = path;

  for (const std::string& s : ini.sections()) {
    bool known = s == "server" || s == "limits" || s == "db" || s == "provider" || s == "cluster" || s == "auth" ||
                 s == "turns" || s == "ha" || s == "usage" || s.rfind("shard.", 0) == 0 ||
                 s.rfind("provider.", 0) == 0 || s.rfind("price.", 0) == 0;
    if (!known) ini.Fail(ini.SectionLine(s), s, "", "unknown section");
  }
  ReadServer(ini, path, c);
  ReadLimits(ini, c);
  ReadAuth(ini, c);
  ReadDb(ini, c);
  ReadCluster(ini, path, c);
  ParseProviders(ini, &c);
  CheckIdempotencyLease(ini, c);
  ReadTurns(ini, c);
  ReadHa(ini, path, c);
  ReadUsage(ini, c);
  ReadPrices(ini, c);
  ReadShards(ini, c);
  ini.CheckAllUsed();
  return c;
}

Config LoadConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ": cannot open: " + std::strerror(errno));
  std::stringstream buf;
  buf << in.rdbuf();
  return ParseConfig(buf.str(), path);
}

}  // namespace chatllm
