#include "api/requests.h"

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

// "ok" and the value in *out, or the error's code and message.
template <typename T>
std::string Outcome(StatusOr<T> parsed, T* out = nullptr) {
  if (!parsed.ok()) return parsed.status().code() + ": " + parsed.status().message();
  if (out) *out = std::move(*parsed);
  return "ok";
}

// Parsed into *out; false on an error.
template <typename T>
bool Parsed(StatusOr<T> parsed, T* out) {
  if (!parsed.ok()) return false;
  *out = std::move(*parsed);
  return true;
}

std::string CreateError(const std::string& body) { return Outcome(ParseCreateSession(body, TestConfig())); }

std::string AppendError(const std::string& body) { return Outcome(ParseAppendMessage(body, TestConfig())); }

std::string QueryError(const std::string& query, ListMessagesQuery* out = nullptr) {
  StatusOr<ListMessagesQuery> parsed = ParseListMessagesQuery(query);
  if (!parsed.ok()) return parsed.status().message();
  if (out) *out = *parsed;
  return "ok";
}

TEST(CreateSessionTest, AcceptsEmptyAndFullBodies) {
  CreateSessionRequest out;
  EXPECT_TRUE(Parsed(ParseCreateSession("", TestConfig()), &out));
  EXPECT_FALSE(out.title.has_value());
  EXPECT_EQ(out.metadata_json, "{}");
  EXPECT_TRUE(Parsed(ParseCreateSession(R"({"title":"héllo","metadata":{ "k" : 1 }})", TestConfig()), &out));
  EXPECT_EQ(*out.title, "héllo");  // 5 code points, 6 bytes: within a 5-character limit.
  EXPECT_EQ(out.metadata_json, R"({"k":1})");
  EXPECT_TRUE(Parsed(ParseCreateSession(R"({"title":null})", TestConfig()), &out));
  EXPECT_FALSE(out.title.has_value());
}

TEST(CreateSessionTest, RejectsBadFields) {
  EXPECT_EQ(CreateError("[]"), "invalid_json: request body must be a JSON object, not array");
  EXPECT_EQ(CreateError("{"),
            "invalid_json: request body is not valid JSON: Missing a name for object member. (at byte 1)");
  EXPECT_EQ(CreateError(R"({"title":5})"), "invalid_request: field 'title' must be a string or null, not number");
  EXPECT_EQ(CreateError(R"({"title":"toolong"})"), "invalid_request: field 'title' is longer than 5 characters");
  EXPECT_EQ(CreateError(R"({"metadata":[]})"), "invalid_request: field 'metadata' must be an object, not array");
  EXPECT_EQ(CreateError(R"({"metadata":{"key":"a long value"}})"),
            "invalid_request: field 'metadata' is larger than 20 bytes when serialized");
  EXPECT_EQ(CreateError(R"({"titel":"x"})"),
            "invalid_request: unknown field 'titel' (allowed: title, metadata, model, system_prompt)");
  EXPECT_EQ(CreateError(R"({"model":"gpt 4"})"),
            "invalid_request: field 'model' must be 1..128 characters of [A-Za-z0-9._:/@+-]");
  EXPECT_EQ(CreateError(R"({"model":7})"), "invalid_request: field 'model' must be a string, not number");
  Config small = TestConfig();
  small.max_system_prompt_bytes = 3;
  Status err = ParseCreateSession(R"({"system_prompt":"four"})", small).status();
  ASSERT_FALSE(err.ok());
  EXPECT_EQ(err.message(), "field 'system_prompt' is larger than 3 bytes");
}

TEST(CreateSessionTest, TakesAModelAndASystemPrompt) {
  CreateSessionRequest out;
  EXPECT_TRUE(Parsed(ParseCreateSession(R"({"model":"gpt-4o-mini","system_prompt":"be brief"})", TestConfig()), &out));
  EXPECT_EQ(*out.model, "gpt-4o-mini");
  EXPECT_EQ(*out.system_prompt, "be brief");
  EXPECT_TRUE(Parsed(ParseCreateSession(R"({"model":null,"system_prompt":""})", TestConfig()), &out));
  EXPECT_FALSE(out.model.has_value());
  EXPECT_FALSE(out.system_prompt.has_value());
}

TEST(AppendMessageTest, AcceptsContentAndUserRole) {
  AppendMessageRequest out;
  EXPECT_TRUE(Parsed(ParseAppendMessage(R"({"content":"hi","role":"user"})", TestConfig()), &out));
  EXPECT_EQ(out.content, "hi");
  EXPECT_TRUE(Parsed(ParseAppendMessage(R"({"content":"0123456789"})", TestConfig()), &out));
}

TEST(AppendMessageTest, RejectsBadFields) {
  EXPECT_EQ(AppendError("{}"), "invalid_request: field 'content' is required");
  EXPECT_EQ(AppendError(R"({"content":""})"), "invalid_request: field 'content' must not be empty");
  EXPECT_EQ(AppendError(R"({"content":"01234567890"})"), "invalid_request: field 'content' is larger than 10 bytes");
  EXPECT_EQ(AppendError(R"({"content":["x"]})"), "invalid_request: field 'content' must be a string, not array");
  EXPECT_EQ(AppendError(R"({"content":"x","role":"assistant"})"), "invalid_request: field 'role' must be \"user\"");
  EXPECT_EQ(AppendError(R"({"content":"x","role":1})"), "invalid_request: field 'role' must be a string, not number");
  EXPECT_EQ(AppendError(R"({"content":"x","extra":true})"),
            "invalid_request: unknown field 'extra' (allowed: content, role, model, stream, max_tokens, temperature, "
            "top_p, stop)");
  EXPECT_EQ(AppendError(R"({"content":"x","stream":"yes"})"),
            "invalid_request: field 'stream' must be a boolean, not string");
  EXPECT_EQ(AppendError(R"({"content":"x","max_tokens":0})"),
            "invalid_request: field 'max_tokens' must be an integer from 1 to 1000000");
  EXPECT_EQ(AppendError(R"({"content":"x","temperature":3})"),
            "invalid_request: field 'temperature' must be a number from 0 to 2");
  EXPECT_EQ(AppendError(R"({"content":"x","stop":["a","b","c","d","e"]})"),
            "invalid_request: field 'stop' must be a string or an array of up to 4 strings");
  EXPECT_EQ(AppendError(R"({"content":"\udc00"})"),
            "invalid_json: request body is not valid JSON: string is not valid UTF-8 (lone surrogate escape?)");
  EXPECT_EQ(AppendError(""), "invalid_json: request body is not valid JSON: The document is empty. (at byte 0)");
}

TEST(AppendMessageTest, TakesAModelStreamAndSampling) {
  AppendMessageRequest out;
  EXPECT_TRUE(Parsed(
      ParseAppendMessage(
          R"({"content":"hi","model":"claude-3","stream":true,"max_tokens":50,"temperature":0.2,"top_p":0.9,"stop":"X"})",
          TestConfig()),
      &out));
  EXPECT_EQ(out.model, "claude-3");
  EXPECT_TRUE(out.stream);
  EXPECT_EQ(out.sampling.max_tokens, 50);
  EXPECT_DOUBLE_EQ(*out.sampling.temperature, 0.2);
  EXPECT_DOUBLE_EQ(*out.sampling.top_p, 0.9);
  EXPECT_EQ(out.sampling.stop, std::vector<std::string>{"X"});
}

std::string ChatError(const std::string& body, ChatCompletionRequest* out = nullptr) {
  Config c = TestConfig();
  c.max_content_bytes = 100;
  return Outcome(ParseChatCompletion(body, c), out);
}

TEST(ChatCompletionTest, ReadsOpenAisRequestFormat) {
  ChatCompletionRequest r;
  EXPECT_EQ(ChatError(R"({"model":"gpt-4o","messages":[{"role":"system","content":"sys"},)"
                      R"({"role":"user","content":[{"type":"text","text":"he"},{"type":"text","text":"llo"}]},)"
                      R"({"role":"assistant","content":"hi"},{"role":"developer","content":"dev"},)"
                      R"({"role":"user","content":"again","name":"bob"}],)"
                      R"("stream":true,"stream_options":{"include_usage":true},"max_completion_tokens":9,)"
                      R"("user":"u1","seed":3,"presence_penalty":0,"n":1,"session_id":"abc"})",
                      &r),
            "ok");
  EXPECT_EQ(r.model, "gpt-4o");
  EXPECT_EQ(r.system, "sys\n\ndev");
  ASSERT_EQ(r.messages.size(), 3u);
  EXPECT_EQ(r.messages[0].content, "hello");
  EXPECT_EQ(r.messages[1].role, "assistant");
  EXPECT_EQ(r.messages[2].content, "again");
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_EQ(r.sampling.max_tokens, 9);
  EXPECT_EQ(r.session_id, "abc");
}

// Without `model` the request may still name a session, whose model it then
// uses: the service, not the parser, refuses it when there is none.
TEST(ChatCompletionTest, ModelMayBeLeftOut) {
  ChatCompletionRequest r;
  EXPECT_EQ(ChatError(R"({"messages":[{"role":"user","content":"x"}],"session_id":"s"})", &r), "ok");
  EXPECT_EQ(r.model, "");
  EXPECT_EQ(ChatError(R"({"model":"","messages":[{"role":"user","content":"x"}]})"),
            "invalid_request: field 'model' must be 1..128 characters of [A-Za-z0-9._:/@+-]");
}

TEST(ChatCompletionTest, RefusesWhatItCannotHonour) {
  const std::string msgs = R"("messages":[{"role":"user","content":"x"}])";
  EXPECT_EQ(ChatError(R"({"model":"m"})"), "invalid_request: field 'messages' is required");
  EXPECT_EQ(ChatError(R"({"model":"m","messages":[]})"), "invalid_request: field 'messages' must be a non-empty array");
  EXPECT_EQ(ChatError(R"({"model":"m","messages":[{"role":"system","content":"only"}]})"),
            "invalid_request: field 'messages' must hold at least one user or assistant message");
  EXPECT_EQ(ChatError(R"({"model":"m","n":2,)" + msgs + "}"),
            "unsupported_parameter: n other than 1 is not supported by this endpoint");
  EXPECT_EQ(ChatError(R"({"model":"m","tools":[{}],)" + msgs + "}"),
            "unsupported_parameter: 'tools' is not supported by this endpoint");
  EXPECT_EQ(ChatError(R"({"model":"m","messages":[{"role":"tool","content":"x"}]})"),
            "unsupported_parameter: tool and function messages is not supported by this endpoint");
  EXPECT_EQ(ChatError(R"({"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]})"),
            "unsupported_parameter: field 'messages[0].content': only text parts are supported");
  EXPECT_EQ(ChatError(R"({"model":"m","messages":[{"role":"robot","content":"x"}]})"),
            "invalid_request: field 'messages[0].role' must be system, developer, user or assistant");
  EXPECT_EQ(ChatError(R"({"model":"m","response_format":{"type":"json_object"},)" + msgs + "}"),
            "unsupported_parameter: response_format other than text is not supported by this endpoint");
  EXPECT_EQ(ChatError(R"({"model":"m","messages":[{"role":"user","content":")" + std::string(101, 'x') + R"("}]})"),
            "invalid_request: field 'messages[0].content' is larger than 100 bytes");
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

TEST(NoQueryTest, OnlyAnEmptyQueryPasses) {
  EXPECT_TRUE(ParseNoQuery("").ok());
  EXPECT_TRUE(ParseNoQuery("&&").ok());
  Status err = ParseNoQuery("x=1");
  ASSERT_FALSE(err.ok());
  EXPECT_EQ(err.http_status(), 400);
  EXPECT_EQ(err.code() + ": " + err.message(), "invalid_request: unknown query parameter 'x' (this route takes none)");
  EXPECT_EQ(ParseNoQuery("full").message(), "unknown query parameter 'full' (this route takes none)");
  EXPECT_EQ(ParseNoQuery("a=%zz").message(), "malformed percent-escape in query string");
  EXPECT_EQ(ParseNoQuery("a=1&a=2").message(), "query parameter 'a' given more than once");
}

TEST(ContentTypeTest, AcceptsJsonOnly) {
  EXPECT_TRUE(CheckJsonContentType("").ok());
  EXPECT_TRUE(CheckJsonContentType("application/json").ok());
  EXPECT_TRUE(CheckJsonContentType("Application/JSON; charset=utf-8").ok());
  Status err = CheckJsonContentType("application/x-www-form-urlencoded");
  ASSERT_FALSE(err.ok());
  EXPECT_EQ(err.http_status(), 415);
  EXPECT_EQ(err.message(), "request body must be application/json, not 'application/x-www-form-urlencoded'");
}

TEST(SessionCursorTest, ACursorRoundTripsAndForgeriesAreRefused) {
  const std::string id("\x01\x90\xa1\xb2\xc3\xd4\x7e\x5f\x8a\x9b\x0c\x1d\x2e\x3f\x4a\x5b", 16);
  const int64_t created = 1795000000123456;
  const std::string cursor = SessionCursorText(created, id);
  EXPECT_EQ(cursor.size(), 32u);
  ListSessionsQuery q;
  ASSERT_TRUE(Parsed(ParseListSessionsQuery("limit=7&after=" + cursor), &q));
  EXPECT_EQ(q.limit, 7);
  EXPECT_EQ(q.after_created_us, created);
  EXPECT_EQ(q.after_id, id);

  ASSERT_TRUE(Parsed(ParseListSessionsQuery(""), &q));
  EXPECT_EQ(q.limit, 20);
  EXPECT_EQ(q.after_created_us, INT64_MAX);
  EXPECT_TRUE(q.after_id.empty());

  std::string negative = SessionCursorText(-1, id);  // Top bit set: not a time.
  for (const std::string& bad : {"after=" + cursor.substr(1), "after=" + cursor + "A", "after=" + negative,
                                 std::string("after=%%%"), std::string("limit=0"), std::string("limit=201"),
                                 std::string("limit=-1"), std::string("limit=1&limit=2"), std::string("before=x")}) {
    EXPECT_FALSE(ParseListSessionsQuery(bad).ok()) << bad;
  }
}

TEST(IdempotencyKeyTest, PrintableAsciiUpTo255Characters) {
  EXPECT_TRUE(ValidIdempotencyKey("a"));
  EXPECT_TRUE(ValidIdempotencyKey("8e03978e-40d5-43e8-bc93-6894a57f9324"));
  EXPECT_TRUE(ValidIdempotencyKey(std::string(255, '~')));
  EXPECT_FALSE(ValidIdempotencyKey(""));
  EXPECT_FALSE(ValidIdempotencyKey(std::string(256, 'k')));
  EXPECT_FALSE(ValidIdempotencyKey("with space"));
  EXPECT_FALSE(ValidIdempotencyKey("tab\t"));
  EXPECT_FALSE(ValidIdempotencyKey("caf\xc3\xa9"));
}

TEST(TurnEventsQueryTest, TheLaterOfTheQueryAndLastEventIdWins) {
  EXPECT_EQ(*ParseTurnEventsQuery("", ""), 0);
  EXPECT_EQ(*ParseTurnEventsQuery("starting_after=5", ""), 5);
  EXPECT_EQ(*ParseTurnEventsQuery("", "7"), 7);
  // An EventSource opened on ?starting_after=5 reconnects with the id it saw last.
  EXPECT_EQ(*ParseTurnEventsQuery("starting_after=5", "9"), 9);
  EXPECT_EQ(*ParseTurnEventsQuery("starting_after=9", "5"), 9);
  EXPECT_FALSE(ParseTurnEventsQuery("starting_after=-1", "").ok());
  EXPECT_FALSE(ParseTurnEventsQuery("", "x").ok());
  EXPECT_FALSE(ParseTurnEventsQuery("after=1", "").ok());
  EXPECT_EQ(ParseResponseQuery("stream=true&starting_after=3", "8")->starting_after, 8);
  EXPECT_EQ(ParseResponseQuery("", "")->starting_after, -1);
  EXPECT_FALSE(ParseResponseQuery("stream=yes", "").ok());
}

TEST(CreateResponseTest, StoredTakesOneUserMessageNotStoredAWholeConversation) {
  Config config;
  StatusOr<CreateResponseRequest> r =
      ParseCreateResponse(R"({"model":"m","input":[{"role":"developer","content":"be brief"},)"
                          R"({"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}],)"
                          R"("max_output_tokens":50,"background":true,"stream":true})",
                          config);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->input, "hi");
  EXPECT_EQ(*r->instructions, "be brief");
  EXPECT_EQ(r->sampling.max_tokens, 50);
  EXPECT_TRUE(r->background && r->stream && r->store);
  EXPECT_EQ(ParseCreateResponse(R"({"input":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},)"
                                R"({"role":"user","content":"c"}]})",
                                config)
                .status()
                .code(),
            "unsupported_parameter");
  StatusOr<CreateResponseRequest> stateless =
      ParseCreateResponse(R"({"store":false,"input":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},)"
                          R"({"role":"user","content":"c"}]})",
                          config);
  ASSERT_TRUE(stateless.ok());
  EXPECT_EQ(stateless->messages.size(), 3u);
  EXPECT_EQ(ParseCreateResponse(R"({"input":"x","previous_response_id":"resp_1"})", config).status().code(),
            "unsupported_parameter");
  EXPECT_EQ(ParseCreateResponse(R"({"input":"x","frobnicate":1})", config).status().code(), "unknown_parameter");
  EXPECT_EQ(ParseCreateResponse(R"({"input":[{"role":"assistant","content":"x"}]})", config).status().code(),
            "invalid_request");
  EXPECT_EQ(ParseCreateResponse(R"({"model":"m"})", config).status().code(), "invalid_request");
  EXPECT_TRUE(
      ParseCreateResponse(R"({"input":"x","tools":[],"text":{"format":{"type":"text"}},"truncation":"auto"})", config)
          .ok());
}

}  // namespace
}  // namespace chatllm
