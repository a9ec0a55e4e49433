#include "base/ids.h"

#include <gtest/gtest.h>

#include <set>

namespace chatllm {
namespace {

TEST(SessionIdTest, GeneratesVersion4UuidsThatRoundTrip) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    SessionId id = SessionId::Generate();
    ASSERT_EQ(id.text().size(), 36u);
    EXPECT_EQ(id.text()[14], '4');
    EXPECT_NE(std::string("89ab").find(id.text()[19]), std::string::npos);
    EXPECT_EQ(id.bytes().size(), 16u);
    auto back = SessionId::Parse(id.text());
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(*back, id);
    EXPECT_TRUE(seen.insert(id.text()).second);
  }
}

TEST(SessionIdTest, ParseCanonicalizesCase) {
  auto id = SessionId::Parse("0B6D5C1E-7F5A-4C1E-9A0B-5A4F3E2D1C0B");
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(id->text(), "0b6d5c1e-7f5a-4c1e-9a0b-5a4f3e2d1c0b");
}

TEST(SessionIdTest, ParseRejectsNonCanonicalForms) {
  for (const char* bad : {"", "0b6d5c1e7f5a4c1e9a0b5a4f3e2d1c0b", "0b6d5c1e-7f5a-4c1e-9a0b-5a4f3e2d1c0",
                          "0b6d5c1e-7f5a-4c1e-9a0b-5a4f3e2d1c0bb", "0b6d5c1e_7f5a-4c1e-9a0b-5a4f3e2d1c0b",
                          "0b6d5c1g-7f5a-4c1e-9a0b-5a4f3e2d1c0b", "{b6d5c1e-7f5a-4c1e-9a0b-5a4f3e2d1c0b",
                          "0b6d5c1e-7f5a-4c1e-9a0b-5a4f3e2d1c0\x80"}) {
    EXPECT_FALSE(SessionId::Parse(bad).has_value()) << bad;
  }
}

TEST(SessionIdTest, BytesRoundTripIncludingHighBytes) {
  std::string raw = {'\x00', '\xff', '\x80', '\x7f', '\x01', '\xfe', '\x40', '\x00',
                     '\x80', '\x00', '\x00', '\x00', '\x00', '\x00', '\x00', '\x10'};
  SessionId id = SessionId::FromBytes(raw);
  EXPECT_EQ(id.text(), "00ff807f-01fe-4000-8000-000000000010");
  EXPECT_EQ(SessionId::Parse(id.text())->bytes(), raw);
}

}  // namespace
}  // namespace chatllm
