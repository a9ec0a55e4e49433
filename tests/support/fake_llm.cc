// fake-llm: a stand-in for the LLM providers chatllm calls, speaking their
// real wire formats over HTTP (or HTTPS with --tls): OpenAI's Chat
// Completions (POST /v1/chat/completions) and Anthropic's Messages
// (POST /v1/messages), each plain and streamed (text/event-stream). Under
// /down/ every call answers 503.
//
// The model name says how to behave (parts separated by '-', any order):
//   slow-N      wait N ms before answering
//   drip-N-MS   stream N pieces, MS ms apart
//   status-NNN  answer HTTP NNN with an error body (429 adds Retry-After: 1)
//   flaky-N     answer 503 to the first N calls with the same X-Request-Id
//   failfirst-N answer 503 to the first N calls whose last message has the
//               same content (whatever their request ids: a client's retry)
//   garbage     a body that is not JSON
//   huge        a 2 MiB answer
//   redirect    307 to another URL
//   cut         close the connection halfway through the answer
//   midfail     stream two pieces, then an error event
// Otherwise the answer is "[MODEL|n=MESSAGES|sys=SYSTEM] LAST USER MESSAGE".
//
// GET /_requests lists the calls received (path, headers that matter, body);
// DELETE /_requests forgets them. A wrong API key gets a 401 whose message
// repeats the key (as some providers do), so that chatllm's scrubbing is
// tested.
//
//   fake-llm --port N --key-file F [--pid-file F] [--tls CERT KEY]

#include <httplib.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

struct Behavior {
  int slow_ms = 0;
  int drip_pieces = 0, drip_ms = 0;
  int status = 0;
  int flaky = 0;
  int fail_first = 0;
  bool garbage = false, huge = false, redirect = false, cut = false, midfail = false;
};

Behavior BehaviorOf(const std::string& model) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= model.size()) {
    size_t dash = model.find('-', start);
    if (dash == std::string::npos) dash = model.size();
    parts.push_back(model.substr(start, dash - start));
    start = dash + 1;
  }
  auto num = [&](size_t i) { return i < parts.size() ? std::atoi(parts[i].c_str()) : 0; };
  Behavior b;
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    if (p == "slow")
      b.slow_ms = num(i + 1);
    else if (p == "drip")
      b.drip_pieces = num(i + 1), b.drip_ms = num(i + 2);
    else if (p == "status")
      b.status = num(i + 1);
    else if (p == "flaky")
      b.flaky = num(i + 1);
    else if (p == "failfirst")
      b.fail_first = num(i + 1);
    else if (p == "garbage")
      b.garbage = true;
    else if (p == "huge")
      b.huge = true;
    else if (p == "redirect")
      b.redirect = true;
    else if (p == "cut")
      b.cut = true;
    else if (p == "midfail")
      b.midfail = true;
  }
  return b;
}

std::string Json(const std::function<void(Writer&)>& fill) {
  rapidjson::StringBuffer buf;
  Writer w(buf);
  fill(w);
  return std::string(buf.GetString(), buf.GetSize());
}

std::string ErrorBody(const std::string& type, const std::string& message) {
  return Json([&](Writer& w) {
    w.StartObject();
    w.Key("type");
    w.String("error");
    w.Key("error");
    w.StartObject();
    w.Key("type");
    w.String(type);
    w.Key("message");
    w.String(message);
    w.EndObject();
    w.EndObject();
  });
}

struct Call {
  std::string path, request_id, auth, body;
};

class FakeLlm {
 public:
  explicit FakeLlm(std::string key) : key_(std::move(key)) {}

  void Handle(const httplib::Request& req, httplib::Response& res, bool anthropic) {
    Record(req);
    rapidjson::Document d;
    d.Parse(req.body.c_str(), req.body.size());
    if (d.HasParseError() || !d.IsObject()) return Fail(res, 400, "invalid_request_error", "body is not a JSON object");
    const std::string auth = anthropic ? req.get_header_value("x-api-key") : req.get_header_value("Authorization");
    const std::string want = anthropic ? key_ : "Bearer " + key_;
    if (auth != want) {
      return Fail(res, 401, "authentication_error", "Incorrect API key provided: " + auth);
    }
    if (anthropic && req.get_header_value("anthropic-version").empty()) {
      return Fail(res, 400, "invalid_request_error", "anthropic-version header is required");
    }
    if (req.path.rfind("/down/", 0) == 0) return Fail(res, 503, "overloaded_error", "this fake is down");
    if (!d.HasMember("model") || !d["model"].IsString() || !d.HasMember("messages") || !d["messages"].IsArray()) {
      return Fail(res, 400, "invalid_request_error", "model and messages are required");
    }
    if (anthropic && (!d.HasMember("max_tokens") || !d["max_tokens"].IsInt())) {
      return Fail(res, 400, "invalid_request_error", "max_tokens is required");
    }
    const std::string model = d["model"].GetString();
    const Behavior b = BehaviorOf(model);
    const bool stream = d.HasMember("stream") && d["stream"].IsBool() && d["stream"].GetBool();

    if (b.slow_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(b.slow_ms));
    if (b.flaky > 0) {
      std::lock_guard<std::mutex> lock(mu_);
      if (++flaky_seen_[req.get_header_value("X-Request-Id")] <= b.flaky) {
        return Fail(res, 503, "overloaded_error", "flaky: failing this time");
      }
    }
    if (b.fail_first > 0) {
      const auto& messages = d["messages"];
      std::string last;
      if (messages.Size() > 0 && messages[messages.Size() - 1].IsObject() &&
          messages[messages.Size() - 1].HasMember("content") && messages[messages.Size() - 1]["content"].IsString()) {
        last = messages[messages.Size() - 1]["content"].GetString();
      }
      std::lock_guard<std::mutex> lock(mu_);
      if (++fail_first_seen_[last] <= b.fail_first) {
        return Fail(res, 503, "overloaded_error", "failfirst: failing this time");
      }
    }
    if (b.status > 0) {
      if (b.status == 429) res.set_header("Retry-After", "1");
      return Fail(res, b.status, b.status == 429 ? "rate_limit_error" : "api_error",
                  "status " + std::to_string(b.status) + " as asked");
    }
    if (b.redirect) {
      res.status = 307;
      res.set_header("Location", "http://127.0.0.1:1/elsewhere");
      return;
    }
    if (b.garbage) {
      if (stream) {
        res.set_content("data: {this is not json\n\n", "text/event-stream");
      } else {
        res.set_content("<html>this is not json</html>", "application/json");
      }
      return;
    }

    // The answer, in pieces (a word each).
    std::string system;
    if (anthropic && d.HasMember("system") && d["system"].IsString()) system = d["system"].GetString();
    std::string last;
    int count = 0;
    for (const auto& m : d["messages"].GetArray()) {
      if (!m.IsObject() || !m.HasMember("role") || !m["role"].IsString() || !m.HasMember("content") ||
          !m["content"].IsString()) {
        return Fail(res, 400, "invalid_request_error", "messages must be {role, content} objects");
      }
      const std::string role = m["role"].GetString();
      if (role == "system") {
        system = m["content"].GetString();
        continue;
      }
      ++count;
      if (role == "user") last = m["content"].GetString();
    }
    std::string answer = "[" + model + "|n=" + std::to_string(count) + "|sys=" + system + "] " + last;
    if (b.huge) answer = std::string(2 << 20, 'x');
    std::vector<std::string> pieces;
    if (b.drip_pieces > 0) {
      for (int i = 0; i < b.drip_pieces; ++i) pieces.push_back("piece" + std::to_string(i) + " ");
      answer.clear();
      for (const auto& p : pieces) answer += p;
    } else {
      for (size_t at = 0; at < answer.size();) {
        size_t next = answer.find(' ', at);
        next = next == std::string::npos ? answer.size() : next + 1;
        pieces.push_back(answer.substr(at, next - at));
        at = next;
      }
    }
    const int64_t prompt_tokens = static_cast<int64_t>(req.body.size() / 4);
    const int64_t completion_tokens = static_cast<int64_t>(pieces.size());

    if (!stream) {
      if (b.drip_pieces > 0) std::this_thread::sleep_for(std::chrono::milliseconds(b.drip_pieces * b.drip_ms));
      std::string body = anthropic ? AnthropicBody(model, answer, prompt_tokens, completion_tokens)
                                   : OpenAiBody(model, answer, prompt_tokens, completion_tokens);
      if (b.cut) {
        auto half = std::make_shared<std::string>(body.substr(0, body.size() / 2));
        res.set_content_provider(body.size(), "application/json", [half](size_t, size_t, httplib::DataSink& sink) {
          sink.write(half->data(), half->size());
          return false;  // Connection closed halfway.
        });
        return;
      }
      res.set_content(body, "application/json");
      return;
    }
    auto events = std::make_shared<std::vector<std::string>>(
        anthropic ? AnthropicEvents(model, pieces, prompt_tokens, completion_tokens, b)
                  : OpenAiEvents(model, pieces, prompt_tokens, completion_tokens, b));
    const int drip_ms = b.drip_ms;
    const bool cut = b.cut;
    res.set_chunked_content_provider("text/event-stream", [events, drip_ms, cut](size_t, httplib::DataSink& sink) {
      for (size_t i = 0; i < events->size(); ++i) {
        if (cut && i == 3) return false;  // Connection closed mid-stream.
        if (drip_ms > 0 && i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(drip_ms));
        if (!sink.write((*events)[i].data(), (*events)[i].size())) return false;  // Client gone.
      }
      sink.done();
      return true;
    });
  }

  std::string Requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return Json([&](Writer& w) {
      w.StartArray();
      for (const Call& c : calls_) {
        w.StartObject();
        w.Key("path");
        w.String(c.path);
        w.Key("request_id");
        w.String(c.request_id);
        w.Key("auth");
        w.String(c.auth);
        w.Key("body");
        w.String(c.body);
        w.EndObject();
      }
      w.EndArray();
    });
  }
  void Clear() {
    std::lock_guard<std::mutex> lock(mu_);
    calls_.clear();
  }

 private:
  void Record(const httplib::Request& req) {
    std::lock_guard<std::mutex> lock(mu_);
    if (calls_.size() >= 2000) calls_.erase(calls_.begin());
    std::string auth = req.get_header_value("Authorization");
    if (auth.empty()) auth = req.get_header_value("x-api-key");
    calls_.push_back(Call{req.path, req.get_header_value("X-Request-Id"), auth, req.body});
  }

  static void Fail(httplib::Response& res, int status, const std::string& type, const std::string& message) {
    res.status = status;
    res.set_content(ErrorBody(type, message), "application/json");
  }

  static std::string OpenAiBody(const std::string& model, const std::string& answer, int64_t in, int64_t out) {
    return Json([&](Writer& w) {
      w.StartObject();
      w.Key("id");
      w.String("chatcmpl-fake");
      w.Key("object");
      w.String("chat.completion");
      w.Key("model");
      w.String(model);
      w.Key("choices");
      w.StartArray();
      w.StartObject();
      w.Key("index");
      w.Int(0);
      w.Key("message");
      w.StartObject();
      w.Key("role");
      w.String("assistant");
      w.Key("content");
      w.String(answer);
      w.EndObject();
      w.Key("finish_reason");
      w.String("stop");
      w.EndObject();
      w.EndArray();
      w.Key("usage");
      w.StartObject();
      w.Key("prompt_tokens");
      w.Int64(in);
      w.Key("completion_tokens");
      w.Int64(out);
      w.Key("total_tokens");
      w.Int64(in + out);
      w.EndObject();
      w.EndObject();
    });
  }

  static std::string AnthropicBody(const std::string& model, const std::string& answer, int64_t in, int64_t out) {
    return Json([&](Writer& w) {
      w.StartObject();
      w.Key("id");
      w.String("msg_fake");
      w.Key("type");
      w.String("message");
      w.Key("role");
      w.String("assistant");
      w.Key("model");
      w.String(model);
      w.Key("content");
      w.StartArray();
      w.StartObject();
      w.Key("type");
      w.String("text");
      w.Key("text");
      w.String(answer);
      w.EndObject();
      w.EndArray();
      w.Key("stop_reason");
      w.String("end_turn");
      w.Key("usage");
      w.StartObject();
      w.Key("input_tokens");
      w.Int64(in);
      w.Key("output_tokens");
      w.Int64(out);
      w.EndObject();
      w.EndObject();
    });
  }

  static std::string Data(const std::string& json) { return "data: " + json + "\n\n"; }

  static std::vector<std::string> OpenAiEvents(const std::string& model, const std::vector<std::string>& pieces,
                                               int64_t in, int64_t out, const Behavior& b) {
    auto chunk = [&](const std::string* text, const char* finish) {
      return Data(Json([&](Writer& w) {
        w.StartObject();
        w.Key("id");
        w.String("chatcmpl-fake");
        w.Key("object");
        w.String("chat.completion.chunk");
        w.Key("model");
        w.String(model);
        w.Key("choices");
        w.StartArray();
        w.StartObject();
        w.Key("index");
        w.Int(0);
        w.Key("delta");
        w.StartObject();
        if (text) {
          w.Key("content");
          w.String(*text);
        }
        w.EndObject();
        w.Key("finish_reason");
        if (finish)
          w.String(finish);
        else
          w.Null();
        w.EndObject();
        w.EndArray();
        w.EndObject();
      }));
    };
    std::vector<std::string> events;
    for (size_t i = 0; i < pieces.size(); ++i) {
      if (b.midfail && i == 2) {
        events.push_back(Data(ErrorBody("server_error", "the model fell over mid-answer")));
        return events;
      }
      events.push_back(chunk(&pieces[i], nullptr));
    }
    events.push_back(chunk(nullptr, "stop"));
    events.push_back(Data(Json([&](Writer& w) {
      w.StartObject();
      w.Key("id");
      w.String("chatcmpl-fake");
      w.Key("object");
      w.String("chat.completion.chunk");
      w.Key("model");
      w.String(model);
      w.Key("choices");
      w.StartArray();
      w.EndArray();
      w.Key("usage");
      w.StartObject();
      w.Key("prompt_tokens");
      w.Int64(in);
      w.Key("completion_tokens");
      w.Int64(out);
      w.EndObject();
      w.EndObject();
    })));
    events.push_back("data: [DONE]\n\n");
    return events;
  }

  static std::vector<std::string> AnthropicEvents(const std::string& model, const std::vector<std::string>& pieces,
                                                  int64_t in, int64_t out, const Behavior& b) {
    auto event = [](const char* name, const std::string& json) {
      return std::string("event: ") + name + "\n" + Data(json);
    };
    std::vector<std::string> events;
    events.push_back(event("message_start", Json([&](Writer& w) {
                             w.StartObject();
                             w.Key("type");
                             w.String("message_start");
                             w.Key("message");
                             w.StartObject();
                             w.Key("model");
                             w.String(model);
                             w.Key("usage");
                             w.StartObject();
                             w.Key("input_tokens");
                             w.Int64(in);
                             w.EndObject();
                             w.EndObject();
                             w.EndObject();
                           })));
    events.push_back(event("content_block_start",
                           R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})"));
    events.push_back(event("ping", R"({"type":"ping"})"));
    for (size_t i = 0; i < pieces.size(); ++i) {
      if (b.midfail && i == 2) {
        events.push_back(event("error", ErrorBody("overloaded_error", "the model fell over mid-answer")));
        return events;
      }
      events.push_back(event("content_block_delta", Json([&](Writer& w) {
                               w.StartObject();
                               w.Key("type");
                               w.String("content_block_delta");
                               w.Key("index");
                               w.Int(0);
                               w.Key("delta");
                               w.StartObject();
                               w.Key("type");
                               w.String("text_delta");
                               w.Key("text");
                               w.String(pieces[i]);
                               w.EndObject();
                               w.EndObject();
                             })));
    }
    events.push_back(event("content_block_stop", R"({"type":"content_block_stop","index":0})"));
    events.push_back(event("message_delta", Json([&](Writer& w) {
                             w.StartObject();
                             w.Key("type");
                             w.String("message_delta");
                             w.Key("delta");
                             w.StartObject();
                             w.Key("stop_reason");
                             w.String("end_turn");
                             w.EndObject();
                             w.Key("usage");
                             w.StartObject();
                             w.Key("output_tokens");
                             w.Int64(out);
                             w.EndObject();
                             w.EndObject();
                           })));
    events.push_back(event("message_stop", R"({"type":"message_stop"})"));
    return events;
  }

  std::string key_;
  std::mutex mu_;
  std::vector<Call> calls_;
  std::map<std::string, int> flaky_seen_;
  std::map<std::string, int> fail_first_seen_;  // Last message content -> calls.
};

void Usage() {
  std::fprintf(stderr, "usage: fake-llm --port N --key-file F [--pid-file F] [--tls CERT KEY]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  int port = 0;
  std::string key_file, pid_file, cert, cert_key;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Usage();
      return argv[++i];
    };
    if (a == "--port")
      port = std::atoi(next().c_str());
    else if (a == "--key-file")
      key_file = next();
    else if (a == "--pid-file")
      pid_file = next();
    else if (a == "--tls")
      cert = next(), cert_key = next();
    else
      Usage();
  }
  if (port <= 0 || key_file.empty()) Usage();
  std::string key;
  std::ifstream(key_file) >> key;
  if (key.empty()) {
    std::fprintf(stderr, "fake-llm: %s holds no key\n", key_file.c_str());
    return 2;
  }

  // SIGTERM/SIGINT stop the server from a thread (not from a handler).
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  std::unique_ptr<httplib::Server> server;
  if (cert.empty())
    server = std::make_unique<httplib::Server>();
  else
    server = std::make_unique<httplib::SSLServer>(cert.c_str(), cert_key.c_str());
  if (!server->is_valid()) {
    std::fprintf(stderr, "fake-llm: cannot set up the server (certificate?)\n");
    return 1;
  }
  // One thread per stream it serves at once: CHATLLM_FAKE_LLM_THREADS (64;
  // tests/load/durable_bench holds hundreds of slow streams open).
  const char* threads_env = std::getenv("CHATLLM_FAKE_LLM_THREADS");
  const size_t threads = threads_env ? std::clamp<size_t>(std::strtoul(threads_env, nullptr, 10), 1, 4096) : 64;
  server->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server->set_tcp_nodelay(true);
  FakeLlm fake(key);
  for (const char* prefix : {"", "/down"}) {
    server->Post(std::string(prefix) + "/v1/chat/completions",
                 [&fake](const httplib::Request& req, httplib::Response& res) { fake.Handle(req, res, false); });
    server->Post(std::string(prefix) + "/v1/messages",
                 [&fake](const httplib::Request& req, httplib::Response& res) { fake.Handle(req, res, true); });
  }
  server->Get("/_requests", [&fake](const httplib::Request&, httplib::Response& res) {
    res.set_content(fake.Requests(), "application/json");
  });
  server->Delete("/_requests", [&fake](const httplib::Request&, httplib::Response& res) {
    fake.Clear();
    res.status = 204;
  });

  std::thread stopper([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    server->stop();
  });
  stopper.detach();
  if (!server->bind_to_port("127.0.0.1", port)) {
    std::fprintf(stderr, "fake-llm: cannot listen on 127.0.0.1:%d\n", port);
    return 1;
  }
  if (!pid_file.empty()) std::ofstream(pid_file) << getpid() << "\n";
  std::fprintf(stderr, "fake-llm: listening on 127.0.0.1:%d%s\n", port, cert.empty() ? "" : " (TLS)");
  server->listen_after_bind();
  if (!pid_file.empty()) std::remove(pid_file.c_str());
  return 0;
}
