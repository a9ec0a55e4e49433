#include "base/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <regex>

namespace chatllm {
namespace {

const char* kMinimal = "[shard.a]\nport = 3307\n";

std::string Error(const std::string& text) {
  try {
    ParseConfig(text, "/etc/chatllm/test.ini");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "ok";
}

TEST(ConfigTest, DefaultsApplyToAMinimalFile) {
  Config c = ParseConfig(kMinimal, "test.ini");
  EXPECT_EQ(c.listen, "127.0.0.1:9000");
  EXPECT_EQ(c.workers, 4);
  EXPECT_EQ(c.max_content_bytes, 32768u);
  ASSERT_EQ(c.providers.size(), 1u);
  EXPECT_EQ(c.providers[0].name, "echo");
  EXPECT_EQ(c.providers[0].type, "echo");
  EXPECT_EQ(c.context_tokens, 8000);
  ASSERT_EQ(c.shards.size(), 1u);
  EXPECT_EQ(c.shards[0].name, "a");
  EXPECT_EQ(c.shards[0].port, 3307);
  EXPECT_EQ(c.shards[0].weight, 100u);
  EXPECT_EQ(c.db_user, "chatllm_app");
  EXPECT_EQ(c.migrate_user, "chatllm_app");
  EXPECT_EQ(c.map_refresh_ms, 2000);
  EXPECT_FALSE(c.instance_name.empty());
}

TEST(ConfigTest, ReadsEverySection) {
  Config c = ParseConfig(
      "; comment\n# comment\n"
      "[server]\ninstance_name = app7\nlisten = 127.0.0.1:9001\nworkers = 8\nlog_level = debug\n"
      "[limits]\nmax_content_bytes = 100\ncontext_messages = 3\n"
      "[db]\nread_timeout = 5\nstatement_timeout = 0.5\n"
      "[provider]\nchain = echo\necho_delay_ms = 20\n"
      "[cluster]\npassword = s3cret\nmigrate_user = admin\nmove_wait_ms = 100\n"
      "[shard.b]\nhost = 10.0.0.2\nweight = 50\n"
      "[shard.a]\n",
      "x.ini");
  EXPECT_EQ(c.instance_name, "app7");
  EXPECT_EQ(c.workers, 8);
  EXPECT_EQ(c.log_level, LogLevel::kDebug);
  EXPECT_EQ(c.max_content_bytes, 100u);
  EXPECT_EQ(c.context_messages, 3);
  EXPECT_EQ(c.read_timeout_s, 5);
  EXPECT_DOUBLE_EQ(c.statement_timeout_s, 0.5);
  ASSERT_EQ(c.providers.size(), 1u);
  EXPECT_EQ(c.providers[0].delay_ms, 20);
  ASSERT_EQ(c.shards.size(), 2u);
  EXPECT_EQ(c.shards[0].name, "b");  // File order.
  EXPECT_EQ(c.shards[0].weight, 50u);
  EXPECT_EQ(c.db_password, "s3cret");
  EXPECT_EQ(c.migrate_user, "admin");
  EXPECT_EQ(c.migrate_password, "s3cret");
  EXPECT_EQ(c.move_wait_ms, 100);
}

TEST(ConfigTest, ErrorsNameFileLineSectionAndKey) {
  const std::string f = "/etc/chatllm/test.ini";
  EXPECT_EQ(Error("[server]\nworkers = many\n[shard.a]\n"),
            f + ":2: [server] workers: 'many' is not an integer in 1..1024");
  EXPECT_EQ(Error("[server]\nworkers = 0\n[shard.a]\n"), f + ":2: [server] workers: '0' is not an integer in 1..1024");
  EXPECT_EQ(Error("[server]\nwrokers = 2\n[shard.a]\n"), f + ":2: [server] wrokers: unknown key");
  EXPECT_EQ(Error("[serve]\n[shard.a]\n"), f + ":1: [serve] unknown section");
  EXPECT_EQ(Error("[server]\nlisten = nowhere\n[shard.a]\n"), f + ":2: [server] listen: 'nowhere' is not host:port");
  EXPECT_EQ(Error("[db]\nstatement_timeout = fast\n[shard.a]\n"),
            f + ":2: [db] statement_timeout: 'fast' is not a number in 0..3600");
  EXPECT_EQ(Error("[provider]\nchain = gpt\n[shard.a]\n"),
            f + ":2: [provider] chain: 'gpt' has no [provider.gpt] section");
  EXPECT_EQ(Error("[server]\n"), f + ": no [shard.NAME] section: at least one shard is required");
  EXPECT_EQ(Error("[shard.A]\n"), f + ":1: [shard.A] shard name must be 1..64 characters of [a-z0-9_-]");
  EXPECT_EQ(Error("[shard.a]\nweight = 0\n"), f + ":2: [shard.a] weight: '0' is not an integer in 1..1000");
  EXPECT_EQ(Error("[shard.a]\nport = 1\nport = 2\n"), f + ":3: [shard.a] port: key appears twice in the section");
  EXPECT_EQ(Error("[shard.a]\njunk\n"), f + ":2: [shard.a] expected 'key = value', got 'junk'");
  EXPECT_EQ(Error("x = 1\n"), f + ":1: key outside of any [section]");
  EXPECT_EQ(Error("[cluster]\npassword = x\npassword_file = /p\n[shard.a]\n"),
            f + ":3: [cluster] password_file: set either password or password_file, not both");
  EXPECT_EQ(Error("[cluster]\npassword_file = /nonexistent/pw\n[shard.a]\n"),
            f + ":2: [cluster] password_file: cannot read '/nonexistent/pw': No such file or directory");
  EXPECT_EQ(Error("[shard.a]\nuser = x\n"), f + ":2: [shard.a] user: unknown key");
}

// Issue 13: max_title_chars = 5000 was accepted, and a 1500-character
// title then failed in the database with a 500.
TEST(ConfigTest, LimitsTheSchemaCannotHoldAreRefused) {
  const std::string f = "/etc/chatllm/test.ini";
  EXPECT_EQ(
      Error("[limits]\nmax_title_chars = 5000\n[shard.a]\n"),
      f + ":2: [limits] max_title_chars: '5000' is not an integer in 1..1000 (sessions.title is a VARCHAR(1000))");
  EXPECT_EQ(Error("[limits]\nmax_title_chars = 1000\n[shard.a]\n"), "ok");
  EXPECT_EQ(Error("[limits]\nmax_metadata_bytes = 65536\n[shard.a]\n"),
            f + ":2: [limits] max_metadata_bytes: '65536' is not an integer in 2..65535 (sessions.metadata is a TEXT)");
  EXPECT_EQ(Error("[limits]\nmax_content_bytes = 16777216\n[shard.a]\n"),
            f + ":2: [limits] max_content_bytes: '16777216' is not an integer in 1..16777215 "
                "(messages.content is a MEDIUMTEXT)");
  EXPECT_EQ(Error("[provider]\nchain = p\n[provider.p]\ntype = openai\nmax_response_bytes = 16777216\n[shard.a]\n"),
            f + ":5: [provider.p] max_response_bytes: '16777216' is not an integer in 1024..16777215 "
                "(an answer is stored in messages.content, a MEDIUMTEXT)");
}

// Issue 13: "port = 3307 ; x" failed with "not an integer".
TEST(ConfigTest, PricesKeepFileOrderAndDefaultTheirGlobs) {
  Config c = ParseConfig(std::string(kMinimal) +
                             "[price.gpt-4o-mini]\ninput = 0.15\noutput = 0.6\ncached_input = 0.075\n"
                             "[price.claude]\nmodel = claude-*\nprovider = anthropic\ninput = 3\noutput = 15\n",
                         "x.ini");
  ASSERT_EQ(c.prices.size(), 2u);
  EXPECT_EQ(c.prices[0].name, "gpt-4o-mini");
  EXPECT_EQ(c.prices[0].model, "gpt-4o-mini");
  EXPECT_EQ(c.prices[0].provider, "*");
  EXPECT_DOUBLE_EQ(c.prices[0].cached_input, 0.075);
  EXPECT_EQ(c.prices[1].model, "claude-*");
  EXPECT_EQ(c.prices[1].provider, "anthropic");
  EXPECT_DOUBLE_EQ(c.prices[1].cached_input, 3);  // Defaults to the input price.
  EXPECT_TRUE(ParseConfig(kMinimal, "x.ini").prices.empty());
  EXPECT_NE(Error(std::string(kMinimal) + "[price.x]\ninput = 1\n").find("needs input and output"), std::string::npos);
  EXPECT_NE(Error(std::string(kMinimal) + "[price.x]\ninput = -1\noutput = 1\n").find("'-1' is not a number"),
            std::string::npos);
  EXPECT_NE(Error(std::string(kMinimal) + "[price.x]\ninput = 1\noutput = 1\nouput = 2\n").find("ouput"),
            std::string::npos);
}

TEST(ConfigTest, CommentsMayFollowAValue) {
  Config c = ParseConfig(
      "[server] ; the process\nworkers = 3 ; three\ninstance_name = a#b # '#' inside a word stays\n"
      "[shard.a]\nport = 3307\t; tab before\nhost = db1 # hash\n",
      "x.ini");
  EXPECT_EQ(c.workers, 3);
  EXPECT_EQ(c.instance_name, "a#b");
  EXPECT_EQ(c.shards[0].port, 3307);
  EXPECT_EQ(c.shards[0].host, "db1");
  EXPECT_EQ(Error("[shard.a]\nport = ; nothing\n"),
            "/etc/chatllm/test.ini:2: [shard.a] port: '' is not an integer in 1..65535");
}

// Issue 13: the local stack's echo answered "gpt-4o" too, so nobody saw
// model_not_supported. Echo serves its own name unless `models` says more.
TEST(ConfigTest, EchoServesOnlyItsOwnModelByDefault) {
  Config builtin = ParseConfig(kMinimal, "x.ini");
  ASSERT_EQ(builtin.providers.size(), 1u);
  EXPECT_EQ(builtin.providers[0].models, std::vector<std::string>{"echo"});
  Config named = ParseConfig("[provider]\nchain = e\n[provider.e]\ntype = echo\nmodel = parrot\n[shard.a]\n", "x.ini");
  EXPECT_EQ(named.providers[0].models, std::vector<std::string>{"parrot"});
  Config wide = ParseConfig("[provider]\nchain = e\n[provider.e]\ntype = echo\nmodels = *\n[shard.a]\n", "x.ini");
  EXPECT_EQ(wide.providers[0].models, std::vector<std::string>{"*"});
  Config openai = ParseConfig("[provider]\nchain = o\n[provider.o]\ntype = openai\n[shard.a]\n", "x.ini");
  EXPECT_EQ(openai.providers[0].models, std::vector<std::string>{"*"});
}

TEST(ConfigTest, PasswordFileIsReadRelativeToTheConfig) {
  char dir[] = "/tmp/chatllm-config-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string d = dir;
  std::ofstream(d + "/pw") << "hun;ter2 #=\"'\\\n";
  Config c = ParseConfig("[cluster]\npassword_file = pw\n[shard.a]\n", d + "/chatllm.ini");
  // Any character: the password goes to libmariadb as it is.
  EXPECT_EQ(c.db_password, "hun;ter2 #=\"'\\");
  EXPECT_EQ(ParseConfig("[cluster]\npassword = a;b=c\n[shard.a]\n", "t.ini").db_password, "a;b=c");
  std::remove((d + "/pw").c_str());
  rmdir(dir);
}

TEST(ConfigTest, LoadConfigReportsMissingFile) {
  try {
    LoadConfig("/nonexistent/chatllm.ini");
    FAIL() << "no exception";
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "/nonexistent/chatllm.ini: cannot open: No such file or directory");
  }
}

// A retry takes a keyed turn's key over after idempotency_lease_s: a lease
// shorter than a turn can run would let a running turn be answered twice.
TEST(ConfigTest, TheIdempotencyLeaseOutlastsTheLongestTurn) {
  const std::string gpt =
      "[provider]\nchain = gpt, echo\n[provider.gpt]\ntype = openai\nbase_url = http://127.0.0.1:1/v1\n"
      "total_timeout_ms = 90000\n[shard.a]\n";
  EXPECT_EQ(Error("[auth]\nidempotency_lease_s = 90\n" + gpt),
            "/etc/chatllm/test.ini:2: [auth] idempotency_lease_s: 90 s is shorter than the longest a turn can run "
            "(90 s: the providers' total_timeout_ms over the chain, or [server] request_timeout)");
  EXPECT_EQ(Error("[auth]\nidempotency_lease_s = 91\n" + gpt), "ok");
  // A worker killed after request_timeout bounds a turn too.
  EXPECT_EQ(Error("[server]\nrequest_timeout = 30\n[auth]\nidempotency_lease_s = 31\n" + gpt), "ok");
}

// A durable turn's producer holds its turn by a lease: one shorter than a
// live producer can go without writing would end live turns as dead.
TEST(ConfigTest, ATurnLeaseOutlastsAProvidersSilenceAndAMovesWait) {
  const std::string gpt =
      "[provider]\nchain = gpt, echo\n[provider.gpt]\ntype = openai\nbase_url = http://127.0.0.1:1/v1\n"
      "read_timeout_ms = 20000\n[shard.a]\n";
  // Default: read_timeout_ms + flush_ms + move_wait_ms + 5 s.
  EXPECT_EQ(ParseConfig(gpt, "t.ini").turn_lease_ms, 20000 + 250 + 5000 + 5000);
  EXPECT_EQ(ParseConfig("[cluster]\nmove_wait_ms = 1000\n" + gpt, "t.ini").turn_lease_ms, 20000 + 250 + 1000 + 5000);
  EXPECT_EQ(Error("[turns]\nlease_ms = 25250\n" + gpt),
            "/etc/chatllm/test.ini:2: [turns] lease_ms: 25250 ms is not longer than a live producer may go without "
            "writing (25250 ms: the providers' read_timeout_ms, flush_ms and [cluster] move_wait_ms): a live turn "
            "would be taken for dead");
  EXPECT_EQ(Error("[turns]\nlease_ms = 25251\n" + gpt), "ok");
  EXPECT_EQ(Error("[turns]\ndurable = maybe\n" + gpt),
            "/etc/chatllm/test.ini:2: [turns] durable: 'maybe' is not true or false");
}

// [shard.NAME] replicas and the [ha] section (shardctl's replica commands).
TEST(ConfigTest, ReadsReplicasAndHa) {
  Config c = ParseConfig(
      "[ha]\nuser = ha\nrepl_user = r\ncheck_ms = 200\ndown_after_ms = 2000\nmin_failover_interval_s = 60\n"
      "[shard.a]\nport = 3307\nreplicas = 127.0.0.1:3317, [fd00::2]:3318\n[shard.b]\nport = 3308\n",
      "test.ini");
  ASSERT_EQ(c.shards.size(), 2u);
  ASSERT_EQ(c.shards[0].replicas.size(), 2u);
  EXPECT_EQ(c.shards[0].replicas[0], (DbMember{"127.0.0.1", 3317}));
  EXPECT_EQ(c.shards[0].replicas[1], (DbMember{"fd00::2", 3318}));
  EXPECT_TRUE(c.shards[1].replicas.empty());
  EXPECT_EQ(c.ha_user, "ha");
  EXPECT_EQ(c.repl_user, "r");
  EXPECT_EQ(c.ha_check_ms, 200);
  EXPECT_EQ(c.ha_down_after_ms, 2000);
  EXPECT_EQ(c.ha_min_failover_interval_s, 60);
  // Defaults: the migrate account, a check twice a second.
  Config d = ParseConfig(kMinimal, "test.ini");
  EXPECT_EQ(d.ha_user, d.migrate_user);
  EXPECT_EQ(d.ha_check_ms, 500);
  EXPECT_EQ(MemberText(DbMember{"fd00::2", 3318}), "[fd00::2]:3318");
  for (const char* bad : {"[shard.a]\nreplicas = h\n", "[shard.a]\nreplicas = h:0\n", "[shard.a]\nreplicas = a:b:1\n",
                          "[shard.a]\nport = 1\nreplicas = 127.0.0.1:1\n", "[shard.a]\nreplicas = h:1, h:1\n",
                          "[ha]\ncheck_ms = 1000\ndown_after_ms = 10\n[shard.a]\n"}) {
    EXPECT_THROW(ParseConfig(bad, "test.ini"), ConfigError) << bad;
  }
}

}  // namespace
}  // namespace chatllm
