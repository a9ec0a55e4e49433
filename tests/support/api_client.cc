#include "support/api_client.h"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "support/stack_env.h"

namespace chatllm::testing {

std::string ApiResponse::Header(const std::string& name) const {
  auto it = headers.find(name);
  return it == headers.end() ? "" : it->second;
}

bool ApiResponse::IsErrorBody() const {
  if (!json || !json->IsObject() || !json->HasMember("error")) return false;
  const auto& e = (*json)["error"];
  return e.IsObject() && e.HasMember("code") && e["code"].IsString() && e.HasMember("message") &&
         e["message"].IsString() && e["message"].GetStringLength() > 0;
}

std::string ApiResponse::ErrorCode() const { return IsErrorBody() ? (*json)["error"]["code"].GetString() : ""; }

ApiClient::ApiClient(const std::string& base_url, int timeout_s) : ApiClient(base_url, DefaultApiKey(), timeout_s) {}

ApiClient::ApiClient(const std::string& base_url, const std::string& api_key, int timeout_s) : client_(base_url) {
  client_.set_connection_timeout(timeout_s, 0);
  client_.set_read_timeout(timeout_s, 0);
  client_.set_write_timeout(timeout_s, 0);
  client_.set_keep_alive(true);
  client_.set_tcp_nodelay(true);
  set_api_key(api_key);
}

void ApiClient::set_api_key(const std::string& key) { key_ = key; }

httplib::Headers ApiClient::RequestHeaders() const {
  httplib::Headers h = extra_;
  if (!key_.empty()) h.emplace("Authorization", "Bearer " + key_);
  return h;
}

static ApiResponse Convert(const httplib::Result& r) {
  ApiResponse out;
  if (!r) return out;
  out.status = r->status;
  out.body = r->body;
  out.headers = r->headers;
  auto doc = std::make_shared<rapidjson::Document>();
  doc->Parse(out.body.c_str(), out.body.size());
  if (!doc->HasParseError()) out.json = doc;
  return out;
}

ApiResponse ApiClient::Get(const std::string& path) { return Convert(client_.Get(path, RequestHeaders())); }
ApiResponse ApiClient::Delete(const std::string& path) { return Convert(client_.Delete(path, RequestHeaders())); }

ApiResponse ApiClient::Post(const std::string& path, const std::string& body, const std::string& content_type) {
  return Convert(client_.Post(path, RequestHeaders(), body, content_type));
}

ApiResponse ApiClient::Send(const std::string& method, const std::string& path, const std::string& body,
                            const std::string& content_type) {
  httplib::Request req;
  req.method = method;
  req.path = path;
  req.body = body;
  req.headers = RequestHeaders();
  if (!content_type.empty()) req.set_header("Content-Type", content_type);
  return Convert(client_.send(req));
}

std::string ApiClient::CreateSession(const std::string& body) {
  ApiResponse r = Post("/v1/sessions", body);
  if (r.status != 201 || !r.json) return "";
  return r["id"].GetString();
}

ApiResponse ApiClient::Append(const std::string& session_id, const std::string& content) {
  return Post("/v1/sessions/" + session_id + "/messages", "{\"content\":" + JsonString(content) + "}");
}

std::string JsonString(const std::string& s) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.String(s.data(), s.size());
  return std::string(buf.GetString(), buf.GetSize());
}

}  // namespace chatllm::testing

namespace chatllm::testing {

bool ReadHistory(ApiClient& api, const std::string& session_id, std::vector<StoredMessage>* out) {
  out->clear();
  int64_t after = 0;
  while (true) {
    ApiResponse r = api.Get("/v1/sessions/" + session_id + "/messages?limit=200&after=" + std::to_string(after));
    if (r.status != 200 || !r.json) {
      fprintf(stderr, "ReadHistory: status %d body %s\n", r.status, r.body.substr(0, 300).c_str());
      return false;
    }
    for (const auto& m : r["data"].GetArray()) {
      StoredMessage s;
      s.seq = m["seq"].GetInt64();
      s.role = m["role"].GetString();
      s.content.assign(m["content"].GetString(), m["content"].GetStringLength());
      s.reply_to = m.HasMember("reply_to") ? m["reply_to"].GetInt64() : 0;
      out->push_back(std::move(s));
    }
    if (!r["has_more"].GetBool()) return true;
    after = r["next_after"].GetInt64();
  }
}

std::string CheckHistoryShape(const std::vector<StoredMessage>& h) {
  for (size_t i = 0; i < h.size(); ++i) {
    if (h[i].seq != static_cast<int64_t>(i + 1)) {
      return "seq " + std::to_string(h[i].seq) + " at position " + std::to_string(i + 1);
    }
    if (h[i].role == "assistant") {
      if (h[i].reply_to <= 0 || h[i].reply_to > static_cast<int64_t>(h.size())) {
        return "assistant seq " + std::to_string(h[i].seq) + " has reply_to " + std::to_string(h[i].reply_to);
      }
      const StoredMessage& user = h[h[i].reply_to - 1];
      if (user.role != "user" || user.content != h[i].content) {
        return "assistant seq " + std::to_string(h[i].seq) + " does not echo user seq " + std::to_string(user.seq);
      }
    } else if (h[i].role != "user") {
      return "unknown role '" + h[i].role + "'";
    }
  }
  return "";
}

}  // namespace chatllm::testing
