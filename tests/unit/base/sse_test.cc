#include "base/sse.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace chatllm {
namespace {

std::vector<SseParser::Event> FeedInPieces(const std::string& text, size_t piece) {
  SseParser parser;
  std::vector<SseParser::Event> out;
  for (size_t at = 0; at < text.size(); at += piece) {
    EXPECT_TRUE(parser.Feed(std::string_view(text).substr(at, piece), [&](const SseParser::Event& e) {
      out.push_back(e);
      return true;
    }));
  }
  return out;
}

TEST(SseParserTest, EventsComeOutWhateverTheChunkBoundaries) {
  const std::string text =
      ": keep-alive comment\n"
      "event: message_start\ndata: {\"a\":1}\n\n"
      "data: first line\r\ndata: second line\r\n\r\n"
      "id: 7\nretry: 100\ndata:no-space\n\n"
      "event: only-an-event-line\n\n"
      "data: [DONE]\n\n";
  for (size_t piece : {1u, 2u, 3u, 7u, 1000u}) {
    auto events = FeedInPieces(text, piece);
    ASSERT_EQ(events.size(), 4u) << "piece " << piece;
    EXPECT_EQ(events[0].event, "message_start");
    EXPECT_EQ(events[0].data, "{\"a\":1}");
    EXPECT_EQ(events[1].event, "");
    EXPECT_EQ(events[1].data, "first line\nsecond line");
    EXPECT_EQ(events[2].data, "no-space");
    EXPECT_EQ(events[3].data, "[DONE]");
  }
}

TEST(SseParserTest, AnUnfinishedEventIsHeldBackAndAStopIsObeyed) {
  SseParser parser;
  int seen = 0;
  auto count = [&](const SseParser::Event&) { return ++seen < 2; };
  EXPECT_TRUE(parser.Feed("data: one\n\ndata: tw", count));
  EXPECT_EQ(seen, 1);
  EXPECT_GT(parser.pending(), 0u);
  EXPECT_FALSE(parser.Feed("o\n\ndata: three\n\n", count));  // The handler said stop at "two".
  EXPECT_EQ(seen, 2);
}

TEST(SseParserTest, FormatsEvents) {
  EXPECT_EQ(SseEvent("delta", "{\"text\":\"hi\"}"), "event: delta\ndata: {\"text\":\"hi\"}\n\n");
  EXPECT_EQ(SseEvent("", "[DONE]"), "data: [DONE]\n\n");
}

}  // namespace
}  // namespace chatllm
