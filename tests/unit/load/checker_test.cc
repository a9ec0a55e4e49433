// The history checker must be able to fail: each anomaly it exists to catch
// is fed to it here, alongside a history that is fine.

#include "load/checker.h"

#include <gtest/gtest.h>

namespace chatllm::load {
namespace {

class CheckerTest : public ::testing::Test {
 protected:
  // A stored turn: user message then its echo.
  void Turn(const std::string& content) {
    int64_t seq = static_cast<int64_t>(history_.size()) + 1;
    history_.push_back({seq, "user", content, 0});
    history_.push_back({seq + 1, "assistant", content, seq});
  }
  AppendRecord& Append(const std::string& content, int status, int64_t invoke, int64_t complete, int client = 0,
                       int64_t seq = 0) {
    auto* a = new AppendRecord;
    a->content = content;
    a->status = status;
    a->outcome = OutcomeOfStatus(status);
    a->invoke_us = invoke;
    a->complete_us = complete;
    a->client = client;
    a->seq = seq;
    owned_.emplace_back(a);
    records_.appends_by_file.resize(1);
    records_.appends_by_file[0].push_back(a);
    return *a;
  }
  void Read(int64_t invoke, size_t messages) {
    auto* r = new ReadRecord;
    r->invoke_us = invoke;
    r->complete_us = invoke + 1;
    r->limit = 200;
    for (size_t i = 0; i < messages && i < history_.size(); ++i) {
      r->messages.emplace_back(history_[i].seq, MessageHash(history_[i].role, history_[i].content));
    }
    owned_reads_.emplace_back(r);
    records_.reads_by_file.resize(1);
    records_.reads_by_file[0].push_back(r);
  }
  std::vector<std::string> Check() {
    CheckCounts counts;
    std::vector<std::string> kinds;
    for (const Violation& v : CheckSession(history_, records_, true, &counts)) kinds.push_back(v.kind);
    return kinds;
  }

  std::vector<StoredMessage> history_;
  SessionRecords records_;
  std::vector<std::unique_ptr<AppendRecord>> owned_;
  std::vector<std::unique_ptr<ReadRecord>> owned_reads_;
};

using Kinds = std::vector<std::string>;

TEST_F(CheckerTest, AcceptsAConsistentHistory) {
  Turn("a");
  Turn("b");
  Turn("c");
  Append("a", 201, 0, 10, 0, 1);
  Append("b", 201, 5, 20, 1, 3);   // Concurrent with "a".
  Append("c", 503, 21, 30, 0);     // Unknown, stored once.
  Append("d", 503, 22, 31, 1);     // Unknown, not stored.
  Append("e", 400, 23, 24, 1);     // Refused, absent.
  Read(25, 6);
  Read(11, 2);  // Saw "a" only: fine, "b" was not acknowledged before the read.
  EXPECT_EQ(Check(), Kinds{});
}

TEST_F(CheckerTest, CatchesALostAcknowledgedAppend) {
  Turn("a");
  Append("a", 201, 0, 1, 0, 1);
  Append("b", 201, 2, 3, 0, 3);  // Acknowledged, never stored: the old service's race.
  EXPECT_EQ(Check(), Kinds{"acknowledged"});
}

TEST_F(CheckerTest, CatchesDuplicatesAndWrongSeq) {
  Turn("a");
  Turn("a");
  Turn("u");
  Turn("u");
  Append("a", 201, 0, 1, 0, 1);
  Append("u", 502, 2, 3);
  EXPECT_EQ(Check(), (Kinds{"acknowledged", "unknown"}));
  history_.clear();
  records_ = {};
  Turn("x");
  Append("x", 201, 0, 1, 0, 7);
  EXPECT_EQ(Check(), Kinds{"acknowledged"});
}

TEST_F(CheckerTest, CatchesRefusedButStoredAndPhantoms) {
  Turn("r");
  Turn("ghost");
  Append("r", 400, 0, 1);
  EXPECT_EQ(Check(), (Kinds{"refused", "phantom"}));
}

TEST_F(CheckerTest, CatchesGapsAndBrokenReplies) {
  Turn("a");
  history_.push_back({4, "user", "b", 0});
  Append("a", 201, 0, 1, 0, 1);
  EXPECT_EQ(Check(), Kinds{"dense"});
  history_.pop_back();
  history_[1].content = "not an echo";
  EXPECT_EQ(Check(), Kinds{"dense"});
}

TEST_F(CheckerTest, CatchesRealTimeInversion) {
  Turn("late");
  Turn("early");
  Append("early", 201, 0, 10, 0);   // Acknowledged at t=10...
  Append("late", 201, 20, 30, 1);   // ...yet "late", sent at t=20, is stored first.
  Kinds k = Check();
  EXPECT_NE(std::find(k.begin(), k.end(), "realtime"), k.end());
}

TEST_F(CheckerTest, CatchesClientOrderInversion) {
  Turn("second");
  Turn("first");
  // Overlapping in time (so not a real-time violation), but one client sent them in order.
  Append("first", 201, 0, 100, 4);
  Append("second", 201, 50, 60, 4);
  EXPECT_EQ(Check(), Kinds{"client-order"});
}

TEST_F(CheckerTest, CatchesStaleAndDivergentReads) {
  Turn("a");
  Turn("b");
  Append("a", 201, 0, 1, 0, 1);
  Append("b", 201, 2, 3, 0, 3);
  Read(10, 2);  // Began after "b" was acknowledged but returned only "a"'s turn.
  EXPECT_EQ(Check(), Kinds{"reads"});
  records_.reads_by_file[0].clear();
  Read(10, 4);
  owned_reads_.back()->messages[2].second ^= 1;  // A read that saw different content.
  EXPECT_EQ(Check(), Kinds{"reads"});
}

}  // namespace
}  // namespace chatllm::load
