#include "load/history.h"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <fstream>

#include "shard_router/hash.h"

namespace chatllm::load {

Outcome OutcomeOfStatus(int status) {
  if (status >= 200 && status < 300) return Outcome::kOk;
  if (status >= 400 && status < 500) return Outcome::kFail;
  return Outcome::kUnknown;
}

const char* OutcomeName(Outcome o) {
  switch (o) {
    case Outcome::kOk: return "ok";
    case Outcome::kFail: return "fail";
    case Outcome::kUnknown: return "unknown";
  }
  return "?";
}

uint64_t MessageHash(const std::string& role, const std::string& content) {
  return shard_router::Hash64(role + '\0' + content);
}

HistoryWriter::~HistoryWriter() { Close(); }

bool HistoryWriter::Open(const std::string& path) {
  file_ = std::fopen(path.c_str(), "w");
  return file_ != nullptr;
}

void HistoryWriter::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  if (file_) std::fclose(file_);
  file_ = nullptr;
}

void HistoryWriter::Write(const std::string& line) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!file_) return;
  std::fwrite(line.data(), 1, line.size(), file_);
  std::fputc('\n', file_);
}

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

void HistoryWriter::Session(const std::string& id) {
  if (!file_) return;
  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.StartObject();
  w.Key("type");
  w.String("session");
  w.Key("session");
  w.String(id);
  w.EndObject();
  Write(buf.GetString());
}

void HistoryWriter::Append(const AppendRecord& r) {
  if (!file_) return;
  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.StartObject();
  w.Key("type");
  w.String("append");
  w.Key("session");
  w.String(r.session);
  w.Key("client");
  w.Int(r.client);
  w.Key("content");
  w.String(r.content);
  w.Key("invoke");
  w.Int64(r.invoke_us);
  w.Key("complete");
  w.Int64(r.complete_us);
  w.Key("status");
  w.Int(r.status);
  w.Key("seq");
  w.Int64(r.seq);
  w.Key("outcome");
  w.String(OutcomeName(r.outcome));
  w.EndObject();
  Write(buf.GetString());
}

void HistoryWriter::Read(const ReadRecord& r) {
  if (!file_) return;
  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.StartObject();
  w.Key("type");
  w.String("read");
  w.Key("session");
  w.String(r.session);
  w.Key("client");
  w.Int(r.client);
  w.Key("limit");
  w.Int(r.limit);
  w.Key("invoke");
  w.Int64(r.invoke_us);
  w.Key("complete");
  w.Int64(r.complete_us);
  w.Key("messages");
  w.StartArray();
  for (const auto& [seq, hash] : r.messages) {
    w.StartArray();
    w.Int64(seq);
    w.Uint64(hash);
    w.EndArray();
  }
  w.EndArray();
  w.EndObject();
  Write(buf.GetString());
}

bool LoadHistory(const std::string& path, History* out, std::string* error) {
  std::ifstream in(path);
  if (!in) {
    *error = "cannot open " + path;
    return false;
  }
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty()) continue;
    rapidjson::Document d;
    d.Parse(line.c_str(), line.size());
    if (d.HasParseError() || !d.IsObject() || !d.HasMember("type")) {
      *error = path + ":" + std::to_string(lineno) + ": malformed record";
      return false;
    }
    std::string type = d["type"].GetString();
    if (type == "session") {
      out->sessions.push_back(d["session"].GetString());
    } else if (type == "append") {
      AppendRecord r;
      r.session = d["session"].GetString();
      r.client = d["client"].GetInt();
      r.content.assign(d["content"].GetString(), d["content"].GetStringLength());
      r.invoke_us = d["invoke"].GetInt64();
      r.complete_us = d["complete"].GetInt64();
      r.status = d["status"].GetInt();
      r.seq = d["seq"].GetInt64();
      r.outcome = OutcomeOfStatus(r.status);
      out->appends.push_back(std::move(r));
    } else if (type == "read") {
      ReadRecord r;
      r.session = d["session"].GetString();
      r.client = d["client"].GetInt();
      r.limit = d["limit"].GetInt();
      r.invoke_us = d["invoke"].GetInt64();
      r.complete_us = d["complete"].GetInt64();
      for (const auto& m : d["messages"].GetArray()) r.messages.emplace_back(m[0].GetInt64(), m[1].GetUint64());
      out->reads.push_back(std::move(r));
    }
  }
  return true;
}

}  // namespace chatllm::load
