#include "base/json.h"

#include <gtest/gtest.h>

#include <string>

namespace chatllm {
namespace {

std::string ParseError(const std::string& text) {
  rapidjson::Document doc;
  Status s = ParseJson(text, &doc);
  if (s.ok()) return "ok";
  EXPECT_EQ(s.code(), "invalid_json");
  return s.message();
}

TEST(JsonTest, AcceptsOrdinaryDocuments) {
  EXPECT_EQ(ParseError(R"({"a":"x","b":[1,2,{"c":null}]})"), "ok");
  EXPECT_EQ(ParseError(R"({"emoji":"\ud83d\ude00","raw":"😀","nul":"a\u0000b"})"), "ok");
}

TEST(JsonTest, RejectsSyntaxErrorsAndTrailingData) {
  EXPECT_EQ(ParseError(R"({"a":)"), "Invalid value. (at byte 5)");
  EXPECT_EQ(ParseError(R"({"a":1} x)"), "The document root must not be followed by other values. (at byte 8)");
  EXPECT_EQ(ParseError(""), "The document is empty. (at byte 0)");
}

TEST(JsonTest, RejectsInvalidUtf8) {
  EXPECT_EQ(ParseError("{\"a\":\"\xc0\xaf\"}"), "Invalid encoding in string. (at byte 6)");      // Overlong '/'.
  EXPECT_EQ(ParseError("{\"a\":\"\xed\xa0\x80\"}"), "Invalid encoding in string. (at byte 6)");  // Raw surrogate.
  EXPECT_EQ(ParseError("{\"a\":\"\xff\"}"), "Invalid encoding in string. (at byte 6)");
}

TEST(JsonTest, RejectsLoneSurrogateEscapes) {
  EXPECT_EQ(ParseError(R"({"a":"\ud800"})"), "The surrogate pair in string is invalid. (at byte 6)");
  // RapidJSON 1.1.0 itself accepts a lone low surrogate; our walk must not.
  EXPECT_EQ(ParseError(R"({"a":"\udc00"})"), "string is not valid UTF-8 (lone surrogate escape?)");
  EXPECT_EQ(ParseError(R"({"\udc00":1})"), "object key is not valid UTF-8");
}

TEST(JsonTest, RejectsDuplicateKeys) {
  EXPECT_EQ(ParseError(R"({"a":1,"a":2})"), "duplicate key \"a\"");
  EXPECT_EQ(ParseError(R"({"x":{"b":1,"b":1}})"), "duplicate key \"b\"");
}

TEST(JsonTest, DeepNestingIsRejectedWithoutRecursion) {
  EXPECT_EQ(ParseError(std::string(64, '[') + std::string(64, ']')), "ok");
  EXPECT_EQ(ParseError(std::string(65, '[') + std::string(65, ']')), "nesting deeper than 64 levels");
  // A megabyte of '[' would overflow a recursive parser's stack.
  std::string deep(1 << 20, '[');
  EXPECT_NE(ParseError(deep), "ok");
  std::string balanced = std::string(200000, '[') + std::string(200000, ']');
  EXPECT_EQ(ParseError(balanced), "nesting deeper than 64 levels");
}

TEST(JsonTest, Utf8Validation) {
  EXPECT_TRUE(IsValidUtf8("plain"));
  EXPECT_TRUE(IsValidUtf8("\xf0\x9f\x98\x80"));   // U+1F600
  EXPECT_TRUE(IsValidUtf8("\xf4\x8f\xbf\xbf"));   // U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // U+110000
  EXPECT_FALSE(IsValidUtf8("\xe0\x80\xaf"));      // Overlong.
  EXPECT_FALSE(IsValidUtf8("\xed\xb0\x80"));      // U+DC00
  EXPECT_FALSE(IsValidUtf8("\xe2\x82"));          // Truncated.
  EXPECT_EQ(Utf8Length("h\xc3\xa9llo \xf0\x9f\x98\x80"), 7u);
}

TEST(JsonTest, SerializesCompactly) {
  rapidjson::Document doc;
  ASSERT_TRUE(ParseJson("{ \"a\" : [ 1 , \"x\" ] }", &doc).ok());
  EXPECT_EQ(JsonToString(doc), R"({"a":[1,"x"]})");
  EXPECT_STREQ(JsonTypeName(doc["a"]), "array");
}

}  // namespace
}  // namespace chatllm
