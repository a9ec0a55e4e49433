#pragma once

#include <string>
#include <string_view>

namespace chatllm {

enum class RouteId {
  kNotFound,          // No route has this path.
  kMethodNotAllowed,  // The path exists; `allow` lists its methods.
  kHealthz,
  kReadyz,
  kCreateSession,
  kGetSession,
  kDeleteSession,
  kListMessages,
  kAppendMessage,
  kStatus,           // GET /status: the process manager's status (loopback only, in nginx).
  kMetrics,          // GET /metrics: Prometheus text (loopback only, in nginx).
  kChatCompletions,  // POST /v1/chat/completions: OpenAI-compatible.
  kListSessions,     // GET /v1/sessions: the caller's sessions.
  kGetTurn,          // GET /v1/sessions/{id}/turns/{turn}: a durable turn's state.
  kTurnEvents,       // GET /v1/sessions/{id}/turns/{turn}/events: its events, then the live ones.
  kCancelTurn,       // POST /v1/sessions/{id}/turns/{turn}/cancel
  // OpenAI's Responses and Conversations APIs (docs/api.md): {id} is a
  // response's ("resp_...") or a conversation's ("conv_...") id.
  kCreateResponse,         // POST /v1/responses
  kGetResponse,            // GET /v1/responses/{id} (?stream=true&starting_after=N)
  kCancelResponse,         // POST /v1/responses/{id}/cancel
  kCreateConversation,     // POST /v1/conversations
  kGetConversation,        // GET /v1/conversations/{id}
  kDeleteConversation,     // DELETE /v1/conversations/{id}
  kListConversationItems,  // GET /v1/conversations/{id}/items
  kGetUsage,               // GET /v1/usage: the caller's usage ledger and budgets.
};
// How many routes there are (RouteId values run 0 .. kRouteCount - 1).
inline constexpr int kRouteCount = static_cast<int>(RouteId::kGetUsage) + 1;

// The route's template ("/v1/sessions/{id}"), for logs and metric labels.
const char* RouteName(RouteId id);
// The route's method ("GET", "POST", "DELETE"; "any" for kNotFound and
// kMethodNotAllowed): with the name, what tells two routes apart in metrics.
const char* RouteMethod(RouteId id);

struct RouteMatch {
  RouteId id = RouteId::kNotFound;
  std::string session_id;  // Raw {id} path segment, not yet validated (a session's, response's or conversation's).
  std::string turn_id;     // Raw {turn} path segment, not yet validated.
  std::string allow;       // For kMethodNotAllowed: value of the Allow header.
  const char* name = "";   // Route template for logs and metrics.
};

// Maps a method and a raw path to a route. Pure and allocation-light; HEAD
// matches wherever GET does (the worker drops the body). Paths match exactly:
// no trailing slash, no empty segments, no percent-decoding.
RouteMatch MatchRoute(std::string_view method, std::string_view path);

}  // namespace chatllm
