// Workloads for loadgen: the requests to send and when to send them.
//
// Two sources produce the same `RequestSpec`s:
//  - `SyntheticWorkload`: shared-prefix multi-turn conversations. N long system prompts are
//    shared by M users (user u uses system prompt u mod N); each arrival picks a user at
//    random and sends that user's next turn, whose prompt is the whole conversation so far
//    (system prompt, then alternating user messages and synthetic assistant replies), so
//    later turns extend the prefix of earlier ones. After `turns` turns a user starts a new
//    conversation with the same system prompt. Text is ASCII, so with engine-sim's byte
//    tokenizer one character is one token. Arrivals are a Poisson process at `rate` req/s.
//    The request sequence depends only on the seed and the options, never on timing, so
//    runs against different routers see the very same workload.
//  - a trace file (`LoadTrace`): loadgen's JSONL (`ParseTraceLine`, one request per line)
//    or the Mooncake format (mooncake_trace.h: prompts rebuilt from block hash ids);
//    formats in docs/loadgen.md.
//
// Thread safety: the sources are not synchronised; one thread (the dispatcher) uses each.
// The free functions are pure.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "mooncake_trace.h"
#include "nlohmann/json.hpp"

namespace aibrix::loadgen {

enum class Api { kChat, kCompletions };

// "chat" or "completions"; InvalidArgument otherwise.
absl::StatusOr<Api> ParseApi(const std::string& name);
const char* ApiName(Api api);

// One request to send.
struct RequestSpec {
  uint64_t index = 0;       // 0-based position in the workload
  double arrival_s = 0;     // offset from the start of the run
  Api api = Api::kChat;     // which endpoint
  std::string model;        // empty = loadgen's --model
  std::string prompt;       // kCompletions
  nlohmann::json messages;  // kChat: [{role, content}, ...]
  int max_tokens = 0;       // > 0
  std::string session;      // "u<user>c<conversation>" for synthetic, "" for traces
  int turn = 0;             // 1-based turn within the conversation (synthetic)
  int system_prompt = -1;   // which shared system prompt (synthetic), -1 if none
  // Mooncake traces: the prompt (kCompletions) is built from block hash ids when the body is
  // made, so a trace of long prompts is not held in memory; as text or as token ids.
  std::optional<BlockPrompt> block_prompt;
  bool block_prompt_text = false;

  // The JSON body of the OpenAI request (streaming with usage), `default_model` used when
  // `model` is empty.
  nlohmann::json Body(const std::string& default_model) const;
};

// Exponential inter-arrival gaps of a seeded Poisson process.
class PoissonArrivals {
 public:
  // REQUIRES: rate_per_s > 0.
  PoissonArrivals(double rate_per_s, uint64_t seed);
  // The arrival time of the next request, in seconds from the start (strictly increasing).
  double Next();

 private:
  double rate_;
  double now_ = 0;
  std::mt19937_64 rng_;
};

struct SyntheticOptions {
  int num_system_prompts = 8;    // N shared system prompts
  int system_prompt_len = 2048;  // characters (= tokens for the byte tokenizer)
  int num_users = 64;            // M users
  int turns = 4;                 // turns per conversation
  int user_message_len = 64;     // characters per user message
  int reply_len = 32;            // characters of the synthetic assistant reply in history
  int max_tokens = 32;           // output tokens asked for
  Api api = Api::kChat;
  uint64_t seed = 1;

  // InvalidArgument naming the bad field.
  absl::Status Validate() const;
};

// The infinite synthetic conversation workload (see the file comment). Arrival times are
// left at 0; the runner assigns them.
class SyntheticWorkload {
 public:
  // REQUIRES: options.Validate().ok().
  explicit SyntheticWorkload(const SyntheticOptions& options);

  RequestSpec Next();
  const std::string& system_prompt(int i) const { return system_prompts_[i]; }

 private:
  struct User {
    int system_prompt = 0;
    int conversation = 0;
    int turn = 0;  // turns already sent in the current conversation
    std::vector<std::pair<std::string, std::string>> history;  // (role, content)
  };

  std::string RandomText(size_t n);
  static std::string RenderCompletionPrompt(
      const std::vector<std::pair<std::string, std::string>>& history);

  SyntheticOptions options_;
  std::mt19937_64 rng_;
  std::vector<std::string> system_prompts_;
  std::vector<User> users_;
  uint64_t next_index_ = 0;
};

// Parses one trace line (`line_no` is 1-based, for messages). Fields: `prompt` (string) or
// `messages` (array of {role, content}) — exactly one; optional `timestamp_ms` (number
// >= 0), `max_tokens` (int >= 1, else `default_max_tokens`), `model` (string). Unknown
// fields are ignored. InvalidArgument "line N: ..." on anything else.
absl::StatusOr<RequestSpec> ParseTraceLine(const std::string& line, int line_no,
                                           int default_max_tokens);

enum class TraceFormat { kJsonl, kMooncake };
// "jsonl" or "mooncake"; InvalidArgument otherwise.
absl::StatusOr<TraceFormat> ParseTraceFormat(const std::string& name);

struct TraceOptions {
  TraceFormat format = TraceFormat::kJsonl;
  int default_max_tokens = 32;  // JSONL lines without max_tokens
  // Mooncake only:
  int block_tokens = 512;     // tokens per hash id
  bool text_prompts = false;  // prompts as text instead of token ids
  int max_output_tokens = 0;  // cap on output_length; 0 = none
};

struct Trace {
  std::vector<RequestSpec> requests;          // in file order; arrival_s from the timestamps
  bool all_timestamped = true;                // every line has a timestamp
  uint64_t bad_lines = 0;                     // Mooncake: lines skipped as malformed
  std::vector<std::string> bad_line_samples;  // the first few of their errors
};

// Reads a trace; blank lines are skipped. Timestamps are made relative to the first line's.
// JSONL: a bad line, or a timestamp going backwards, is an error naming the file and line.
// Mooncake: such lines are skipped and counted in `bad_lines`. An empty trace (no good line)
// is an error.
absl::StatusOr<Trace> LoadTrace(const std::string& path, const TraceOptions& options);

}  // namespace aibrix::loadgen
