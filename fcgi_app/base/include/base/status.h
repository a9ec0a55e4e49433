#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace chatllm {

// The error style of the base and api rooms for what fails on its input
// (parsing, validation): a function returns a Status, or a StatusOr<T> that
// holds either its value or the Status saying why there is none. Nothing
// here throws. (The shape of LevelDB's and Abseil's Status; each room's
// style is listed in docs/architecture.md, "Errors".)
//
// A failed Status carries what a client is told: the HTTP status, a stable
// machine-readable code ("invalid_request") and a message for humans that
// names the field and the rule.
class Status {
 public:
  Status() = default;  // OK.
  static Status Ok() { return Status(); }
  static Status Error(int http_status, std::string code, std::string message) {
    return Status(http_status, std::move(code), std::move(message));
  }
  // 400 invalid_request: the most common failure.
  static Status Invalid(std::string message) { return Error(400, "invalid_request", std::move(message)); }

  bool ok() const { return http_status_ == 0; }
  int http_status() const { return http_status_; }  // 0 when ok().
  const std::string& code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  Status(int http_status, std::string code, std::string message)
      : http_status_(http_status), code_(std::move(code)), message_(std::move(message)) {
    assert(http_status_ != 0);
  }
  int http_status_ = 0;
  std::string code_;
  std::string message_;
};

// A value, or the Status saying why there is none.
template <typename T>
class StatusOr {
 public:
  StatusOr(T value) : v_(std::move(value)) {}  // NOLINT: implicit, like absl::StatusOr.
  StatusOr(Status status) : v_(std::move(status)) { assert(!std::get<Status>(v_).ok()); }  // NOLINT

  bool ok() const { return std::holds_alternative<T>(v_); }
  // OK when there is a value.
  Status status() const { return ok() ? Status() : std::get<Status>(v_); }
  // Only when ok().
  T& value() { return std::get<T>(v_); }
  const T& value() const { return std::get<T>(v_); }
  T& operator*() { return value(); }
  const T& operator*() const { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace chatllm
