#include "load/history.h"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <fstream>

#include "shard_router/hash.h"

namespace chatllm::load {

Outcome OutcomeOf(int status, const std::string& code) {
  if (status >= 200 && status < 300) return Outcome::kOk;
  if (status == 409 && code == "idempotency_key_in_use") return Outcome::kUnknown;
  if (status >= 400 && status < 500) return Outcome::kFail;
  return Outcome::kUnknown;
}

const char* OutcomeName(Outcome o) {
  switch (o) {
    case Outcome::kOk:
      return "ok";
    case Outcome::kFail:
      return "fail";
    case Outcome::kUnknown:
      return "unknown";
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
  w.Key("key");
  w.String(r.key);
  w.Key("rids");
  w.StartArray();
  for (const std::string& id : r.request_ids) w.String(id);
  w.EndArray();
  w.Key("invoke");
  w.Int64(r.invoke_us);
  w.Key("complete");
  w.Int64(r.complete_us);
  w.Key("status");
  w.Int(r.status);
  w.Key("code");
  w.String(r.code);
  w.Key("seq");
  w.Int64(r.seq);
  w.Key("aseq");
  w.Int64(r.assistant_seq);
  w.Key("stream");
  w.Bool(r.streamed);
  w.Key("cut");
  w.Bool(r.cut);
  w.Key("outcome");
  w.String(OutcomeName(r.outcome));
  if (r.resumed_seq != 0) {
    w.Key("rseq");
    w.Int64(r.resumed_seq);
    w.Key("rtext");
    w.String(r.resumed_text);
  }
  w.EndObject();
  Write(buf.GetString());
}

void HistoryWriter::Create(const CreateRecord& r) {
  if (!file_) return;
  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.StartObject();
  w.Key("type");
  w.String("create");
  w.Key("client");
  w.Int(r.client);
  w.Key("key");
  w.String(r.key);
  w.Key("id");
  w.String(r.id);
  w.Key("invoke");
  w.Int64(r.invoke_us);
  w.Key("complete");
  w.Int64(r.complete_us);
  w.Key("status");
  w.Int(r.status);
  w.Key("replayed");
  w.Bool(r.replayed);
  w.EndObject();
  Write(buf.GetString());
}

void HistoryWriter::Delete(const DeleteRecord& r) {
  if (!file_) return;
  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.StartObject();
  w.Key("type");
  w.String("delete");
  w.Key("session");
  w.String(r.session);
  w.Key("client");
  w.Int(r.client);
  w.Key("invoke");
  w.Int64(r.invoke_us);
  w.Key("complete");
  w.Int64(r.complete_us);
  w.Key("status");
  w.Int(r.status);
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
  w.Key("status");
  w.Int(r.status);
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

void HistoryWriter::List(const ListRecord& r) {
  if (!file_) return;
  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.StartObject();
  w.Key("type");
  w.String("list");
  w.Key("client");
  w.Int(r.client);
  w.Key("invoke");
  w.Int64(r.invoke_us);
  w.Key("complete");
  w.Int64(r.complete_us);
  w.Key("ids");
  w.StartArray();
  for (const std::string& id : r.ids) w.String(id);
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
    // Members written by older versions of the load program may be absent.
    auto text = [&d](const char* name) {
      return d.HasMember(name) && d[name].IsString() ? std::string(d[name].GetString(), d[name].GetStringLength())
                                                     : std::string();
    };
    auto int64 = [&d](const char* name) { return d.HasMember(name) && d[name].IsInt64() ? d[name].GetInt64() : 0; };
    auto flag = [&d](const char* name) { return d.HasMember(name) && d[name].IsBool() && d[name].GetBool(); };
    const std::string type = text("type");
    if (type == "session") {
      out->sessions.push_back(text("session"));
    } else if (type == "append") {
      AppendRecord r;
      r.session = text("session");
      r.client = static_cast<int>(int64("client"));
      r.content = text("content");
      r.key = text("key");
      if (d.HasMember("rids") && d["rids"].IsArray()) {
        for (const auto& id : d["rids"].GetArray()) {
          if (id.IsString()) r.request_ids.emplace_back(id.GetString(), id.GetStringLength());
        }
      }
      r.invoke_us = int64("invoke");
      r.complete_us = int64("complete");
      r.status = static_cast<int>(int64("status"));
      r.code = text("code");
      r.seq = int64("seq");
      r.assistant_seq = int64("aseq");
      r.streamed = flag("stream");
      r.cut = flag("cut");
      r.resumed_seq = int64("rseq");
      r.resumed_text = text("rtext");
      r.outcome = OutcomeOf(r.status, r.code);
      out->appends.push_back(std::move(r));
    } else if (type == "create") {
      CreateRecord r;
      r.client = static_cast<int>(int64("client"));
      r.key = text("key");
      r.id = text("id");
      r.invoke_us = int64("invoke");
      r.complete_us = int64("complete");
      r.status = static_cast<int>(int64("status"));
      r.replayed = flag("replayed");
      out->creates.push_back(std::move(r));
    } else if (type == "delete") {
      DeleteRecord r;
      r.session = text("session");
      r.client = static_cast<int>(int64("client"));
      r.invoke_us = int64("invoke");
      r.complete_us = int64("complete");
      r.status = static_cast<int>(int64("status"));
      out->deletes.push_back(std::move(r));
    } else if (type == "read") {
      ReadRecord r;
      r.session = d["session"].GetString();
      r.client = d["client"].GetInt();
      r.limit = d["limit"].GetInt();
      r.invoke_us = d["invoke"].GetInt64();
      r.complete_us = d["complete"].GetInt64();
      r.status = d.HasMember("status") ? static_cast<int>(int64("status")) : 200;
      for (const auto& m : d["messages"].GetArray()) r.messages.emplace_back(m[0].GetInt64(), m[1].GetUint64());
      out->reads.push_back(std::move(r));
    } else if (type == "list") {
      ListRecord r;
      r.client = static_cast<int>(int64("client"));
      r.invoke_us = int64("invoke");
      r.complete_us = int64("complete");
      if (d.HasMember("ids") && d["ids"].IsArray()) {
        for (const auto& id : d["ids"].GetArray()) {
          if (id.IsString()) r.ids.emplace_back(id.GetString(), id.GetStringLength());
        }
      }
      out->lists.push_back(std::move(r));
    }
  }
  return true;
}

}  // namespace chatllm::load
