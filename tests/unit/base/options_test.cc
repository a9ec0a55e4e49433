#include "base/options.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace chatllm {
namespace {

// A program shaped like shardctl and chatllm-admin: a required global
// option, a leaf with flags, values and an optional argument, and a group.
CommandSpec Tool() {
  auto ok = [](const ParsedArgs&) { return 0; };
  return CommandSpec{
      .name = "tool",
      .description = "Does things to shards.",
      .options = {{"config", "FILE", "the config file", true}},
      .subcommands =
          {{.name = "run",
            .summary = "runs one thing",
            .description = "Runs NAME, and EXTRA if given.",
            .options = {{"dry-run", "", "count only"}, {"batch", "N", "rows per query (default 200)"}},
            .arguments = {{"NAME", "what to run"}, {"EXTRA", "", true}},
            .run = ok},
           {.name = "group",
            .description = "A group.",
            .subcommands = {{.name = "leaf", .summary = "a leaf of the group", .arguments = {{"ID"}}, .run = ok}}}},
      .notes = "Read the docs.",
      .version = "tool 1.0",
  };
}

ParseResult Parse(const CommandSpec& root, const std::vector<std::string>& args) {
  return ParseCommandLine(root, args);
}

TEST(OptionsTest, ToolIsASoundDeclaration) { EXPECT_EQ(CheckCommandSpec(Tool()), ""); }

TEST(OptionsTest, LongOptionWithTheValueInTheNextArgument) {
  const CommandSpec tool = Tool();
  ParseResult r = Parse(tool, {"--config", "c.ini", "run", "a"});
  ASSERT_EQ(r.status, ParseResult::kRun) << r.text;
  EXPECT_EQ(r.command, &tool.subcommands[0]);
  EXPECT_EQ(r.args.command_path(), std::vector<std::string>{"run"});
  EXPECT_EQ(r.args.Value("config"), "c.ini");
  EXPECT_EQ(r.args.Argument("NAME"), "a");
  EXPECT_EQ(r.args.Argument("EXTRA"), "");
  EXPECT_FALSE(r.args.Has("batch"));
  EXPECT_EQ(r.args.Value("batch", "200"), "200");
}

TEST(OptionsTest, LongOptionWithEquals) {
  const CommandSpec tool = Tool();
  ParseResult r = Parse(tool, {"--config=c.ini", "run", "--batch=5", "a"});
  ASSERT_EQ(r.status, ParseResult::kRun) << r.text;
  EXPECT_EQ(r.args.Value("config"), "c.ini");
  EXPECT_EQ(r.args.Value("batch"), "5");
  // Only the first '=' separates: the value keeps the others; an empty value is a value.
  r = Parse(tool, {"--config=a=b", "run", "--batch=", "a"});
  ASSERT_EQ(r.status, ParseResult::kRun) << r.text;
  EXPECT_EQ(r.args.Value("config"), "a=b");
  EXPECT_TRUE(r.args.Has("batch"));
  EXPECT_EQ(r.args.Value("batch", "200"), "");
}

TEST(OptionsTest, TheValueIsTheNextArgumentWhateverItLooksLike) {
  const CommandSpec tool = Tool();
  ParseResult r = Parse(tool, {"run", "--config", "--dry-run", "a", "--batch", "-5"});
  ASSERT_EQ(r.status, ParseResult::kRun) << r.text;
  EXPECT_EQ(r.args.Value("config"), "--dry-run");
  EXPECT_FALSE(r.args.Has("dry-run"));
  EXPECT_EQ(r.args.Value("batch"), "-5");
}

TEST(OptionsTest, Flags) {
  const CommandSpec tool = Tool();
  ParseResult r = Parse(tool, {"--config", "c", "run", "--dry-run", "a"});
  ASSERT_EQ(r.status, ParseResult::kRun) << r.text;
  EXPECT_TRUE(r.args.Has("dry-run"));
  EXPECT_EQ(r.args.Value("dry-run", "x"), "");
  r = Parse(tool, {"--config", "c", "run", "a"});
  ASSERT_EQ(r.status, ParseResult::kRun) << r.text;
  EXPECT_FALSE(r.args.Has("dry-run"));
}

TEST(OptionsTest, OptionsGoAnywhereAfterTheirCommandAndAmongArguments) {
  const CommandSpec tool = Tool();
  ParseResult r = Parse(tool, {"run", "a", "--config", "c", "--dry-run", "b"});
  ASSERT_EQ(r.status, ParseResult::kRun) << r.text;
  EXPECT_EQ(r.args.Value("config"), "c");
  EXPECT_EQ(r.args.Argument("NAME"), "a");
  EXPECT_EQ(r.args.Argument("EXTRA"), "b");
  // A subcommand's option before the word that selects it is not known yet.
  r = Parse(tool, {"--config", "c", "--dry-run", "run", "a"});
  EXPECT_EQ(r.status, ParseResult::kUsageError);
  EXPECT_EQ(r.text, "tool: unknown option --dry-run\nTry 'tool --help'.\n");
}

TEST(OptionsTest, TheLastValueWins) {
  const CommandSpec tool = Tool();
  ParseResult r = Parse(tool, {"--config", "a", "run", "x", "--config=b"});
  ASSERT_EQ(r.status, ParseResult::kRun) << r.text;
  EXPECT_EQ(r.args.Value("config"), "b");
}

TEST(OptionsTest, DoubleDashEndsTheOptions) {
  const CommandSpec tool = Tool();
  ParseResult r = Parse(tool, {"--config", "c", "run", "--", "--dry-run", "--help"});
  ASSERT_EQ(r.status, ParseResult::kRun) << r.text;
  EXPECT_FALSE(r.args.Has("dry-run"));
  EXPECT_EQ(r.args.Argument("NAME"), "--dry-run");
  EXPECT_EQ(r.args.Argument("EXTRA"), "--help");
}

TEST(OptionsTest, ASingleDashWordIsAnArgument) {
  // User and shard names may begin with '-': only -h is a short option.
  const CommandSpec tool = Tool();
  ParseResult r = Parse(tool, {"--config", "c", "run", "-bob", "-"});
  ASSERT_EQ(r.status, ParseResult::kRun) << r.text;
  EXPECT_EQ(r.args.Argument("NAME"), "-bob");
  EXPECT_EQ(r.args.Argument("EXTRA"), "-");
}

TEST(OptionsTest, NestedSubcommands) {
  const CommandSpec tool = Tool();
  ParseResult r = Parse(tool, {"group", "leaf", "7", "--config", "c"});
  ASSERT_EQ(r.status, ParseResult::kRun) << r.text;
  EXPECT_EQ(r.command, &tool.subcommands[1].subcommands[0]);
  EXPECT_EQ(r.args.command_path(), (std::vector<std::string>{"group", "leaf"}));
  EXPECT_EQ(r.args.Argument("ID"), "7");
}

// --- usage errors: one line, then the --help to read -------------------------

void ExpectUsageError(const std::vector<std::string>& args, const std::string& text) {
  const CommandSpec tool = Tool();
  ParseResult r = Parse(tool, args);
  EXPECT_EQ(r.status, ParseResult::kUsageError) << text;
  EXPECT_EQ(r.text, text);
}

TEST(OptionsTest, UnknownOption) {
  ExpectUsageError({"--config", "c", "run", "a", "--bogus"}, "tool: unknown option --bogus\nTry 'tool run --help'.\n");
  ExpectUsageError({"--bogus=1", "run", "a"}, "tool: unknown option --bogus\nTry 'tool --help'.\n");
  // No abbreviations: a prefix that names one option today could name two tomorrow.
  ExpectUsageError({"--conf", "c", "run", "a"}, "tool: unknown option --conf\nTry 'tool --help'.\n");
  ExpectUsageError({"--CONFIG", "c", "run", "a"}, "tool: unknown option --CONFIG\nTry 'tool --help'.\n");
}

TEST(OptionsTest, MissingValue) {
  ExpectUsageError({"--config", "c", "run", "a", "--batch"},
                   "tool: --batch needs a value (--batch N)\nTry 'tool run --help'.\n");
  ExpectUsageError({"--config"}, "tool: --config needs a value (--config FILE)\nTry 'tool --help'.\n");
}

TEST(OptionsTest, AFlagTakesNoValue) {
  ExpectUsageError({"--config", "c", "run", "--dry-run=yes", "a"},
                   "tool: --dry-run takes no value\nTry 'tool run --help'.\n");
  ExpectUsageError({"--help=yes"}, "tool: --help takes no value\nTry 'tool --help'.\n");
}

TEST(OptionsTest, MissingRequiredOption) {
  ExpectUsageError({"run", "a"}, "tool: --config FILE is required\nTry 'tool run --help'.\n");
}

TEST(OptionsTest, MissingAndUnexpectedArguments) {
  ExpectUsageError({"--config", "c", "run"}, "tool: NAME is required\nTry 'tool run --help'.\n");
  ExpectUsageError({"--config", "c", "run", "a", "b", "c"}, "tool: unexpected argument 'c'\nTry 'tool run --help'.\n");
  ExpectUsageError({"--config", "c", "group", "leaf"}, "tool: ID is required\nTry 'tool group leaf --help'.\n");
}

TEST(OptionsTest, UnknownCommand) {
  ExpectUsageError({"--config", "c", "frob"}, "tool: unknown command 'frob'\nTry 'tool --help'.\n");
  ExpectUsageError({"group", "frob"}, "tool: unknown command 'frob'\nTry 'tool group --help'.\n");
}

TEST(OptionsTest, AMissingCommandShowsTheHelpAsAnError) {
  const CommandSpec tool = Tool();
  ParseResult r = Parse(tool, {"--config", "c"});
  EXPECT_EQ(r.status, ParseResult::kUsageError);
  EXPECT_EQ(r.text, CommandHelp(tool, {}));
  r = Parse(tool, {});
  EXPECT_EQ(r.status, ParseResult::kUsageError);
  EXPECT_EQ(r.text, CommandHelp(tool, {}));
  r = Parse(tool, {"group"});
  EXPECT_EQ(r.status, ParseResult::kUsageError);
  EXPECT_EQ(r.text, CommandHelp(tool, {"group"}));
}

// --- help and version ----------------------------------------------------------

TEST(OptionsTest, HelpOfTheCommandSelectedSoFarWithoutItsRequirements) {
  const CommandSpec tool = Tool();
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"--help"}, {"-h"}, {"--config", "c", "-h"}}) {
    ParseResult r = Parse(tool, args);
    EXPECT_EQ(r.status, ParseResult::kHelp);
    EXPECT_EQ(r.command, &tool);
    EXPECT_EQ(r.text, CommandHelp(tool, {}));
  }
  ParseResult r = Parse(tool, {"run", "--help"});  // No --config, no NAME: help all the same.
  EXPECT_EQ(r.status, ParseResult::kHelp);
  EXPECT_EQ(r.text, CommandHelp(tool, {"run"}));
  r = Parse(tool, {"group", "leaf", "-h"});
  EXPECT_EQ(r.status, ParseResult::kHelp);
  EXPECT_EQ(r.text, CommandHelp(tool, {"group", "leaf"}));
}

TEST(OptionsTest, TheFirstOfAnErrorAndHelpWins) {
  const CommandSpec tool = Tool();
  EXPECT_EQ(Parse(tool, {"--help", "--bogus"}).status, ParseResult::kHelp);
  EXPECT_EQ(Parse(tool, {"--bogus", "--help"}).status, ParseResult::kUsageError);
}

TEST(OptionsTest, Version) {
  const CommandSpec tool = Tool();
  ParseResult r = Parse(tool, {"--version"});
  EXPECT_EQ(r.status, ParseResult::kVersion);
  EXPECT_EQ(r.text, "tool 1.0\n");
  CommandSpec plain{.name = "plain", .run = [](const ParsedArgs&) { return 0; }};
  r = Parse(plain, {"--version"});
  EXPECT_EQ(r.status, ParseResult::kUsageError);
  EXPECT_EQ(r.text, "plain: unknown option --version\nTry 'plain --help'.\n");
}

TEST(OptionsTest, GeneratedHelpOfAProgramWithCommands) {
  EXPECT_EQ(CommandHelp(Tool(), {}),
            "usage: tool --config FILE COMMAND [ARGS]\n"
            "\n"
            "Does things to shards.\n"
            "\n"
            "Options:\n"
            "  --config FILE  the config file\n"
            "  -h, --help     print this help\n"
            "  --version      print the version\n"
            "\n"
            "Commands:\n"
            "  run NAME [EXTRA] [--dry-run] [--batch N]\n"
            "                 runs one thing\n"
            "  group leaf ID  a leaf of the group\n"
            "\n"
            "Read the docs.\n");
}

TEST(OptionsTest, GeneratedHelpOfASubcommand) {
  EXPECT_EQ(CommandHelp(Tool(), {"run"}),
            "usage: tool --config FILE run NAME [EXTRA] [--dry-run] [--batch N]\n"
            "\n"
            "Runs NAME, and EXTRA if given.\n"
            "\n"
            "Arguments:\n"
            "  NAME           what to run\n"
            "\n"
            "Options:\n"
            "  --dry-run      count only\n"
            "  --batch N      rows per query (default 200)\n"
            "  --config FILE  the config file\n"
            "  -h, --help     print this help\n"
            "  --version      print the version\n");
  EXPECT_EQ(CommandHelp(Tool(), {"group"}),
            "usage: tool --config FILE group COMMAND [ARGS]\n"
            "\n"
            "A group.\n"
            "\n"
            "Options:\n"
            "  --config FILE  the config file\n"
            "  -h, --help     print this help\n"
            "  --version      print the version\n"
            "\n"
            "Commands:\n"
            "  leaf ID        a leaf of the group\n");
  EXPECT_EQ(CommandHelp(Tool(), {"nope"}), "");
}

TEST(OptionsTest, HelpIsWrappedAtEightyColumns) {
  std::string words, lorem;
  for (int i = 0; i < 20; ++i) words += i ? " word" : "word";
  for (int i = 0; i < 12; ++i) lorem += i ? " lorem" : "lorem";
  const CommandSpec w{
      .name = "w",
      .description = words + "\nsecond line\n\nnew paragraph",
      .options = {{"long-option-name-here", "VALUE", lorem}},
      .run = [](const ParsedArgs&) { return 0; },
  };
  std::string eleven;
  for (int i = 0; i < 11; ++i) eleven += i ? " lorem" : "lorem";
  EXPECT_EQ(CommandHelp(w, {}),
            "usage: w [--long-option-name-here VALUE]\n"
            "\n"
            "word word word word word word word word word word word word word word word word\n"
            "word word word word\n"
            "second line\n"
            "\n"
            "new paragraph\n"
            "\n"
            "Options:\n"
            "  --long-option-name-here VALUE\n"
            "              " +
                eleven +
                "\n"
                "              lorem\n"
                "  -h, --help  print this help\n");
}

// --- declarations ----------------------------------------------------------------

TEST(OptionsTest, CheckCommandSpecFindsContradictions) {
  auto ok = [](const ParsedArgs&) { return 0; };
  CommandSpec c = Tool();
  c.subcommands[0].options.push_back({"config", "FILE", "again"});
  EXPECT_EQ(CheckCommandSpec(c), "tool run: --config is declared twice");

  c = Tool();
  c.options.push_back({"help", "", "mine"});
  EXPECT_EQ(CheckCommandSpec(c), "tool: --help is built in");

  c = Tool();
  c.options.push_back({"--dashes", "", ""});
  EXPECT_EQ(CheckCommandSpec(c), "tool: '--dashes' is not an option name ([a-z0-9-])");

  c = Tool();
  c.subcommands[0].run = nullptr;
  EXPECT_EQ(CheckCommandSpec(c), "tool run: a command without subcommands needs a run");

  c = Tool();
  c.subcommands[1].arguments.push_back({"X"});
  EXPECT_EQ(CheckCommandSpec(c), "tool group: a command with subcommands takes no arguments");

  c = Tool();
  c.subcommands[1].run = ok;
  EXPECT_EQ(CheckCommandSpec(c), "tool group: a command with subcommands has no run of its own");

  c = Tool();
  c.subcommands[0].arguments.push_back({"LAST"});
  EXPECT_EQ(CheckCommandSpec(c), "tool run: required LAST follows an optional argument");

  c = Tool();
  c.subcommands[0].arguments.push_back({"NAME", "", true});
  EXPECT_EQ(CheckCommandSpec(c), "tool run: NAME is declared twice");

  c = Tool();
  c.subcommands.push_back(c.subcommands[0]);
  EXPECT_EQ(CheckCommandSpec(c), "tool: command 'run' is declared twice");

  c = Tool();
  c.subcommands[1].subcommands[0].version = "1";
  EXPECT_EQ(CheckCommandSpec(c), "tool group leaf: only the program has a version");
}

// --- RunCommandLine: what is printed where, and the exit status -------------------

int RunMain(const CommandSpec& root, std::vector<std::string> args, std::string* out, std::string* err) {
  std::vector<char*> argv;
  std::string program = root.name;
  argv.push_back(program.data());
  for (std::string& a : args) argv.push_back(a.data());
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  const int rc = RunCommandLine(root, static_cast<int>(argv.size()), argv.data());
  *out = testing::internal::GetCapturedStdout();
  *err = testing::internal::GetCapturedStderr();
  return rc;
}

TEST(OptionsTest, RunCommandLineExitStatuses) {
  CommandSpec tool = Tool();
  std::string seen;
  tool.subcommands[0].run = [&seen](const ParsedArgs& args) {
    seen = args.Argument("NAME");
    return 7;
  };
  std::string out, err;
  EXPECT_EQ(RunMain(tool, {"--config", "c", "run", "a"}, &out, &err), 7);
  EXPECT_EQ(seen, "a");
  EXPECT_EQ(out + err, "");

  EXPECT_EQ(RunMain(tool, {"run", "--help"}, &out, &err), kExitOk);
  EXPECT_EQ(out, CommandHelp(tool, {"run"}));
  EXPECT_EQ(err, "");

  EXPECT_EQ(RunMain(tool, {"--version"}, &out, &err), kExitOk);
  EXPECT_EQ(out, "tool 1.0\n");

  EXPECT_EQ(RunMain(tool, {"run", "a"}, &out, &err), kExitUsage);
  EXPECT_EQ(out, "");
  EXPECT_EQ(err, "tool: --config FILE is required\nTry 'tool run --help'.\n");

  EXPECT_EQ(RunMain(tool, {}, &out, &err), kExitUsage);
  EXPECT_EQ(err, CommandHelp(tool, {}));

  tool.subcommands[0].run = nullptr;
  EXPECT_EQ(RunMain(tool, {"--help"}, &out, &err), kExitFailure);
  EXPECT_EQ(err, "tool: bad command-line declaration: tool run: a command without subcommands needs a run\n");
}

// --- value conversions -----------------------------------------------------------

TEST(OptionsTest, ParseIntegerIsStrict) {
  EXPECT_EQ(ParseInteger("3306"), 3306);
  EXPECT_EQ(ParseInteger("-5"), -5);
  EXPECT_EQ(ParseInteger("+5"), 5);
  EXPECT_EQ(ParseInteger("9223372036854775807"), INT64_MAX);
  for (const char* bad : {"", " 5", "5 ", "10x", "0x10", "1.5", "-", "+-5", "9223372036854775808"}) {
    EXPECT_EQ(ParseInteger(bad), std::nullopt) << bad;
  }
}

TEST(OptionsTest, ParseNumberIsStrict) {
  EXPECT_EQ(ParseNumber("10"), 10.0);
  EXPECT_EQ(ParseNumber("0.5"), 0.5);
  EXPECT_EQ(ParseNumber("-2.5e1"), -25.0);
  for (const char* bad : {"", " 1", "1 ", "1e", ".", "inf", "nan", "0x10", "1,5", "1e999"}) {
    EXPECT_EQ(ParseNumber(bad), std::nullopt) << bad;
  }
}

}  // namespace
}  // namespace chatllm
