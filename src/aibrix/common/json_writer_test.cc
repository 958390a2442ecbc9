#include "aibrix/common/json_writer.h"

#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace aibrix::common {
namespace {

TEST(JsonWriterTest, StringsRoundTripThroughAParser) {
  for (std::string_view s :
       {std::string_view(""), std::string_view("ns/pod-1"),
        std::string_view("quote\" back\\ nl\n tab\t"), std::string_view("\x01\x1f caf\xc3\xa9")}) {
    std::string out;
    AppendJsonString(&out, s);
    EXPECT_EQ(nlohmann::json::parse(out).get<std::string>(), s) << out;
  }
  std::string out;
  AppendJsonString(&out, "a\"b");
  EXPECT_EQ(out, R"("a\"b")");
}

TEST(JsonWriterTest, NumbersAreShortestAndNonFiniteIsNull) {
  std::string out;
  AppendJsonNumber(&out, 0.1);
  out += ',';
  AppendJsonNumber(&out, 3);
  out += ',';
  AppendJsonNumber(&out, std::numeric_limits<double>::quiet_NaN());
  out += ',';
  AppendJsonNumber(&out, -std::numeric_limits<double>::infinity());
  EXPECT_EQ(out, "0.1,3,null,null");
}

TEST(JsonWriterTest, ObjectWriterPlacesCommasAndClosesNestedObjects) {
  std::string out;
  {
    JsonObjectWriter o(&out);
    o.String("a", "x\"y");
    o.Int("b", -2);
    o.Number("c", 0.5);
    o.Bool("d", false);
    { JsonObjectWriter empty(o.Key("e")); }
    {
      JsonObjectWriter inner(o.Key("f"));
      inner.Bool("g", true);
    }
    o.Key("h")->append("[1,2]");
    o.Strings("i", std::vector<std::string>{"p", "q"});
    o.Strings("j", {});
  }
  EXPECT_EQ(out, R"({"a":"x\"y","b":-2,"c":0.5,"d":false,"e":{},"f":{"g":true},"h":[1,2],)"
                 R"("i":["p","q"],"j":[]})");
}

}  // namespace
}  // namespace aibrix::common
