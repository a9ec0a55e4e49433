#include "base/http.h"

#include <gtest/gtest.h>

#include <ctime>

#include "base/time_util.h"

namespace chatllm {
namespace {

TEST(HttpTest, ErrorResponseHasTheUniformBody) {
  HttpResponse r = ErrorResponse(404, "session_not_found", "no \"such\" session");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.body, R"({"error":{"code":"session_not_found","message":"no \"such\" session"}})");
  ASSERT_EQ(r.headers.size(), 1u);
  EXPECT_EQ(r.headers[0].first, "Content-Type");
  EXPECT_EQ(r.headers[0].second, "application/json");
}

TEST(HttpTest, SetHeaderReplaces) {
  HttpResponse r;
  r.SetHeader("Allow", "GET");
  r.SetHeader("Allow", "POST");
  ASSERT_EQ(r.headers.size(), 1u);
  EXPECT_EQ(r.headers[0].second, "POST");
}

TEST(HttpTest, ParseQueryDecodes) {
  std::map<std::string, std::string> q;
  Status s = ParseQuery("limit=5&after=10&x=a%20b+c&flag&&", &q);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(q.size(), 4u);
  EXPECT_EQ(q["limit"], "5");
  EXPECT_EQ(q["x"], "a b c");
  EXPECT_EQ(q["flag"], "");
  ASSERT_TRUE(ParseQuery("", &q).ok());
  EXPECT_TRUE(q.empty());
}

TEST(HttpTest, ParseQueryRejectsAmbiguity) {
  std::map<std::string, std::string> q;
  Status s = ParseQuery("limit=1&limit=2", &q);
  EXPECT_EQ(s.http_status(), 400);
  EXPECT_EQ(s.message(), "query parameter 'limit' given more than once");
  EXPECT_EQ(ParseQuery("a=%2", &q).message(), "malformed percent-escape in query string");
  EXPECT_FALSE(ParseQuery("a=%zz", &q).ok());
}

TEST(HttpTest, StatusReasons) {
  EXPECT_STREQ(StatusReason(201), "Created");
  EXPECT_STREQ(StatusReason(503), "Service Unavailable");
  EXPECT_STREQ(StatusReason(299), "Unknown");
}

// The calendar arithmetic agrees with libc's gmtime/timegm over four
// centuries of days (leap years, 2000, 2100).
TEST(TimeTest, CivilArithmeticMatchesLibc) {
  for (int64_t secs = -2208988800LL; secs < 32503680000LL; secs += 86400 * 7 + 3671) {
    time_t t = static_cast<time_t>(secs);
    tm parts;
    gmtime_r(&t, &parts);
    char want[64];
    std::snprintf(want, sizeof(want), "%04d-%02d-%02dT%02d:%02d:%02d.000042Z", parts.tm_year + 1900, parts.tm_mon + 1,
                  parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec);
    ASSERT_EQ(FormatRfc3339(secs * 1000000 + 42), want) << secs;
    ASSERT_EQ(UnixMicrosFromCivil(parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday, parts.tm_hour, parts.tm_min,
                                  parts.tm_sec, 42),
              secs * 1000000 + 42);
  }
}

TEST(TimeTest, FormatsRfc3339Utc) {
  EXPECT_EQ(FormatRfc3339(0), "1970-01-01T00:00:00.000000Z");
  EXPECT_EQ(FormatRfc3339(1795770653123456), "2026-11-27T09:10:53.123456Z");
  EXPECT_EQ(FormatRfc3339(-1), "1969-12-31T23:59:59.999999Z");
}

}  // namespace
}  // namespace chatllm
