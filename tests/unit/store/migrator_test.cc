#include "store/migrator.h"

#include <gtest/gtest.h>

#include <regex>

#include "base/config.h"

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

// The column types the limits above are derived from, read from the
// migrations the binaries carry: every declaration of the column (tables,
// ALTERs, stored-function parameters) must hold what the config allows.
TEST(MigrationsTest, HoldWhatTheConfigLimitsAllow) {
  auto capacity = [](const std::string& column) {
    const std::regex decl("\\b" + column + "\\s+(VARCHAR\\((\\d+)\\)|MEDIUMTEXT\\b|TEXT\\b)");
    int64_t smallest = INT64_MAX;
    int found = 0;
    for (const Migration& m : EmbeddedMigrations()) {
      const std::string sql = m.sql;
      for (auto it = std::sregex_iterator(sql.begin(), sql.end(), decl); it != std::sregex_iterator(); ++it) {
        const std::string type = (*it)[1];
        const int64_t cap = type == "MEDIUMTEXT" ? 16777215 : type == "TEXT" ? 65535 : std::stoll((*it)[2]);
        smallest = std::min(smallest, cap);
        ++found;
      }
    }
    EXPECT_GT(found, 0) << column;
    return smallest;
  };
  EXPECT_EQ(capacity("title"), kTitleColumnChars);
  EXPECT_EQ(capacity("p_title"), kTitleColumnChars);
  EXPECT_EQ(capacity("metadata"), kTextColumnBytes);
  EXPECT_EQ(capacity("p_metadata"), kTextColumnBytes);
  EXPECT_EQ(capacity("content"), kMediumTextColumnBytes);
  EXPECT_EQ(capacity("p_content"), kMediumTextColumnBytes);
  EXPECT_GE(capacity("system_prompt"), static_cast<int64_t>(1 << 20));  // max_system_prompt_bytes' bound.
  EXPECT_GE(capacity("p_system"), static_cast<int64_t>(1 << 20));
}

}  // namespace
}  // namespace chatllm
