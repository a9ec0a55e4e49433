#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "load/history.h"

namespace chatllm::load {

// A message as read back from the API at the end of a run.
struct StoredMessage {
  int64_t seq = 0;
  std::string role;
  std::string content;
  int64_t reply_to = 0;
};

struct Violation {
  std::string kind;  // dense, acknowledged, refused, unknown, phantom, realtime, client-order, reads
  std::string detail;
};

// What a load run did to one session, split by history file (each file has
// its own clock, so time comparisons stay within a file).
struct SessionRecords {
  std::vector<std::vector<const AppendRecord*>> appends_by_file;
  std::vector<std::vector<const ReadRecord*>> reads_by_file;
};

struct CheckCounts {
  int64_t acknowledged = 0, refused = 0, unknown = 0, unknown_stored = 0, reads = 0;
};

// Checks one session's final history against the records (the properties are
// listed in chatllm-check --help). Pure: no I/O. `echo`: assistant messages
// must repeat the user message they reply to.
std::vector<Violation> CheckSession(const std::vector<StoredMessage>& history, const SessionRecords& records,
                                    bool echo, CheckCounts* counts);

}  // namespace chatllm::load
