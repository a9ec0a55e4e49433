#include "store/shard_link.h"

namespace chatllm {

MYSQL* ShardLink::Handle() {
  MYSQL* h = conn_.Get();
  if (generation_ != conn_.generation()) {
    statements_.clear();  // Prepared on a connection that is gone.
    generation_ = conn_.generation();
  }
  return h;
}

MysqlStatement& ShardLink::Statement(const std::string& sql) {
  MYSQL* h = Handle();
  std::unique_ptr<MysqlStatement>& st = statements_[sql];
  if (!st) st = std::make_unique<MysqlStatement>(h, sql);
  return *st;
}

void ShardLink::AfterError(DbErrorKind kind) {
  statements_.clear();
  if (kind == DbErrorKind::kConnectionLost || kind == DbErrorKind::kUnavailable) conn_.Reset();
}

}  // namespace chatllm
