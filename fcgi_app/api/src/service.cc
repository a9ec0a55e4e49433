#include "api/service.h"

#include <algorithm>

#include "api/api_json.h"
#include "api/requests.h"
#include "api/router.h"
#include "base/api_key.h"
#include "base/http.h"
#include "base/json.h"
#include "base/log.h"
#include "base/time_util.h"
#include "durable_turn.h"

namespace chatllm {

HttpResponse FromStatus(const Status& s) { return ErrorResponse(s.http_status(), s.code(), s.message()); }

HttpResponse SessionNotFound() { return ErrorResponse(404, "session_not_found", "no session with this id"); }

HttpResponse JsonResponse(int status, const rapidjson::StringBuffer& buf) {
  HttpResponse r;
  r.status = status;
  r.SetHeader("Content-Type", "application/json");
  r.body.assign(buf.GetString(), buf.GetSize());
  return r;
}

HttpResponse JsonBody(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.SetHeader("Content-Type", "application/json");
  r.body = std::move(body);
  return r;
}

HttpResponse StreamedResponse() {
  HttpResponse r;
  r.streamed = true;
  return r;
}

HttpResponse EventStreamHead(const std::string& request_id, uint64_t epoch) {
  HttpResponse head;
  head.status = 200;
  head.SetHeader("Content-Type", "text/event-stream; charset=utf-8");
  head.SetHeader("X-Accel-Buffering", "no");
  head.SetHeader("X-Request-Id", request_id);
  head.SetHeader("X-Shard-Map-Epoch", std::to_string(epoch));
  return head;
}

Status DbStatus(const DbError& e, const char* what) {
  if (e.kind() == DbErrorKind::kQuery) {
    LOG_ERROR("%s: shard %s: unexpected SQL error %d: %s", what, e.shard().c_str(), e.mysql_errno(), e.what());
    return Status::Error(500, "internal_error", "internal error; see the server log");
  }
  LOG_WARN("%s: shard %s: %s (errno %d): %s", what, e.shard().c_str(), DbErrorKindName(e.kind()), e.mysql_errno(),
           e.what());
  std::string message = "shard " + e.shard() + " is unavailable";
  if (e.kind() == DbErrorKind::kConnectionLost) {
    message += "; the connection broke mid-request, so a write may or may not have been stored";
  } else if (e.kind() == DbErrorKind::kRetryable) {
    message = "shard " + e.shard() + " is overloaded (lock contention)";
  }
  return Status::Error(503, "shard_unavailable", message + "; retry later");
}

HttpResponse FromDbError(const DbError& e, const char* what) {
  HttpResponse r = FromStatus(DbStatus(e, what));
  if (r.status == 503) r.SetHeader("Retry-After", "1");
  return r;
}

void WriteSession(JsonWriter& w, const SessionId& id, const SessionRecord& s, bool counts) {
  w.StartObject();
  w.Key("id");
  w.String(id.text());
  w.Key("title");
  if (s.title)
    w.String(*s.title);
  else
    w.Null();
  w.Key("metadata");
  w.RawValue(s.metadata_json.data(), s.metadata_json.size(), rapidjson::kObjectType);
  w.Key("created_at");
  w.String(FormatRfc3339(s.created_us));
  if (counts) {
    w.Key("updated_at");
    w.String(FormatRfc3339(s.updated_us));
    w.Key("message_count");
    w.Int64(s.message_count);
  }
  w.Key("model");
  if (s.model)
    w.String(*s.model);
  else
    w.Null();
  w.Key("system_prompt");
  if (s.system_prompt)
    w.String(*s.system_prompt);
  else
    w.Null();
  w.EndObject();
}

// A message and, flattened into it, the members of its metadata object.
void WriteMessage(JsonWriter& w, const MessageRecord& m) {
  w.StartObject();
  w.Key("seq");
  w.Int64(m.seq);
  w.Key("role");
  w.String(m.role);
  w.Key("content");
  w.String(m.content.data(), m.content.size());
  w.Key("created_at");
  w.String(FormatRfc3339(m.created_us));
  if (m.reply_to != 0) {
    w.Key("reply_to");
    w.Int64(m.reply_to);
  }
  if (!m.meta_json.empty()) {
    rapidjson::Document meta;
    meta.Parse(m.meta_json.data(), m.meta_json.size());
    if (meta.IsObject()) {
      for (const auto& member : meta.GetObject()) {
        // The usage hold an answer settled is the server's bookkeeping.
        if (std::string_view(member.name.GetString(), member.name.GetStringLength()) == "hold") continue;
        w.Key(member.name.GetString(), member.name.GetStringLength());
        member.value.Accept(w);
      }
    }
  }
  w.EndObject();
}

std::string UserMetaJson(const std::string& request_id) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  w.Key("request_id");
  w.String(request_id);
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

std::string MessageJson(const MessageRecord& m) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  WriteMessage(w, m);
  return std::string(buf.GetString(), buf.GetSize());
}

Service::Service(const Config& config, Store* store, ProviderChain* providers, ServiceHooks hooks)
    : config_(config),
      store_(store),
      providers_(providers),
      report_(hooks.report),
      limits_(hooks.limits),
      keys_(int64_t{config.key_cache_ttl_ms} * 1000, 10000),
      turns_(config, store, providers, hooks.observer, hooks.limits) {}

std::optional<HttpResponse> Service::Authenticate(const HttpRequest& request, UserId* user, std::string* key_id) {
  user->clear();
  key_id->clear();
  if (!config_.auth_required) return std::nullopt;
  // Missing, malformed, unknown, revoked, expired, disabled: one answer.
  auto unauthorized = [] {
    HttpResponse r = ErrorResponse(401, "unauthorized", "a valid API key is required: Authorization: Bearer <key>");
    r.SetHeader("WWW-Authenticate", "Bearer realm=\"chatllm\"");
    return r;
  };
  std::optional<ApiKey> key = ParseApiKey(request.Header("authorization"));
  if (!key) return unauthorized();
  const int64_t now = MonotonicMicros();
  KeyRecord record;
  if (const KeyRecord* cached = keys_.Find(key->id, now)) {
    record = *cached;
  } else {
    // Unknown ids are cached too (as revoked): a client retrying a bad key,
    // or guessing, costs the shards one lookup per TTL, not one per request.
    std::optional<KeyRecord> fetched = store_->LookupApiKey(key->id);
    if (fetched) {
      record = *fetched;
    } else {
      record.revoked = true;
    }
    keys_.Put(key->id, record, now);
  }
  if (!SameBytes(SecretHash(key->secret), record.secret_sha256) || record.revoked || record.user_disabled ||
      (record.expires_us != 0 && record.expires_us <= NowMicros())) {
    return unauthorized();
  }
  *user = record.user_id;
  *key_id = key->id;
  return std::nullopt;
}

std::optional<HttpResponse> Service::IdempotencyOf(const HttpRequest& request, const std::string& target,
                                                   std::optional<IdempotencyKey>* out) {
  out->reset();
  auto header = request.headers.find("idempotency-key");
  if (header == request.headers.end()) return std::nullopt;
  const std::string& key = header->second;
  if (!ValidIdempotencyKey(key)) {  // Also an empty one: present means 1..255 characters.
    return ErrorResponse(400, "invalid_request", "Idempotency-Key must be 1..255 printable ASCII characters");
  }
  IdempotencyKey k;
  k.key = key;
  k.target_sha = IdempotencyTargetSha(target);
  k.request_sha = SecretHash(target + "\n" + request.body);
  *out = std::move(k);
  return std::nullopt;
}

HttpResponse Service::Handle(const HttpRequest& request, RequestTrace* trace, ResponseStream* stream) {
  HttpResponse response;
  try {
    response = Dispatch(request, trace, stream);
  } catch (const DbError& e) {
    response = FromDbError(e, request.path.c_str());
  } catch (const std::exception& e) {
    LOG_ERROR("%s %s: unhandled exception: %s", request.method.c_str(), request.path.c_str(), e.what());
    response = ErrorResponse(500, "internal_error", "internal error; see the server log");
  }
  if (stream && stream->bytes_sent() > 0 && !response.streamed) {
    // Failed after the head of a stream went out: nothing more can be said
    // on it (the error is in the log).
    response = HttpResponse{};
    response.streamed = true;
    return response;
  }
  // The shard map epoch this request was routed with.
  response.SetHeader("X-Shard-Map-Epoch", std::to_string(store_->last_epoch()));
  response.SetHeader("X-Request-Id", trace->request_id);
  return response;
}

HttpResponse Service::Dispatch(const HttpRequest& request, RequestTrace* trace, ResponseStream* stream) {
  RouteMatch route = MatchRoute(request.method, request.path);
  trace->route = static_cast<int>(route.id);
  trace->route_name = RouteName(route.id);
  // Every /v1 path needs a key, whether or not a route serves it: a client
  // without one learns nothing about the routes (401 before 404 and 405).
  UserId user;
  if (request.path == "/v1" || request.path.rfind("/v1/", 0) == 0) {
    if (auto denied = Authenticate(request, &user, &trace->key_id)) return *denied;
    if (!user.empty()) {
      trace->user = Hex(user);
      if (limits_ && !limits_->TakeToken(user, config_.user_requests_per_second, config_.user_burst)) {
        HttpResponse r = ErrorResponse(429, "rate_limited", "too many requests for this user; slow down");
        r.SetHeader("Retry-After", "1");
        return r;
      }
    }
  }
  switch (route.id) {
    case RouteId::kNotFound:
      return ErrorResponse(404, "not_found", "no route for " + request.path);
    case RouteId::kMethodNotAllowed: {
      HttpResponse r =
          ErrorResponse(405, "method_not_allowed",
                        request.method + " is not allowed on " + route.name + " (allowed: " + route.allow + ")");
      r.SetHeader("Allow", route.allow);
      return r;
    }
    case RouteId::kHealthz:
      return Healthz();
    case RouteId::kReadyz:
      return Readyz();
    default:
      break;
  }
  if (route.id == RouteId::kStatus || route.id == RouteId::kMetrics) {
    if (!report_) return ErrorResponse(404, "not_found", "no route for " + request.path);
    HttpResponse r;
    if (route.id == RouteId::kMetrics) {
      r.SetHeader("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
      r.body = report_->Metrics();
    } else {
      r.SetHeader("Content-Type", "application/json");
      r.body = report_->StatusJson(request.query.find("full") != std::string::npos);
    }
    return r;
  }
  // Every remaining route is under /v1, authenticated above. Only the two
  // lists and a turn's events take query parameters; elsewhere any is a
  // client's mistake.
  if (route.id != RouteId::kListSessions && route.id != RouteId::kListMessages && route.id != RouteId::kTurnEvents &&
      route.id != RouteId::kGetResponse && route.id != RouteId::kListConversationItems &&
      route.id != RouteId::kGetUsage) {
    if (Status err = ParseNoQuery(request.query); !err.ok()) return FromStatus(err);
  }
  switch (route.id) {
    case RouteId::kCreateResponse:
      return CreateResponse(request, user, trace, stream);
    case RouteId::kGetResponse:
      return GetResponse(route.session_id, request, user, trace, stream);
    case RouteId::kCancelResponse:
      return CancelResponse(route.session_id, user, trace);
    case RouteId::kCreateConversation:
      return CreateConversation(request, user);
    case RouteId::kGetConversation:
      return GetConversation(route.session_id, user, trace);
    case RouteId::kDeleteConversation:
      return DeleteConversation(route.session_id, user, trace);
    case RouteId::kListConversationItems:
      return ListConversationItems(route.session_id, request, user, trace);
    case RouteId::kCreateSession:
      return CreateSession(request, user);
    case RouteId::kListSessions:
      return ListSessions(request, user);
    case RouteId::kGetUsage:
      return GetUsage(request, user, *trace);
    case RouteId::kChatCompletions:
      return ChatCompletions(request, user, trace, stream);
    default:
      break;
  }
  // Every remaining route is under /v1/sessions/{id}. A malformed id cannot
  // name a session, nor can the id of a user's home (SessionId::HomeOf), so
  // either is the same 404 as an unknown one.
  std::optional<SessionId> id = SessionId::Parse(route.session_id);
  if (!id || !id->names_session()) return SessionNotFound();
  trace->session_id = id->text();
  switch (route.id) {
    case RouteId::kGetSession:
      return GetSession(*id, user);
    case RouteId::kDeleteSession:
      return DeleteSession(*id, user);
    case RouteId::kListMessages:
      return ListMessages(*id, request, user);
    case RouteId::kAppendMessage:
      return AppendMessage(*id, request, user, trace, stream);
    default:
      break;
  }
  // A durable turn: /v1/sessions/{id}/turns/{turn}...
  std::optional<int64_t> turn = ParseTurnId(route.turn_id);
  if (!turn) return ErrorResponse(404, "turn_not_found", "no turn with this id in this session");
  switch (route.id) {
    case RouteId::kGetTurn:
      return GetTurn(*id, *turn, user);
    case RouteId::kTurnEvents:
      return TurnEvents(*id, *turn, request, user, trace, stream);
    case RouteId::kCancelTurn:
      return CancelTurn(*id, *turn, user);
    default:
      return ErrorResponse(500, "internal_error", "unrouted request");
  }
}

HttpResponse Service::Healthz() {
  HttpResponse r;
  r.SetHeader("Content-Type", "application/json");
  r.body = "{\"status\":\"ok\"}";
  return r;
}

HttpResponse Service::Readyz() {
  std::vector<ShardStatus> shards = store_->CheckShards();
  bool ready = std::all_of(shards.begin(), shards.end(), [](const ShardStatus& s) { return s.up; });
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  if (!ready) {
    w.Key("error");
    w.StartObject();
    w.Key("code");
    w.String("not_ready");
    w.Key("message");
    w.String("one or more shards are unavailable");
    w.EndObject();
  }
  w.Key("status");
  w.String(ready ? "ready" : "unavailable");
  w.Key("shards");
  w.StartArray();
  for (const ShardStatus& s : shards) {
    w.StartObject();
    w.Key("name");
    w.String(s.name);
    w.Key("state");
    w.String(s.up ? "up" : "down");
    w.Key("schema_version");
    w.Int(s.schema_version);
    if (!s.error.empty()) {
      w.Key("error");
      w.String(s.error);
    }
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  HttpResponse r = JsonResponse(ready ? 200 : 503, buf);
  if (!ready) r.SetHeader("Retry-After", "1");
  return r;
}

HttpResponse Service::CreateSession(const HttpRequest& request, const UserId& user) {
  if (Status err = CheckJsonContentType(request.Header("content-type")); !err.ok()) return FromStatus(err);
  StatusOr<CreateSessionRequest> parsed = ParseCreateSession(request.body, config_);
  if (!parsed.ok()) return FromStatus(parsed.status());
  CreateSessionRequest& req = *parsed;
  std::optional<IdempotencyKey> idem;
  if (auto bad = IdempotencyOf(request, std::string(kCreateSessionTarget), &idem)) return *bad;
  SessionRecord s;
  s.title = std::move(req.title);
  s.metadata_json = std::move(req.metadata_json);
  if (req.model && !providers_->Serves(*req.model)) {
    return ErrorResponse(400, "model_not_supported", "no configured provider serves the model '" + *req.model + "'");
  }
  s.model = std::move(req.model);
  s.system_prompt = std::move(req.system_prompt);
  s.user_id = user;
  s.created_us = s.updated_us = NowMicros();
  // With an Idempotency-Key the id comes from the user and the key: a retry
  // lands on the same shard, where the key was recorded with the session.
  const SessionId id = idem ? SessionId::FromName("session\n" + user + "\n" + idem->key) : SessionId::Generate();
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  WriteSession(w, id, s);
  HttpResponse r = JsonResponse(201, buf);
  r.SetHeader("Location", "/v1/sessions/" + id.text());
  // The limit applies to authenticated users (without authentication every
  // session belongs to no one).
  const int64_t max_sessions = user.empty() ? 0 : config_.max_sessions_per_user;
  IdempotencyResult done = store_->CreateSession(id, s, idem ? &*idem : nullptr, 201, r.body, max_sessions);
  switch (done.outcome) {
    case IdempotencyOutcome::kOverLimit:
      return ErrorResponse(409, "too_many_sessions",
                           "this user has the maximum of " + std::to_string(config_.max_sessions_per_user) +
                               " sessions; delete some first");
    case IdempotencyOutcome::kNew:
      return r;
    case IdempotencyOutcome::kReplay: {
      HttpResponse replay;
      replay.status = done.status;
      replay.body = done.response;
      replay.SetHeader("Content-Type", "application/json");
      replay.SetHeader("Location", "/v1/sessions/" + id.text());
      replay.SetHeader("Idempotent-Replayed", "true");
      return replay;
    }
    case IdempotencyOutcome::kInFlight:
    case IdempotencyOutcome::kMismatch:
      break;
  }
  return ErrorResponse(422, "idempotency_key_reused", "this Idempotency-Key was used for a different request");
}

HttpResponse Service::ListSessions(const HttpRequest& request, const UserId& user) {
  StatusOr<ListSessionsQuery> parsed = ParseListSessionsQuery(request.query);
  if (!parsed.ok()) return FromStatus(parsed.status());
  const ListSessionsQuery& q = *parsed;
  SessionPage page = store_->ListSessions(user, SessionCursor{q.after_created_us, q.after_id}, q.limit);
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  w.Key("data");
  w.StartArray();
  for (const auto& [id, s] : page.sessions) WriteSession(w, id, s, /*counts=*/false);
  w.EndArray();
  w.Key("has_more");
  w.Bool(page.has_more);
  w.Key("next_after");
  if (page.has_more) {
    w.String(SessionCursorText(page.next.created_us, page.next.id_bytes));
  } else {
    w.Null();
  }
  w.EndObject();
  return JsonResponse(200, buf);
}

HttpResponse Service::GetSession(const SessionId& id, const UserId& user) {
  std::optional<SessionRecord> s = store_->GetSession(id, user);
  if (!s) return SessionNotFound();
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  WriteSession(w, id, *s);
  return JsonResponse(200, buf);
}

HttpResponse Service::DeleteSession(const SessionId& id, const UserId& user) {
  if (!store_->DeleteSession(id, user)) return SessionNotFound();
  HttpResponse r;
  r.status = 204;
  return r;
}

HttpResponse Service::ListMessages(const SessionId& id, const HttpRequest& request, const UserId& user) {
  StatusOr<ListMessagesQuery> parsed = ParseListMessagesQuery(request.query);
  if (!parsed.ok()) return FromStatus(parsed.status());
  const ListMessagesQuery& q = *parsed;
  // One extra row tells whether another page follows.
  std::optional<std::vector<MessageRecord>> rows = store_->ListMessages(id, q.after, q.limit + 1, user);
  if (!rows) return SessionNotFound();
  bool has_more = rows->size() > static_cast<size_t>(q.limit);
  if (has_more) rows->resize(q.limit);
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  w.Key("data");
  w.StartArray();
  for (const MessageRecord& m : *rows) WriteMessage(w, m);
  w.EndArray();
  w.Key("has_more");
  w.Bool(has_more);
  w.Key("next_after");
  if (has_more)
    w.Int64(rows->back().seq);
  else
    w.Null();
  w.EndObject();
  return JsonResponse(200, buf);
}

}  // namespace chatllm
