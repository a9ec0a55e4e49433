#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/ids.h"

namespace chatllm {

// The things the store keeps and the requests it answers, as plain values.

// What the shards store for one key (Store::LookupApiKey).
struct KeyRecord {
  std::string user_id;        // 16 raw bytes.
  std::string secret_sha256;  // 32 raw bytes.
  int64_t expires_us = 0;     // 0: never.
  bool revoked = false;
  bool user_disabled = false;
};

// A user: 16 raw bytes, or empty when authentication is off ([auth]
// required = false): sessions created then have no owner and are visible
// only to requests made without authentication.
using UserId = std::string;

struct SessionRecord {
  std::optional<std::string> title;
  std::string metadata_json = "{}";  // A compact JSON object.
  int64_t message_count = 0;
  int64_t created_us = 0;  // Unix microseconds, UTC.
  int64_t updated_us = 0;
  std::optional<std::string> model;          // Set at creation; never changes.
  std::optional<std::string> system_prompt;  // Set at creation; never changes.
  UserId user_id;                            // The owner.
};

// A position in a user's session list (newest first).
struct SessionCursor {
  int64_t created_us = INT64_MAX;
  std::string id_bytes;  // Empty: from the newest.
};

struct SessionPage {
  std::vector<std::pair<SessionId, SessionRecord>> sessions;  // Newest first.
  bool has_more = false;
};

// An Idempotency-Key (docs/api.md, "Idempotency"): scoped to the user and
// the request target; `request_sha` tells a retry from a different request.
struct IdempotencyKey {
  std::string key;          // The header's value, 1..255 bytes.
  std::string target_sha;   // 16 bytes: IdempotencyTargetSha(target).
  std::string request_sha;  // 32 bytes: SHA-256 of the target and the body.
};

// The scope of a key: the first 16 bytes of SHA-256 of `target`, which
// names what the request writes ("POST /v1/sessions", "POST
// /v1/sessions/{id}/messages", "POST /v1/chat/completions" and the session).
std::string IdempotencyTargetSha(std::string_view target);
// The target of session creation: a deleted session keeps its create's key.
inline constexpr std::string_view kCreateSessionTarget = "POST /v1/sessions";

enum class IdempotencyOutcome {
  kNew,       // First use: the write goes ahead.
  kReplay,    // Done before: `status`/`response` are what it answered.
  kInFlight,  // The first request is still running: 409.
  kMismatch,  // Used before for a different request: 422.
};

struct IdempotencyResult {
  IdempotencyOutcome outcome = IdempotencyOutcome::kNew;
  int status = 0;
  // kReplay: what the first request stored to answer again with. For a turn
  // answered by a binary of schema 8 or later, the recipe (the caller's
  // name for its presenter) and `user_seq`/`answer_seq`, the two messages
  // the answer is rendered from; otherwise (`answer_seq` 0) the response
  // body itself.
  std::string response;
  int64_t user_seq = 0;
  int64_t answer_seq = 0;
};

// One message to append (Store::Append).
struct AppendRequest {
  std::string_view role;
  std::string_view content;
  int64_t created_us = 0;
  int64_t reply_to = 0;        // 0: none.
  std::string_view meta_json;  // A JSON object, or "".
  int64_t max_messages = 0;    // Refuse when the session holds this many (0: no limit).
  // A user message: the request's Idempotency-Key, claimed for `attempt`
  // in the same statement that stores the message (sql/007_acknowledged.sql).
  // A key whose earlier request stored its user message and then failed (or
  // ran past idempotency_lease_s) is taken over: nothing is stored and the
  // result names that message (`reused`).
  const IdempotencyKey* claim = nullptr;
  // An answer: the key its turn claimed, completed in the answer's
  // transaction — if `attempt` still holds it; if another attempt took it
  // over, nothing is stored (`taken_over`). A replay answers
  // `complete_status` and renders the answer from `complete_recipe` (what
  // kind of answer: the caller's, opaque here) and the two messages
  // (`reply_to` and the answer's seq, kept with the recipe), so no response
  // is built while the transaction runs.
  const IdempotencyKey* complete = nullptr;
  int complete_status = 0;
  std::string_view complete_recipe;
  int64_t attempt = 0;  // With claim/complete: this request's token (random, not 0).
};

struct AppendResult {
  int64_t seq = 0;                // 0: no such session (for this user).
  bool reused = false;            // `claim` took an earlier attempt over: `seq` is its stored user message.
  bool full = false;              // max_messages reached; nothing stored.
  bool taken_over = false;        // `complete`: another attempt holds the key now; nothing stored.
  IdempotencyResult idempotency;  // For `claim`: not kNew means nothing was stored.
};

struct MessageRecord {
  int64_t seq = 0;
  std::string role;
  std::string content;
  int64_t reply_to = 0;  // 0: none (user messages).
  int64_t created_us = 0;
  std::string meta_json;  // A JSON object, or "" (sql/003_message_meta.sql).
};

// What a turn sends to the provider besides the new message, read in one
// statement (Store::LoadContext).
struct TurnContext {
  std::string model;                    // The session's; "" for none.
  std::string system_prompt;            // "" for none.
  std::vector<MessageRecord> messages;  // Oldest first; seq, role and content only.
};

struct ShardStatus {
  std::string name;
  bool up = false;
  int schema_version = 0;
  std::string error;  // Why it is not up; never contains credentials.
};

}  // namespace chatllm
