// The turn routes: POST /v1/sessions/{id}/messages and POST
// /v1/chat/completions. Each parses its request, picks the presenter of its
// format (presenters.h) and runs the turn use case (api/turn.h).

#include "api/api_json.h"
#include "api/service.h"
#include "presenters.h"

namespace chatllm {

HttpResponse Service::AppendMessage(const SessionId& id, const HttpRequest& request, const UserId& user,
                                    RequestTrace* trace, ResponseStream* stream) {
  if (Status err = CheckJsonContentType(request.Header("content-type")); !err.ok()) return FromStatus(err);
  StatusOr<AppendMessageRequest> parsed = ParseAppendMessage(request.body, config_);
  if (!parsed.ok()) return FromStatus(parsed.status());
  AppendMessageRequest& req = *parsed;
  if (req.stream && !stream) return ErrorResponse(400, "invalid_request", "streaming is not available here");
  TurnRequest turn{std::move(req.content), std::move(req.model), std::nullopt, req.sampling, user, std::nullopt};
  if (auto bad = IdempotencyOf(request, "POST /v1/sessions/" + id.text() + "/messages", &turn.idempotency)) {
    return *bad;
  }
  std::unique_ptr<TurnPresenter> presenter = NativePresenter(req.stream ? stream : nullptr, *trace, *store_);
  return presenter->Present(turns_.Run(id, std::move(turn), trace, *presenter));
}

HttpResponse Service::ChatCompletions(const HttpRequest& request, const UserId& user, RequestTrace* trace,
                                      ResponseStream* stream) {
  if (Status err = CheckJsonContentType(request.Header("content-type")); !err.ok()) return FromStatus(err);
  StatusOr<ChatCompletionRequest> parsed = ParseChatCompletion(request.body, config_);
  if (!parsed.ok()) return FromStatus(parsed.status());
  ChatCompletionRequest& req = *parsed;
  if (req.stream && !stream) return ErrorResponse(400, "invalid_request", "streaming is not available here");
  std::string session_text = request.Header("x-session-id");
  if (!req.session_id.empty()) {
    if (!session_text.empty() && session_text != req.session_id) {
      return ErrorResponse(400, "invalid_request", "X-Session-Id and field 'session_id' name different sessions");
    }
    session_text = req.session_id;
  }
  // With a session, a request without `model` uses the session's (as a turn
  // of POST /v1/sessions/{id}/messages does); without one it names none.
  if (req.model.empty() && session_text.empty()) {
    return ErrorResponse(400, "invalid_request", "field 'model' is required (without a session)");
  }
  if (!providers_->Serves(req.model)) {
    return ErrorResponse(404, "model_not_found", "no configured provider serves the model '" + req.model + "'");
  }
  if (session_text.empty()) {
    std::unique_ptr<TurnPresenter> presenter =
        OpenAiPresenter(req.stream ? stream : nullptr, *trace, "", req.model, req.include_usage, *store_);
    return presenter->Present(turns_.RunStateless(req, user, trace, *presenter));
  }
  std::optional<SessionId> id = SessionId::Parse(session_text);
  if (!id || !id->names_session()) return SessionNotFound();
  trace->session_id = id->text();
  // The session as the key's scope spells it: a replay answers with the
  // same bytes whichever spelling of the id the retry used.
  std::unique_ptr<TurnPresenter> presenter =
      OpenAiPresenter(req.stream ? stream : nullptr, *trace, id->text(), req.model, req.include_usage, *store_);
  // The stored history is the context; of the request's messages only the
  // last, the user's new one, is used (and its system message, if any).
  if (req.messages.back().role != "user") {
    return ErrorResponse(400, "invalid_request", "with a session, the last message must be the user's");
  }
  TurnRequest turn{std::move(req.messages.back().content),
                   req.model,
                   req.has_system ? std::optional<std::string>(req.system) : std::nullopt,
                   req.sampling,
                   user,
                   std::nullopt};
  // The session is part of the key's scope: the same key and body sent for
  // another session is another request.
  if (auto bad = IdempotencyOf(request, "POST /v1/chat/completions session " + id->text(), &turn.idempotency)) {
    return *bad;
  }
  return presenter->Present(turns_.Run(*id, std::move(turn), trace, *presenter));
}

}  // namespace chatllm
