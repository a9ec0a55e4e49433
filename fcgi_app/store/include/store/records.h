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
  SessionCursor next;  // With has_more: where the next page starts.
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
  kNew,        // First use: the write goes ahead.
  kReplay,     // Done before: `status`/`response` are what it answered.
  kInFlight,   // The first request is still running: 409.
  kMismatch,   // Used before for a different request: 422.
  kOverLimit,  // Not an idempotency outcome: the user has max_sessions_per_user sessions; nothing stored.
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
  // An answer (or the partial one) of a durable turn: its producer closes
  // the turn as `turn_state` in the answer's transaction — if `producer`
  // still holds it; if not (its lease ran out), nothing is stored
  // (`turn_lost`).
  // A user message that begins a durable turn: the turn `open_turn` (held
  // by `producer` for `lease_ms`) opens in the message's transaction.
  int64_t open_turn = 0;
  int64_t close_turn = 0;  // The turn's id; 0: none.
  int64_t producer = 0;
  std::string_view turn_state;  // "completed", "failed" or "cancelled".
  // The turn's events not yet written (numbered from `first_event`): in
  // the same transaction, so that a short answer costs no commit of its own.
  const std::vector<std::string>* turn_events = nullptr;
  int64_t first_event = 0;
  int64_t lease_ms = 0;
};

struct AppendResult {
  int64_t seq = 0;                // 0: no such session (for this user).
  bool reused = false;            // `claim` took an earlier attempt over: `seq` is its stored user message.
  bool full = false;              // max_messages reached; nothing stored.
  bool taken_over = false;        // `complete`: another attempt holds the key now; nothing stored.
  bool turn_lost = false;         // `close_turn`: the producer lost the turn; nothing stored.
  bool turn_opened = false;       // `open_turn` is open, for the user message `seq`.
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

// A durable turn (sql/010_turns.sql).
struct TurnRecord {
  int64_t turn_id = 0;  // 0: no such turn.
  int64_t user_seq = 0;
  std::string state;  // in_progress, completed, incomplete, failed, cancelled
  int64_t answer_seq = 0;
  int64_t last_event = 0;  // Events 1..last_event are stored.
  bool cancel_requested = false;
  int64_t created_us = 0;
  int64_t updated_us = 0;
  bool finished() const { return state != "in_progress"; }
};

struct TurnEvent {
  int64_t seq = 0;
  std::string text;
};

// A turn and its events after the one asked for (Store::ReadTurn).
struct TurnRead {
  TurnRecord turn;
  std::vector<TurnEvent> events;
};

// What a producer's write of a turn found.
enum class TurnWrite {
  kOk,
  kCancelRequested,  // Written; a cancel was asked for: stop.
  kLost,             // Not written: the turn is not the producer's any more (or its session is gone).
};

struct ShardStatus {
  std::string name;
  bool up = false;
  int schema_version = 0;
  std::string error;  // Why it is not up; never contains credentials.
};

// Usage (sql/011_usage.sql), all on the user's home.
// A turn's hold of its worst case, before the provider is called.
struct UsageHold {
  std::string hold_id;     // 16 raw bytes.
  bool keyed = false;      // Named by an Idempotency-Key: kept after it ends, for the retries.
  std::string key_id;      // 8 raw bytes (zeros: no key).
  std::string session_id;  // 16 raw bytes: where its answer is stored.
  int64_t tokens = 0;
  int64_t cost_nanos = -1;  // -1: the model has no price.
  int64_t lease_ms = 0;
  int64_t keep_s = 0;  // A finished hold is remembered this long (a retry's key).
};

// The room a turn's budgets leave once its hold is taken: for each kind a
// budget limits, the tightest of the user's and the key's, day and month.
struct UsageRoom {
  struct Figure {
    int64_t limit = -1;  // -1: no budget of this kind.
    int64_t remaining = 0;
    bool monthly = false;  // Resets at the next UTC month, else the next UTC day.
  };
  Figure tokens, cost_nanos, turns;  // turns: at once (no reset).
};
// chat_usage_hold's answer after its code 1 (sql/011_usage.sql): "1", or
// "1 t LIMIT LEFT d|m;c LIMIT LEFT d|m;n LIMIT LEFT" with the kinds that a
// budget limits. Anything else reads as no room figures.
UsageRoom ParseUsageRoom(std::string_view hold_answer);

// chat_usage_hold's codes (besides the placement ones); a refusal is
// -11..-16 (the user's budget) or -21..-26 (the key's): tokens a day, a
// month, cost a day, a month, concurrent turns, no price for a cost budget.
enum UsageHoldCode : int {
  kUsageNoHome = 0,       // The user has no home (layout before schema 9): not counted.
  kUsageHeld = 1,         // Held by this request.
  kUsageHeldByOther = 2,  // Another attempt of the same Idempotency-Key holds it.
  kUsageSettled = 3,      // That attempt answered; nothing more is held.
  kUsageNotHeld = 4,      // No budget applies: nothing held; the answer is added (AddUsage).
};

// What an answer used, for its hold's settle.
struct UsageAmount {
  std::string model;
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cost_nanos = -1;
};

// One ledger row, summed over its slots.
struct UsageRow {
  std::string day;     // YYYY-MM-DD (UTC).
  std::string key_id;  // 8 raw bytes.
  std::string model;
  int64_t answers = 0, prompt_tokens = 0, cached_tokens = 0, completion_tokens = 0, cost_nanos = 0;
};

// A budget of the user (key_id 8 zero bytes) or of a key; -1: no limit.
struct UsageBudget {
  std::string key_id;
  int64_t tokens_day = -1, tokens_month = -1, cost_day = -1, cost_month = -1, concurrent = -1;
};

// A user's budgets and where each stands now (for a refusal's message and
// the x-ratelimit headers).
struct UsageState {
  std::vector<UsageBudget> budgets;
  // Per budget (same order): settled today / this month, and open holds.
  struct Used {
    int64_t tokens_day = 0, tokens_month = 0, cost_day = 0, cost_month = 0;
    int64_t held_tokens = 0, held_cost = 0, held_count = 0;
  };
  std::vector<Used> used;
};

}  // namespace chatllm
