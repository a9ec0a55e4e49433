#pragma once

// Private to the base room: the INI reader behind ParseConfig (config.cc).

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace chatllm {

// `s` without the blanks (spaces, tabs, CR) around it.
std::string Trim(std::string_view s);

struct IniEntry {
  std::string value;
  int line = 0;
  bool used = false;
};

// Minimal INI: "[section]", "key = value", comments (a ';' or '#' at the
// start of a line or after a space or tab: "port = 3307 ; x" is port 3307;
// one inside a word stays, so a value cannot hold " ;" or " #" and secrets
// belong in *_file). Keys and sections are case-sensitive; a repeated key or
// section is an error rather than a silent override. Every error throws
// ConfigError naming the file, line, section and key.
class Ini {
 public:
  Ini(std::string_view text, std::string path);

  [[noreturn]] void Fail(int line, const std::string& section, const std::string& key, const std::string& what) const;

  const std::vector<std::string>& sections() const { return order_; }
  bool HasSection(const std::string& s) const { return sections_.count(s) > 0; }
  // The entry for section/key, marked used; nullptr when absent.
  const IniEntry* Find(const std::string& section, const std::string& key);
  std::string String(const std::string& section, const std::string& key, std::string def, bool allow_empty = true);
  // `why_max`, if given, says where the maximum comes from (the message
  // names it when the value is out of range).
  int64_t Int(const std::string& section, const std::string& key, int64_t def, int64_t min, int64_t max,
              const std::string& why_max = "");
  double Double(const std::string& section, const std::string& key, double def, double min, double max);
  // Throws on the first key nobody asked for: a typo must not be ignored.
  void CheckAllUsed() const;
  int SectionLine(const std::string& s) const { return sections_.at(s).line; }
  const std::string& path() const { return path_; }

 private:
  struct Section {
    int line = 0;
    std::map<std::string, IniEntry> keys;
  };
  std::string path_;
  std::map<std::string, Section> sections_;
  std::vector<std::string> order_;
};

}  // namespace chatllm
