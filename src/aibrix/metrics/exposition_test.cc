#include "aibrix/metrics/exposition.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "fmt/format.h"

namespace aibrix::metrics {
namespace {

using ::testing::HasSubstr;

std::string ReadTestdata(const std::string& name) {
  std::ifstream in(std::string(AIBRIX_TESTDATA_DIR) + "/metrics/" + name);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ParsedBody MustParse(std::string_view body, const ParseOptions& options = {}) {
  auto parsed = ParseExposition(body, options);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return parsed.ok() ? std::move(*parsed) : ParsedBody{};
}

TEST(ExpositionTest, OnlyFamiliesSkipsTheOthersAfterTheirName) {
  const std::string body =
      "# TYPE wanted_seconds histogram\n"
      "wanted_seconds_bucket{le=\"1\",model_name=\"org/m\"} 2\n"
      "wanted_seconds_bucket{le=\"+Inf\",model_name=\"org/m\"} 3\n"
      "wanted_seconds_sum{model_name=\"org/m\"} 1.5\n"
      "wanted_seconds_count{model_name=\"org/m\"} 3\n"
      "# TYPE other_seconds histogram\n"
      "other_seconds_bucket{le=\"1\"} 1\n"
      "other_seconds_bucket{le=garbage} not-a-number\n"
      "other_seconds_sum 1\n"
      "# TYPE tokens counter\n"  // OpenMetrics: wanted by its samples' _total name
      "tokens_total{model_name=\"org/m\"} 42\n"
      "# TYPE unwanted_total counter\n"
      "unwanted_total 9\n"
      "untyped_line{a=\"b\"} bad\n";  // no TYPE: parsed in full, so counted
  const absl::flat_hash_set<std::string_view> only = {"wanted_seconds", "tokens_total"};
  ParseOptions options;
  options.only_families = &only;
  ParsedBody parsed = MustParse(body, options);
  EXPECT_EQ(parsed.skipped_lines(), 4u);
  EXPECT_EQ(parsed.bad_lines(), 1u);
  EXPECT_THAT(parsed.first_error(), HasSubstr("line 14"));
  const Family* wanted = parsed.Find("wanted_seconds");
  ASSERT_NE(wanted, nullptr);
  EXPECT_FALSE(wanted->skipped);
  ASSERT_EQ(wanted->series.size(), 1u);
  EXPECT_EQ(wanted->series[0].count, 3);
  ASSERT_EQ(wanted->series[0].buckets.size(), 2u);
  EXPECT_EQ(wanted->series[0].buckets[1].upper_bound, std::numeric_limits<double>::infinity());
  EXPECT_EQ(parsed.LabelValue(wanted->series[0], "model_name"), "org/m");
  const Family* tokens = parsed.Find("tokens_total");
  ASSERT_NE(tokens, nullptr);
  ASSERT_EQ(tokens->series.size(), 1u);
  EXPECT_EQ(tokens->series[0].value, 42);
  for (std::string_view name : {"other_seconds", "unwanted_total"}) {
    const Family* other = parsed.Find(name);
    ASSERT_NE(other, nullptr) << name;
    EXPECT_TRUE(other->skipped) << name;
    EXPECT_TRUE(other->series.empty()) << name;
  }
  EXPECT_EQ(parsed.series_count(), 2u);

  // The same body parsed in full: the skipped families' lines are parsed, the bad one counted.
  ParsedBody full = MustParse(body);
  EXPECT_EQ(full.skipped_lines(), 0u);
  EXPECT_EQ(full.bad_lines(), 2u);
  EXPECT_EQ(full.Find("other_seconds")->series.size(), 1u);
}

TEST(ExpositionTest, OnlyFamiliesStillRejectsABodyThatIsNotAnExposition) {
  const absl::flat_hash_set<std::string_view> only = {"wanted"};
  ParseOptions options;
  options.only_families = &only;
  EXPECT_FALSE(ParseExposition("Not Found\n", options).ok());
  EXPECT_FALSE(ParseExposition("<html><body>oops</body></html>\n", options).ok());
}

TEST(ExpositionTest, GaugeCounterUntypedWithHelpAndComments) {
  const std::string body =
      "# HELP g A gauge.\n"
      "# TYPE g gauge\n"
      "g{a=\"1\"} 3.5\n"
      "# a free comment\n"
      "\n"
      "# TYPE c_total counter\n"
      "c_total 12\n"
      "loose_metric 7\n";
  ParsedBody parsed = MustParse(body);
  EXPECT_EQ(parsed.bad_lines(), 0u);
  const Family* g = parsed.Find("g");
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->type, MetricType::kGauge);
  ASSERT_EQ(g->series.size(), 1u);
  EXPECT_EQ(g->series[0].value, 3.5);
  EXPECT_EQ(parsed.LabelValue(g->series[0], "a"), "1");
  EXPECT_EQ(parsed.LabelValue(g->series[0], "b"), std::nullopt);
  const Family* c = parsed.Find("c_total");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->type, MetricType::kCounter);
  EXPECT_EQ(c->series[0].value, 12);
  const Family* loose = parsed.Find("loose_metric");
  ASSERT_NE(loose, nullptr);
  EXPECT_EQ(loose->type, MetricType::kUntyped);
  EXPECT_EQ(loose->series[0].value, 7);
}

TEST(ExpositionTest, OpenMetricsCounterIsFoundByItsTotalName) {
  ParsedBody parsed = MustParse(
      "# TYPE req counter\n"
      "req_total{code=\"200\"} 5\n"
      "req_created{code=\"200\"} 1.7e9\n"
      "# EOF\n");
  const Family* total = parsed.Find("req_total");
  ASSERT_NE(total, nullptr);
  EXPECT_EQ(total, parsed.Find("req"));
  ASSERT_EQ(total->series.size(), 1u);  // _created is not a series
  EXPECT_EQ(total->series[0].value, 5);
  EXPECT_EQ(parsed.bad_lines(), 0u);
}

TEST(ExpositionTest, HistogramGroupsBucketsSumAndCountPerLabelSet) {
  // Two label sets interleaved, _sum before the buckets (multiprocess layout), labels in a
  // different order on one line.
  ParsedBody parsed = MustParse(
      "# TYPE h histogram\n"
      "h_sum{m=\"a\"} 4.5\n"
      "h_bucket{m=\"a\",le=\"0.1\"} 1\n"
      "h_bucket{le=\"0.1\",m=\"b\"} 0\n"
      "h_bucket{m=\"a\",le=\"1.0\"} 3\n"
      "h_bucket{m=\"b\",le=\"+Inf\"} 2\n"
      "h_bucket{le=\"+Inf\",m=\"a\"} 4\n"
      "h_count{m=\"a\"} 4\n"
      "h_count{m=\"b\"} 2\n"
      "h_sum{m=\"b\"} 9\n"
      "h_created{m=\"a\"} 1.7e9\n");
  EXPECT_EQ(parsed.bad_lines(), 0u);
  const Family* h = parsed.Find("h");
  ASSERT_NE(h, nullptr);
  ASSERT_EQ(h->series.size(), 2u);
  const Series& a = h->series[0];
  EXPECT_EQ(parsed.LabelValue(a, "m"), "a");
  EXPECT_EQ(parsed.LabelValue(a, "le"), std::nullopt);
  EXPECT_EQ(a.sum, 4.5);
  EXPECT_EQ(a.count, 4);
  ASSERT_EQ(a.buckets.size(), 3u);
  EXPECT_EQ(a.buckets[0].upper_bound, 0.1);
  EXPECT_EQ(a.buckets[1].count, 3);
  EXPECT_TRUE(std::isinf(a.buckets[2].upper_bound));
  EXPECT_EQ(a.buckets[2].count, 4);
  const Series& b = h->series[1];
  EXPECT_EQ(b.sum, 9);
  EXPECT_EQ(b.count, 2);
  EXPECT_EQ(b.buckets.size(), 2u);
}

TEST(ExpositionTest, SummariesAreSkippedCleanly) {
  ParsedBody parsed = MustParse(
      "# TYPE s summary\n"
      "s{quantile=\"0.5\"} 1\n"
      "s{quantile=\"0.9\"} 2\n"
      "s_sum 10\n"
      "s_count 5\n"
      "# TYPE after gauge\n"
      "after 1\n");
  EXPECT_EQ(parsed.bad_lines(), 0u);
  ASSERT_NE(parsed.Find("s"), nullptr);
  EXPECT_TRUE(parsed.Find("s")->series.empty());
  EXPECT_EQ(parsed.Find("s_sum"), nullptr);
  EXPECT_EQ(parsed.Find("after")->series[0].value, 1);
}

TEST(ExpositionTest, LabelValueEscapes) {
  ParsedBody parsed = MustParse(R"(m{a="back\\slash",b="q\"uote",c="new\nline",d="",e="a/b:c"} 1)"
                                "\n");
  EXPECT_EQ(parsed.bad_lines(), 0u);
  const Series& s = parsed.Find("m")->series[0];
  EXPECT_EQ(parsed.LabelValue(s, "a"), "back\\slash");
  EXPECT_EQ(parsed.LabelValue(s, "b"), "q\"uote");
  EXPECT_EQ(parsed.LabelValue(s, "c"), "new\nline");
  EXPECT_EQ(parsed.LabelValue(s, "d"), "");
  EXPECT_EQ(parsed.LabelValue(s, "e"), "a/b:c");
}

TEST(ExpositionTest, NumbersExponentsInfNaNAndTimestamps) {
  ParsedBody parsed = MustParse(
      "a 1.76e+09\n"
      "b -2E-3\n"
      "c +Inf\n"
      "d -Inf\n"
      "e NaN\n"
      "f 42 1700000000000\n"
      "g\t3\t-12\n"
      "h 1.5 1.7e9 # {trace_id=\"x\"} 1\n"
      "i 2 # {trace_id=\"y\"} 1\n"
      "j 3   \r\n");
  EXPECT_EQ(parsed.bad_lines(), 0u) << parsed.first_error();
  EXPECT_EQ(parsed.Find("a")->series[0].value, 1.76e9);
  EXPECT_EQ(parsed.Find("b")->series[0].value, -2e-3);
  EXPECT_EQ(parsed.Find("c")->series[0].value, std::numeric_limits<double>::infinity());
  EXPECT_EQ(parsed.Find("d")->series[0].value, -std::numeric_limits<double>::infinity());
  EXPECT_TRUE(std::isnan(parsed.Find("e")->series[0].value));
  EXPECT_EQ(parsed.Find("f")->series[0].value, 42);
  EXPECT_EQ(parsed.Find("g")->series[0].value, 3);
  EXPECT_EQ(parsed.Find("h")->series[0].value, 1.5);
  EXPECT_EQ(parsed.Find("i")->series[0].value, 2);
  EXPECT_EQ(parsed.Find("j")->series[0].value, 3);
}

TEST(ExpositionTest, PlainDecimalsReadExactlyAsStrtod) {
  // The fast path for plain decimals must agree bit for bit with a correctly rounded parse.
  std::vector<std::string> numbers = {"0",
                                      "-0",
                                      "0.0",
                                      "3.0",
                                      "0.1",
                                      "-0.25",
                                      "5.",
                                      "-.5",
                                      "1024",
                                      "0.001",
                                      "123456789012345",
                                      "1234567890123456",
                                      "0.0000000000000000000001",
                                      "0.00000000000000000000001",
                                      "999999999999999.9"};
  std::mt19937_64 random(7);
  for (int i = 0; i < 2000; ++i) {
    const uint64_t digits = random() % 1'000'000'000'000'000ull;
    const int point = static_cast<int>(random() % 20);
    std::string text = std::to_string(digits);
    if (point < static_cast<int>(text.size())) text.insert(text.size() - point, ".");
    numbers.push_back(text);
  }
  std::string body;
  for (size_t i = 0; i < numbers.size(); ++i) body += fmt::format("m{} {}\n", i, numbers[i]);
  ParsedBody parsed = MustParse(body);
  ASSERT_EQ(parsed.bad_lines(), 0u) << parsed.first_error();
  for (size_t i = 0; i < numbers.size(); ++i) {
    const double want = std::strtod(numbers[i].c_str(), nullptr);
    const double got = parsed.Find(fmt::format("m{}", i))->series[0].value;
    EXPECT_EQ(std::memcmp(&want, &got, sizeof(double)), 0) << numbers[i];
  }
}

TEST(ExpositionTest, EofStopsParsing) {
  ParsedBody parsed = MustParse("a 1\n# EOF\nb 2\ngarbage here\n");
  EXPECT_NE(parsed.Find("a"), nullptr);
  EXPECT_EQ(parsed.Find("b"), nullptr);
  EXPECT_EQ(parsed.bad_lines(), 0u);
}

TEST(ExpositionTest, BadLinesAreCountedAndSkipped) {
  const char* bad[] = {
      "1abc 1",                         // invalid name
      "m{a=\"1\" 1",                    // unterminated label set
      "m{a=1} 1",                       // unquoted value
      "m{a=\"x\\q\"} 1",                // invalid escape
      "m{a=\"1\",a=\"2\"} 1",           // duplicate label
      "m{1a=\"1\"} 1",                  // invalid label name
      "m{a=\"unterminated} 1",          // unterminated value
      "m",                              // no value
      "m abc",                          // bad value
      "m 1 abc",                        // bad timestamp
      "m 1 2 3",                        // trailing text
      "m 1e999",                        // out of range
      "m{a=\"\xff\"} 1",                // invalid UTF-8
      "# TYPE x nonsense",              // unknown type
      "# TYPE 9x gauge",                // bad TYPE name
      "# TYPE good gauge extra",        // trailing text on TYPE
      "# TYPE hist histogram\nhist 1",  // bare histogram name: the TYPE is fine, the sample not
      "# TYPE hist2 histogram\nhist2_bucket{a=\"1\"} 1",   // bucket without le
      "# TYPE hist3 histogram\nhist3_bucket{le=\"x\"} 1",  // bad le
      "# TYPE dup gauge\n# TYPE dup gauge",                // second TYPE
  };
  for (const char* line : bad) {
    const std::string body = std::string("before 1\n") + line + "\nafter 2\n";
    auto parsed = ParseExposition(body);
    ASSERT_TRUE(parsed.ok()) << line;
    EXPECT_EQ(parsed->bad_lines(), 1u) << line;
    EXPECT_THAT(parsed->first_error(), HasSubstr("line ")) << line;
    ASSERT_NE(parsed->Find("before"), nullptr) << line;
    ASSERT_NE(parsed->Find("after"), nullptr) << line;
    EXPECT_EQ(parsed->Find("after")->series[0].value, 2) << line;
  }
}

TEST(ExpositionTest, NotAnExpositionAtAll) {
  auto html = ParseExposition("<html>\n<body>oops</body>\n</html>\n");
  EXPECT_EQ(html.status().code(), absl::StatusCode::kInvalidArgument);
  auto empty = ParseExposition("");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->families().empty());
}

TEST(ExpositionTest, BodyAndSeriesCaps) {
  ParseOptions options;
  options.max_bytes = 10;
  EXPECT_EQ(ParseExposition("a 1\nb 2\nc 3\n", options).status().code(),
            absl::StatusCode::kResourceExhausted);
  options.max_bytes = 1 << 20;
  options.max_series = 2;
  ParsedBody parsed = MustParse("a 1\nb 2\nc 3\nd 4\n", options);
  EXPECT_EQ(parsed.series_count(), 2u);
  EXPECT_EQ(parsed.dropped_series(), 2u);
  EXPECT_TRUE(parsed.Find("d") == nullptr || parsed.Find("d")->series.empty());
}

TEST(ExpositionTest, TheVllmSampleParsesWhole) {
  const std::string body = ReadTestdata("vllm_metrics_sample.txt");
  ASSERT_FALSE(body.empty());
  ParsedBody parsed = MustParse(body);
  EXPECT_EQ(parsed.bad_lines(), 0u) << parsed.first_error();
  const Family* running = parsed.Find("vllm:num_requests_running");
  ASSERT_NE(running, nullptr);
  EXPECT_EQ(parsed.LabelValue(running->series[0], "model_name"),
            "meta-llama/Llama-3.1-8B-Instruct");
  EXPECT_EQ(running->series[0].value, 3);
  const Family* ttft = parsed.Find("vllm:time_to_first_token_seconds");
  ASSERT_NE(ttft, nullptr);
  EXPECT_EQ(ttft->type, MetricType::kHistogram);
  ASSERT_EQ(ttft->series.size(), 1u);
  ASSERT_FALSE(ttft->series[0].buckets.empty());
  EXPECT_TRUE(std::isinf(ttft->series[0].buckets.back().upper_bound));
  EXPECT_EQ(ttft->series[0].buckets.back().count, ttft->series[0].count);  // +Inf == _count
  const Family* success = parsed.Find("vllm:request_success_total");
  ASSERT_NE(success, nullptr);
  EXPECT_EQ(success->series.size(), 3u);
  const Family* lora = parsed.Find("vllm:lora_requests_info");
  ASSERT_NE(lora, nullptr);
  EXPECT_EQ(parsed.LabelValue(lora->series[0], "running_lora_adapters"), "sql-lora");
}

TEST(ExpositionTest, TheOldNamesExcerptParsesWhole) {
  const std::string body = ReadTestdata("vllm_metrics_v0_10_excerpt.txt");
  ASSERT_FALSE(body.empty());
  ParsedBody parsed = MustParse(body);
  EXPECT_EQ(parsed.bad_lines(), 0u) << parsed.first_error();
  EXPECT_NE(parsed.Find("vllm:gpu_cache_usage_perc"), nullptr);
  EXPECT_NE(parsed.Find("vllm:gpu_prefix_cache_queries_total"), nullptr);
  EXPECT_NE(parsed.Find("vllm:time_per_output_token_seconds"), nullptr);
}

// A body is parsed where it lives: never from a temporary string.
template <typename T>
concept ParsesFrom = requires(T&& body) {
  ParseExposition(std::forward<T>(body));
};
static_assert(!ParsesFrom<std::string>);
static_assert(ParsesFrom<const std::string&>);
static_assert(ParsesFrom<std::string&>);
static_assert(ParsesFrom<std::string_view>);
static_assert(ParsesFrom<const char (&)[4]>);

TEST(SumSeriesTest, SumsTheSeriesWithTheGivenLabels) {
  const std::string body =
      "# TYPE blocks_total counter\n"
      "blocks_total{op=\"stored\",pod=\"a\"} 3\n"
      "blocks_total{op=\"stored\",pod=\"b\"} 4\n"
      "blocks_total{op=\"removed\",pod=\"a\"} 1e3\n"
      "blocks_total_other{op=\"stored\"} 100\n"
      "# TYPE wait_seconds histogram\n"
      "wait_seconds_bucket{pod=\"a\",le=\"+Inf\"} 2\n"
      "wait_seconds_sum{pod=\"a\"} 0.5\n"
      "wait_seconds_count{pod=\"a\"} 2\n"
      "wait_seconds_sum{pod=\"b\"} 1.5\n"
      "wait_seconds_count{pod=\"b\"} 3\n";
  ParsedBody parsed = MustParse(body);
  EXPECT_EQ(SumSeries(parsed, "blocks_total"), 1007);
  EXPECT_EQ(SumSeries(parsed, "blocks_total", {{"op", "stored"}}), 7);
  EXPECT_EQ(SumSeries(parsed, "blocks_total", {{"op", "stored"}, {"pod", "b"}}), 4);
  EXPECT_EQ(SumSeries(parsed, "blocks_total", {{"op", "stored"}, {"pod", "c"}}), std::nullopt);
  EXPECT_EQ(SumSeries(parsed, "blocks_total", {{"node", "stored"}}), std::nullopt);
  EXPECT_EQ(SumSeries(parsed, "absent"), std::nullopt);
  EXPECT_EQ(SumSeries(parsed, "wait_seconds", {}, SeriesField::kSum), 2.0);
  EXPECT_EQ(SumSeries(parsed, "wait_seconds", {{"pod", "b"}}, SeriesField::kCount), 3);
  const Family* blocks = parsed.Find("blocks_total");
  ASSERT_NE(blocks, nullptr);
  EXPECT_TRUE(HasLabels(parsed, blocks->series[0], {}));
  EXPECT_TRUE(HasLabels(parsed, blocks->series[0], {{"pod", "a"}}));
  EXPECT_FALSE(HasLabels(parsed, blocks->series[0], {{"pod", "a"}, {"op", "removed"}}));
}

}  // namespace
}  // namespace aibrix::metrics
