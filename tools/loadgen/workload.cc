#include "workload.h"

#include <cmath>
#include <fstream>

#include "aibrix/common/status_macros.h"
#include "fmt/format.h"

namespace aibrix::loadgen {

using json = nlohmann::json;

absl::StatusOr<Api> ParseApi(const std::string& name) {
  if (name == "chat") return Api::kChat;
  if (name == "completions") return Api::kCompletions;
  return absl::InvalidArgumentError(
      fmt::format("unknown API '{}' (expected chat or completions)", name));
}

const char* ApiName(Api api) { return api == Api::kChat ? "chat" : "completions"; }

json RequestSpec::Body(const std::string& default_model) const {
  json body = {{"model", model.empty() ? default_model : model},
               {"max_tokens", max_tokens},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}}};
  if (api == Api::kChat) {
    body["messages"] = messages;
  } else if (block_prompt) {
    if (block_prompt_text) {
      body["prompt"] = block_prompt->Text();
    } else {
      body["prompt"] = block_prompt->Tokens();
    }
  } else {
    body["prompt"] = prompt;
  }
  return body;
}

PoissonArrivals::PoissonArrivals(double rate_per_s, uint64_t seed)
    : rate_(rate_per_s), rng_(seed) {}

double PoissonArrivals::Next() {
  // Inverse-transform sampling with our own uniform so the sequence is the same with any
  // standard library: u in (0, 1].
  const double u = (static_cast<double>(rng_() >> 11) + 1.0) * 0x1.0p-53;
  now_ += -std::log(u) / rate_;
  return now_;
}

absl::Status SyntheticOptions::Validate() const {
  auto positive = [](const char* name, int v) -> absl::Status {
    if (v < 1) return absl::InvalidArgumentError(fmt::format("{} must be >= 1, got {}", name, v));
    return absl::OkStatus();
  };
  for (const auto& [name, v] : std::initializer_list<std::pair<const char*, int>>{
           {"system prompts", num_system_prompts},
           {"system prompt length", system_prompt_len},
           {"users", num_users},
           {"turns", turns},
           {"user message length", user_message_len},
           {"max tokens", max_tokens}}) {
    RETURN_IF_ERROR(positive(name, v));
  }
  if (reply_len < 0) {
    return absl::InvalidArgumentError(fmt::format("reply length must be >= 0, got {}", reply_len));
  }
  return absl::OkStatus();
}

SyntheticWorkload::SyntheticWorkload(const SyntheticOptions& options)
    : options_(options), rng_(options.seed) {
  system_prompts_.reserve(options_.num_system_prompts);
  for (int i = 0; i < options_.num_system_prompts; ++i) {
    system_prompts_.push_back(RandomText(options_.system_prompt_len));
  }
  users_.resize(options_.num_users);
  for (int u = 0; u < options_.num_users; ++u) {
    users_[u].system_prompt = u % options_.num_system_prompts;
  }
}

std::string SyntheticWorkload::RandomText(size_t n) {
  // Lower-case letters and spaces: one byte, hence one engine-sim token, per character.
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz ";
  std::string s(n, ' ');
  for (char& c : s) c = kAlphabet[rng_() % (sizeof(kAlphabet) - 1)];
  return s;
}

std::string SyntheticWorkload::RenderCompletionPrompt(
    const std::vector<std::pair<std::string, std::string>>& history) {
  std::string out;
  for (const auto& [role, content] : history) {
    out += role;
    out += ": ";
    out += content;
    out += '\n';
  }
  out += "assistant: ";
  return out;
}

RequestSpec SyntheticWorkload::Next() {
  const int u = static_cast<int>(rng_() % static_cast<uint64_t>(options_.num_users));
  User& user = users_[u];
  if (user.turn == options_.turns) {  // conversation over: a new one, same system prompt
    ++user.conversation;
    user.turn = 0;
    user.history.clear();
  }
  if (user.history.empty()) {
    user.history.emplace_back("system", system_prompts_[user.system_prompt]);
  } else {
    // The previous turn's reply, synthetic so the workload does not depend on the engine.
    user.history.emplace_back("assistant", RandomText(options_.reply_len));
  }
  user.history.emplace_back("user", RandomText(options_.user_message_len));
  ++user.turn;

  RequestSpec spec;
  spec.index = next_index_++;
  spec.api = options_.api;
  spec.max_tokens = options_.max_tokens;
  spec.session = fmt::format("u{}c{}", u, user.conversation);
  spec.turn = user.turn;
  spec.system_prompt = user.system_prompt;
  if (options_.api == Api::kChat) {
    spec.messages = json::array();
    for (const auto& [role, content] : user.history) {
      spec.messages.push_back({{"role", role}, {"content", content}});
    }
  } else {
    spec.prompt = RenderCompletionPrompt(user.history);
  }
  return spec;
}

absl::StatusOr<RequestSpec> ParseTraceLine(const std::string& line, int line_no,
                                           int default_max_tokens) {
  auto bad = [line_no](const std::string& what) {
    return absl::InvalidArgumentError(fmt::format("line {}: {}", line_no, what));
  };
  json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return bad("not valid JSON");
  if (!j.is_object()) return bad("not a JSON object");
  RequestSpec spec;
  const bool has_prompt = j.contains("prompt");
  const bool has_messages = j.contains("messages");
  if (has_prompt == has_messages) return bad("needs exactly one of \"prompt\" and \"messages\"");
  if (has_prompt) {
    if (!j["prompt"].is_string() || j["prompt"].get_ref<const std::string&>().empty()) {
      return bad("\"prompt\" must be a non-empty string");
    }
    spec.api = Api::kCompletions;
    spec.prompt = j["prompt"].get<std::string>();
  } else {
    const json& m = j["messages"];
    if (!m.is_array() || m.empty()) return bad("\"messages\" must be a non-empty array");
    for (size_t i = 0; i < m.size(); ++i) {
      if (!m[i].is_object() || !m[i].contains("role") || !m[i]["role"].is_string() ||
          !m[i].contains("content") ||
          !(m[i]["content"].is_string() || m[i]["content"].is_array())) {
        return bad(
            fmt::format("messages[{}] must be {{\"role\": string, \"content\": string}}", i));
      }
    }
    spec.api = Api::kChat;
    spec.messages = m;
  }
  spec.max_tokens = default_max_tokens;
  if (j.contains("max_tokens")) {
    if (!j["max_tokens"].is_number_integer() || j["max_tokens"].get<int64_t>() < 1 ||
        j["max_tokens"].get<int64_t>() > 1'000'000) {
      return bad("\"max_tokens\" must be an integer in [1, 1000000]");
    }
    spec.max_tokens = j["max_tokens"].get<int>();
  }
  if (j.contains("model")) {
    if (!j["model"].is_string()) return bad("\"model\" must be a string");
    spec.model = j["model"].get<std::string>();
  }
  spec.arrival_s = -1;  // no timestamp
  if (j.contains("timestamp_ms")) {
    if (!j["timestamp_ms"].is_number() || j["timestamp_ms"].get<double>() < 0) {
      return bad("\"timestamp_ms\" must be a number >= 0");
    }
    spec.arrival_s = j["timestamp_ms"].get<double>() / 1000.0;
  }
  return spec;
}

absl::StatusOr<TraceFormat> ParseTraceFormat(const std::string& name) {
  if (name == "jsonl") return TraceFormat::kJsonl;
  if (name == "mooncake") return TraceFormat::kMooncake;
  return absl::InvalidArgumentError(
      fmt::format("unknown trace format '{}' (expected jsonl or mooncake)", name));
}

namespace {

// One Mooncake line as a request (arrival_s = the timestamp in seconds, not yet relative).
absl::StatusOr<RequestSpec> MooncakeRequest(const std::string& line, int line_no,
                                            const TraceOptions& options) {
  ASSIGN_OR_RETURN(MooncakeRecord r, ParseMooncakeLine(line, line_no));
  RequestSpec spec;
  spec.api = Api::kCompletions;
  spec.arrival_s = r.timestamp_ms / 1000.0;
  int64_t out = std::max<int64_t>(1, r.output_length);
  if (options.max_output_tokens > 0) out = std::min<int64_t>(out, options.max_output_tokens);
  spec.max_tokens = static_cast<int>(out);
  spec.block_prompt = BlockPrompt{std::move(r.hash_ids), r.input_length, options.block_tokens,
                                  static_cast<uint64_t>(line_no)};
  spec.block_prompt_text = options.text_prompts;
  return spec;
}

constexpr size_t kBadLineSamples = 5;

}  // namespace

absl::StatusOr<Trace> LoadTrace(const std::string& path, const TraceOptions& options) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(fmt::format("trace {}: cannot open", path));
  const bool mooncake = options.format == TraceFormat::kMooncake;
  Trace trace;
  std::string line;
  int line_no = 0;
  double first = -1;
  double last = 0;
  // Mooncake lines are skipped and counted; a JSONL error stops the load.
  auto reject = [&](const absl::Status& st) -> absl::Status {
    const std::string message = fmt::format("trace {} {}", path, std::string(st.message()));
    if (!mooncake) return absl::InvalidArgumentError(message);
    ++trace.bad_lines;
    if (trace.bad_line_samples.size() < kBadLineSamples) trace.bad_line_samples.push_back(message);
    return absl::OkStatus();
  };
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    absl::StatusOr<RequestSpec> spec =
        mooncake ? MooncakeRequest(line, line_no, options)
                 : ParseTraceLine(line, line_no, options.default_max_tokens);
    if (!spec.ok()) {
      RETURN_IF_ERROR(reject(spec.status()));
      continue;
    }
    if (spec->arrival_s < 0) {
      trace.all_timestamped = false;
      spec->arrival_s = 0;
    } else {
      const double relative = spec->arrival_s - (first < 0 ? spec->arrival_s : first);
      if (relative < last) {
        RETURN_IF_ERROR(reject(absl::InvalidArgumentError(
            fmt::format("line {}: the timestamp goes backwards", line_no))));
        continue;
      }
      if (first < 0) first = spec->arrival_s;
      spec->arrival_s = last = relative;
    }
    spec->index = trace.requests.size();
    trace.requests.push_back(std::move(*spec));
  }
  if (trace.requests.empty()) {
    return absl::InvalidArgumentError(
        fmt::format("trace {}: no requests{}", path,
                    trace.bad_lines > 0 ? fmt::format(" ({} bad lines)", trace.bad_lines) : ""));
  }
  return trace;
}

}  // namespace aibrix::loadgen
