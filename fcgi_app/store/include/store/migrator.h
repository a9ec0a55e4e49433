#pragma once

#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "store/connection.h"

namespace chatllm {

// A numbered schema migration from sql/, compiled into the binaries so that
// a binary and the schema it expects always travel together.
struct Migration {
  int version;       // From the file name: 001_initial.sql -> 1.
  const char* name;  // "initial".
  const char* sql;   // The file's text.
};

// All embedded migrations, ascending by version (generated from sql/ by CMake).
const std::vector<Migration>& EmbeddedMigrations();
int LatestMigrationVersion();
// The schema version this binary expects: the highest migration it embeds.
inline int ExpectedSchemaVersion() { return LatestMigrationVersion(); }

// Splits a migration script into statements the way the mariadb client does
// for the subset we use: a statement ends at a line that ends with the
// current delimiter (";" at first); a line "DELIMITER x" changes it, so that
// stored-function bodies can contain ';'. Lines that are only "--" comments
// or blank are dropped; the delimiter must end its line.
std::vector<std::string> SplitSqlStatements(std::string_view script);

// FNV-1a over the text, as 16 hex digits: detects an applied migration whose
// file was later edited.
std::string MigrationChecksum(std::string_view sql);

class MigrationError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct MigrationReport {
  std::string shard;
  int from_version = 0;
  int to_version = 0;
  std::vector<int> applied;
};

// Brings one shard's schema up to LatestMigrationVersion(), connected as the
// migration account. Serialized across concurrent runs by GET_LOCK; every
// statement is idempotent (IF NOT EXISTS, CREATE OR REPLACE), so a run cut
// short is finished by the next. Throws MigrationError or DbError.
MigrationReport MigrateShard(const DbEndpoint& endpoint, const DbOptions& options);

}  // namespace chatllm
