#pragma once

#include <string>

#include "api/requests.h"
#include "base/http.h"
#include "base/ids.h"
#include "base/json.h"
#include "store/db_error.h"
#include "store/store.h"

namespace chatllm {

// The API's JSON shapes of stored things and its common error responses
// (docs/api.md), shared by the handlers (service.cc, service_turn.cc), the
// turn use case (turn.cc) and its presenters (presenters.cc).

// A failed Status as the response to send.
HttpResponse FromStatus(const Status& s);
HttpResponse SessionNotFound();
HttpResponse JsonResponse(int status, const rapidjson::StringBuffer& buf);
// `body` (JSON) as the response.
HttpResponse JsonBody(int status, std::string body);
// A response already sent through a ResponseStream: nothing left to write.
HttpResponse StreamedResponse();
// The head of a text/event-stream answer: nginx passes each event on at once.
HttpResponse EventStreamHead(const std::string& request_id, uint64_t epoch);
// A database failure as the client sees it: 503 shard_unavailable (retry
// after a second), or 500 for an unexpected SQL error (logged with `what`).
// The message names the shard and whether a write's outcome is unknown,
// never the server's own text (SQL, hosts, ports).
Status DbStatus(const DbError& e, const char* what);
// DbStatus as a response, with Retry-After: 1 on a 503.
HttpResponse FromDbError(const DbError& e, const char* what);

// A session. `counts` adds updated_at and message_count, which only the
// session's own shard knows: a list (from the user's home) leaves them out.
void WriteSession(JsonWriter& w, const SessionId& id, const SessionRecord& s, bool counts = true);
// A message with the members of its metadata (request id; for answers the
// provider, model, usage, latency and finish reason) flattened into it.
void WriteMessage(JsonWriter& w, const MessageRecord& m);
std::string MessageJson(const MessageRecord& m);
// The metadata of a user message: {"request_id": ...}.
std::string UserMetaJson(const std::string& request_id);

}  // namespace chatllm
