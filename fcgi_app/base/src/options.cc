#include "base/options.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <set>

namespace chatllm {

namespace {

constexpr size_t kWidth = 80;      // Help lines are wrapped to this many columns.
constexpr size_t kMaxColumn = 28;  // A longer entry puts its help on the next line.
constexpr std::string_view kHelpEntry = "-h, --help";

bool IsFlag(const OptionSpec& o) { return o.value_name.empty(); }

// "--name VALUE" or "--name".
std::string OptionText(const OptionSpec& o) { return IsFlag(o) ? "--" + o.name : "--" + o.name + " " + o.value_name; }

// Appends `text` wrapped at kWidth, every line indented by `indent`
// columns except the first, which starts at column `first_column` (the
// caller has written that much of it already).
void AppendWrapped(std::string_view text, size_t indent, size_t first_column, std::string* out) {
  size_t column = first_column;
  bool line_empty = true;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find(' ', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view word = text.substr(pos, end - pos);
    pos = end + 1;
    if (word.empty()) continue;
    if (!line_empty && column + 1 + word.size() > kWidth) {
      out->push_back('\n');
      out->append(indent, ' ');
      column = indent;
      line_empty = true;
    }
    if (!line_empty) {
      out->push_back(' ');
      ++column;
    }
    out->append(word);
    column += word.size();
    line_empty = false;
  }
  out->push_back('\n');
}

// Each '\n'-separated line of `text` wrapped on its own; an empty line stays.
void AppendParagraphs(std::string_view text, std::string* out) {
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    AppendWrapped(text.substr(pos, end - pos), 0, 0, out);
    pos = end + 1;
  }
}

struct Entry {
  std::string name;
  std::string help;
};

// A two-column list: names padded to a common width, help wrapped beside.
void AppendEntries(const std::vector<Entry>& entries, size_t column, std::string* out) {
  for (const Entry& e : entries) {
    out->append("  ").append(e.name);
    if (e.help.empty()) {
      out->push_back('\n');
      continue;
    }
    const size_t text_column = 2 + column + 2;
    if (e.name.size() > column) {
      out->push_back('\n');
      out->append(text_column, ' ');
    } else {
      out->append(column - e.name.size() + 2, ' ');
    }
    AppendWrapped(e.help, text_column, text_column, out);
  }
}

// The commands from the root to the one `path` names, or empty if a word
// of `path` names no subcommand.
std::vector<const CommandSpec*> Resolve(const CommandSpec& root, const std::vector<std::string>& path) {
  std::vector<const CommandSpec*> chain{&root};
  for (const std::string& word : path) {
    const CommandSpec* next = nullptr;
    for (const CommandSpec& sub : chain.back()->subcommands) {
      if (sub.name == word) next = &sub;
    }
    if (!next) return {};
    chain.push_back(next);
  }
  return chain;
}

// The words of `chain[from..]`, each followed by what it requires (for the
// last: every argument and option), as in "add-shard NAME --host H [--weight W]".
std::string Synopsis(const std::vector<const CommandSpec*>& chain, size_t from) {
  std::string s;
  for (size_t i = from; i < chain.size(); ++i) {
    const CommandSpec& c = *chain[i];
    const bool last = i + 1 == chain.size();
    if (!s.empty()) s.push_back(' ');
    s += c.name;
    if (last) {
      for (const ArgumentSpec& a : c.arguments) s += a.optional ? " [" + a.name + "]" : " " + a.name;
    }
    for (const OptionSpec& o : c.options) {
      if (o.required) {
        s += " " + OptionText(o);
      } else if (last) {
        s += " [" + OptionText(o) + "]";
      }
    }
    if (last && !c.subcommands.empty()) s += " COMMAND [ARGS]";
  }
  return s;
}

// Every leaf below `chain.back()`, as a chain from the root.
void CollectLeaves(std::vector<const CommandSpec*>* chain, std::vector<std::vector<const CommandSpec*>>* out) {
  for (const CommandSpec& sub : chain->back()->subcommands) {
    chain->push_back(&sub);
    if (sub.subcommands.empty()) {
      out->push_back(*chain);
    } else {
      CollectLeaves(chain, out);
    }
    chain->pop_back();
  }
}

std::string CommandName(const std::vector<const CommandSpec*>& chain) {
  std::string s;
  for (const CommandSpec* c : chain) s += (s.empty() ? "" : " ") + c->name;
  return s;
}

std::string HelpOf(const std::vector<const CommandSpec*>& chain) {
  const CommandSpec& command = *chain.back();
  const CommandSpec& root = *chain.front();
  std::string out = "usage: " + Synopsis(chain, 0) + "\n";
  if (!command.description.empty()) {
    out += "\n";
    AppendParagraphs(command.description, &out);
  }

  std::vector<Entry> arguments;
  for (const ArgumentSpec& a : command.arguments) {
    if (!a.help.empty()) arguments.push_back({a.name, a.help});
  }
  // Its own options first, then those it inherits, nearest first.
  std::vector<Entry> options;
  for (size_t i = chain.size(); i-- > 0;) {
    for (const OptionSpec& o : chain[i]->options) options.push_back({OptionText(o), o.help});
  }
  options.push_back({std::string(kHelpEntry), "print this help"});
  if (!root.version.empty()) options.push_back({"--version", "print the version"});
  std::vector<Entry> commands;
  std::vector<const CommandSpec*> walk = chain;
  std::vector<std::vector<const CommandSpec*>> leaves;
  CollectLeaves(&walk, &leaves);
  for (const auto& leaf : leaves) commands.push_back({Synopsis(leaf, chain.size()), leaf.back()->summary});

  // One column for the whole page, as wide as its longest name that fits.
  size_t column = 0;
  for (const auto* list : {&arguments, &options, &commands}) {
    for (const Entry& e : *list) {
      if (e.name.size() <= kMaxColumn && e.name.size() > column) column = e.name.size();
    }
  }
  if (!arguments.empty()) {
    out += "\nArguments:\n";
    AppendEntries(arguments, column, &out);
  }
  out += "\nOptions:\n";
  AppendEntries(options, column, &out);
  if (!commands.empty()) {
    out += "\nCommands:\n";
    AppendEntries(commands, column, &out);
  }
  if (!command.notes.empty()) {
    out += "\n";
    AppendParagraphs(command.notes, &out);
  }
  return out;
}

bool IsOptionName(std::string_view name) {
  if (name.empty() || name.front() == '-') return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  }
  return true;
}

std::string CheckCommand(std::vector<const CommandSpec*>* chain, std::set<std::string>* inherited) {
  const CommandSpec& c = *chain->back();
  const std::string where = CommandName(*chain) + ": ";
  if (c.name.empty() || c.name.front() == '-') return where + "a command name must be a word";
  if (chain->size() > 1 && !c.version.empty()) return where + "only the program has a version";
  std::set<std::string> names = *inherited;
  for (const OptionSpec& o : c.options) {
    if (!IsOptionName(o.name)) return where + "'" + o.name + "' is not an option name ([a-z0-9-])";
    if (o.name == "help" || o.name == "version") return where + "--" + o.name + " is built in";
    if (!names.insert(o.name).second) return where + "--" + o.name + " is declared twice";
  }
  std::set<std::string> arguments;
  bool optional_seen = false;
  for (const ArgumentSpec& a : c.arguments) {
    if (a.name.empty()) return where + "an argument needs a name";
    if (!arguments.insert(a.name).second) return where + a.name + " is declared twice";
    if (optional_seen && !a.optional) return where + "required " + a.name + " follows an optional argument";
    optional_seen |= a.optional;
  }
  if (c.subcommands.empty()) return c.run ? "" : where + "a command without subcommands needs a run";
  if (!c.arguments.empty()) return where + "a command with subcommands takes no arguments";
  if (c.run) return where + "a command with subcommands has no run of its own";
  std::set<std::string> subcommands;
  for (const CommandSpec& sub : c.subcommands) {
    if (!subcommands.insert(sub.name).second) return where + "command '" + sub.name + "' is declared twice";
    chain->push_back(&sub);
    std::string error = CheckCommand(chain, &names);
    chain->pop_back();
    if (!error.empty()) return error;
  }
  return "";
}

}  // namespace

bool ParsedArgs::Has(std::string_view option) const { return options_.find(option) != options_.end(); }

std::string ParsedArgs::Value(std::string_view option, std::string_view fallback) const {
  auto it = options_.find(option);
  return it == options_.end() ? std::string(fallback) : it->second;
}

std::string ParsedArgs::Argument(std::string_view name) const {
  auto it = arguments_.find(name);
  return it == arguments_.end() ? std::string() : it->second;
}

// One parse: walks the words left to right, descending into subcommands as
// they are named. Stateless between parses.
class CommandLineParser {
 public:
  explicit CommandLineParser(const CommandSpec& root) : chain_{&root} {}

  ParseResult Parse(const std::vector<std::string>& args) {
    bool options_done = false;
    std::vector<std::string> words;
    for (size_t i = 0; i < args.size(); ++i) {
      const std::string& arg = args[i];
      if (options_done || arg.size() < 2 || arg[0] != '-') {
        if (!Word(arg, &words)) return result_;
        continue;
      }
      if (arg == "--") {
        options_done = true;
        continue;
      }
      if (arg == "-h") return Help();
      if (arg[1] != '-') {  // "-x": not an option (see options.h).
        if (!Word(arg, &words)) return result_;
        continue;
      }
      const size_t eq = arg.find('=');
      const std::string name = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
      const bool inline_value = eq != std::string::npos;
      const bool version = name == "version" && !chain_.front()->version.empty();
      if (name == "help" || version) {
        if (inline_value) return Usage("--" + name + " takes no value");
        if (version) return Version();
        return Help();
      }
      const OptionSpec* option = FindOption(name);
      if (!option) return Usage("unknown option --" + name);
      if (IsFlag(*option)) {
        if (inline_value) return Usage("--" + name + " takes no value");
        result_.args.options_[name] = "";
      } else if (inline_value) {
        result_.args.options_[name] = arg.substr(eq + 1);
      } else if (i + 1 < args.size()) {
        result_.args.options_[name] = args[++i];
      } else {
        return Usage("--" + name + " needs a value (" + OptionText(*option) + ")");
      }
    }
    return Finish(words);
  }

 private:
  // A word selects a subcommand where one is expected, else it is a
  // positional argument. False (with result_ set) for an unknown command.
  bool Word(const std::string& word, std::vector<std::string>* words) {
    const CommandSpec& current = *chain_.back();
    if (current.subcommands.empty()) {
      words->push_back(word);
      return true;
    }
    for (const CommandSpec& sub : current.subcommands) {
      if (sub.name == word) {
        chain_.push_back(&sub);
        result_.args.command_path_.push_back(word);
        return true;
      }
    }
    Usage("unknown command '" + word + "'");
    return false;
  }

  ParseResult Finish(const std::vector<std::string>& words) {
    const CommandSpec& command = *chain_.back();
    if (!command.subcommands.empty()) {  // Nothing chosen: show what there is.
      result_.command = &command;
      result_.status = ParseResult::kUsageError;
      result_.text = HelpOf(chain_);
      return result_;
    }
    if (words.size() > command.arguments.size()) {
      return Usage("unexpected argument '" + words[command.arguments.size()] + "'");
    }
    for (size_t i = 0; i < command.arguments.size(); ++i) {
      const ArgumentSpec& a = command.arguments[i];
      if (i < words.size()) {
        result_.args.arguments_[a.name] = words[i];
      } else if (!a.optional) {
        return Usage(a.name + " is required");
      }
    }
    for (const CommandSpec* c : chain_) {
      for (const OptionSpec& o : c->options) {
        if (o.required && !result_.args.Has(o.name)) return Usage(OptionText(o) + " is required");
      }
    }
    result_.status = ParseResult::kRun;
    result_.command = &command;
    return result_;
  }

  // The nearest declaration along the chain (CheckCommandSpec makes it the only one).
  const OptionSpec* FindOption(std::string_view name) const {
    for (size_t i = chain_.size(); i-- > 0;) {
      for (const OptionSpec& o : chain_[i]->options) {
        if (o.name == name) return &o;
      }
    }
    return nullptr;
  }

  ParseResult Help() {
    result_.status = ParseResult::kHelp;
    result_.command = chain_.back();
    result_.text = HelpOf(chain_);
    return result_;
  }

  ParseResult Version() {
    result_.status = ParseResult::kVersion;
    result_.command = chain_.front();
    result_.text = chain_.front()->version + "\n";
    return result_;
  }

  ParseResult Usage(const std::string& message) {
    result_.status = ParseResult::kUsageError;
    result_.command = chain_.back();
    result_.text = chain_.front()->name + ": " + message + "\nTry '" + CommandName(chain_) + " --help'.\n";
    return result_;
  }

  std::vector<const CommandSpec*> chain_;
  ParseResult result_;
};

ParseResult ParseCommandLine(const CommandSpec& root, const std::vector<std::string>& args) {
  return CommandLineParser(root).Parse(args);
}

std::string CommandHelp(const CommandSpec& root, const std::vector<std::string>& path) {
  std::vector<const CommandSpec*> chain = Resolve(root, path);
  return chain.empty() ? std::string() : HelpOf(chain);
}

std::string CheckCommandSpec(const CommandSpec& root) {
  std::vector<const CommandSpec*> chain{&root};
  std::set<std::string> none;
  return CheckCommand(&chain, &none);
}

int RunCommandLine(const CommandSpec& root, int argc, char** argv) {
  const std::string error = CheckCommandSpec(root);
  if (!error.empty()) {
    std::fprintf(stderr, "%s: bad command-line declaration: %s\n", root.name.c_str(), error.c_str());
    return kExitFailure;
  }
  const ParseResult r = ParseCommandLine(root, std::vector<std::string>(argv + 1, argv + argc));
  switch (r.status) {
    case ParseResult::kRun:
      return r.command->run(r.args);
    case ParseResult::kHelp:
    case ParseResult::kVersion:
      std::fputs(r.text.c_str(), stdout);
      return kExitOk;
    case ParseResult::kUsageError:
      break;
  }
  std::fputs(r.text.c_str(), stderr);
  return kExitUsage;
}

std::optional<int64_t> ParseInteger(std::string_view text) {
  const std::string s(text);
  if (s.empty() || !(s[0] == '-' || s[0] == '+' || (s[0] >= '0' && s[0] <= '9'))) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno != 0 || *end != '\0') return std::nullopt;
  return v;
}

std::optional<double> ParseNumber(std::string_view text) {
  const std::string s(text);
  // strtod also reads "inf", "nan" and hex floats, which are not numbers here.
  if (s.empty() || s.find_first_not_of("0123456789+-.eE") != std::string::npos) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s.c_str(), &end);
  if (errno != 0 || *end != '\0') return std::nullopt;
  return v;
}

}  // namespace chatllm
