#pragma once

// Private to the api room: OpenAI's Responses and Conversations APIs over
// sessions and durable turns (docs/api.md, "The Responses API"). A
// conversation is a session; a stored response is one durable turn of it.
// A response and its event stream are rendered from stored rows only (the
// turn, its events, its answer), so that any instance renders the same
// events with the same sequence numbers, live or replayed:
//
//   0 response.created   1 response.in_progress   2 response.output_item.added
//   3 response.content_part.added   3+n response.output_text.delta (event n)
//   L+4 response.output_text.done   L+5 response.content_part.done
//   L+6 response.output_item.done   L+7 the end (L: the turn's last event):
//   response.completed, response.failed, or response.incomplete (also for a
//   cancelled response, whose status says "cancelled").

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "base/ids.h"
#include "base/json.h"
#include "presenters.h"

namespace chatllm {

// "conv_" and the session id's 32 hex digits.
std::string ConversationIdText(const SessionId& session);
std::optional<SessionId> ParseConversationId(std::string_view text);
// "resp_", the session's 32 hex digits and the turn's 16.
std::string ResponseIdText(const SessionId& session, int64_t turn_id);
std::optional<std::pair<SessionId, int64_t>> ParseResponseId(std::string_view text);
// A conversation item (a stored message): "msg_", the session's 32 hex
// digits and the message's seq in 16.
std::string ItemIdText(const SessionId& session, int64_t seq);
// The seq of an item of `session`; nullopt for anything else.
std::optional<int64_t> ParseItemId(std::string_view text, const SessionId& session);

inline constexpr int64_t kResponseHeadEvents = 4;  // Sequence numbers 0..3.

// What a response shows.
struct ResponseView {
  std::string id;
  std::string conversation;  // "conv_..."; "" for a response that is not stored.
  int64_t created_us = 0;
  std::string status;  // in_progress, completed, incomplete, failed, cancelled
  std::string model;
  std::string text;  // The output so far.
  AnswerMeta meta;   // Its usage, when the answer is stored.
  std::string error_code;
  std::string error_message;
};

// The response object.
std::string ResponseJson(const ResponseView& v);
// The first four events, those numbered after `after`.
std::string ResponseHeadEvents(const ResponseView& v, int64_t after);
// Event `n` of the turn (one delta of text).
std::string ResponseDeltaEvent(const ResponseView& v, int64_t n, std::string_view text);
// The closing events after event `last` of the turn, those numbered after `after`.
std::string ResponseEndEvents(const ResponseView& v, int64_t last, int64_t after);
// A conversation object.
std::string ConversationJson(const SessionId& session, int64_t created_us, const std::string& metadata_json);
// A stored message as a conversation item.
void WriteItem(JsonWriter& w, const SessionId& session, const MessageRecord& m);

// POST /v1/responses. `stream` (non-null): events as they come. With
// `background` the response object goes out at once (ResponseStream::Finish)
// and the turn goes on. `conversation` is "" for a response that is not
// stored (store: false); then `id` is a random one.
std::unique_ptr<TurnPresenter> ResponsesPresenter(ResponseStream* stream, ResponseStream* background,
                                                  const RequestTrace& trace, const Store& store,
                                                  std::string conversation, std::string model, std::string id);

}  // namespace chatllm
