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
  std::string provider;       // Answers: who answered ("" if not read).
  std::string finish_reason;  // Answers: "stop", "length", "client_disconnected", "provider_error", "cancelled" or "".
  std::string request_id;     // The request that wrote it ("" if not read).
};

struct Violation {
  // dense, answer, acknowledged, refused, unknown, duplicate, key, phantom,
  // realtime, client-order, reads, deleted, lost (a 404 nobody asked for),
  // create-key, resume
  std::string kind;
  std::string detail;
};

// What a load run did to one session, split by history file (each file has
// its own clock, so time comparisons stay within a file).
struct SessionRecords {
  std::vector<std::vector<const AppendRecord*>> appends_by_file;
  std::vector<std::vector<const ReadRecord*>> reads_by_file;
  std::vector<std::vector<const DeleteRecord*>> deletes_by_file;
  std::vector<std::vector<const ListRecord*>> lists_by_file;  // Lists that named the session.
};

struct CheckCounts {
  int64_t acknowledged = 0, refused = 0, unknown = 0, unknown_stored = 0, reads = 0;
  int64_t keyed = 0;    // Appends sent with an Idempotency-Key (requests, not attempts).
  int64_t shared = 0;   // Appends whose text another append of the session also sent.
  int64_t deleted = 0;  // Sessions deleted by the run (and gone at the end).
  int64_t resumed = 0;  // Cut streams resumed to their end.
};

// Checks one session's final history against the records (the properties
// are listed in chatllm-check --help). Pure: no I/O. `gone`: the session
// answered 404 at the end (then `history` is empty). `echo`: complete echo
// answers repeat the user message they reply to (a partial one a prefix).
//
// Appends with one Idempotency-Key are one request: acknowledged (any of
// them 2xx) means its user message is stored once, at the seq every 2xx
// among them gave. Appends without a key are each their own request, even
// with the same text: two acknowledged requests never share a stored
// message. When the records carry their X-Request-Ids, every stored user
// message is matched to the one request that wrote it (the app stores the
// id with it), whatever the texts; otherwise a text sent by several requests
// is matched by acknowledged seq, and its stored copies are at most the
// requests that may have stored it.
std::vector<Violation> CheckSession(const std::vector<StoredMessage>& history, bool gone, const SessionRecords& records,
                                    bool echo, CheckCounts* counts);

// Checks the creates of a run: creates with one key answered 2xx all name
// one session, and at most one of them is not a replay (a second fresh 201
// means the session was made a second time). Whether each created session
// is still there is CheckSession's "lost".
std::vector<Violation> CheckCreates(const std::vector<const CreateRecord*>& creates);

}  // namespace chatllm::load
