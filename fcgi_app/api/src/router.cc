#include "api/router.h"

#include <array>

namespace chatllm {
namespace {

// Splits "/a/b/c" into at most 6 segments; returns -1 when the path is not of
// the form "/seg(/seg)*" with non-empty segments, or is longer than that.
int Split(std::string_view path, std::array<std::string_view, 6>* segs) {
  if (path.empty() || path[0] != '/') return -1;
  int n = 0;
  size_t pos = 1;
  while (true) {
    size_t slash = path.find('/', pos);
    std::string_view seg = path.substr(pos, slash == std::string_view::npos ? std::string_view::npos : slash - pos);
    if (seg.empty() || n == static_cast<int>(segs->size())) return -1;
    (*segs)[n++] = seg;
    if (slash == std::string_view::npos) return n;
    pos = slash + 1;
  }
}

RouteMatch Resolve(std::string_view method, RouteId get, RouteId post, RouteId del, const char* name) {
  RouteMatch m;
  m.name = name;
  bool is_get = method == "GET" || method == "HEAD";
  if (is_get && get != RouteId::kNotFound)
    m.id = get;
  else if (method == "POST" && post != RouteId::kNotFound)
    m.id = post;
  else if (method == "DELETE" && del != RouteId::kNotFound)
    m.id = del;
  else {
    m.id = RouteId::kMethodNotAllowed;
    std::string allow;
    auto add = [&allow](const char* v) {
      if (!allow.empty()) allow += ", ";
      allow += v;
    };
    if (get != RouteId::kNotFound) {
      add("GET");
      add("HEAD");
    }
    if (post != RouteId::kNotFound) add("POST");
    if (del != RouteId::kNotFound) add("DELETE");
    m.allow = allow;
  }
  return m;
}

constexpr RouteId kNone = RouteId::kNotFound;

}  // namespace

const char* RouteName(RouteId id) {
  switch (id) {
    case RouteId::kNotFound:
      return "not_found";
    case RouteId::kMethodNotAllowed:
      return "method_not_allowed";
    case RouteId::kHealthz:
      return "/healthz";
    case RouteId::kReadyz:
      return "/readyz";
    case RouteId::kCreateSession:
    case RouteId::kListSessions:
      return "/v1/sessions";
    case RouteId::kGetSession:
    case RouteId::kDeleteSession:
      return "/v1/sessions/{id}";
    case RouteId::kListMessages:
    case RouteId::kAppendMessage:
      return "/v1/sessions/{id}/messages";
    case RouteId::kStatus:
      return "/status";
    case RouteId::kMetrics:
      return "/metrics";
    case RouteId::kChatCompletions:
      return "/v1/chat/completions";
    case RouteId::kGetTurn:
      return "/v1/sessions/{id}/turns/{turn}";
    case RouteId::kTurnEvents:
      return "/v1/sessions/{id}/turns/{turn}/events";
    case RouteId::kCancelTurn:
      return "/v1/sessions/{id}/turns/{turn}/cancel";
    case RouteId::kCreateResponse:
      return "/v1/responses";
    case RouteId::kGetResponse:
      return "/v1/responses/{id}";
    case RouteId::kCancelResponse:
      return "/v1/responses/{id}/cancel";
    case RouteId::kCreateConversation:
      return "/v1/conversations";
    case RouteId::kGetConversation:
    case RouteId::kDeleteConversation:
      return "/v1/conversations/{id}";
    case RouteId::kListConversationItems:
      return "/v1/conversations/{id}/items";
    case RouteId::kGetUsage:
      return "/v1/usage";
  }
  return "?";
}

const char* RouteMethod(RouteId id) {
  switch (id) {
    case RouteId::kNotFound:
    case RouteId::kMethodNotAllowed:
      return "any";
    case RouteId::kCreateSession:
    case RouteId::kAppendMessage:
    case RouteId::kChatCompletions:
    case RouteId::kCancelTurn:
    case RouteId::kCreateResponse:
    case RouteId::kCancelResponse:
    case RouteId::kCreateConversation:
      return "POST";
    case RouteId::kDeleteSession:
    case RouteId::kDeleteConversation:
      return "DELETE";
    case RouteId::kHealthz:
    case RouteId::kReadyz:
    case RouteId::kGetSession:
    case RouteId::kListSessions:
    case RouteId::kListMessages:
    case RouteId::kStatus:
    case RouteId::kMetrics:
    case RouteId::kGetTurn:
    case RouteId::kTurnEvents:
    case RouteId::kGetResponse:
    case RouteId::kGetConversation:
    case RouteId::kListConversationItems:
    case RouteId::kGetUsage:
      return "GET";
  }
  return "any";
}

RouteMatch MatchRoute(std::string_view method, std::string_view path) {
  std::array<std::string_view, 6> s;
  int n = Split(path, &s);
  if (n == 1 && s[0] == "healthz") return Resolve(method, RouteId::kHealthz, kNone, kNone, "/healthz");
  if (n == 1 && s[0] == "readyz") return Resolve(method, RouteId::kReadyz, kNone, kNone, "/readyz");
  if (n == 1 && s[0] == "status") return Resolve(method, RouteId::kStatus, kNone, kNone, "/status");
  if (n == 1 && s[0] == "metrics") return Resolve(method, RouteId::kMetrics, kNone, kNone, "/metrics");
  if (n == 2 && s[0] == "v1" && s[1] == "usage") return Resolve(method, RouteId::kGetUsage, kNone, kNone, "/v1/usage");
  if (n == 3 && s[0] == "v1" && s[1] == "chat" && s[2] == "completions") {
    return Resolve(method, kNone, RouteId::kChatCompletions, kNone, "/v1/chat/completions");
  }
  if (n >= 2 && n <= 4 && s[0] == "v1" && s[1] == "responses") {
    if (n == 2) return Resolve(method, kNone, RouteId::kCreateResponse, kNone, "/v1/responses");
    RouteMatch m;
    if (n == 3) {
      m = Resolve(method, RouteId::kGetResponse, kNone, kNone, "/v1/responses/{id}");
    } else if (s[3] == "cancel") {
      m = Resolve(method, kNone, RouteId::kCancelResponse, kNone, "/v1/responses/{id}/cancel");
    } else {
      return RouteMatch{};
    }
    m.session_id = std::string(s[2]);
    return m;
  }
  if (n >= 2 && n <= 4 && s[0] == "v1" && s[1] == "conversations") {
    if (n == 2) return Resolve(method, kNone, RouteId::kCreateConversation, kNone, "/v1/conversations");
    RouteMatch m;
    if (n == 3) {
      m = Resolve(method, RouteId::kGetConversation, kNone, RouteId::kDeleteConversation, "/v1/conversations/{id}");
    } else if (s[3] == "items") {
      m = Resolve(method, RouteId::kListConversationItems, kNone, kNone, "/v1/conversations/{id}/items");
    } else {
      return RouteMatch{};
    }
    m.session_id = std::string(s[2]);
    return m;
  }
  if (n >= 2 && s[0] == "v1" && s[1] == "sessions") {
    if (n == 2) return Resolve(method, RouteId::kListSessions, RouteId::kCreateSession, kNone, "/v1/sessions");
    RouteMatch m;
    if (n == 3) {
      m = Resolve(method, RouteId::kGetSession, kNone, RouteId::kDeleteSession, "/v1/sessions/{id}");
    } else if (n == 4 && s[3] == "messages") {
      m = Resolve(method, RouteId::kListMessages, RouteId::kAppendMessage, kNone, "/v1/sessions/{id}/messages");
    } else if (n >= 5 && s[3] == "turns") {
      if (n == 5) {
        m = Resolve(method, RouteId::kGetTurn, kNone, kNone, "/v1/sessions/{id}/turns/{turn}");
      } else if (s[5] == "events") {
        m = Resolve(method, RouteId::kTurnEvents, kNone, kNone, "/v1/sessions/{id}/turns/{turn}/events");
      } else if (s[5] == "cancel") {
        m = Resolve(method, kNone, RouteId::kCancelTurn, kNone, "/v1/sessions/{id}/turns/{turn}/cancel");
      } else {
        return RouteMatch{};
      }
      m.turn_id = std::string(s[4]);
    } else {
      return RouteMatch{};
    }
    m.session_id = std::string(s[2]);
    return m;
  }
  return RouteMatch{};
}

}  // namespace chatllm
