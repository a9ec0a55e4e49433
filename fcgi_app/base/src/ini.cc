#include "ini.h"

#include <cerrno>
#include <cstdlib>
#include <sstream>

#include "base/config.h"

namespace chatllm {

std::string Trim(std::string_view s) {
  size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string_view::npos) return "";
  size_t e = s.find_last_not_of(" \t\r");
  return std::string(s.substr(b, e - b + 1));
}

namespace {

// A line without its comment: one starts with ';' or '#' at the start of
// the line or after a space or tab ("port = 3307 ; x" is port 3307). A ';' or
// '#' inside a word stays: a value cannot hold " ;" or " #" (secrets belong
// in *_file anyway).
std::string StripComment(const std::string& line) {
  for (size_t i = 0; i < line.size(); ++i) {
    if ((line[i] == ';' || line[i] == '#') && (i == 0 || line[i - 1] == ' ' || line[i - 1] == '\t')) {
      return Trim(std::string_view(line).substr(0, i));
    }
  }
  return line;
}

}  // namespace

Ini::Ini(std::string_view text, std::string path) : path_(std::move(path)) {
  std::istringstream in{std::string(text)};
  std::string raw;
  std::string current;
  int lineno = 0;
  while (std::getline(in, raw)) {
    ++lineno;
    std::string line = StripComment(Trim(raw));
    if (line.empty()) continue;
    if (line.front() == '[') {
      if (line.back() != ']') Fail(lineno, "", "", "section header is missing ']'");
      current = Trim(std::string_view(line).substr(1, line.size() - 2));
      if (current.empty()) Fail(lineno, "", "", "empty section name");
      if (sections_.count(current)) Fail(lineno, current, "", "section appears twice");
      sections_[current].line = lineno;
      order_.push_back(current);
      continue;
    }
    size_t eq = line.find('=');
    if (eq == std::string::npos) Fail(lineno, current, "", "expected 'key = value', got '" + line + "'");
    if (current.empty()) Fail(lineno, "", "", "key outside of any [section]");
    std::string key = Trim(std::string_view(line).substr(0, eq));
    std::string value = Trim(std::string_view(line).substr(eq + 1));
    if (key.empty()) Fail(lineno, current, "", "empty key");
    Section& sec = sections_[current];
    if (sec.keys.count(key)) Fail(lineno, current, key, "key appears twice in the section");
    sec.keys[key] = IniEntry{value, lineno, false};
  }
}

void Ini::Fail(int line, const std::string& section, const std::string& key, const std::string& what) const {
  std::string msg = path_;
  if (line > 0) msg.append(":").append(std::to_string(line));
  msg += ": ";
  if (!section.empty()) msg.append("[").append(section).append("] ");
  if (!key.empty()) msg.append(key).append(": ");
  msg += what;
  throw ConfigError(msg);
}

const IniEntry* Ini::Find(const std::string& section, const std::string& key) {
  auto s = sections_.find(section);
  if (s == sections_.end()) return nullptr;
  auto k = s->second.keys.find(key);
  if (k == s->second.keys.end()) return nullptr;
  k->second.used = true;
  return &k->second;
}

std::string Ini::String(const std::string& section, const std::string& key, std::string def, bool allow_empty) {
  const IniEntry* e = Find(section, key);
  if (!e) return def;
  if (!allow_empty && e->value.empty()) Fail(e->line, section, key, "must not be empty");
  return e->value;
}

int64_t Ini::Int(const std::string& section, const std::string& key, int64_t def, int64_t min, int64_t max,
                 const std::string& why_max) {
  const IniEntry* e = Find(section, key);
  if (!e) return def;
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(e->value.c_str(), &end, 10);
  if (e->value.empty() || *end != '\0' || errno != 0 || v < min || v > max) {
    Fail(e->line, section, key,
         "'" + e->value + "' is not an integer in " + std::to_string(min) + ".." + std::to_string(max) +
             (why_max.empty() ? "" : " (" + why_max + ")"));
  }
  return v;
}

double Ini::Double(const std::string& section, const std::string& key, double def, double min, double max) {
  const IniEntry* e = Find(section, key);
  if (!e) return def;
  char* end = nullptr;
  double v = std::strtod(e->value.c_str(), &end);
  if (e->value.empty() || *end != '\0' || !(v >= min && v <= max)) {
    std::ostringstream range;
    range << min << ".." << max;
    Fail(e->line, section, key, "'" + e->value + "' is not a number in " + range.str());
  }
  return v;
}

void Ini::CheckAllUsed() const {
  for (const std::string& name : order_) {
    for (const auto& [key, entry] : sections_.at(name).keys) {
      if (!entry.used) Fail(entry.line, name, key, "unknown key");
    }
  }
}

}  // namespace chatllm
