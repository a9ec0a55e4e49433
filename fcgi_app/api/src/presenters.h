#pragma once

// Private to the api room: the four ways a turn is answered (docs/api.md)
// and the replay of a keyed one.

#include <memory>
#include <string>

#include "api/turn.h"
#include "base/http.h"
#include "store/store.h"

namespace chatllm {

// What an answer's stored metadata says (TurnRunner::AssistantMeta).
struct AnswerMeta {
  std::string request_id;
  std::string model;
  std::string finish_reason;
  bool has_usage = false;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};
AnswerMeta ReadMeta(const std::string& json);

// Says a TurnOutcome to the client. A streaming presenter also reports the
// turn's progress (TurnProgress) as it runs; before its stream has begun it
// answers failures as plain JSON errors, after that as events.
class TurnPresenter : public TurnProgress {
 public:
  // The response for `outcome` (for a stream: what is left to send, then a
  // response marked `streamed`).
  virtual HttpResponse Present(const TurnOutcome& outcome) = 0;
};

// POST /v1/sessions/{id}/messages: 201 {"user", "assistant"}, or with
// `stream` (non-null) the events `user`, `delta`*, `assistant` | `error`.
std::unique_ptr<TurnPresenter> NativePresenter(ResponseStream* stream, const RequestTrace& trace, const Store& store);

// POST /v1/chat/completions: a chat.completion object, or with `stream`
// (non-null) chat.completion.chunk events and `data: [DONE]`. With a session
// (`session_id` not empty) both carry "chatllm": {"session_id", "user_seq",
// "assistant_seq"}. `model`: the request's ("" when it named none).
std::unique_ptr<TurnPresenter> OpenAiPresenter(ResponseStream* stream, const RequestTrace& trace,
                                               std::string session_id, std::string model, bool include_usage,
                                               const Store& store);

}  // namespace chatllm
