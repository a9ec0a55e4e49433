#include "api/router.h"

#include <array>

namespace chatllm {
namespace {

// Splits "/a/b/c" into at most 5 segments; returns -1 when the path is not of
// the form "/seg(/seg)*" with non-empty segments, or is longer than that.
int Split(std::string_view path, std::array<std::string_view, 5>* segs) {
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
      return "POST";
    case RouteId::kDeleteSession:
      return "DELETE";
    case RouteId::kHealthz:
    case RouteId::kReadyz:
    case RouteId::kGetSession:
    case RouteId::kListSessions:
    case RouteId::kListMessages:
    case RouteId::kStatus:
    case RouteId::kMetrics:
      return "GET";
  }
  return "any";
}

RouteMatch MatchRoute(std::string_view method, std::string_view path) {
  std::array<std::string_view, 5> s;
  int n = Split(path, &s);
  if (n == 1 && s[0] == "healthz") return Resolve(method, RouteId::kHealthz, kNone, kNone, "/healthz");
  if (n == 1 && s[0] == "readyz") return Resolve(method, RouteId::kReadyz, kNone, kNone, "/readyz");
  if (n == 1 && s[0] == "status") return Resolve(method, RouteId::kStatus, kNone, kNone, "/status");
  if (n == 1 && s[0] == "metrics") return Resolve(method, RouteId::kMetrics, kNone, kNone, "/metrics");
  if (n == 3 && s[0] == "v1" && s[1] == "chat" && s[2] == "completions") {
    return Resolve(method, kNone, RouteId::kChatCompletions, kNone, "/v1/chat/completions");
  }
  if (n >= 2 && s[0] == "v1" && s[1] == "sessions") {
    if (n == 2) return Resolve(method, RouteId::kListSessions, RouteId::kCreateSession, kNone, "/v1/sessions");
    RouteMatch m;
    if (n == 3) {
      m = Resolve(method, RouteId::kGetSession, kNone, RouteId::kDeleteSession, "/v1/sessions/{id}");
    } else if (n == 4 && s[3] == "messages") {
      m = Resolve(method, RouteId::kListMessages, RouteId::kAppendMessage, kNone, "/v1/sessions/{id}/messages");
    } else {
      return RouteMatch{};
    }
    m.session_id = std::string(s[2]);
    return m;
  }
  return RouteMatch{};
}

}  // namespace chatllm
