// OpenAI's Responses and Conversations APIs (docs/api.md, "The Responses
// API"): a conversation is a session, a stored response one durable turn of
// it. POST /v1/responses runs the turn use case like POST
// /v1/sessions/{id}/messages; GET renders the stored turn, and with
// stream=true replays its events from any sequence number and follows the
// live ones, through any instance.

#include <algorithm>

#include "api/api_json.h"
#include "api/service.h"
#include "base/api_key.h"
#include "base/json.h"
#include "base/log.h"
#include "base/sse.h"
#include "base/time_util.h"
#include "durable_turn.h"
#include "responses.h"

namespace chatllm {
namespace {

constexpr int kEventsPerRead = 256;

HttpResponse ResponseNotFound() { return ErrorResponse(404, "response_not_found", "no response with this id"); }

HttpResponse ConversationNotFound() {
  return ErrorResponse(404, "conversation_not_found", "no conversation with this id");
}

HttpResponse Json(int status, std::string body) { return JsonBody(status, std::move(body)); }

// `data: {"type": "error", ...}`: what the OpenAI SDKs raise from.
std::string StreamError(const Status& err) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  w.Key("type");
  w.String("error");
  w.Key("code");
  w.String(err.code());
  w.Key("message");
  w.String(err.message());
  w.Key("param");
  w.Null();
  w.EndObject();
  return SseEvent("error", std::string_view(buf.GetString(), buf.GetSize()));
}

}  // namespace

std::optional<ResponseView> Service::ViewResponse(const SessionId& id, const TurnRecord& t, const UserId& user,
                                                  bool with_text) {
  ResponseView v;
  v.id = ResponseIdText(id, t.turn_id);
  v.conversation = ConversationIdText(id);
  v.created_us = t.created_us;
  v.status = t.state;
  if (t.answer_seq != 0) {
    std::optional<std::vector<MessageRecord>> got = store_->ReadMessages(id, {t.answer_seq}, user);
    if (!got) return std::nullopt;
    if (got->size() == 1) {
      v.text = got->front().content;
      v.meta = ReadMeta(got->front().meta_json);
      v.model = v.meta.model;
    }
  } else if (with_text) {
    // No answer stored (yet): the text is its events.
    int64_t after = 0;
    while (true) {
      std::optional<TurnRead> read = store_->ReadTurn(id, user, t.turn_id, after, kEventsPerRead);
      if (!read || read->turn.turn_id == 0) return std::nullopt;
      for (const TurnEvent& e : read->events) {
        v.text += e.text;
        after = e.seq;
      }
      if (static_cast<int>(read->events.size()) < kEventsPerRead) break;
    }
  }
  if (v.model.empty()) {
    // The model the turn asks for: its session's (a turn that named another
    // shows it once its answer is stored).
    std::optional<SessionRecord> s = store_->GetSession(id, user);
    if (!s) return std::nullopt;
    if (s->model) v.model = *s->model;
  }
  if (v.status == "failed") v.error_code = "provider_error";
  return v;
}

HttpResponse Service::CreateResponse(const HttpRequest& request, const UserId& user, RequestTrace* trace,
                                     ResponseStream* stream) {
  if (Status err = CheckJsonContentType(request.Header("content-type")); !err.ok()) return FromStatus(err);
  StatusOr<CreateResponseRequest> parsed = ParseCreateResponse(request.body, config_);
  if (!parsed.ok()) return FromStatus(parsed.status());
  CreateResponseRequest& req = *parsed;
  if ((req.stream || req.background) && !stream) {
    return ErrorResponse(400, "invalid_request", "streaming and background responses are not available here");
  }
  if (!req.model.empty() && !providers_->Serves(req.model)) {
    return ErrorResponse(400, "model_not_found", "no configured provider serves the model '" + req.model + "'");
  }
  if (!req.store) {
    // Not stored: the whole context comes with the request; nothing is kept.
    if (req.background) return ErrorResponse(400, "invalid_request", "a background response must be stored");
    if (!req.conversation.empty()) {
      return ErrorResponse(400, "invalid_request", "a response in a conversation is stored; drop 'store': false");
    }
    if (req.model.empty()) return ErrorResponse(400, "invalid_request", "field 'model' is required");
    ChatCompletionRequest cc;
    cc.model = req.model;
    cc.has_system = req.instructions.has_value();
    if (req.instructions) cc.system = *req.instructions;
    cc.messages = std::move(req.messages);
    cc.stream = req.stream;
    cc.sampling = req.sampling;
    int64_t random[3];
    RandomBytes(random, sizeof(random));
    std::unique_ptr<TurnPresenter> presenter =
        ResponsesPresenter(req.stream ? stream : nullptr, nullptr, *trace, *store_, "", req.model,
                           "resp_" + Hex(std::string_view(reinterpret_cast<const char*>(random), 24)));
    return presenter->Present(turns_.RunStateless(cc, user, trace, *presenter));
  }
  if (!config_.durable_turns) {
    return ErrorResponse(400, "unsupported_parameter",
                         "stored responses need durable turns, which are off on this server ([turns] durable); send "
                         "'store': false");
  }
  std::optional<SessionId> id;
  bool made_here = false;  // This request made the conversation (without a key).
  if (!req.conversation.empty()) {
    id = ParseConversationId(req.conversation);
    if (!id) return ConversationNotFound();
  } else {
    // A response without a conversation starts one (listed with the user's
    // sessions): a retry with the same Idempotency-Key starts the same one.
    if (req.model.empty()) return ErrorResponse(400, "invalid_request", "field 'model' is required");
    // Keyed like every create of a session (the scope a delete keeps as its
    // tombstone: a late retry never brings a deleted conversation back).
    std::optional<IdempotencyKey> idem;
    if (auto bad = IdempotencyOf(request, std::string(kCreateSessionTarget), &idem)) return *bad;
    id = idem ? SessionId::FromName("session\n" + user + "\n" + idem->key) : SessionId::Generate();
    SessionRecord s;
    s.user_id = user;
    s.model = req.model;
    s.created_us = s.updated_us = NowMicros();
    const std::string body = ConversationJson(*id, s.created_us, s.metadata_json);
    const int64_t max_sessions = user.empty() ? 0 : config_.max_sessions_per_user;
    IdempotencyResult made = store_->CreateSession(*id, s, idem ? &*idem : nullptr, 200, body, max_sessions);
    if (made.outcome == IdempotencyOutcome::kOverLimit) {
      return ErrorResponse(409, "too_many_sessions",
                           "this user has the maximum of " + std::to_string(config_.max_sessions_per_user) +
                               " sessions (conversations); delete some first");
    }
    if (made.outcome == IdempotencyOutcome::kMismatch || made.outcome == IdempotencyOutcome::kInFlight) {
      return ErrorResponse(422, "idempotency_key_reused", "this Idempotency-Key was used for a different request");
    }
    made_here = !idem && made.outcome == IdempotencyOutcome::kNew;
  }
  trace->session_id = id->text();
  TurnRequest turn{std::move(req.input), req.model, std::move(req.instructions), req.sampling, user, std::nullopt};
  if (auto bad = IdempotencyOf(request, "POST /v1/responses conversation " + id->text(), &turn.idempotency)) {
    return *bad;
  }
  std::unique_ptr<TurnPresenter> presenter =
      ResponsesPresenter(req.stream ? stream : nullptr, req.background && !req.stream ? stream : nullptr, *trace,
                         *store_, ConversationIdText(*id), req.model, "");
  TurnOutcome o = turns_.Run(*id, std::move(turn), trace, *presenter);
  if (o.kind == TurnOutcome::Kind::kRefused) {
    // Refused before anything of the turn was stored: nor is the
    // conversation this request made for it (a keyed one stays, for the
    // retry to use).
    if (made_here) {
      try {
        store_->DeleteSession(*id, user);
      } catch (const DbError& e) {
        LOG_WARN("conversation %s: left empty after a refused response: %s", id->text().c_str(), e.what());
      }
    }
    if (o.error.code() == "session_not_found") return ConversationNotFound();
  }
  if (o.kind != TurnOutcome::Kind::kReplayed) return presenter->Present(o);
  // A keyed request answered before: the stored response, as this request
  // asks for it (a stream replays every event).
  std::optional<int64_t> turn_id;
  if (o.recipe.rfind("responses:", 0) == 0) turn_id = ParseTurnId(std::string_view(o.recipe).substr(10));
  if (!turn_id) return ErrorResponse(500, "internal_error", "internal error; see the server log");
  HttpResponse r =
      req.stream ? StreamResponse(*id, *turn_id, -1, user, trace, stream) : ShowResponse(*id, *turn_id, user);
  r.SetHeader("Idempotent-Replayed", "true");
  return r;
}

HttpResponse Service::ShowResponse(const SessionId& id, int64_t turn_id, const UserId& user) {
  std::optional<TurnRead> read = store_->ReadTurn(id, user, turn_id, INT64_MAX, 1);
  if (!read || read->turn.turn_id == 0) return ResponseNotFound();
  std::optional<ResponseView> v = ViewResponse(id, read->turn, user, true);
  if (!v) return ResponseNotFound();
  return Json(200, ResponseJson(*v));
}

HttpResponse Service::StreamResponse(const SessionId& id, int64_t turn_id, int64_t after, const UserId& user,
                                     RequestTrace* trace, ResponseStream* stream) {
  const int64_t first_event = std::max<int64_t>(after - (kResponseHeadEvents - 1), 0);
  std::optional<TurnRead> read = store_->ReadTurn(id, user, turn_id, first_event, kEventsPerRead);
  if (!read || read->turn.turn_id == 0) return ResponseNotFound();
  // What the first events show: the response as it began.
  std::optional<ResponseView> begun = ViewResponse(id, read->turn, user, false);
  if (!begun) return ResponseNotFound();
  HttpResponse head = EventStreamHead(trace->request_id, store_->last_epoch());
  HttpResponse done = StreamedResponse();
  if (!stream->Start(head) || !stream->Send(ResponseHeadEvents(*begun, after))) return done;
  const ResponseView& v = *begun;
  std::optional<TurnRecord> ended = FollowTurn(
      config_, store_, id, user, std::move(*read), first_event, stream,
      [&v](const TurnEvent& e) { return ResponseDeltaEvent(v, e.seq, e.text); }, StreamError);
  if (!ended) return done;
  try {
    std::optional<ResponseView> end = ViewResponse(id, *ended, user, true);
    if (!end) {
      stream->Send(StreamError(Status::Error(404, "response_not_found", "the conversation was deleted")));
      return done;
    }
    // A client may have seen events its producer never stored (it died
    // before their batch): the end comes after what the client saw.
    stream->Send(ResponseEndEvents(*end, std::max(ended->last_event, after - (kResponseHeadEvents - 1)), after));
  } catch (const DbError& e) {
    stream->Send(StreamError(DbStatus(e, "reading a response")));
  }
  return done;
}

HttpResponse Service::GetResponse(const std::string& raw_id, const HttpRequest& request, const UserId& user,
                                  RequestTrace* trace, ResponseStream* stream) {
  StatusOr<ResponseQuery> q = ParseResponseQuery(request.query, request.Header("last-event-id"));
  if (!q.ok()) return FromStatus(q.status());
  std::optional<std::pair<SessionId, int64_t>> id = ParseResponseId(raw_id);
  if (!id) return ResponseNotFound();
  trace->session_id = id->first.text();
  if (!q->stream) return ShowResponse(id->first, id->second, user);
  if (!stream) return ErrorResponse(400, "invalid_request", "streaming is not available here");
  return StreamResponse(id->first, id->second, q->starting_after, user, trace, stream);
}

HttpResponse Service::CancelResponse(const std::string& raw_id, const UserId& user, RequestTrace* trace) {
  std::optional<std::pair<SessionId, int64_t>> id = ParseResponseId(raw_id);
  if (!id) return ResponseNotFound();
  trace->session_id = id->first.text();
  if (!store_->CancelTurn(id->first, user, id->second)) return ResponseNotFound();
  return ShowResponse(id->first, id->second, user);
}

HttpResponse Service::CreateConversation(const HttpRequest& request, const UserId& user) {
  if (Status err = CheckJsonContentType(request.Header("content-type")); !err.ok()) return FromStatus(err);
  StatusOr<CreateConversationRequest> parsed = ParseCreateConversation(request.body, config_);
  if (!parsed.ok()) return FromStatus(parsed.status());
  std::optional<IdempotencyKey> idem;
  // Keyed like every create of a session (a delete keeps that scope).
  if (auto bad = IdempotencyOf(request, std::string(kCreateSessionTarget), &idem)) return *bad;
  const SessionId id = idem ? SessionId::FromName("session\n" + user + "\n" + idem->key) : SessionId::Generate();
  SessionRecord s;
  s.user_id = user;
  s.metadata_json = std::move(parsed->metadata_json);
  s.created_us = s.updated_us = NowMicros();
  std::string body = ConversationJson(id, s.created_us, s.metadata_json);
  const int64_t max_sessions = user.empty() ? 0 : config_.max_sessions_per_user;
  IdempotencyResult made = store_->CreateSession(id, s, idem ? &*idem : nullptr, 200, body, max_sessions);
  switch (made.outcome) {
    case IdempotencyOutcome::kNew:
      return Json(200, std::move(body));
    case IdempotencyOutcome::kReplay: {
      HttpResponse r = Json(made.status, made.response);
      r.SetHeader("Idempotent-Replayed", "true");
      return r;
    }
    case IdempotencyOutcome::kOverLimit:
      return ErrorResponse(409, "too_many_sessions",
                           "this user has the maximum of " + std::to_string(config_.max_sessions_per_user) +
                               " sessions (conversations); delete some first");
    case IdempotencyOutcome::kInFlight:
    case IdempotencyOutcome::kMismatch:
      break;
  }
  return ErrorResponse(422, "idempotency_key_reused", "this Idempotency-Key was used for a different request");
}

HttpResponse Service::GetConversation(const std::string& raw_id, const UserId& user, RequestTrace* trace) {
  std::optional<SessionId> id = ParseConversationId(raw_id);
  if (!id) return ConversationNotFound();
  trace->session_id = id->text();
  std::optional<SessionRecord> s = store_->GetSession(*id, user);
  if (!s) return ConversationNotFound();
  return Json(200, ConversationJson(*id, s->created_us, s->metadata_json));
}

HttpResponse Service::DeleteConversation(const std::string& raw_id, const UserId& user, RequestTrace* trace) {
  std::optional<SessionId> id = ParseConversationId(raw_id);
  if (!id) return ConversationNotFound();
  trace->session_id = id->text();
  if (!store_->DeleteSession(*id, user)) return ConversationNotFound();
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  w.Key("id");
  w.String(raw_id);
  w.Key("object");
  w.String("conversation.deleted");
  w.Key("deleted");
  w.Bool(true);
  w.EndObject();
  return JsonResponse(200, buf);
}

HttpResponse Service::ListConversationItems(const std::string& raw_id, const HttpRequest& request, const UserId& user,
                                            RequestTrace* trace) {
  StatusOr<ConversationItemsQuery> q = ParseConversationItemsQuery(request.query);
  if (!q.ok()) return FromStatus(q.status());
  std::optional<SessionId> id = ParseConversationId(raw_id);
  if (!id) return ConversationNotFound();
  trace->session_id = id->text();
  int64_t cursor = 0;  // The seq after (ascending) or before (descending) which the page starts.
  if (!q->after.empty()) {
    std::optional<int64_t> seq = ParseItemId(q->after, *id);
    if (!seq)
      return ErrorResponse(400, "invalid_request", "query parameter 'after' must be an item id of this conversation");
    cursor = *seq;
  }
  // Seqs are dense (1..message_count): a descending page is the ascending
  // one that ends before the cursor.
  std::optional<std::vector<MessageRecord>> rows;
  bool has_more = false;
  if (q->ascending) {
    rows = store_->ListMessages(*id, cursor, q->limit + 1, user);
    if (!rows) return ConversationNotFound();
    has_more = rows->size() > static_cast<size_t>(q->limit);
    if (has_more) rows->resize(q->limit);
  } else {
    std::optional<SessionRecord> s = store_->GetSession(*id, user);
    if (!s) return ConversationNotFound();
    const int64_t before = cursor == 0 ? s->message_count + 1 : std::min(cursor, s->message_count + 1);
    const int64_t start = std::max<int64_t>(before - 1 - q->limit, 0);
    const int n = static_cast<int>(before - 1 - start);
    rows = n > 0 ? store_->ListMessages(*id, start, n, user)
                 : std::optional<std::vector<MessageRecord>>(std::vector<MessageRecord>{});
    if (!rows) return ConversationNotFound();
    while (!rows->empty() && rows->back().seq >= before) rows->pop_back();
    std::reverse(rows->begin(), rows->end());
    has_more = start > 0;
  }
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  w.Key("object");
  w.String("list");
  w.Key("data");
  w.StartArray();
  for (const MessageRecord& m : *rows) WriteItem(w, *id, m);
  w.EndArray();
  w.Key("first_id");
  if (rows->empty())
    w.Null();
  else
    w.String(ItemIdText(*id, rows->front().seq));
  w.Key("last_id");
  if (rows->empty())
    w.Null();
  else
    w.String(ItemIdText(*id, rows->back().seq));
  w.Key("has_more");
  w.Bool(has_more);
  w.EndObject();
  return JsonResponse(200, buf);
}

}  // namespace chatllm
