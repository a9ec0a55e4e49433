#pragma once

#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace chatllm::load {

// What a client knows about a write once its request ends.
enum class Outcome {
  kOk,       // 2xx: acknowledged; must be stored exactly once.
  kFail,     // 4xx: refused; must not be stored.
  kUnknown,  // 5xx, timeout, reset: may be stored at most once.
};

// The outcome of an answer with `status` and error `code` ("" for none).
// 409 idempotency_key_in_use is unknown, not refused: the request it
// collided with (same key) may store the write.
Outcome OutcomeOf(int status, const std::string& code = "");
const char* OutcomeName(Outcome o);

// Times are microseconds since the load run started (one steady clock).
struct AppendRecord {
  std::string session;
  int client = 0;
  // Unique per run unless the load sent shared texts (--identical): then
  // only `seq` tells which stored message is this append's.
  std::string content;
  std::string key;  // Idempotency-Key sent, "" for none: records with one key are one request.
  // The X-Request-Id of each attempt (the app stores it with the message it
  // writes, so a stored message names the request that wrote it).
  std::vector<std::string> request_ids;
  int64_t invoke_us = 0;
  int64_t complete_us = 0;
  int status = 0;
  std::string code;           // error.code of an error answer, "" otherwise.
  int64_t seq = 0;            // Acknowledged user seq (kOk only).
  int64_t assistant_seq = 0;  // Acknowledged answer seq (kOk only; 0 if not known).
  bool streamed = false;      // Sent with "stream": true.
  bool cut = false;           // The client hung up mid-stream (before any retry).
  // A cut stream the client then resumed (GET .../turns/{turn}/events from
  // the last event it saw) to the end: the answer's seq the resumed stream
  // named, and the text the client assembled (before the cut + resumed).
  // 0: not resumed, or it did not end with the answer.
  int64_t resumed_seq = 0;
  std::string resumed_text;
  Outcome outcome = Outcome::kUnknown;
};

// POST /v1/sessions as a client saw it.
struct CreateRecord {
  int client = 0;
  std::string key;  // "" for none.
  std::string id;   // The session id answered (2xx only).
  int64_t invoke_us = 0;
  int64_t complete_us = 0;
  int status = 0;
  bool replayed = false;  // Idempotent-Replayed: true.
};

// DELETE /v1/sessions/{id} as a client saw it.
struct DeleteRecord {
  std::string session;
  int client = 0;
  int64_t invoke_us = 0;
  int64_t complete_us = 0;
  int status = 0;
};

// A page read during the run: (seq, MessageHash) of each message returned.
struct ReadRecord {
  std::string session;
  int client = 0;
  int limit = 0;  // The page size asked for; a shorter page is the whole history; 0: GET of the session.
  int64_t invoke_us = 0;
  int64_t complete_us = 0;
  int status = 200;
  std::vector<std::pair<int64_t, uint64_t>> messages;
};

// GET /v1/sessions (the caller's sessions, newest first) as a client saw it.
struct ListRecord {
  int client = 0;
  int64_t invoke_us = 0;
  int64_t complete_us = 0;
  std::vector<std::string> ids;
};

// Identity of a stored message for prefix comparison.
uint64_t MessageHash(const std::string& role, const std::string& content);

// Appends history records as JSON lines; thread-safe. One line per event:
//   {"type":"session","session":ID}
//   {"type":"append","session":ID,"client":N,"content":S,"key":S,"invoke":T,"complete":T,
//    "status":N,"code":S,"seq":N,"aseq":N,"stream":B,"cut":B,"outcome":"ok|fail|unknown",
//    "rseq":N,"rtext":S (a resumed cut stream)}
//   {"type":"create","client":N,"key":S,"id":ID,"invoke":T,"complete":T,"status":N,"replayed":B}
//   {"type":"delete","session":ID,"client":N,"invoke":T,"complete":T,"status":N}
//   {"type":"read","session":ID,"client":N,"limit":N,"invoke":T,"complete":T,
//    "status":N,"messages":[[seq,hash],...]}
//   {"type":"list","client":N,"invoke":T,"complete":T,"ids":[ID,...]}
// (appends also carry "rids": the X-Request-Id of each attempt)
class HistoryWriter {
 public:
  HistoryWriter() = default;
  ~HistoryWriter();
  // Creates or truncates `path`.
  bool Open(const std::string& path);
  bool enabled() const { return file_ != nullptr; }
  void Session(const std::string& id);
  void Append(const AppendRecord& r);
  void Create(const CreateRecord& r);
  void Delete(const DeleteRecord& r);
  void Read(const ReadRecord& r);
  void List(const ListRecord& r);
  void Close();

 private:
  void Write(const std::string& line);
  std::mutex mu_;
  FILE* file_ = nullptr;
};

struct History {
  std::vector<std::string> sessions;
  std::vector<AppendRecord> appends;
  std::vector<CreateRecord> creates;
  std::vector<DeleteRecord> deletes;
  std::vector<ReadRecord> reads;
  std::vector<ListRecord> lists;
};

// Reads a history file written by HistoryWriter (one load run: its times
// share one clock). Returns false with *error on a malformed line.
bool LoadHistory(const std::string& path, History* out, std::string* error);

}  // namespace chatllm::load
