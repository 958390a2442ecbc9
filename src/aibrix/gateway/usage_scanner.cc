#include "aibrix/gateway/usage_scanner.h"

namespace aibrix::gateway {
namespace {

constexpr std::string_view kKey = "\"completion_tokens\"";
constexpr int kMaxDigits = 18;  // fits int64

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

}  // namespace

void UsageScanner::Restart(char c) {
  state_ = State::kKey;
  // '"' occurs in the key only first and last, so a mismatch can only restart on a quote.
  matched_ = c == '"' ? 1 : 0;
}

void UsageScanner::Feed(std::string_view data) {
  for (const char c : data) {
    switch (state_) {
      case State::kKey:
        if (c == kKey[matched_]) {
          if (++matched_ == kKey.size()) {
            state_ = State::kColon;
            matched_ = 0;
          }
        } else {
          Restart(c);
        }
        break;
      case State::kColon:
        if (c == ':') {
          state_ = State::kValueStart;
        } else if (!IsSpace(c)) {
          Restart(c);
        }
        break;
      case State::kValueStart:
        if (c >= '0' && c <= '9') {
          state_ = State::kDigits;
          value_ = c - '0';
          digits_ = 1;
        } else if (!IsSpace(c)) {
          Restart(c);
        }
        break;
      case State::kDigits:
        if (c >= '0' && c <= '9') {
          if (++digits_ > kMaxDigits) {
            Restart(c);
          } else {
            value_ = value_ * 10 + (c - '0');
          }
        } else {
          if (c == ',' || c == '}' || IsSpace(c)) output_tokens_ = value_;
          Restart(c);
        }
        break;
    }
  }
}

}  // namespace aibrix::gateway
