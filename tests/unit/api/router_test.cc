#include "api/router.h"

#include <gtest/gtest.h>

namespace chatllm {
namespace {

constexpr const char* kId = "0b6d5c1e-7f5a-4c1e-9a0b-5a4f3e2d1c0b";

TEST(RouterTest, MatchesEveryRoute) {
  EXPECT_EQ(MatchRoute("GET", "/healthz").id, RouteId::kHealthz);
  EXPECT_EQ(MatchRoute("GET", "/readyz").id, RouteId::kReadyz);
  EXPECT_EQ(MatchRoute("POST", "/v1/sessions").id, RouteId::kCreateSession);
  EXPECT_EQ(MatchRoute("GET", std::string("/v1/sessions/") + kId).id, RouteId::kGetSession);
  EXPECT_EQ(MatchRoute("DELETE", std::string("/v1/sessions/") + kId).id, RouteId::kDeleteSession);
  RouteMatch m = MatchRoute("POST", std::string("/v1/sessions/") + kId + "/messages");
  EXPECT_EQ(m.id, RouteId::kAppendMessage);
  EXPECT_EQ(m.session_id, kId);
  EXPECT_STREQ(m.name, "/v1/sessions/{id}/messages");
  EXPECT_EQ(MatchRoute("GET", std::string("/v1/sessions/") + kId + "/messages").id, RouteId::kListMessages);
}

TEST(RouterTest, MatchesTheResponsesAndConversationsRoutes) {
  EXPECT_EQ(MatchRoute("POST", "/v1/responses").id, RouteId::kCreateResponse);
  RouteMatch m = MatchRoute("GET", "/v1/responses/resp_1");
  EXPECT_EQ(m.id, RouteId::kGetResponse);
  EXPECT_EQ(m.session_id, "resp_1");
  EXPECT_EQ(MatchRoute("POST", "/v1/responses/resp_1/cancel").id, RouteId::kCancelResponse);
  EXPECT_EQ(MatchRoute("POST", "/v1/conversations").id, RouteId::kCreateConversation);
  EXPECT_EQ(MatchRoute("GET", "/v1/conversations/conv_1").id, RouteId::kGetConversation);
  EXPECT_EQ(MatchRoute("DELETE", "/v1/conversations/conv_1").id, RouteId::kDeleteConversation);
  EXPECT_EQ(MatchRoute("GET", "/v1/conversations/conv_1/items").id, RouteId::kListConversationItems);
  EXPECT_EQ(MatchRoute("DELETE", "/v1/responses/resp_1").allow, "GET, HEAD");
  EXPECT_EQ(MatchRoute("POST", "/v1/conversations/conv_1").allow, "GET, HEAD, DELETE");
  for (const char* path : {"/v1/responses/", "/v1/responses/x/other", "/v1/responses/x/cancel/y",
                           "/v1/conversations/x/items/y", "/v1/conversations//items"}) {
    EXPECT_EQ(MatchRoute("GET", path).id, RouteId::kNotFound) << path;
  }
}

TEST(RouterTest, HeadFollowsGet) { EXPECT_EQ(MatchRoute("HEAD", "/healthz").id, RouteId::kHealthz); }

TEST(RouterTest, WrongMethodListsAllowed) {
  RouteMatch m = MatchRoute("PUT", "/v1/sessions/x");
  EXPECT_EQ(m.id, RouteId::kMethodNotAllowed);
  EXPECT_EQ(m.allow, "GET, HEAD, DELETE");
  EXPECT_EQ(MatchRoute("DELETE", "/v1/sessions").allow, "GET, HEAD, POST");
  EXPECT_EQ(MatchRoute("GET", "/v1/sessions").id, RouteId::kListSessions);
  EXPECT_EQ(MatchRoute("GET", "/v1/chat/completions").allow, "POST");
  EXPECT_EQ(MatchRoute("DELETE", "/v1/sessions/x/messages").allow, "GET, HEAD, POST");
  EXPECT_EQ(MatchRoute("POST", "/healthz").allow, "GET, HEAD");
}

TEST(RouterTest, UnknownPathsAreNotFound) {
  for (const char* path :
       {"", "/", "/v1", "/v1/", "/v1/sessions/", "/v1/sessions//messages", "/v1/sessions/x/messages/",
        "/v1/sessions/x/other", "/v2/sessions", "/v1/sessions/x/messages/1", "healthz", "/healthz/", "//healthz"}) {
    EXPECT_EQ(MatchRoute("GET", path).id, RouteId::kNotFound) << path;
  }
}

}  // namespace
}  // namespace chatllm
