// Durable turns end to end (sql/010_turns.sql, docs/api.md "Durable
// turns"): through nginx and straight to each app instance, against the
// fake provider's slow streams. A client that drops a stream resumes it on
// the other instance, from the event it last saw (query or Last-Event-ID),
// and gets exactly the stored answer; a client that leaves does not stop
// the answer; a cancel from the other instance stops it within a bound; a
// producer killed with SIGKILL leaves its turn incomplete within the lease,
// its events readable, and the session takes the next turn.

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/sse.h"
#include "support/api_client.h"
#include "support/fcgi_client.h"
#include "support/stack_env.h"
#include "support/worker_status.h"

namespace chatllm::testing {
namespace {

using Clock = std::chrono::steady_clock;

struct Event {
  std::string name;
  std::string data;
  std::string id;
};

struct Streamed {
  int status = 0;
  std::map<std::string, std::string> headers;
  std::vector<Event> events;
};

// Sends a request through nginx and reads its text/event-stream answer as
// it comes; hangs up once `stop_after` events came (0: reads to the end).
// `on_event`, if given, sees each event as it comes (from the reading thread).
Streamed Stream(const std::string& method, const std::string& path, const std::string& body, size_t stop_after = 0,
                const httplib::Headers& headers = {}, std::function<void(const Streamed&)> on_event = nullptr) {
  httplib::Client client(StackEnv::Get().url());
  client.set_read_timeout(30, 0);
  Streamed out;
  SseParser parser;
  httplib::Request req;
  req.method = method;
  req.path = path;
  req.body = body;
  req.headers = headers;
  if (!body.empty()) req.set_header("Content-Type", "application/json");
  req.set_header("Authorization", "Bearer " + DefaultApiKey());
  req.response_handler = [&](const httplib::Response& r) {
    out.status = r.status;
    for (const char* h : {"X-Served-By", "X-Turn-Id", "Content-Type"}) out.headers[h] = r.get_header_value(h);
    return true;
  };
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    return parser.Feed(std::string_view(data, n), [&](const SseParser::Event& e) {
      out.events.push_back(Event{e.event, e.data, e.id});
      if (on_event) on_event(out);
      return stop_after == 0 || out.events.size() < stop_after;
    });
  };
  client.send(req);
  return out;
}

// The events of a text/event-stream body read whole.
std::vector<Event> ParseEvents(const std::string& body) {
  std::vector<Event> out;
  SseParser parser;
  parser.Feed(body, [&](const SseParser::Event& e) {
    out.push_back(Event{e.event, e.data, e.id});
    return true;
  });
  return out;
}

// A key of a user of its own (chatllm-admin).
std::string StrangerKey() {
  const StackEnv& env = StackEnv::Get();
  const std::string admin = env.build() + "/chatllm-admin --config " + env.AppConfig(env.apps()[0].first) + " ";
  const std::string user = "durable-" + std::to_string(::getpid());
  std::string added, out;
  RunCommand(admin + "user add " + user + " 2>/dev/null", &added);
  EXPECT_EQ(RunCommand(admin + "key create " + user + " 2>/dev/null", &out), 0);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

rapidjson::Document Json(const std::string& text) {
  rapidjson::Document d;
  d.Parse(text.c_str());
  return d;
}

std::string DeltaText(const Event& e) {
  rapidjson::Document d = Json(e.data);
  return d.IsObject() && d.HasMember("text") ? d["text"].GetString() : "";
}

class DurableTest : public ::testing::Test {
 protected:
  std::string NewSession() {
    ApiResponse r = api.Post("/v1/sessions", "{}");
    EXPECT_EQ(r.status, 201) << r.body;
    return r.status == 201 ? r["id"].GetString() : "";
  }
  std::string TurnPath(const std::string& id, const std::string& turn) {
    return "/v1/sessions/" + id + "/turns/" + turn;
  }
  // The app instance (name, port) other than `served_by`.
  std::pair<std::string, int> OtherApp(const std::string& served_by) {
    for (const auto& app : StackEnv::Get().apps()) {
      if (app.first != served_by) return app;
    }
    return {"", 0};
  }
  // Straight to one app instance (FastCGI), bypassing nginx.
  FcgiResponse AtApp(int port, const std::string& method, const std::string& uri,
                     std::map<std::string, std::string> params = {}) {
    return FcgiRequest(port, method, uri, "", std::move(params), 30000);
  }
  std::vector<StoredMessage> History(const std::string& id) {
    std::vector<StoredMessage> h;
    EXPECT_TRUE(ReadHistory(api, id, &h));
    return h;
  }

  ApiClient api{StackEnv::Get().url(), 30};
};

TEST_F(DurableTest, ADroppedStreamResumesOnTheOtherInstanceFromEventFive) {
  const std::string id = NewSession();
  // 20 pieces 100 ms apart: turn, user, then 5 deltas, and the client hangs up.
  Streamed live = Stream("POST", "/v1/sessions/" + id + "/messages",
                         R"({"content":"long answer","stream":true,"model":"fake-drip-20-100"})", 7);
  ASSERT_EQ(live.status, 200);
  ASSERT_EQ(live.events.size(), 7u);
  ASSERT_EQ(live.events[0].name, "turn");
  EXPECT_EQ(live.events[0].id, "0");
  rapidjson::Document turn = Json(live.events[0].data);
  const std::string turn_id = turn["id"].GetString();
  EXPECT_EQ(live.headers["X-Turn-Id"], turn_id);
  EXPECT_EQ(turn["events_url"].GetString(), TurnPath(id, turn_id) + "/events");
  EXPECT_EQ(live.events[1].name, "user");
  std::string text;
  for (size_t i = 2; i < 7; ++i) {
    EXPECT_EQ(live.events[i].name, "delta");
    EXPECT_EQ(live.events[i].id, std::to_string(i - 1));
    text += DeltaText(live.events[i]);
  }

  // On the other instance, from event 5: every later event once, in order,
  // then the stored answer.
  auto [other, port] = OtherApp(live.headers["X-Served-By"]);
  ASSERT_GT(port, 0) << "served by " << live.headers["X-Served-By"];
  FcgiResponse resumed = AtApp(port, "GET", TurnPath(id, turn_id) + "/events?starting_after=5");
  ASSERT_TRUE(resumed.ok) << resumed.error;
  ASSERT_EQ(resumed.status, 200) << resumed.body;
  std::vector<Event> rest = ParseEvents(resumed.body);
  ASSERT_FALSE(rest.empty());
  int64_t expect = 6;
  for (size_t i = 0; i + 1 < rest.size(); ++i) {
    ASSERT_EQ(rest[i].name, "delta") << rest[i].data;
    EXPECT_EQ(rest[i].id, std::to_string(expect++)) << "no event twice, none missing";
    text += DeltaText(rest[i]);
  }
  ASSERT_EQ(rest.back().name, "assistant") << rest.back().data;
  rapidjson::Document answer = Json(rest.back().data);
  EXPECT_EQ(text, answer["content"].GetString());
  std::vector<StoredMessage> h = History(id);
  ASSERT_EQ(h.size(), 2u);
  EXPECT_EQ(h[1].content, text);
  EXPECT_EQ(text.rfind("piece0 piece1 ", 0), 0u) << text;

  ApiResponse state = api.Get(TurnPath(id, turn_id));
  ASSERT_EQ(state.status, 200) << state.body;
  EXPECT_STREQ(state["state"].GetString(), "completed");
  EXPECT_EQ(state["events"].GetInt64(), expect - 1);
  EXPECT_EQ(state["answer_seq"].GetInt64(), 2);
  EXPECT_EQ(state["user_seq"].GetInt64(), 1);
}

TEST_F(DurableTest, AnEventSourceReconnectWithLastEventIdResumesThroughNginx) {
  const std::string id = NewSession();
  Streamed live = Stream("POST", "/v1/sessions/" + id + "/messages",
                         R"({"content":"x","stream":true,"model":"fake-drip-12-100"})", 5);
  ASSERT_EQ(live.events.size(), 5u);
  const std::string turn_id = Json(live.events[0].data)["id"].GetString();
  std::string text;
  for (size_t i = 2; i < 5; ++i) text += DeltaText(live.events[i]);
  // What an EventSource sends on its own: the last id it saw.
  Streamed again = Stream("GET", TurnPath(id, turn_id) + "/events", "", 0, {{"Last-Event-ID", live.events.back().id}});
  ASSERT_EQ(again.status, 200);
  ASSERT_FALSE(again.events.empty());
  EXPECT_EQ(again.events.front().id, "4");
  for (size_t i = 0; i + 1 < again.events.size(); ++i) text += DeltaText(again.events[i]);
  ASSERT_EQ(again.events.back().name, "assistant");
  EXPECT_EQ(text, Json(again.events.back().data)["content"].GetString());
  // From the start (starting_after=0): the whole text again, the same.
  Streamed whole = Stream("GET", TurnPath(id, turn_id) + "/events?starting_after=0", "");
  std::string all;
  for (size_t i = 0; i + 1 < whole.events.size(); ++i) all += DeltaText(whole.events[i]);
  EXPECT_EQ(all, text);
}

TEST_F(DurableTest, AClientThatLeavesDoesNotStopTheAnswer) {
  const std::string id = NewSession();
  Streamed live = Stream("POST", "/v1/sessions/" + id + "/messages",
                         R"({"content":"long answer","stream":true,"model":"fake-drip-20-100"})", 4);
  ASSERT_EQ(live.events.size(), 4u);
  const std::string turn_id = Json(live.events[0].data)["id"].GetString();
  // The producer goes on without it: the turn completes, whole.
  ApiResponse state;
  EXPECT_TRUE(WaitFor(10, [&] {
    state = api.Get(TurnPath(id, turn_id));
    return state.status == 200 && std::string(state["state"].GetString()) != "in_progress";
  }));
  EXPECT_STREQ(state["state"].GetString(), "completed") << state.body;
  EXPECT_EQ(state["events"].GetInt64(), 20);
  std::vector<StoredMessage> h = History(id);
  ASSERT_EQ(h.size(), 2u);
  EXPECT_EQ(h[1].content.rfind("piece0 piece1 ", 0), 0u);
  ApiResponse page = api.Get("/v1/sessions/" + id + "/messages");
  EXPECT_STREQ(page["data"][1]["finish_reason"].GetString(), "stop");
}

TEST_F(DurableTest, ACancelFromTheOtherInstanceStopsTheTurnWithinABoundAndKeepsThePartial) {
  const std::string id = NewSession();
  std::mutex mu;
  std::string turn_id, served_by;
  size_t seen = 0;
  Clock::time_point cancelled_at{}, ended_at{};
  Streamed live;
  std::thread reader([&] {
    // 60 pieces 100 ms apart: 6 s if nothing stops it.
    live = Stream("POST", "/v1/sessions/" + id + "/messages",
                  R"({"content":"x","stream":true,"model":"fake-drip-60-100"})", 0, {}, [&](const Streamed& s) {
                    std::lock_guard<std::mutex> lock(mu);
                    if (s.events.size() == 1) turn_id = Json(s.events[0].data)["id"].GetString();
                    served_by = s.headers.at("X-Served-By");
                    seen = s.events.size();
                  });
    ended_at = Clock::now();
  });
  // The turn and user events and 3 deltas.
  EXPECT_TRUE(WaitFor(5, [&] {
    std::lock_guard<std::mutex> lock(mu);
    return seen >= 5;
  }));
  std::pair<std::string, int> other;
  {
    std::lock_guard<std::mutex> lock(mu);
    other = OtherApp(served_by);
  }
  const int port = other.second;
  if (port == 0 || turn_id.size() != 16) {
    reader.join();
    FAIL() << "no other instance, or no turn id (" << turn_id << ")";
  }
  cancelled_at = Clock::now();
  FcgiResponse cancel = FcgiRequest(port, "POST", TurnPath(id, turn_id) + "/cancel", "{}", {}, 10000);
  reader.join();
  ASSERT_TRUE(cancel.ok) << cancel.error;
  ASSERT_EQ(cancel.status, 200) << cancel.body;
  EXPECT_TRUE(Json(cancel.body)["cancel_requested"].GetBool()) << cancel.body;
  const double bound_ms = std::chrono::duration<double, std::milli>(ended_at - cancelled_at).count();
  // The producer sees the cancel with its next write of events: within
  // [turns] flush_ms (250) plus a delta's gap (100), here with room.
  EXPECT_LT(bound_ms, 1500) << "the stream ended " << bound_ms << " ms after the cancel";
  std::printf("cancel to end of stream: %.0f ms\n", bound_ms);
  ASSERT_FALSE(live.events.empty());
  EXPECT_EQ(live.events.back().name, "error");
  rapidjson::Document err = Json(live.events.back().data);
  EXPECT_STREQ(err["error"]["code"].GetString(), "turn_cancelled") << live.events.back().data;
  ApiResponse state = api.Get(TurnPath(id, turn_id));
  EXPECT_STREQ(state["state"].GetString(), "cancelled") << state.body;
  std::vector<StoredMessage> h = History(id);
  ASSERT_EQ(h.size(), 2u);
  EXPECT_FALSE(h[1].content.empty());
  EXPECT_LT(h[1].content.size(), std::string("piece00 ").size() * 60) << "stopped before the end";
  ApiResponse page = api.Get("/v1/sessions/" + id + "/messages");
  EXPECT_STREQ(page["data"][1]["finish_reason"].GetString(), "cancelled");
  // The resumed stream says the same.
  Streamed resumed = Stream("GET", TurnPath(id, turn_id) + "/events", "");
  ASSERT_FALSE(resumed.events.empty());
  EXPECT_EQ(resumed.events.back().name, "error");
}

TEST_F(DurableTest, AKilledProducerLeavesItsTurnIncompleteWithinTheLeaseAndTheSessionGoesOn) {
  const std::string id = NewSession();
  std::string turn_id;
  std::thread reader([&] {
    Streamed s = Stream("POST", "/v1/sessions/" + id + "/messages",
                        R"({"content":"x","stream":true,"model":"fake-drip-100-100"})", 6);
    if (!s.events.empty() && s.events[0].name == "turn") turn_id = Json(s.events[0].data)["id"].GetString();
  });
  reader.join();
  ASSERT_EQ(turn_id.size(), 16u);
  // The worker producing it, as its instance's scoreboard shows it.
  pid_t victim = 0;
  for (const auto& app : StackEnv::Get().apps()) {
    for (const WorkerThread& t : WorkerThreadsOf(app.first)) {
      if (!Handling({t}, "POST /v1/sessions/" + id + "/messages").empty()) victim = t.pid;
    }
  }
  ASSERT_GT(victim, 0) << "no worker had the turn in hand";
  std::this_thread::sleep_for(std::chrono::milliseconds(400));  // It stores a batch of events.
  const auto killed_at = Clock::now();
  ASSERT_EQ(kill(victim, SIGKILL), 0);
  // The lease here is 13.25 s (scripts/stack: the providers' longest
  // read_timeout_ms, 3 s, + flush_ms + move_wait_ms, 5 s, + 5 s); a read
  // after it ends the turn.
  ApiResponse state;
  EXPECT_TRUE(WaitFor(20, [&] {
    state = api.Get(TurnPath(id, turn_id));
    return state.status == 200 && std::string(state["state"].GetString()) == "incomplete";
  })) << state.body;
  const double took = std::chrono::duration<double>(Clock::now() - killed_at).count();
  std::printf("kill -9 to incomplete: %.1f s\n", took);
  EXPECT_LT(took, 13.25 + 2.0);
  const int64_t stored = state["events"].GetInt64();
  EXPECT_GT(stored, 0) << "events written before the kill are kept";
  Streamed events = Stream("GET", TurnPath(id, turn_id) + "/events", "");
  ASSERT_EQ(events.events.size(), static_cast<size_t>(stored) + 1);
  EXPECT_EQ(events.events.back().name, "error");
  EXPECT_STREQ(Json(events.events.back().data)["error"]["code"].GetString(), "turn_incomplete");
  // The session takes the next turn.
  ApiResponse next = api.Append(id, "after the kill");
  EXPECT_EQ(next.status, 201) << next.body;
}

TEST_F(DurableTest, TurnRoutesCheckOwnershipAndInput) {
  const std::string id = NewSession();
  Streamed live =
      Stream("POST", "/v1/sessions/" + id + "/messages", R"({"content":"x","stream":true,"model":"fake-drip-2-10"})");
  ASSERT_FALSE(live.events.empty());
  const std::string turn_id = Json(live.events[0].data)["id"].GetString();
  EXPECT_EQ(api.Get(TurnPath(id, turn_id)).status, 200);
  // Not a turn id, another's turn id, an unknown one: 404 turn_not_found.
  EXPECT_EQ(api.Get(TurnPath(id, "xyz")).ErrorCode(), "turn_not_found");
  EXPECT_EQ(api.Get(TurnPath(id, "0000000000000001")).ErrorCode(), "turn_not_found");
  const std::string other = NewSession();
  EXPECT_EQ(api.Get(TurnPath(other, turn_id)).ErrorCode(), "turn_not_found");
  // Another user's session: as if it did not exist.
  ApiClient stranger(StackEnv::Get().url(), StrangerKey());
  EXPECT_EQ(stranger.Get(TurnPath(id, turn_id)).ErrorCode(), "session_not_found");
  EXPECT_EQ(stranger.Post(TurnPath(id, turn_id) + "/cancel", "{}").ErrorCode(), "session_not_found");
  // Bad resume points.
  EXPECT_EQ(api.Get(TurnPath(id, turn_id) + "/events?starting_after=-1").status, 400);
  EXPECT_EQ(api.Get(TurnPath(id, turn_id) + "/events?from=2").status, 400);
  // Methods.
  EXPECT_EQ(api.Post(TurnPath(id, turn_id), "{}").status, 405);
  // A cancel of a finished turn changes nothing.
  ApiResponse c = api.Post(TurnPath(id, turn_id) + "/cancel", "{}");
  ASSERT_EQ(c.status, 200) << c.body;
  EXPECT_STREQ(c["state"].GetString(), "completed");
  EXPECT_FALSE(c["cancel_requested"].GetBool());
}

}  // namespace
}  // namespace chatllm::testing
