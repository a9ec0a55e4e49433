#include "fcgi_app/migrator.h"

#include <gtest/gtest.h>

namespace chatllm {
namespace {

TEST(MigratorTest, SplitsOnSemicolonsAndDelimiterBlocks) {
  auto stmts = SplitSqlStatements(
      "-- header comment\n"
      "CREATE TABLE a (\n  x INT\n);\n"
      "\n"
      "DELIMITER //\n"
      "CREATE FUNCTION f() RETURNS INT\nBEGIN\n  DECLARE v INT;\n  RETURN 1;\nEND //\n"
      "DELIMITER ;\n"
      "DROP TABLE b;\n"
      "SELECT 1");
  ASSERT_EQ(stmts.size(), 4u);
  EXPECT_EQ(stmts[0], "CREATE TABLE a (\nx INT\n)");
  EXPECT_EQ(stmts[1], "CREATE FUNCTION f() RETURNS INT\nBEGIN\nDECLARE v INT;\nRETURN 1;\nEND");
  EXPECT_EQ(stmts[2], "DROP TABLE b");
  EXPECT_EQ(stmts[3], "SELECT 1");
}

TEST(MigratorTest, EmbeddedMigrationsAreNumberedFromOne) {
  const auto& all = EmbeddedMigrations();
  ASSERT_FALSE(all.empty());
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i].version, static_cast<int>(i + 1));
  EXPECT_STREQ(all[0].name, "initial");
  EXPECT_EQ(LatestMigrationVersion(), all.back().version);
  // The initial migration defines the write functions the app calls.
  auto stmts = SplitSqlStatements(all[0].sql);
  int functions = 0;
  for (const auto& s : stmts) functions += s.rfind("CREATE OR REPLACE FUNCTION", 0) == 0;
  EXPECT_EQ(functions, 2);
  EXPECT_STREQ(all[1].name, "shard_map");
}

TEST(MigratorTest, ChecksumIsStableHex) {
  EXPECT_EQ(MigrationChecksum(""), "cbf29ce484222325");
  EXPECT_NE(MigrationChecksum("a"), MigrationChecksum("b"));
}

}  // namespace
}  // namespace chatllm
