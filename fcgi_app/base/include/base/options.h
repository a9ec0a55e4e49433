#pragma once

// One way to declare a program's command line: its options, positional
// arguments and subcommands, as data. The parser and the `--help` text are
// both generated from that declaration, so the help cannot drift from what
// is accepted. chatllm-fcgi, shardctl and chatllm-admin use it; why it is
// not Poco::Util::OptionSet is in docs/architecture.md, "Command lines".
//
// Error style: no exceptions. A command line that does not fit the
// declaration is a value: ParseCommandLine returns a ParseResult whose
// status is kUsageError and whose text is the message for the user. A
// declaration that contradicts itself is found by CheckCommandSpec (a
// string, empty when the declaration is sound). Exceptions thrown by a
// command's `run` pass through RunCommandLine untouched.
//
// The accepted forms (tests/unit/base/options_test.cc pins each):
//   --name value, --name=value   an option that takes a value; the value is
//                                the next argument whatever it looks like,
//                                so `--label --x` gives the label "--x"
//   --name                       a flag
//   -h, --help                   the help of the command selected so far
//   --version                    the version line, where the root has one
//   --                           everything after it is a word, not an option
//   word                         selects a subcommand, else a positional
// Options may come anywhere after the word that selects their command, and
// an option of a command is also accepted by all commands below it (so
// `--config FILE` works before or after the subcommand). Given twice, the
// last value wins. There are no other short options: a word such as `-x` is
// a positional argument (user and shard names may begin with '-'). Words
// are read left to right, and the first usage error or help wins.
//
// No global state: every function here may run on any thread at once.

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace chatllm {

// The exit statuses every chatllm program uses.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // The command ran and failed.
inline constexpr int kExitUsage = 2;    // The command line (or the config) is wrong.

// The declarations are aggregates, written with designated initializers.
// Every field has a default member initializer: without one, GCC 12 warns
// about each field a designated initializer leaves out.

// An option, `--name VALUE` or the flag `--name`.
struct OptionSpec {
  std::string name{};        // Without the dashes: "config". [a-z0-9-], not "help" or "version".
  std::string value_name{};  // "FILE": the option takes a value. Empty: it is a flag.
  std::string help{};        // One sentence for --help (wrapped there).
  bool required = false;     // The command line is a usage error without it.
};

// A positional argument. A command's optional arguments come after its
// required ones.
struct ArgumentSpec {
  std::string name{};  // Upper case, as shown in the usage line: "SESSION_ID".
  std::string help{};  // Shown under "Arguments:" when not empty.
  bool optional = false;
};

class ParsedArgs;

// A program or one of its subcommands. A command either has subcommands
// (and then no arguments and no `run`: a word must select one of them) or
// is a leaf with a `run`.
struct CommandSpec {
  std::string name{};         // The word that selects it; for the root, the program's name.
  std::string summary{};      // One line for its parent's command list.
  std::string description{};  // Its --help text under the usage line; '\n' breaks a line.
  std::vector<OptionSpec> options{};
  std::vector<ArgumentSpec> arguments{};
  std::vector<CommandSpec> subcommands{};
  // Runs the command with what was parsed; returns the exit status.
  std::function<int(const ParsedArgs&)> run{};
  std::string notes{};    // Printed last in its --help; '\n' breaks a line.
  std::string version{};  // Root only: non-empty adds `--version`, which prints it.
};

// What a command line said, by declared name. Only what was declared can
// be asked for; asking for anything else is a programming error that
// returns the "absent" answer.
class ParsedArgs {
 public:
  // True if the option was given (a flag, or an option with its value).
  bool Has(std::string_view option) const;
  // The option's value; `fallback` if it was not given.
  std::string Value(std::string_view option, std::string_view fallback = "") const;
  // The positional argument's value; empty if an optional one was not given.
  std::string Argument(std::string_view name) const;
  // The words that selected the command below the root: {"key", "create"}.
  const std::vector<std::string>& command_path() const { return command_path_; }

 private:
  friend class CommandLineParser;
  std::map<std::string, std::string, std::less<>> options_;
  std::map<std::string, std::string, std::less<>> arguments_;
  std::vector<std::string> command_path_;
};

struct ParseResult {
  enum Status {
    kRun,         // `command` is a leaf and `args` what to run it with.
    kHelp,        // --help was asked for: print `text` on stdout, exit 0.
    kVersion,     // --version: print `text` on stdout, exit 0.
    kUsageError,  // print `text` on stderr, exit kExitUsage.
  };
  Status status = kUsageError;
  // The command selected (the deepest reached, for kHelp and kUsageError).
  // Points into the root given to ParseCommandLine.
  const CommandSpec* command = nullptr;
  ParsedArgs args;
  // Ends with '\n'. A usage error is "PROGRAM: what is wrong" and a line
  // naming the --help to read, or, when a subcommand is missing, the help.
  std::string text;
};

// Parses `args` (argv without argv[0]) against `root`, which must pass
// CheckCommandSpec and outlive the result. Pure: prints nothing.
ParseResult ParseCommandLine(const CommandSpec& root, const std::vector<std::string>& args);

// The --help text of the command reached from `root` by the words of
// `path` (empty: the root's); empty if a word of `path` names no command.
std::string CommandHelp(const CommandSpec& root, const std::vector<std::string>& path);

// Empty if `root` is a sound declaration; else what is wrong with it, e.g.
// "shardctl ring: --config is declared twice". Checks option and argument
// names, reserved names (help, version), leaves without run, commands
// with both subcommands and arguments, required arguments after optional ones.
std::string CheckCommandSpec(const CommandSpec& root);

// The whole command line of a program: checks `root`, parses argv, prints
// the help, version or usage error, or calls the selected command's run.
// Returns the exit status: run's, kExitOk after help or version, kExitUsage
// on a usage error, kExitFailure if `root` fails CheckCommandSpec.
int RunCommandLine(const CommandSpec& root, int argc, char** argv);

// Strict conversions of option values: the whole text must be the number
// (optional sign, decimal digits; for ParseNumber also a fraction or
// exponent), else nullopt. Unlike atoi, "10x" and "" are not numbers.
std::optional<int64_t> ParseInteger(std::string_view text);
std::optional<double> ParseNumber(std::string_view text);

}  // namespace chatllm
