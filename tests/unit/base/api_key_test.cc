#include "base/api_key.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <utility>

#include "base/base64url.h"

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

TEST(Base64UrlTest, RoundTripsAndRefusesOtherSpellings) {
  // RFC 4648 section 10 vectors, unpadded, base64url alphabet.
  const std::pair<std::string, std::string> vectors[] = {
      {"", ""},           {"f", "Zg"},          {"fo", "Zm8"},          {"foo", "Zm9v"},
      {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}, {"\xfb\xff", "-_8"}};
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

}  // namespace
}  // namespace chatllm
