#include "base/sse.h"

namespace chatllm {

bool SseParser::Feed(std::string_view chunk, const Handler& on_event) {
  while (!chunk.empty()) {
    size_t nl = chunk.find('\n');
    if (nl == std::string_view::npos) {
      line_.append(chunk);
      return true;
    }
    std::string_view piece = chunk.substr(0, nl);
    chunk.remove_prefix(nl + 1);
    bool ok;
    if (line_.empty()) {
      ok = Line(piece, on_event);
    } else {
      line_.append(piece);
      std::string line = std::move(line_);
      line_.clear();
      ok = Line(line, on_event);
    }
    if (!ok) return false;
  }
  return true;
}

bool SseParser::Line(std::string_view line, const Handler& on_event) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.empty()) {  // End of an event.
    if (!has_data_) {
      current_ = Event{};
      return true;
    }
    Event done = std::move(current_);
    current_ = Event{};
    has_data_ = false;
    return on_event(done);
  }
  if (line[0] == ':') return true;  // Comment (keep-alive).
  size_t colon = line.find(':');
  std::string_view field = line.substr(0, colon);
  std::string_view value = colon == std::string_view::npos ? std::string_view() : line.substr(colon + 1);
  if (!value.empty() && value[0] == ' ') value.remove_prefix(1);
  if (field == "data") {
    if (has_data_) current_.data.push_back('\n');
    current_.data.append(value);
    has_data_ = true;
  } else if (field == "event") {
    current_.event.assign(value);
  } else if (field == "id") {
    current_.id.assign(value);
  }
  return true;
}

std::string SseEvent(std::string_view event, std::string_view data) {
  std::string out;
  out.reserve(event.size() + data.size() + 16);
  if (!event.empty()) {
    out.append("event: ").append(event).push_back('\n');
  }
  out.append("data: ").append(data).append("\n\n");
  return out;
}

}  // namespace chatllm
