#include "providers/provider_http.h"

#include <httplib.h>

#include <algorithm>

#include "base/json.h"
#include "base/sse.h"
#include "base/time_util.h"
#include "base/url.h"
#include "wire_format.h"

namespace chatllm {
namespace {

using Kind = ProviderErrorKind;

std::string Truncated(std::string s, size_t max) {
  if (s.size() <= max) return s;
  s.resize(max);
  while (!s.empty() && (static_cast<unsigned char>(s.back()) & 0xC0) == 0x80) s.pop_back();  // Whole code points.
  if (!s.empty() && static_cast<unsigned char>(s.back()) >= 0xC0) s.pop_back();
  return s + "...";
}

[[noreturn]] void ThrowTransportError(const std::string& who, const std::string& host, httplib::Error err,
                                      int64_t read_ms, int64_t idle_us, int status) {
  switch (err) {
    case httplib::Error::Connection:
      throw ProviderError(Kind::kUnavailable, who + ": cannot connect to " + host, true);
    case httplib::Error::ConnectionTimeout:
      throw ProviderError(Kind::kUnavailable, who + ": connecting to " + host + " timed out", true);
    case httplib::Error::SSLServerVerification:
      throw ProviderError(Kind::kUnavailable, who + ": the TLS certificate of " + host + " is not trusted");
    case httplib::Error::SSLConnection:
    case httplib::Error::SSLLoadingCerts:
      throw ProviderError(Kind::kUnavailable, who + ": TLS with " + host + " failed (" + httplib::to_string(err) + ")");
    case httplib::Error::Read:
      if (idle_us >= read_ms * 1000 - 50000) {
        throw ProviderError(Kind::kTimeout, who + ": no data from " + host + " for " + std::to_string(read_ms) + " ms");
      }
      throw ProviderError(Kind::kUnavailable, who + ": " + host + " closed the connection mid-answer", status == 0);
    default:
      throw ProviderError(Kind::kUnavailable, who + ": " + host + ": " + httplib::to_string(err), true);
  }
}

// A provider's answer that is not in its format.

}  // namespace

HttpProvider::HttpProvider(ProviderConfig config) : Provider(std::move(config)) {
  // Validated when the configuration was read (base/config.cc).
  StatusOr<HttpUrl> url = ParseHttpUrl(this->config().base_url);
  if (!url.ok()) throw ConfigError("provider " + name() + ": base_url " + url.status().message());
  path_prefix_ = url->path;
  origin_ = url->origin;
  client_ = std::make_unique<httplib::Client>(origin_);
  const int ct = this->config().connect_timeout_ms;
  client_->set_connection_timeout(ct / 1000, (ct % 1000) * 1000);
  client_->set_write_timeout(ct / 1000 + 10, 0);
  client_->set_keep_alive(true);
  client_->set_tcp_nodelay(true);  // Headers and body are separate writes: no Nagle delay between them.
  client_->set_follow_location(false);
  client_->set_decompress(false);
  client_->enable_server_certificate_verification(true);
  if (!this->config().ca_file.empty()) client_->set_ca_cert_path(this->config().ca_file);
}

HttpProvider::~HttpProvider() = default;

std::string HttpProvider::Scrub(std::string text) const {
  const std::string& key = config().api_key;
  if (key.size() < 4) return text;
  for (size_t at; (at = text.find(key)) != std::string::npos;) text.replace(at, key.size(), "[redacted]");
  return text;
}

ProviderError HttpProvider::StatusError(const HttpExchange& x) const {
  const int s = x.status;
  const std::string what = name() + ": HTTP " + std::to_string(s);
  std::string text = Truncated(Scrub(ProviderErrorText(x.body)), 300);
  const std::string detail = text.empty() ? "" : ": " + text;
  if (s == 429) return ProviderError(Kind::kRateLimited, what + " (rate limited)" + detail, true, x.retry_after_ms);
  if (s >= 300 && s < 400) {
    return ProviderError(Kind::kBadResponse, what + ": redirect" +
                                                 (x.location.empty() ? "" : " to " + Scrub(x.location)) +
                                                 " not followed (check base_url)");
  }
  if (s == 401 || s == 403) return ProviderError(Kind::kUnavailable, what + ": the provider refused the API key");
  if (s == 504) return ProviderError(Kind::kTimeout, what + detail, true, x.retry_after_ms);
  if (s == 408 || s == 409 || s == 425 || s >= 500) {
    return ProviderError(Kind::kUnavailable, what + detail, true, x.retry_after_ms);
  }
  if (s >= 400) return ProviderError(Kind::kRejected, what + detail);
  return ProviderError(Kind::kBadResponse, what + ": unexpected status");
}

HttpExchange HttpProvider::Post(const std::string& path, const std::string& json,
                                const std::vector<std::pair<std::string, std::string>>& headers, bool stream,
                                const std::function<bool(std::string_view)>& on_chunk, const std::string& request_id,
                                int64_t deadline_us) {
  const ProviderConfig& cfg = config();
  const int64_t start = MonotonicMicros();
  if (start >= deadline_us)
    throw ProviderError(Kind::kTimeout, name() + ": total_timeout_ms exhausted before the call");
  const int64_t read_ms = std::min<int64_t>(cfg.read_timeout_ms, (deadline_us - start) / 1000 + 1);
  client_->set_read_timeout(read_ms / 1000, (read_ms % 1000) * 1000);

  httplib::Request req;
  req.method = "POST";
  req.path = path_prefix_ + path;
  req.body = json;
  req.set_header("Content-Type", "application/json");
  req.set_header("Accept", stream ? "text/event-stream" : "application/json");
  req.set_header("User-Agent", "chatllm");
  if (!request_id.empty()) req.set_header("X-Request-Id", request_id);
  for (const auto& [k, v] : headers) req.set_header(k.c_str(), v);

  HttpExchange x;
  size_t received = 0;
  bool too_big = false, late = false;
  int64_t last_byte_us = start;
  req.response_handler = [&](const httplib::Response& r) {
    last_byte_us = MonotonicMicros();
    x.status = r.status;
    x.content_type = r.get_header_value("Content-Type");
    x.location = r.get_header_value("Location");
    x.retry_after_ms = ParseRetryAfter(r.get_header_value("retry-after-ms"));
    if (x.retry_after_ms >= 0) x.retry_after_ms /= 1000;
    if (x.retry_after_ms < 0) x.retry_after_ms = ParseRetryAfter(r.get_header_value("Retry-After"));
    x.streamed = stream && r.status == 200 && x.content_type.find("text/event-stream") != std::string::npos;
    return true;
  };
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    last_byte_us = MonotonicMicros();
    received += n;
    if (received > cfg.max_response_bytes) {
      too_big = true;
      return false;
    }
    if (last_byte_us > deadline_us) {
      late = true;
      return false;
    }
    if (x.streamed) {
      if (!on_chunk(std::string_view(data, n))) {
        x.stopped = true;
        return false;
      }
      return true;
    }
    x.body.append(data, n);
    return true;
  };
  httplib::Response res;
  httplib::Error err = httplib::Error::Success;
  const bool ok = client_->send(req, res, err);
  if (x.stopped) return x;
  if (too_big) {
    throw ProviderError(Kind::kBadResponse, name() + ": the answer is larger than max_response_bytes (" +
                                                std::to_string(cfg.max_response_bytes) + ")");
  }
  if (late) throw ProviderError(Kind::kTimeout, name() + ": no complete answer within total_timeout_ms");
  if (!ok) ThrowTransportError(name(), origin_, err, read_ms, MonotonicMicros() - last_byte_us, x.status);
  if (x.status == 0) x.status = res.status;
  if (x.body.empty() && !res.body.empty()) x.body = res.body;
  if (x.status != 200) throw StatusError(x);
  return x;
}

Completion OpenAiProvider::Call(const ProviderRequest& request, DeltaSink* sink, int64_t deadline_us) {
  const int64_t start = MonotonicMicros();
  const std::string model = request.model.empty() ? config().model : request.model;
  const int max_tokens = request.max_tokens > 0 ? request.max_tokens : config().max_tokens;
  std::vector<std::pair<std::string, std::string>> headers;
  if (!config().api_key.empty()) headers.emplace_back("Authorization", "Bearer " + config().api_key);
  const std::string body = OpenAiRequestJson(request, model, max_tokens, sink != nullptr);

  Completion c;
  std::optional<ProviderError> failure;
  bool done = false;
  SseParser parser;
  auto on_event = [&](const SseParser::Event& e) {
    if (e.data == "[DONE]") {
      done = true;
      return true;
    }
    rapidjson::Document d;
    if (Status s = ParseJson(e.data, &d); !s.ok() || !d.IsObject()) {
      failure.emplace(Kind::kBadResponse, name() + ": a streamed chunk is not JSON (" + s.message() + ")");
      return false;
    }
    if (const rapidjson::Value* err = Member(d, "error")) {
      std::string text = err->IsObject() ? StringMember(*err, "message") : "";
      failure.emplace(Kind::kUnavailable, name() + ": error mid-answer: " + Truncated(Scrub(text), 300));
      return false;
    }
    if (std::string m = StringMember(d, "model"); !m.empty()) c.model = m;
    if (const rapidjson::Value* usage = Member(d, "usage"); usage && usage->IsObject()) ReadOpenAiUsage(*usage, &c);
    const rapidjson::Value* choices = Member(d, "choices");
    if (!choices || !choices->IsArray() || choices->Empty()) return true;
    const rapidjson::Value& choice = (*choices)[0];
    if (const rapidjson::Value* delta = Member(choice, "delta")) {
      std::string text = StringMember(*delta, "content");
      if (!text.empty()) {
        c.content += text;
        if (!sink->OnDelta(text)) {
          failure.emplace(Kind::kCancelled, "the client went away");
          return false;
        }
      }
    }
    if (std::string f = StringMember(choice, "finish_reason"); !f.empty()) c.finish_reason = f;
    return true;
  };
  HttpExchange x = Post(
      "/chat/completions", body, headers, sink != nullptr,
      [&](std::string_view chunk) { return parser.Feed(chunk, on_event); }, request.request_id, deadline_us);
  if (failure) throw *failure;
  if (x.streamed) {
    if (!done && c.finish_reason.empty()) {
      throw ProviderError(Kind::kUnavailable, name() + ": the stream ended before the answer was complete");
    }
  } else {
    if (Status s = ParseOpenAiResponse(x.body, &c); !s.ok())
      throw ProviderError(Kind::kBadResponse, name() + ": " + s.message());
    if (sink && !c.content.empty() && !sink->OnDelta(c.content)) {
      throw ProviderError(Kind::kCancelled, "the client went away");
    }
  }
  c.finish_reason = OpenAiFinish(c.finish_reason);
  if (c.model.empty()) c.model = model;
  c.latency_us = MonotonicMicros() - start;
  return c;
}

Completion AnthropicProvider::Call(const ProviderRequest& request, DeltaSink* sink, int64_t deadline_us) {
  const int64_t start = MonotonicMicros();
  const std::string model = request.model.empty() ? config().model : request.model;
  const int max_tokens = request.max_tokens > 0 ? request.max_tokens : config().max_tokens;
  if (Alternating(request.messages).empty()) {
    throw ProviderError(Kind::kRejected, name() + ": the conversation has no user message");
  }
  std::vector<std::pair<std::string, std::string>> headers = {{"anthropic-version", config().anthropic_version}};
  if (!config().api_key.empty()) headers.emplace_back("x-api-key", config().api_key);
  const std::string body = AnthropicRequestJson(request, model, max_tokens, sink != nullptr);

  Completion c;
  std::optional<ProviderError> failure;
  bool done = false;
  std::string stop_reason;
  SseParser parser;
  auto on_event = [&](const SseParser::Event& e) {
    rapidjson::Document d;
    if (Status s = ParseJson(e.data, &d); !s.ok() || !d.IsObject()) {
      failure.emplace(Kind::kBadResponse, name() + ": a streamed event is not JSON (" + s.message() + ")");
      return false;
    }
    const std::string type = StringMember(d, "type");
    if (type == "message_start") {
      if (const rapidjson::Value* m = Member(d, "message")) {
        if (std::string mm = StringMember(*m, "model"); !mm.empty()) c.model = mm;
        if (const rapidjson::Value* usage = Member(*m, "usage")) ReadAnthropicInput(*usage, &c);
      }
    } else if (type == "content_block_delta") {
      const rapidjson::Value* delta = Member(d, "delta");
      std::string text = delta && StringMember(*delta, "type") == "text_delta" ? StringMember(*delta, "text") : "";
      if (!text.empty()) {
        c.content += text;
        if (!sink->OnDelta(text)) {
          failure.emplace(Kind::kCancelled, "the client went away");
          return false;
        }
      }
    } else if (type == "message_delta") {
      if (const rapidjson::Value* delta = Member(d, "delta")) {
        if (std::string r = StringMember(*delta, "stop_reason"); !r.empty()) stop_reason = r;
      }
      if (const rapidjson::Value* usage = Member(d, "usage")) c.completion_tokens = IntMember(*usage, "output_tokens");
    } else if (type == "message_stop") {
      done = true;
    } else if (type == "error") {
      const rapidjson::Value* err = Member(d, "error");
      std::string text = err ? StringMember(*err, "type") + ": " + StringMember(*err, "message") : "";
      failure.emplace(Kind::kUnavailable, name() + ": error mid-answer: " + Truncated(Scrub(text), 300));
      return false;
    }
    return true;
  };
  HttpExchange x = Post(
      "/v1/messages", body, headers, sink != nullptr,
      [&](std::string_view chunk) { return parser.Feed(chunk, on_event); }, request.request_id, deadline_us);
  if (failure) throw *failure;
  if (x.streamed) {
    if (!done) throw ProviderError(Kind::kUnavailable, name() + ": the stream ended before the answer was complete");
    c.finish_reason = AnthropicFinish(stop_reason);
  } else {
    if (Status s = ParseAnthropicResponse(x.body, &c); !s.ok()) {
      throw ProviderError(Kind::kBadResponse, name() + ": " + s.message());
    }
    if (sink && !c.content.empty() && !sink->OnDelta(c.content)) {
      throw ProviderError(Kind::kCancelled, "the client went away");
    }
  }
  if (c.model.empty()) c.model = model;
  c.latency_us = MonotonicMicros() - start;
  return c;
}

}  // namespace chatllm
