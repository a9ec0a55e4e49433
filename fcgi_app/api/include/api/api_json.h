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
// A database failure as the client sees it: 503 shard_unavailable (retry
// after a second), or 500 for an unexpected SQL error (logged with `what`).
// The message names the shard and whether a write's outcome is unknown,
// never the server's own text (SQL, hosts, ports).
Status DbStatus(const DbError& e, const char* what);
// DbStatus as a response, with Retry-After: 1 on a 503.
HttpResponse FromDbError(const DbError& e, const char* what);

void WriteSession(JsonWriter& w, const SessionId& id, const SessionRecord& s);
// A message with the members of its metadata (request id; for answers the
// provider, model, usage, latency and finish reason) flattened into it.
void WriteMessage(JsonWriter& w, const MessageRecord& m);
std::string MessageJson(const MessageRecord& m);
// The metadata of a user message: {"request_id": ...}.
std::string UserMetaJson(const std::string& request_id);

}  // namespace chatllm
