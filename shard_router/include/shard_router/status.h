#pragma once

#include <string>
#include <utility>

namespace shard_router {

// Outcome of an operation that can fail on bad input. The library never
// throws: callers test ok() and read message() (LevelDB's Status, minus codes:
// every failure here is "invalid argument").
class Status {
 public:
  Status() = default;  // OK.
  static Status Ok() { return Status(); }
  static Status Invalid(std::string message) { return Status(std::move(message)); }

  bool ok() const { return message_.empty(); }
  // Human-readable reason; empty when ok().
  const std::string& message() const { return message_; }

 private:
  explicit Status(std::string message) : message_(std::move(message)) {
    if (message_.empty()) message_ = "invalid argument";
  }
  std::string message_;
};

}  // namespace shard_router
