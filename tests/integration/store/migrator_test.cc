// Migrations against a scratch database on a real shard.

#include "store/migrator.h"

#include <gtest/gtest.h>

#include "base/config.h"
#include "support/stack_env.h"

namespace chatllm {
namespace {

using testing::RunCommand;
using testing::StackEnv;

class MigratorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const StackEnv& env = StackEnv::Get();
    Config config = LoadConfig(env.AppConfig(env.apps()[0].first));
    const ShardConfig& shard = config.shards[0];
    socket_ = env.var() + "/db/" + shard.name + "/mariadb.sock";
    Root(
        "DROP DATABASE IF EXISTS chatllm_scratch; CREATE DATABASE chatllm_scratch; "
        "GRANT ALL PRIVILEGES ON chatllm_scratch.* TO '" +
        config.migrate_user + "'@'%';");
    endpoint_ =
        DbEndpoint{shard.name, shard.host, shard.port, "chatllm_scratch", config.migrate_user, config.migrate_password};
  }
  void TearDown() override { Root("DROP DATABASE IF EXISTS chatllm_scratch;"); }

  std::string Root(const std::string& sql) {
    std::string out;
    RunCommand("mariadb --no-defaults -uroot -N --socket=" + socket_ + " -e \"" + sql + "\"", &out);
    return out;
  }

  std::string socket_;
  DbEndpoint endpoint_;
};

TEST_F(MigratorTest, AppliesOnceThenIsANoOp) {
  MigrationReport first = MigrateShard(endpoint_, DbOptions{});
  EXPECT_EQ(first.from_version, 0);
  EXPECT_EQ(first.to_version, LatestMigrationVersion());
  EXPECT_EQ(first.applied.size(), EmbeddedMigrations().size());
  MigrationReport second = MigrateShard(endpoint_, DbOptions{});
  EXPECT_EQ(second.from_version, LatestMigrationVersion());
  EXPECT_TRUE(second.applied.empty());
  EXPECT_EQ(Root("SELECT COUNT(*) FROM chatllm_scratch.schema_migrations"),
            std::to_string(EmbeddedMigrations().size()) + "\n");
  // Superseded stored functions are dropped (docs/operations.md, "Stored
  // functions"); those of the binary and the release before it stay.
  auto routine = [&](const std::string& name) {
    return Root(
        "SELECT COUNT(*) FROM information_schema.routines WHERE routine_schema = 'chatllm_scratch' "
        "AND routine_name = '" +
        name + "'");
  };
  for (const char* gone :
       {"chat_append", "chat_append_fenced", "chat_append_v4", "chat_delete_session_v2", "chat_placement"}) {
    EXPECT_EQ(routine(gone), "0\n") << gone;
  }
  for (const char* kept : {"chat_append_v5", "chat_turn_begin", "chat_turn_begin_v2", "chat_placement_v2",
                           "chat_create_session_v3", "chat_delete_session_v3"}) {
    EXPECT_EQ(routine(kept), "1\n") << kept;
  }
}

// The placement codes fenced writes return after matching no row
// (sql/002_shard_map.sql, sql/005_placement_retry.sql, sql/007_acknowledged.sql).
TEST_F(MigratorTest, PlacementAfterAFailedWriteSaysWhetherToRetry) {
  MigrateShard(endpoint_, DbOptions{});
  const std::string id = "UNHEX('00112233445566778899aabbccddeeff')";
  auto placement = [&] { return Root("SELECT chatllm_scratch.chat_placement_v2(" + id + ")"); };
  EXPECT_EQ(placement(), "0\n");  // No such session.
  Root(
      "INSERT INTO chatllm_scratch.sessions (session_id, metadata, message_count, created_at, updated_at) "
      "VALUES (" +
      id + ", '{}', 0, NOW(), NOW())");
  // Active although the write matched nothing: it changed in between (a
  // move aborted, a session thawed); retry, never "not found".
  EXPECT_EQ(placement(), "-1\n");
  Root("UPDATE chatllm_scratch.sessions SET state = 'moving' WHERE session_id = " + id);
  EXPECT_EQ(placement(), "-1\n");
  Root("UPDATE chatllm_scratch.sessions SET state = 'moved' WHERE session_id = " + id);
  EXPECT_EQ(placement(), "-2\n");
  Root("UPDATE chatllm_scratch.sessions SET state = 'incoming' WHERE session_id = " + id);
  EXPECT_EQ(placement(), "0\n");
  Root("UPDATE chatllm_scratch.sessions SET state = 'deleted' WHERE session_id = " + id);
  EXPECT_EQ(placement(), "-5\n");  // Gone for good: no other shard is asked.
}

TEST_F(MigratorTest, AnEditedAppliedMigrationIsRefused) {
  MigrateShard(endpoint_, DbOptions{});
  Root("UPDATE chatllm_scratch.schema_migrations SET checksum = '0000000000000000' WHERE version = 1");
  try {
    MigrateShard(endpoint_, DbOptions{});
    FAIL() << "no exception";
  } catch (const MigrationError& e) {
    EXPECT_NE(std::string(e.what()).find("applied migrations must not be edited"), std::string::npos) << e.what();
  }
}

TEST_F(MigratorTest, AppAccountCannotChangeTheSchema) {
  const StackEnv& env = StackEnv::Get();
  Config config = LoadConfig(env.AppConfig(env.apps()[0].first));
  const ShardConfig& s = config.shards[0];
  std::string out;
  int rc = RunCommand("mariadb --no-defaults -h127.0.0.1 -P" + std::to_string(s.port) + " -u" + config.db_user + " -p" +
                          config.db_password + " chatllm -e 'CREATE TABLE intruder (x INT)' 2>&1",
                      &out);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("denied"), std::string::npos) << out;
}

}  // namespace
}  // namespace chatllm
