// Migrations against a scratch database on a real shard.

#include "fcgi_app/migrator.h"

#include <gtest/gtest.h>

#include "fcgi_app/config.h"
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
    Root("DROP DATABASE IF EXISTS chatllm_scratch; CREATE DATABASE chatllm_scratch; "
         "GRANT ALL PRIVILEGES ON chatllm_scratch.* TO '" + config.migrate_user + "'@'%';");
    endpoint_ = DbEndpoint{shard.name, shard.host, shard.port, "chatllm_scratch", config.migrate_user,
                           config.migrate_password};
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
  EXPECT_EQ(Root("SELECT COUNT(*) FROM information_schema.routines WHERE routine_schema = 'chatllm_scratch' "
                 "AND routine_name = 'chat_append_fenced'"),
            "1\n");
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
  int rc = RunCommand("mariadb --no-defaults -h127.0.0.1 -P" + std::to_string(s.port) + " -u" + config.db_user +
                          " -p" + config.db_password + " chatllm -e 'CREATE TABLE intruder (x INT)' 2>&1",
                      &out);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("denied"), std::string::npos) << out;
}

}  // namespace
}  // namespace chatllm
