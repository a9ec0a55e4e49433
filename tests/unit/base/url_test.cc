#include "base/url.h"

#include <gtest/gtest.h>

namespace chatllm {
namespace {

TEST(UrlTest, SplitsAnHttpUrlIntoOriginAndPath) {
  auto u = ParseHttpUrl("https://api.openai.com/v1/");
  ASSERT_TRUE(u.ok()) << u.status().message();
  EXPECT_EQ(u->origin, "https://api.openai.com");
  EXPECT_EQ(u->path, "/v1");
  EXPECT_EQ(u->port, 443);
  u = ParseHttpUrl("http://[::1]:8080/a%20b");
  ASSERT_TRUE(u.ok()) << u.status().message();
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->origin, "http://[::1]:8080");
  EXPECT_EQ(u->path, "/a%20b");
  u = ParseHttpUrl("http://127.0.0.1:1");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->origin, "http://127.0.0.1:1");
  EXPECT_EQ(u->path, "");
}

TEST(UrlTest, RefusesWhatAProviderUrlMustNotBe) {
  const std::pair<const char*, const char*> cases[] = {
      {"ftp://h/", "is not an http:// or https:// URL"},
      {"api.openai.com/v1", "is not an http:// or https:// URL"},
      {"http://:80/", "has no host"},
      {"https://user:secret@h/v1", "carries credentials (user:password@); use api_key_env or api_key_file"},
      {"http://h/x?y=1", "has a query or fragment"},
      {"http://h/x#top", "has a query or fragment"},
      {"http://h:99999/", "bad or invalid port number: 99999"},
      {"http://h/%zz", "URI encoding: not a hex digit"},
      {"http://h/a b", "contains white space"},
  };
  for (const auto& [text, why] : cases) {
    auto u = ParseHttpUrl(text);
    ASSERT_FALSE(u.ok()) << text;
    EXPECT_EQ(u.status().message(), why) << text;
  }
}

}  // namespace
}  // namespace chatllm
