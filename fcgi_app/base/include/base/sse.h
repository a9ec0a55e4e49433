#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace chatllm {

// Incremental parser of a text/event-stream body (the WHATWG Server-Sent
// Events format): bytes in any split, events out. Lines end in LF or CRLF;
// `data:` lines of one event are joined with '\n'; comments (':') and the
// `retry` field are skipped; an `id` is the event's own (not carried over).
class SseParser {
 public:
  struct Event {
    std::string event;  // Empty when the event had no `event:` line.
    std::string data;
    std::string id;  // Empty when the event had no `id:` line.
  };
  using Handler = std::function<bool(const Event&)>;

  // Feeds a chunk; calls `on_event` for each event it completes. Returns
  // false as soon as `on_event` does (the rest of the chunk is dropped).
  bool Feed(std::string_view chunk, const Handler& on_event);
  // Bytes of an unfinished line or event held back.
  size_t pending() const { return line_.size() + current_.data.size() + current_.event.size(); }

 private:
  bool Line(std::string_view line, const Handler& on_event);

  std::string line_;
  Event current_;
  bool has_data_ = false;
};

// Formats one event ("event: NAME\ndata: ...\n\n"; no event line when
// `event` is empty). `data` must not contain a line break (JSON never does).
std::string SseEvent(std::string_view event, std::string_view data);

}  // namespace chatllm
