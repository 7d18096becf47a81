#include "json.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <locale>
#include <sstream>

#include "common.hpp"
#include "unicode.hpp"

namespace minivlm::json {
namespace {

class Parser {
 public:
  Parser(std::string_view text, const std::string& what) : s_(text), what_(what) {}

  Value document() {
    Value v = value(0);
    skip_space();
    if (i_ != s_.size()) error("unexpected data after the JSON value");
    return v;
  }

 private:
  std::string_view s_;
  const std::string& what_;
  size_t i_ = 0;

  [[noreturn]] void error(const std::string& message) const {
    if (i_ >= s_.size()) {
      fail(MVLM_BAD_FILE, what_ + " is not valid JSON: it ends early at byte " + str(s_.size()) + " (" + message + ")");
    }
    fail(MVLM_BAD_FILE, what_ + " is not valid JSON at byte " + str(i_) + ": " + message);
  }

  void skip_space() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }

  bool literal(std::string_view word) {
    if (s_.substr(i_, word.size()) == word) {
      i_ += word.size();
      return true;
    }
    return false;
  }

  Value value(size_t depth) {
    if (depth > kMaxDepth) error("nesting deeper than " + str(kMaxDepth));
    skip_space();
    if (i_ >= s_.size()) error("expected a value");
    Value v;
    const char c = s_[i_];
    if (c == '{') {
      v.type = Value::Type::Object;
      ++i_;
      skip_space();
      if (i_ < s_.size() && s_[i_] == '}') {
        ++i_;
        return v;
      }
      for (;;) {
        skip_space();
        if (i_ >= s_.size() || s_[i_] != '"') error("expected a string key");
        Member m;
        m.key = string();
        skip_space();
        if (i_ >= s_.size() || s_[i_] != ':') error("expected ':'");
        ++i_;
        m.value = value(depth + 1);
        v.members.push_back(std::move(m));
        skip_space();
        if (i_ < s_.size() && s_[i_] == ',') {
          ++i_;
        } else if (i_ < s_.size() && s_[i_] == '}') {
          ++i_;
          return v;
        } else {
          error("expected ',' or '}'");
        }
      }
    }
    if (c == '[') {
      v.type = Value::Type::Array;
      ++i_;
      skip_space();
      if (i_ < s_.size() && s_[i_] == ']') {
        ++i_;
        return v;
      }
      for (;;) {
        v.items.push_back(value(depth + 1));
        skip_space();
        if (i_ < s_.size() && s_[i_] == ',') {
          ++i_;
        } else if (i_ < s_.size() && s_[i_] == ']') {
          ++i_;
          return v;
        } else {
          error("expected ',' or ']'");
        }
      }
    }
    if (c == '"') {
      v.type = Value::Type::String;
      v.string = string();
      return v;
    }
    if (literal("true")) {
      v.type = Value::Type::Bool;
      v.boolean = true;
      return v;
    }
    if (literal("false")) {
      v.type = Value::Type::Bool;
      return v;
    }
    if (literal("null")) return v;
    v.type = Value::Type::Number;
    // Python's json also writes these for non-finite floats.
    const size_t start = i_;
    if (literal("NaN")) {
      v.number = std::numeric_limits<double>::quiet_NaN();
    } else if (literal("Infinity")) {
      v.number = std::numeric_limits<double>::infinity();
    } else if (literal("-Infinity")) {
      v.number = -std::numeric_limits<double>::infinity();
    } else {
      v.number = number();
    }
    v.string.assign(s_.substr(start, i_ - start));
    return v;
  }

  static bool digit(char c) { return c >= '0' && c <= '9'; }

  double number() {
    const size_t start = i_;
    if (i_ < s_.size() && s_[i_] == '-') ++i_;
    if (i_ >= s_.size() || !digit(s_[i_])) error("expected a value");
    if (s_[i_] == '0') {
      ++i_;
    } else {
      while (i_ < s_.size() && digit(s_[i_])) ++i_;
    }
    if (i_ < s_.size() && s_[i_] == '.') {
      ++i_;
      if (i_ >= s_.size() || !digit(s_[i_])) error("expected a digit after '.'");
      while (i_ < s_.size() && digit(s_[i_])) ++i_;
    }
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      ++i_;
      if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
      if (i_ >= s_.size() || !digit(s_[i_])) error("expected a digit in the exponent");
      while (i_ < s_.size() && digit(s_[i_])) ++i_;
    }
    // The grammar is checked above; the C locale's conversion (correctly rounded) does the rest. Not
    // std::from_chars: older libc++ (Android NDK, Xcode) lacks it for double.
    std::istringstream in(std::string(s_.substr(start, i_ - start)));
    in.imbue(std::locale::classic());
    double out = 0.0;
    in >> out;
    // A range error: as Python, huge -> inf, tiny -> 0. libc++ also reports one for a subnormal result, which it
    // still converts correctly (libstdc++ does not flag those): keep it.
    if (in.fail() && std::fpclassify(out) != FP_SUBNORMAL) {
      const bool negative = s_[start] == '-';
      const size_t e = s_.find_first_of("eE", start);
      const bool tiny = e < i_ && s_[e + 1] == '-';
      out = tiny ? (negative ? -0.0 : 0.0) : (negative ? -HUGE_VAL : HUGE_VAL);
    }
    return out;
  }

  unsigned hex4() {
    if (i_ + 4 > s_.size()) {
      i_ = s_.size();
      error("truncated \\u escape");
    }
    unsigned v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s_[i_++];
      v <<= 4;
      if (c >= '0' && c <= '9') {
        v |= static_cast<unsigned>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        v |= static_cast<unsigned>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        v |= static_cast<unsigned>(c - 'A' + 10);
      } else {
        --i_;
        error("bad hex digit in a \\u escape");
      }
    }
    return v;
  }

  std::string string() {
    ++i_;  // opening quote
    std::string out;
    for (;;) {
      if (i_ >= s_.size()) error("unterminated string");
      const unsigned char c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') {
        ++i_;
        return out;
      }
      if (c < 0x20) error("control character in a string");
      if (c == '\\') {
        ++i_;
        if (i_ >= s_.size()) error("unterminated escape");
        const char e = s_[i_++];
        switch (e) {
          case '"': out.push_back('"'); break;
          case '\\': out.push_back('\\'); break;
          case '/': out.push_back('/'); break;
          case 'b': out.push_back('\b'); break;
          case 'f': out.push_back('\f'); break;
          case 'n': out.push_back('\n'); break;
          case 'r': out.push_back('\r'); break;
          case 't': out.push_back('\t'); break;
          case 'u': {
            char32_t cp = hex4();
            if (cp >= 0xD800 && cp <= 0xDBFF) {
              if (s_.substr(i_, 2) != "\\u") error("unpaired surrogate in a \\u escape");
              i_ += 2;
              const unsigned low = hex4();
              if (low < 0xDC00 || low > 0xDFFF) error("unpaired surrogate in a \\u escape");
              cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
              error("unpaired surrogate in a \\u escape");
            }
            unicode::append_utf8(cp, out);
            break;
          }
          default:
            --i_;
            error("bad escape");
        }
        continue;
      }
      // Raw bytes: copy one UTF-8 sequence after validating it.
      char32_t cp = 0;
      const size_t len = unicode::utf8_sequence(s_.substr(i_, 4), &cp);
      if (len == 0) error("invalid UTF-8");
      out.append(s_.substr(i_, len));
      i_ += len;
    }
  }
};

}  // namespace

const Value* Value::get(std::string_view key) const {
  const Value* found = nullptr;
  if (type == Type::Object) {
    for (const Member& m : members) {
      if (m.key == key) found = &m.value;
    }
  }
  return found;
}

Value parse(std::string_view text, const std::string& what) { return Parser(text, what).document(); }

const char* type_name(Value::Type type) {
  switch (type) {
    case Value::Type::Null: return "null";
    case Value::Type::Bool: return "a boolean";
    case Value::Type::Number: return "a number";
    case Value::Type::String: return "a string";
    case Value::Type::Array: return "an array";
    case Value::Type::Object: return "an object";
  }
  return "?";
}

const Value* resolve(const Value& root, std::string_view pointer, std::string* error) {
  const Value* v = &root;
  if (pointer.empty()) return v;
  if (pointer[0] != '/') {
    if (error) *error = "JSON pointer '" + std::string(pointer) + "' does not start with '/'";
    return nullptr;
  }
  size_t pos = 1;
  for (;;) {
    const size_t end = std::min(pointer.find('/', pos), pointer.size());
    std::string token;
    for (size_t k = pos; k < end; ++k) {
      if (pointer[k] == '~' && k + 1 < end && (pointer[k + 1] == '0' || pointer[k + 1] == '1')) {
        token.push_back(pointer[k + 1] == '0' ? '~' : '/');
        ++k;
      } else {
        token.push_back(pointer[k]);
      }
    }
    const std::string so_far(pointer.substr(0, end));
    if (v->type == Value::Type::Object) {
      v = v->get(token);
      if (!v) {
        if (error) *error = "no JSON value at '" + so_far + "'";
        return nullptr;
      }
    } else if (v->type == Value::Type::Array) {
      size_t index = 0;
      const auto r = std::from_chars(token.data(), token.data() + token.size(), index);
      if (token.empty() || r.ec != std::errc() || r.ptr != token.data() + token.size() ||
          (token.size() > 1 && token[0] == '0') || index >= v->items.size()) {
        if (error) *error = "no JSON value at '" + so_far + "' (array of " + str(v->items.size()) + ")";
        return nullptr;
      }
      v = &v->items[index];
    } else {
      if (error) *error = "no JSON value at '" + so_far + "' (parent is " + type_name(v->type) + ")";
      return nullptr;
    }
    if (end == pointer.size()) return v;
    pos = end + 1;
  }
}

}  // namespace minivlm::json
