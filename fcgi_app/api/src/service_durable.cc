// The durable-turn routes (docs/api.md, "Durable turns"): a turn's state,
// its events from any point (replayed from the shard, then followed until
// the turn ends), and its cancel. Any instance serves them: the turn is on
// the session's shard, not in the worker that produces it.

#include <unistd.h>

#include "api/api_json.h"
#include "api/requests.h"
#include "api/service.h"
#include "base/json.h"
#include "base/sse.h"
#include "base/time_util.h"
#include "durable_turn.h"
#include "store/db_error.h"

namespace chatllm {
namespace {

constexpr int kEventsPerRead = 256;

constexpr int64_t kKeepAliveUs = 1000000;  // A comment this often: a client that left is noticed.

HttpResponse TurnNotFound() { return ErrorResponse(404, "turn_not_found", "no turn with this id in this session"); }

void WriteTurn(JsonWriter& w, const SessionId& id, const TurnRecord& t) {
  w.StartObject();
  w.Key("id");
  w.String(TurnIdText(t.turn_id));
  w.Key("object");
  w.String("turn");
  w.Key("session_id");
  w.String(id.text());
  w.Key("state");
  w.String(t.state);
  w.Key("user_seq");
  w.Int64(t.user_seq);
  w.Key("answer_seq");
  if (t.answer_seq != 0)
    w.Int64(t.answer_seq);
  else
    w.Null();
  w.Key("events");
  w.Int64(t.last_event);
  w.Key("cancel_requested");
  w.Bool(t.cancel_requested);
  w.Key("created_at");
  w.String(FormatRfc3339(t.created_us));
  w.Key("updated_at");
  w.String(FormatRfc3339(t.updated_us));
  w.EndObject();
}

std::string DeltaEvent(const TurnEvent& e) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  w.Key("text");
  w.String(e.text.data(), static_cast<rapidjson::SizeType>(e.text.size()));
  w.EndObject();
  return "id: " + std::to_string(e.seq) + "\n" + SseEvent("delta", std::string_view(buf.GetString(), buf.GetSize()));
}

// The last event of a stream that is not `assistant`: why the turn has no
// whole answer, with the partial one when it was stored.
std::string ErrorEvent(const std::string& code, const std::string& message, const MessageRecord* partial) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  w.Key("error");
  w.StartObject();
  w.Key("code");
  w.String(code);
  w.Key("message");
  w.String(message);
  w.EndObject();
  if (partial) {
    w.Key("assistant");
    WriteMessage(w, *partial);
  }
  w.EndObject();
  return SseEvent("error", std::string_view(buf.GetString(), buf.GetSize()));
}

}  // namespace

std::optional<TurnRecord> FollowTurn(const Config& config, Store* store, const SessionId& id, const UserId& user,
                                     TurnRead read, int64_t next, ResponseStream* stream,
                                     const std::function<std::string(const TurnEvent&)>& frame,
                                     const std::function<std::string(const Status&)>& fail) {
  int64_t last_sent_us = MonotonicMicros();
  // Replayed, then followed: each read is the turn's row and its events
  // after the last one sent, until the turn has ended and every event is out.
  while (true) {
    for (const TurnEvent& e : read.events) {
      if (!stream->Send(frame(e))) return std::nullopt;
      next = e.seq;
      last_sent_us = MonotonicMicros();
    }
    if (read.turn.finished() && next >= read.turn.last_event) return read.turn;
    if (read.events.empty()) {
      if (MonotonicMicros() - last_sent_us >= kKeepAliveUs) {
        if (!stream->Send(": keep-alive\n\n")) return std::nullopt;
        last_sent_us = MonotonicMicros();
      }
      ::usleep(static_cast<useconds_t>(config.turn_poll_ms) * 1000);
    }
    std::optional<TurnRead> again;
    try {
      again = store->ReadTurn(id, user, read.turn.turn_id, next, kEventsPerRead);
    } catch (const DbError& e) {
      stream->Send(fail(DbStatus(e, "reading a turn")));
      return std::nullopt;
    }
    if (!again || again->turn.turn_id == 0) {
      stream->Send(fail(Status::Error(404, "turn_not_found", "the session was deleted")));
      return std::nullopt;
    }
    read = std::move(*again);
  }
}

HttpResponse Service::GetTurn(const SessionId& id, int64_t turn_id, const UserId& user) {
  std::optional<TurnRead> read = store_->ReadTurn(id, user, turn_id, INT64_MAX, 1);
  if (!read) return SessionNotFound();
  if (read->turn.turn_id == 0) return TurnNotFound();
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  WriteTurn(w, id, read->turn);
  return JsonResponse(200, buf);
}

HttpResponse Service::CancelTurn(const SessionId& id, int64_t turn_id, const UserId& user) {
  if (!store_->CancelTurn(id, user, turn_id)) return SessionNotFound();
  return GetTurn(id, turn_id, user);
}

HttpResponse Service::TurnEvents(const SessionId& id, int64_t turn_id, const HttpRequest& request, const UserId& user,
                                 RequestTrace* trace, ResponseStream* stream) {
  StatusOr<int64_t> after = ParseTurnEventsQuery(request.query, request.Header("last-event-id"));
  if (!after.ok()) return FromStatus(after.status());
  if (!stream) return ErrorResponse(400, "invalid_request", "streaming is not available here");
  std::optional<TurnRead> read = store_->ReadTurn(id, user, turn_id, *after, kEventsPerRead);
  if (!read) return SessionNotFound();
  if (read->turn.turn_id == 0) return TurnNotFound();

  HttpResponse head = EventStreamHead(trace->request_id, store_->last_epoch());
  head.SetHeader("X-Turn-Id", TurnIdText(turn_id));
  HttpResponse done = StreamedResponse();
  if (!stream->Start(head)) return done;
  std::optional<TurnRecord> ended =
      FollowTurn(config_, store_, id, user, std::move(*read), *after, stream, DeltaEvent,
                 [](const Status& err) { return ErrorEvent(err.code(), err.message(), nullptr); });
  if (!ended) return done;
  // The end, as the live stream said it: the answer, or why there is none.
  const TurnRecord& t = *ended;
  std::optional<MessageRecord> answer;
  if (t.answer_seq != 0) {
    try {
      std::optional<std::vector<MessageRecord>> got = store_->ReadMessages(id, {t.answer_seq}, user);
      if (got && got->size() == 1) answer = std::move(got->front());
    } catch (const DbError& e) {
      Status err = DbStatus(e, "reading a turn's answer");
      stream->Send(ErrorEvent(err.code(), err.message(), nullptr));
      return done;
    }
  }
  if (t.state == "completed" && answer) {
    stream->Send(SseEvent("assistant", MessageJson(*answer)));
  } else if (t.state == "cancelled") {
    stream->Send(ErrorEvent("turn_cancelled", "the turn was cancelled", answer ? &*answer : nullptr));
  } else if (t.state == "incomplete") {
    stream->Send(ErrorEvent("turn_incomplete", "the turn's producer stopped before it ended (its lease ran out)",
                            answer ? &*answer : nullptr));
  } else {
    stream->Send(
        ErrorEvent("turn_failed", "the provider failed before the answer was whole", answer ? &*answer : nullptr));
  }
  return done;
}

}  // namespace chatllm
