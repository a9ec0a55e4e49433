#include "fcgi_app/requests.h"

#include <gtest/gtest.h>

namespace chatllm {
namespace {

Config TestConfig() {
  Config c;
  c.max_content_bytes = 10;
  c.max_title_chars = 5;
  c.max_metadata_bytes = 20;
  return c;
}

std::string CreateError(const std::string& body) {
  CreateSessionRequest out;
  auto err = ParseCreateSession(body, TestConfig(), &out);
  return err ? err->code + ": " + err->message : "ok";
}

std::string AppendError(const std::string& body) {
  AppendMessageRequest out;
  auto err = ParseAppendMessage(body, TestConfig(), &out);
  return err ? err->code + ": " + err->message : "ok";
}

std::string QueryError(const std::string& query, ListMessagesQuery* out = nullptr) {
  ListMessagesQuery q;
  auto err = ParseListMessagesQuery(query, out ? out : &q);
  return err ? err->message : "ok";
}

TEST(CreateSessionTest, AcceptsEmptyAndFullBodies) {
  CreateSessionRequest out;
  EXPECT_FALSE(ParseCreateSession("", TestConfig(), &out));
  EXPECT_FALSE(out.title.has_value());
  EXPECT_EQ(out.metadata_json, "{}");
  EXPECT_FALSE(ParseCreateSession(R"({"title":"héllo","metadata":{ "k" : 1 }})", TestConfig(), &out));
  EXPECT_EQ(*out.title, "héllo");  // 5 code points, 6 bytes: within a 5-character limit.
  EXPECT_EQ(out.metadata_json, R"({"k":1})");
  EXPECT_FALSE(ParseCreateSession(R"({"title":null})", TestConfig(), &out));
  EXPECT_FALSE(out.title.has_value());
}

TEST(CreateSessionTest, RejectsBadFields) {
  EXPECT_EQ(CreateError("[]"), "invalid_json: request body must be a JSON object, not array");
  EXPECT_EQ(CreateError("{"), "invalid_json: request body is not valid JSON: Missing a name for object member. (at byte 1)");
  EXPECT_EQ(CreateError(R"({"title":5})"), "invalid_request: field 'title' must be a string or null, not number");
  EXPECT_EQ(CreateError(R"({"title":"toolong"})"), "invalid_request: field 'title' is longer than 5 characters");
  EXPECT_EQ(CreateError(R"({"metadata":[]})"), "invalid_request: field 'metadata' must be an object, not array");
  EXPECT_EQ(CreateError(R"({"metadata":{"key":"a long value"}})"),
            "invalid_request: field 'metadata' is larger than 20 bytes when serialized");
  EXPECT_EQ(CreateError(R"({"titel":"x"})"), "invalid_request: unknown field 'titel' (allowed: title, metadata)");
}

TEST(AppendMessageTest, AcceptsContentAndUserRole) {
  AppendMessageRequest out;
  EXPECT_FALSE(ParseAppendMessage(R"({"content":"hi","role":"user"})", TestConfig(), &out));
  EXPECT_EQ(out.content, "hi");
  EXPECT_FALSE(ParseAppendMessage(R"({"content":"0123456789"})", TestConfig(), &out));
}

TEST(AppendMessageTest, RejectsBadFields) {
  EXPECT_EQ(AppendError("{}"), "invalid_request: field 'content' is required");
  EXPECT_EQ(AppendError(R"({"content":""})"), "invalid_request: field 'content' must not be empty");
  EXPECT_EQ(AppendError(R"({"content":"01234567890"})"), "invalid_request: field 'content' is larger than 10 bytes");
  EXPECT_EQ(AppendError(R"({"content":["x"]})"), "invalid_request: field 'content' must be a string, not array");
  EXPECT_EQ(AppendError(R"({"content":"x","role":"assistant"})"), "invalid_request: field 'role' must be \"user\"");
  EXPECT_EQ(AppendError(R"({"content":"x","role":1})"), "invalid_request: field 'role' must be a string, not number");
  EXPECT_EQ(AppendError(R"({"content":"x","extra":true})"), "invalid_request: unknown field 'extra' (allowed: content, role)");
  EXPECT_EQ(AppendError(R"({"content":"\udc00"})"), "invalid_json: request body is not valid JSON: string is not valid UTF-8 (lone surrogate escape?)");
  EXPECT_EQ(AppendError(""), "invalid_json: request body is not valid JSON: The document is empty. (at byte 0)");
}

TEST(ListQueryTest, ParsesLimitAndAfter) {
  ListMessagesQuery q;
  EXPECT_EQ(QueryError("", &q), "ok");
  EXPECT_EQ(q.limit, 50);
  EXPECT_EQ(q.after, 0);
  EXPECT_EQ(QueryError("limit=200&after=9223372036854775807", &q), "ok");
  EXPECT_EQ(q.limit, 200);
  EXPECT_EQ(q.after, INT64_MAX);
}

TEST(ListQueryTest, RejectsBadValues) {
  const std::string limit = "query parameter 'limit' must be an integer from 1 to 200";
  const std::string after = "query parameter 'after' must be a non-negative integer (a seq)";
  EXPECT_EQ(QueryError("limit=0"), limit);
  EXPECT_EQ(QueryError("limit=201"), limit);
  EXPECT_EQ(QueryError("limit=-1"), limit);
  EXPECT_EQ(QueryError("limit=+5"), limit);
  EXPECT_EQ(QueryError("limit=05"), limit);
  EXPECT_EQ(QueryError("limit=5x"), limit);
  EXPECT_EQ(QueryError("limit="), limit);
  EXPECT_EQ(QueryError("after=-1"), after);
  EXPECT_EQ(QueryError("after=9223372036854775808"), after);
  EXPECT_EQ(QueryError("after=1.5"), after);
  EXPECT_EQ(QueryError("cursor=1"), "unknown query parameter 'cursor' (allowed: limit, after)");
  EXPECT_EQ(QueryError("limit=1&limit=2"), "query parameter 'limit' given more than once");
}

TEST(ContentTypeTest, AcceptsJsonOnly) {
  EXPECT_FALSE(CheckJsonContentType(""));
  EXPECT_FALSE(CheckJsonContentType("application/json"));
  EXPECT_FALSE(CheckJsonContentType("Application/JSON; charset=utf-8"));
  auto err = CheckJsonContentType("application/x-www-form-urlencoded");
  ASSERT_TRUE(err);
  EXPECT_EQ(err->status, 415);
  EXPECT_EQ(err->message, "request body must be application/json, not 'application/x-www-form-urlencoded'");
}

}  // namespace
}  // namespace chatllm
