#include "fcgi_app/auth.h"

#include <gtest/gtest.h>

#include <set>
#include <utility>
#include <string>

#include "fcgi_app/base64url.h"
#include "fcgi_app/requests.h"

namespace chatllm {
namespace {

TEST(ApiKeyTest, AGeneratedKeyParsesBackToItsIdAndSecret) {
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    ApiKey key = GenerateApiKey();
    ASSERT_EQ(key.id.size(), 8u);
    ASSERT_EQ(key.secret.size(), 32u);
    const std::string text = FormatApiKey(key);
    ASSERT_EQ(text.size(), 63u);
    EXPECT_EQ(text.substr(0, 3), "ck_");
    EXPECT_EQ(text.substr(3, 16), Hex(key.id));
    EXPECT_TRUE(seen.insert(text).second);
    // RFC 6750 and 7235: the scheme in any case, then one or more spaces.
    for (const std::string& given : {"Bearer " + text, "bearer " + text, "BEARER   " + text}) {
      std::optional<ApiKey> back = ParseApiKey(given);
      ASSERT_TRUE(back) << given;
      EXPECT_EQ(back->id, key.id);
      EXPECT_EQ(back->secret, key.secret);
    }
  }
}

TEST(ApiKeyTest, AnythingNotShapedLikeAKeyIsRefused) {
  const std::string good = FormatApiKey(GenerateApiKey());
  std::string upper_hex = good;
  upper_hex[3] = 'A';
  std::string bad_b64 = good;
  bad_b64[30] = '+';
  std::string no_sep = good;
  no_sep[19] = '-';
  for (const std::string& bad :
       {std::string(), std::string("Bearer "), std::string("Basic ") + good, good, std::string("Bearer\t") + good,
        std::string("Bearer:") + good, std::string("Bearerx ") + good, "Bearer " + good.substr(0, 62),
        "Bearer " + good + "A", "Bearer xk" + good.substr(2), "Bearer " + upper_hex, "Bearer " + bad_b64,
        "Bearer " + no_sep, "Bearer " + good + "\n", "Bearer " + good + " "}) {
    EXPECT_FALSE(ParseApiKey(bad)) << bad;
  }
  // 43 characters carry 258 bits; a key whose spare 2 bits are set is another
  // spelling of the same secret and is refused (one spelling per key).
  std::string last = good;
  const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  int v = static_cast<int>(std::string(alphabet).find(last.back()));
  last.back() = alphabet[v ^ 1];
  EXPECT_FALSE(ParseApiKey("Bearer " + last));
}

TEST(ApiKeyTest, SecretHashIsSha256AndSameBytesComparesExactly) {
  // FIPS 180-2 test vector.
  EXPECT_EQ(Hex(SecretHash("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_TRUE(SameBytes("same", "same"));
  EXPECT_FALSE(SameBytes("same", "sane"));
  EXPECT_FALSE(SameBytes("same", "same!"));
  EXPECT_FALSE(SameBytes("", "x"));
}

TEST(KeyCacheTest, EntriesExpireAfterTheTtlAndTheLeastRecentLeaveFirst) {
  KeyCache cache(1000, 2);
  KeyRecord a;
  a.user_id = "user-a";
  cache.Put("a", a, 0);
  ASSERT_NE(cache.Find("a", 999), nullptr);
  EXPECT_EQ(cache.Find("a", 999)->user_id, "user-a");
  EXPECT_EQ(cache.Find("a", 1001), nullptr);  // Older than the TTL.

  cache.Put("a", a, 2000);
  cache.Put("b", a, 2000);
  ASSERT_NE(cache.Find("a", 2001), nullptr);  // "a" is now the most recent.
  cache.Put("c", a, 2002);                    // Evicts "b".
  EXPECT_NE(cache.Find("a", 2003), nullptr);
  EXPECT_EQ(cache.Find("b", 2003), nullptr);
  EXPECT_NE(cache.Find("c", 2003), nullptr);
}

TEST(Base64UrlTest, RoundTripsAndRefusesOtherSpellings) {
  // RFC 4648 section 10 vectors, unpadded, base64url alphabet.
  const std::pair<std::string, std::string> vectors[] = {
      {"", ""}, {"f", "Zg"}, {"fo", "Zm8"}, {"foo", "Zm9v"}, {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"},
      {"foobar", "Zm9vYmFy"}, {"\xfb\xff", "-_8"}};
  for (const auto& [bytes, text] : vectors) {
    EXPECT_EQ(Base64UrlEncode(bytes), text);
    std::string back;
    ASSERT_TRUE(Base64UrlDecode(text, &back)) << text;
    EXPECT_EQ(back, bytes);
  }
  std::string out;
  for (const char* bad : {"Zh", "Zm9", "Z", "Zm9v=", "Zm+v", "Zm/v", "Zm9v\n"}) {
    EXPECT_FALSE(Base64UrlDecode(bad, &out)) << bad;
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

TEST(SessionCursorTest, ACursorRoundTripsAndForgeriesAreRefused) {
  const std::string id("\x01\x90\xa1\xb2\xc3\xd4\x7e\x5f\x8a\x9b\x0c\x1d\x2e\x3f\x4a\x5b", 16);
  const int64_t created = 1795000000123456;
  const std::string cursor = SessionCursorText(created, id);
  EXPECT_EQ(cursor.size(), 32u);
  ListSessionsQuery q;
  ASSERT_FALSE(ParseListSessionsQuery("limit=7&after=" + cursor, &q));
  EXPECT_EQ(q.limit, 7);
  EXPECT_EQ(q.after_created_us, created);
  EXPECT_EQ(q.after_id, id);

  ASSERT_FALSE(ParseListSessionsQuery("", &q));
  EXPECT_EQ(q.limit, 20);
  EXPECT_EQ(q.after_created_us, INT64_MAX);
  EXPECT_TRUE(q.after_id.empty());

  std::string negative = SessionCursorText(-1, id);  // Top bit set: not a time.
  for (const std::string& bad : {"after=" + cursor.substr(1), "after=" + cursor + "A", "after=" + negative,
                                 std::string("after=%%%"), std::string("limit=0"), std::string("limit=201"),
                                 std::string("limit=-1"), std::string("limit=1&limit=2"), std::string("before=x")}) {
    EXPECT_TRUE(ParseListSessionsQuery(bad, &q)) << bad;
  }
}

}  // namespace
}  // namespace chatllm
