#pragma once

// Private to the admin room: named points where shardctl stops as a crash
// there would, to rehearse recovery (docs/operations.md, "Rehearsing a
// crash") and to test it (tests/e2e/reshard_test.cc). Set
// CHATLLM_FAILPOINT=<name>:<argument>, e.g.
// move-after-activate:<session id>. Unset, a check is one getenv.

#include <cstdlib>
#include <string>
#include <string_view>

namespace chatllm {

inline bool FailpointSet(std::string_view name, std::string_view argument) {
  const char* set = std::getenv("CHATLLM_FAILPOINT");
  if (!set) return false;
  return std::string_view(set) == std::string(name) + ":" + std::string(argument);
}

}  // namespace chatllm
