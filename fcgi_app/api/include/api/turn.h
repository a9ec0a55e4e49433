#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "api/requests.h"
#include "base/config.h"
#include "base/http.h"
#include "base/ids.h"
#include "base/instance.h"
#include "providers/provider.h"
#include "providers/provider_chain.h"
#include "store/store.h"

namespace chatllm {

class DurableTurn;  // src/durable_turn.h

// The turn use case (docs/architecture.md, "The turn"): store the user's
// message, ask the providers, store the answer. It returns what happened (a
// TurnOutcome); how that is said to the client — native JSON, native SSE,
// OpenAI JSON or SSE — is a presenter's business (api/presenters.h). No
// presenter runs while a shard transaction is open: with an Idempotency-Key
// the answer's transaction stores the key's recipe (the presenter's name and
// the two seqs), and a replay renders the same two stored messages with the
// same presenter, so the bytes are the first answer's.
//
// Errors: Run() never throws for an expected failure (a shard down, a
// provider failing, the client leaving): each is an outcome.

// One turn: what the user sent and how to answer.
struct TurnRequest {
  std::string content;
  std::string model;                  // "": the session's, else the chain's defaults.
  std::optional<std::string> system;  // Overrides the session's system prompt.
  Sampling sampling;
  UserId user;
  std::optional<IdempotencyKey> idempotency;
};

// How a turn reports progress while it runs (streaming presenters). The
// default reports nothing: a plain JSON answer is given at the end.
class TurnProgress {
 public:
  virtual ~TurnProgress() = default;
  // The model the turn asks for, once known: a request that named none uses
  // its session's.
  virtual void ModelChosen(const std::string& model) {}
  // A streamed turn is durable ([turns] durable): its id, before Begin.
  virtual void TurnOpened(const SessionId& session, int64_t turn_id) {}
  // The turn is admitted by its budgets, before Begin: the x-ratelimit-*
  // headers its answer (or its stream's head) carries.
  virtual void RateLimits(std::vector<std::pair<std::string, std::string>> headers) {}
  // Before the provider is asked: sends the head of a stream (and the stored
  // user message, when there is one). False when the client is gone.
  virtual bool Begin(const MessageRecord* user) { return true; }
  // The number of the durable turn's event the next delta is (the SSE id a
  // client resumes after).
  virtual void NextEventId(int64_t seq) {}
  // Where the provider's text goes as it comes; null when not streaming.
  virtual DeltaSink* sink() { return nullptr; }
  // The text already sent to the client.
  virtual const std::string& partial() const;
  // What a replay needs to render this presenter's answer again
  // (IdempotencyResult::response): "native" or "openai".
  virtual const char* recipe() const = 0;
  // The status of its answer (201 native, 200 OpenAI).
  virtual int answer_status() const = 0;
};

struct TurnOutcome {
  enum class Kind {
    kAnswered,  // `user` (seq 0 when stateless) and `assistant` are stored.
    kReplayed,  // A finished keyed turn asked again: `user` and `assistant`
                // as stored, to render with `recipe` (or a body stored by a
                // binary before schema 8: `replay_body`).
    kRefused,   // Nothing was stored: `error`.
    kFailed,    // The user message is stored (`user.seq`), its answer is not:
                // `error`; `partial` is the cut-off answer, when one was stored.
    kGone,      // The client left mid-stream: nothing more to say.
  };
  // A durable turn (0: the turn was not one).
  int64_t turn_id = 0;
  Kind kind = Kind::kRefused;
  MessageRecord user;
  MessageRecord assistant;
  std::optional<MessageRecord> partial;
  Status error;
  int64_t retry_after_ms = -1;  // Retry-After for `error`; -1: none.
  // More headers for `error` (a budget refusal's x-ratelimit-*).
  std::vector<std::pair<std::string, std::string>> headers;
  // kReplayed: the status the first answer had and its recipe, or the stored body.
  int replay_status = 0;
  std::string recipe;
  std::string replay_body;

  static TurnOutcome Refused(int status, std::string code, std::string message, int64_t retry_after_ms = -1);
};

// Runs turns for one worker thread (its Store and providers are unshared).
class TurnRunner {
 public:
  // Borrows everything; `observer` and `limits` may be null.
  TurnRunner(const Config& config, Store* store, ProviderChain* providers, Observer* observer, UserLimits* limits);

  // A turn on stored session `id`.
  TurnOutcome Run(const SessionId& id, TurnRequest turn, RequestTrace* trace, TurnProgress& progress);
  // A turn with no session (OpenAI pass-through): nothing is stored.
  TurnOutcome RunStateless(const ChatCompletionRequest& req, const UserId& user, RequestTrace* trace,
                           TurnProgress& progress);
  // The metadata stored with an answer (provider, model, usage, latency,
  // finish reason, request id): what the presenters render it from.
  // `hold_hex`: the usage hold the answer settles (sql/011_usage.sql), so
  // that a reaper finds it when its turn died before settling.
  static std::string AssistantMeta(const std::string& request_id, const Completion& c,
                                   const std::string& hold_hex = "");

 private:
  class Slot;
  // Takes one of the user's max_concurrent_turns_per_user places on this
  // instance (released when `slot` goes), or returns the refusal.
  std::optional<TurnOutcome> Admit(const UserId& user, std::unique_ptr<Slot>* slot);
  // Run() up to the stored user message: the context, the claim of the key.
  TurnOutcome Begin(const SessionId& id, TurnRequest& turn, RequestTrace* trace, TurnProgress& progress);
  // A keyed turn answered before: its two messages, to render again.
  TurnOutcome Replay(const SessionId& id, const UserId& user, const IdempotencyResult& stored);
  // Run() once the user message is stored: asks the providers, stores the
  // answer. `reused`: stored by an earlier attempt with the same key, which
  // `attempt` took over. Throws DbError (Run answers it).
  // `opened`: the durable turn that opened with the user message, and its
  // producer's token (0: none).
  TurnOutcome Answer(const SessionId& id, const TurnRequest& turn, TurnContext ctx, MessageRecord user, bool reused,
                     int64_t attempt, std::pair<int64_t, int64_t> opened, RequestTrace* trace, TurnProgress& progress);
  // After a provider failure: keeps the text the client already saw as an
  // incomplete answer. nullopt when there was none, or it could not be stored.
  // `durable`: the turn's producer, which ends the turn with it.
  std::optional<MessageRecord> StorePartial(const SessionId& id, const TurnRequest& turn, const MessageRecord& user,
                                            const ProviderError& e, RequestTrace* trace, TurnProgress& progress,
                                            DurableTurn* durable);

  // The turn's usage hold (src/turn_usage.cc): taken before the user
  // message is stored (a refusal stores nothing), settled by the stored
  // answer, released when the turn ends without one.
  struct Usage {
    std::string hold_id;               // Empty: no hold (no ledger, no user, no budget).
    int code = 0;                      // chat_usage_hold's (0: not asked).
    bool keyed = false;                // Named by the Idempotency-Key: never released here.
    bool answer_maybe_stored = false;  // From the answer's write on: never released.
    bool settled = false;
    std::string key_id;           // The request's API key.
    std::string model;            // The model asked for.
    int64_t prompt_estimate = 0;  // For an answer whose provider reported no usage.
    UsageRoom room;               // With kUsageHeld: what the budgets leave.
  };
  std::optional<TurnOutcome> HoldUsage(const SessionId& session, const TurnRequest& turn, const TurnContext& ctx,
                                       const RequestTrace& trace);
  // The x-ratelimit-* headers of a turn this request holds for: the room
  // its budgets leave (none without a budget).
  std::vector<std::pair<std::string, std::string>> RateLimitHeaders() const;
  // An answer's usage as the ledger counts it: the provider's, else
  // estimated (the prompt as held, the text); its cost at the price of the
  // model asked for when the reported model has none.
  void FillUsage(Completion* answer) const;
  void SettleUsage(const UserId& user, const Completion& answer);
  void ReleaseUsage(const UserId& user);
  TurnOutcome BudgetRefusal(int code, const UserId& user, const std::string& key_id);

  const Config& config_;
  Store* store_;
  ProviderChain* providers_;
  Observer* observer_;
  UserLimits* limits_;
  Usage usage_;  // Of the turn running (one at a time per runner).
  // Users (and keys) the home said have no budget, until when (monotonic
  // us): their turns skip the hold for [usage] budget_cache_ms.
  std::unordered_map<std::string, int64_t> no_budget_;
};

}  // namespace chatllm
