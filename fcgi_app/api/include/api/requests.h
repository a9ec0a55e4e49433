#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/config.h"
#include "base/status.h"
#include "providers/provider.h"

namespace chatllm {

struct CreateSessionRequest {
  std::optional<std::string> title;
  std::string metadata_json = "{}";  // Re-serialized compactly.
  std::optional<std::string> model;
  std::optional<std::string> system_prompt;
};

// Sampling settings a turn may pass to the provider.
struct Sampling {
  int max_tokens = 0;  // 0: the provider's default.
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::vector<std::string> stop;
};

struct AppendMessageRequest {
  std::string content;
  std::string role = "user";
  std::string model;    // Overrides the session's model for this turn; "" for none.
  bool stream = false;  // Answer as text/event-stream.
  Sampling sampling;
};

// POST /v1/chat/completions (OpenAI's request format).
struct ChatCompletionRequest {
  std::string model;   // "" when the request names none.
  std::string system;  // The system (and developer) messages, joined.
  bool has_system = false;
  std::vector<ChatMessage> messages;  // user and assistant, in order.
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  Sampling sampling;
  std::string session_id;  // "session_id" field; "" for none.
};

// POST /v1/responses (OpenAI's Responses API; docs/api.md lists the part
// served). A stored response (`store`, the default) is one turn of a
// conversation: one user message in, one answer out.
struct CreateResponseRequest {
  std::string model;                        // "" when absent: the conversation's.
  std::string input;                        // Stored: the user's new message.
  std::vector<ChatMessage> messages;        // Not stored: the whole context, in order.
  std::optional<std::string> instructions;  // `instructions` and system/developer items, joined.
  std::string conversation;                 // Its id as sent ("conv_..."); "" for none.
  bool stream = false;
  bool background = false;
  bool store = true;
  Sampling sampling;  // max_output_tokens, temperature, top_p.
};

// GET /v1/responses/{id}?stream=true&starting_after=N
struct ResponseQuery {
  bool stream = false;
  int64_t starting_after = -1;  // -1: from the first event.
};

// POST /v1/conversations
struct CreateConversationRequest {
  std::string metadata_json = "{}";
};

// GET /v1/conversations/{id}/items?limit=&after=&order=
struct ConversationItemsQuery {
  int limit = 20;
  std::string after;  // An item id ("msg_..."), or "".
  bool ascending = false;
};

struct ListMessagesQuery {
  int limit = 50;
  int64_t after = 0;
};

constexpr int kMaxPageLimit = 200;

// GET /v1/sessions?limit=&after=CURSOR
struct ListSessionsQuery {
  int limit = 20;
  int64_t after_created_us = INT64_MAX;  // From the cursor; INT64_MAX: from the newest.
  std::string after_id;                  // 16 raw bytes, or empty.
};

// Parsers for request bodies and query strings. Each returns what it parsed
// or, in a failed Status, the error to send (base/status.h). They are strict:
// unknown fields and parameters are errors, so a client's typo is reported
// instead of silently ignored (as the OpenAI and Stripe APIs do).

// POST /v1/sessions: an empty body means {}.
StatusOr<CreateSessionRequest> ParseCreateSession(std::string_view body, const Config& config);
// POST /v1/sessions/{id}/messages.
StatusOr<AppendMessageRequest> ParseAppendMessage(std::string_view body, const Config& config);
// POST /v1/chat/completions. Lenient like OpenAI-compatible servers: fields
// it does not know are ignored, but those whose meaning it cannot honour
// (tools, n > 1, ...) are errors. `model` may be absent (out->model empty):
// a turn of a session may use the session's; the caller decides.
StatusOr<ChatCompletionRequest> ParseChatCompletion(std::string_view body, const Config& config);
// A model name: 1..128 characters of [A-Za-z0-9._:/@+-].
bool ValidModelName(std::string_view name);
// GET /v1/sessions?limit=1..200&after=CURSOR (a cursor from next_after).
StatusOr<ListSessionsQuery> ParseListSessionsQuery(std::string_view query);
// The opaque cursor of a session list: base64url of created_at (8 bytes) and id.
std::string SessionCursorText(int64_t created_us, std::string_view id_bytes);
// The query of a route that takes no parameters: empty, or only '&'s.
Status ParseNoQuery(std::string_view query);
// An Idempotency-Key header value: 1..255 printable ASCII characters.
bool ValidIdempotencyKey(std::string_view key);
// GET /v1/sessions/{id}/messages?limit=&after=
StatusOr<ListMessagesQuery> ParseListMessagesQuery(std::string_view query);
// GET /v1/sessions/{id}/turns/{turn}/events?starting_after=N, or the
// Last-Event-ID header an EventSource sends when it reconnects (`last_id`,
// "" when absent; with both, the later one): the event number to resume after.
StatusOr<int64_t> ParseTurnEventsQuery(std::string_view query, std::string_view last_id);

// POST /v1/responses. Strict like the OpenAI API: unknown fields are 400
// unknown_parameter; known ones chatllm cannot honour (tools, a non-text
// format, previous_response_id, ...) are 400 unsupported_parameter.
StatusOr<CreateResponseRequest> ParseCreateResponse(std::string_view body, const Config& config);
// GET /v1/responses/{id}: stream, starting_after (or Last-Event-ID).
StatusOr<ResponseQuery> ParseResponseQuery(std::string_view query, std::string_view last_id);
// POST /v1/conversations: metadata; initial items are not supported.
StatusOr<CreateConversationRequest> ParseCreateConversation(std::string_view body, const Config& config);
// GET /v1/conversations/{id}/items: limit 1..100, after, order asc|desc.
StatusOr<ConversationItemsQuery> ParseConversationItemsQuery(std::string_view query);

// POST bodies must be JSON: the Content-Type header may be absent or
// application/json (parameters such as charset=utf-8 allowed).
Status CheckJsonContentType(std::string_view content_type);

// Parses a non-negative decimal integer with no sign, spaces or leading
// zeros (except "0") that is <= max. Used for query parameters.
bool ParseDecimal(std::string_view text, int64_t max, int64_t* out);

}  // namespace chatllm
