// A small strict JSON reader (RFC 8259, plus Python's NaN/Infinity) for manifest.json and golden/index.json.
// Truncated or malformed text is an Error(MVLM_BAD_FILE) naming the byte offset, never a crash; nesting is
// limited so that hostile input cannot exhaust the stack.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace minivlm::json {

struct Member;

struct Value {
  enum class Type { Null, Bool, Number, String, Array, Object };
  Type type = Type::Null;
  bool boolean = false;
  double number = 0.0;
  std::string string;          // UTF-8; for a Number, its text as written ("1", "0.50", "1e-05", "NaN")
  std::vector<Value> items;    // Array
  std::vector<Member> members; // Object, in file order

  // Member `key` of an object (the last one if repeated, as Python's json) or nullptr.
  const Value* get(std::string_view key) const;
};

struct Member {
  std::string key;
  Value value;
};

constexpr size_t kMaxDepth = 256;

// Parses `text`; `what` names the source in error messages ("manifest.json").
Value parse(std::string_view text, const std::string& what);

// RFC 6901 pointer ("" = root, "/a/0/b"); nullptr if there is no such value. Sets `error` to the reason
// (which part is missing) when it returns nullptr.
const Value* resolve(const Value& root, std::string_view pointer, std::string* error);

const char* type_name(Value::Type type);

}  // namespace minivlm::json
