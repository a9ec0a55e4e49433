#include "prefork/fcgi_guard.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace chatllm {
namespace {

std::string Record(int type, int id, const std::string& content, int padding = 0) {
  std::string r = {1,
                   static_cast<char>(type),
                   static_cast<char>(id >> 8),
                   static_cast<char>(id & 0xff),
                   static_cast<char>(content.size() >> 8),
                   static_cast<char>(content.size() & 0xff),
                   static_cast<char>(padding),
                   0};
  return r + content + std::string(padding, '\0');
}
std::string Length(size_t n) {
  if (n < 128) return std::string(1, static_cast<char>(n));
  return {static_cast<char>(0x80 | (n >> 24)), static_cast<char>(n >> 16), static_cast<char>(n >> 8),
          static_cast<char>(n)};
}
std::string Pair(const std::string& name, const std::string& value) {
  return Length(name.size()) + Length(value.size()) + name + value;
}
std::string Begin(int id = 1, int role = 1) {  // Like nginx: no padding.
  return Record(1, id, std::string{static_cast<char>(role >> 8), static_cast<char>(role), 0, 0, 0, 0, 0, 0});
}

FcgiHead Check(const std::string& bytes) {
  std::string why;
  FcgiHead h = CheckFcgiHead(bytes, &why);
  if (h == FcgiHead::kInvalid) {
    EXPECT_FALSE(why.empty());
  }
  return h;
}

TEST(FcgiGuardTest, AnNginxRequestHeadIsCompleteAndEachPrefixIncomplete) {
  const std::string params = Pair("REQUEST_METHOD", "POST") + Pair("REQUEST_URI", "/v1/sessions") +
                             Pair("HTTP_COOKIE", std::string(300, 'c'));  // A 4-byte length.
  const std::string head =
      Begin() + Record(4, 1, params.substr(0, 20), 4) + Record(4, 1, params.substr(20)) + Record(4, 1, "");
  EXPECT_EQ(Check(head), FcgiHead::kComplete);
  EXPECT_EQ(Check(head + Record(5, 1, "{}")), FcgiHead::kComplete);  // The body follows.
  for (size_t n = 0; n < head.size(); ++n) EXPECT_EQ(Check(head.substr(0, n)), FcgiHead::kIncomplete) << n;
}

TEST(FcgiGuardTest, WhatNginxNeverSendsIsInvalid) {
  const std::string end = Record(4, 1, "");
  const std::string ok = Pair("A", "b");
  std::vector<std::pair<std::string, std::string>> bad = {
      {"version 2", std::string("\x02") + Begin().substr(1) + end},
      {"params first", Record(4, 1, ok) + end},
      {"role authorizer", Begin(1, 2) + end},
      {"request id 0", Begin(0) + end},
      {"padded begin", Record(1, 1, std::string(8, '\0'), 8) + Record(4, 1, ok) + end},
      {"other request's params", Begin(1) + Record(4, 2, ok) + end},
      {"stdin before params end", Begin() + Record(5, 1, "x")},
      {"value longer than the stream", Begin() + Record(4, 1, Length(1) + Length(200) + "Ab") + end},
      {"overflowing lengths", Begin() + Record(4, 1, Length(0x7fffffff) + Length(0x7fffffff) + "x") + end},
      {"truncated length", Begin() + Record(4, 1, std::string("\x01\x80\x00", 3)) + end},
  };
  for (const auto& [what, bytes] : bad) EXPECT_EQ(Check(bytes), FcgiHead::kInvalid) << what;

  std::string big = Begin();
  for (size_t sent = 0; sent <= kMaxFcgiParamBytes; sent += 60000) big += Record(4, 1, std::string(60000, 'x'));
  EXPECT_EQ(Check(big), FcgiHead::kInvalid);
}

}  // namespace
}  // namespace chatllm
