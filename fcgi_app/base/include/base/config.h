#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "base/log.h"

namespace chatllm {

// A configuration problem, already phrased for the operator as
// "<file>:<line>: [section] key: what is wrong" (see docs/config.md).
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// What the schema's columns hold (sql/): a limit above these would let a
// request reach the database with a value it refuses. The config refuses
// them instead; tests/unit/store/migrator_test.cc checks them against the
// migrations.
inline constexpr int64_t kTitleColumnChars = 1000;           // sessions.title VARCHAR(1000)
inline constexpr int64_t kTextColumnBytes = 65535;           // TEXT: sessions.metadata
inline constexpr int64_t kMediumTextColumnBytes = 16777215;  // MEDIUMTEXT: messages.content, system_prompt

// One MariaDB server of a shard (its primary or a replica).
struct DbMember {
  std::string host = "127.0.0.1";
  int port = 3306;
  bool operator==(const DbMember& o) const { return host == o.host && port == o.port; }
};

// "host:port" (an IPv6 host in brackets).
std::string MemberText(const DbMember& m);
// Parses "host:port" or "[v6]:port"; false if it is neither.
bool ParseMember(std::string_view text, DbMember* out);

// A seed shard from a [shard.NAME] section: where to look for the shard map
// and, while no map is stored yet, the initial map (every seed active).
struct ShardConfig {
  std::string name;  // From the section name [shard.NAME].
  std::string host = "127.0.0.1";
  int port = 3306;
  std::string database = "chatllm";
  uint32_t weight = 100;
  // `replicas = host:port, ...`: the shard's replicas when the cluster
  // starts (docs/architecture.md, "Shard high availability").
  std::vector<DbMember> replicas;
};

// One LLM provider: a [provider.NAME] section, or the built-in `echo`
// (docs/providers.md).
struct ProviderConfig {
  std::string name;  // From the section name; "echo" for the built-in one.
  std::string type;  // "openai", "anthropic" or "echo".
  // Where the API lives. openai: up to and including "/v1" (the client adds
  // "/chat/completions"); anthropic: scheme, host and port (adds "/v1/messages").
  std::string base_url;
  std::string api_key;                      // From api_key_env or api_key_file. Never logged.
  std::string model;                        // Used when neither the message nor the session names one.
  std::vector<std::string> models = {"*"};  // Globs of the model names it serves.
  int connect_timeout_ms = 5000;
  int read_timeout_ms = 60000;    // Longest wait for the next bytes of a response.
  int total_timeout_ms = 120000;  // Longest time for one call, retries included.
  int max_retries = 2;            // Re-sends after 429, 5xx or a failed connection.
  int retry_base_ms = 250;        // Backoff before retry n: base * 2^n, jittered, capped.
  int retry_max_ms = 8000;
  size_t max_response_bytes = 4 << 20;
  int max_tokens = 1024;  // Longest answer asked for (max_tokens of the API).
  std::string ca_file;    // CA bundle for https; empty: the system's.
  std::string anthropic_version = "2023-06-01";
  int delay_ms = 0;  // echo: wait this long before answering.
};

// Every setting of chatllm-fcgi and shardctl. Defaults here are the documented
// defaults; LoadConfig() fills what the file sets and validates everything.
// [price.NAME]: what a model's tokens cost (docs/config.md, "Prices"). The
// first section in file order whose globs match an answer's provider and
// model prices it.
struct PriceConfig {
  std::string name;            // From the section name.
  std::string model;           // Glob of the model names it prices; default: the name.
  std::string provider = "*";  // Glob of the provider names.
  double input = 0;            // USD per million prompt tokens...
  double cached_input = -1;    // ...of which cached (where reported); -1: `input`.
  double output = 0;           // USD per million completion tokens.
};

struct Config {
  std::string path;  // The file this came from (for messages).

  // [server]
  std::string instance_name;              // Default: the host name. Sent as X-Served-By.
  std::string listen = "127.0.0.1:9000";  // host:port of the FastCGI socket.
  int backlog = 1024;                     // listen(2) backlog.
  std::string pm = "static";              // Pool mode: static, dynamic or ondemand.
  int workers = 4;                        // static: worker processes; dynamic/ondemand: the maximum.
  int start_workers = 2;                  // dynamic: forked at start.
  int min_spare_workers = 1;              // dynamic: fork when fewer are idle.
  int max_spare_workers = 3;              // dynamic: retire idle workers above this.
  int idle_timeout_s = 10;                // ondemand: an idle worker exits after this long.
  int max_requests = 0;                   // Recycle a worker after this many requests (0: never).
  int threads = 1;                        // Accept threads per worker, each with its own connections.
  int request_timeout_s = 0;              // Kill a worker whose request runs longer (0: never).
  int slowlog_timeout_s = 0;              // Log requests running longer (0: never).
  int shutdown_timeout_s = 30;            // On SIGTERM, in-flight requests get this long, then SIGKILL.
  std::string access_log;                 // JSON lines, one per request; empty: off.
  std::string pid_file;                   // Empty: no pid file.
  std::string log_file;                   // Empty: stderr.
  LogLevel log_level = LogLevel::kInfo;

  // [limits]
  size_t max_body_bytes = 1 << 20;       // Request body; larger gets 413.
  size_t max_content_bytes = 32 * 1024;  // Message content, in bytes of UTF-8.
  size_t max_title_chars = 200;          // Session title, in code points.
  size_t max_metadata_bytes = 4096;      // Session metadata, serialized compactly.
  int context_messages = 50;             // Most messages sent to the provider as context.
  int context_tokens = 8000;             // Token budget of the context (estimated; docs/providers.md).
  size_t max_system_prompt_bytes = 32 * 1024;
  int64_t max_sessions_per_user = 10000;      // 0: no limit.
  int64_t max_messages_per_session = 100000;  // 0: no limit.
  int max_concurrent_turns_per_user = 16;     // Per instance; 0: no limit.
  int user_requests_per_second = 0;           // Per instance; 0: no limit.
  int user_burst = 100;                       // Token bucket size for the rate above.

  // [auth]
  bool auth_required = true;      // Bearer API key on every /v1 route.
  int key_cache_ttl_ms = 5000;    // A revoked key may work this long.
  int idempotency_ttl_s = 86400;  // Idempotency keys are kept at least this long.
  int idempotency_lease_s = 600;  // A request still "running" after this is taken over.

  // [turns]: durable streamed turns (sql/010_turns.sql, docs/api.md).
  bool durable_turns = true;     // A streamed turn's events are stored as they come.
  int turn_flush_ms = 250;       // Events are written at most this long after they come...
  int turn_flush_events = 64;    // ...or once this many wait.
  int turn_lease_ms = 0;         // A producer silent this long is presumed dead (0: the longest
                                 // provider read_timeout_ms + 5 s; never shorter than that).
  int turn_poll_ms = 100;        // How often a resumed stream looks for new events.
  int turn_retention_s = 86400;  // A finished turn's events are kept this long.

  // [db]
  int connect_timeout_s = 1;
  int read_timeout_s = 2;
  int write_timeout_s = 2;
  double statement_timeout_s = 1.5;  // Server-side max_statement_time.
  int lock_wait_timeout_s = 1;       // innodb_lock_wait_timeout.
  int max_retries = 5;               // Re-runs of a transaction on deadlock or lock timeout.
  int down_backoff_ms = 1000;        // After a shard times out, fail fast this long.

  // [cluster]: how to reach every shard of the shard map.
  std::string db_user = "chatllm_app";  // DML + EXECUTE account used by the app.
  std::string db_password;              // From `password` or `password_file`.
  std::string migrate_user;             // DDL account of shardctl; default: db_user.
  std::string migrate_password;         // Default: db_password.
  int map_refresh_ms = 2000;            // How often a worker looks for a newer map.
  int move_wait_ms = 5000;              // How long a write waits for a session in transit.
  // A list entry still 'pending' or 'deleting' after this long belongs to
  // a create or delete that has ended: repaired (sql/009_homes.sql). Longer
  // than any create or delete can take (move_wait_ms plus statement timeouts).
  int orphan_entry_age_s = 60;
  std::string map_file;  // Optional initial map (JSON), until a newer one is read.

  // [ha]: replicas, switchover and failover (shardctl; docs/operations.md).
  std::string ha_user;                     // Replication admin account; default: migrate_user.
  std::string ha_password;                 // Default: migrate_password.
  std::string repl_user = "chatllm_repl";  // What replicas connect to their primary as.
  std::string repl_password;
  int ha_check_ms = 500;                 // shardctl monitor: how often it looks at each shard.
  int ha_down_after_ms = 3000;           // A primary unreachable this long (and to its replicas) is dead.
  int ha_min_failover_interval_s = 300;  // No second automatic failover of one shard within this.
  int ha_catchup_timeout_ms = 10000;     // Switchover: how long writes may pause for the replica.
  std::string ha_hook;                   // Run after every switchover and failover (and refusal).

  // [provider] chain and [provider.NAME] sections: the providers a turn may
  // use, in the order they are tried.
  std::vector<ProviderConfig> providers;

  // [usage]: the ledger, holds and budgets (docs/config.md, "[usage]").
  bool usage_ledger = true;          // Every answer is held, settled and counted on the user's home.
  int usage_budget_cache_ms = 2000;  // "No budget" is remembered this long per user and key.
  int usage_hold_lease_s = 0;        // A turn's hold unsettled this long is its reaper's (default:
                                     // every provider's total_timeout_ms, + 4 move waits, + 60 s).

  // [price.NAME] sections, in file order.
  std::vector<PriceConfig> prices;

  // [shard.NAME] sections, in file order. At least one.
  std::vector<ShardConfig> shards;
};

// Reads and validates a config file. Throws ConfigError naming the file, line,
// section and key on the first problem: syntax, unknown section or key, a
// value of the wrong type or out of range, a missing or unreadable password
// file, no shard.
Config LoadConfig(const std::string& path);
// Same, from text already in memory; `path` is used in messages and to
// resolve relative password_file paths.
Config ParseConfig(std::string_view text, const std::string& path);

}  // namespace chatllm
