// Typed reads from a parsed JSON document (manifest.json) by RFC 6901 pointer. Every missing, mistyped or
// out-of-range field is an MVLM_BAD_FILE error naming the document and the pointer.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common.hpp"
#include "json.hpp"

namespace minivlm::json {

class Fields {
 public:
  // `what` names the document in errors ("manifest.json"); `root` must outlive this reader.
  Fields(const Value& root, std::string what) : root_(root), what_(std::move(what)) {}

  const Value& at(const std::string& pointer, Value::Type type) const {
    std::string error;
    const Value* v = resolve(root_, pointer, &error);
    if (!v) fail(MVLM_BAD_FILE, what_ + " lacks " + pointer);
    if (v->type != type) {
      fail(MVLM_BAD_FILE, what_ + " " + pointer + " is " + type_name(v->type) + ", expected " + type_name(type));
    }
    return *v;
  }

  double number(const std::string& pointer) const {
    const double v = at(pointer, Value::Type::Number).number;
    if (!std::isfinite(v)) fail(MVLM_BAD_FILE, what_ + " " + pointer + " is not finite");
    return v;
  }

  int32_t integer(const std::string& pointer) const {
    const double v = number(pointer);
    if (v != std::floor(v) || v < -2147483648.0 || v > 2147483647.0) {
      fail(MVLM_BAD_FILE, what_ + " " + pointer + " is " + str_double(v) + ", expected an integer");
    }
    return static_cast<int32_t>(v);
  }

  const std::string& string(const std::string& pointer) const { return at(pointer, Value::Type::String).string; }

  // A top-level entry that may be absent (nullptr).
  const Value* optional(std::string_view key) const { return root_.get(key); }

  // The value at `pointer`, or nullptr when there is none.
  const Value* find(const std::string& pointer) const {
    std::string error;
    return resolve(root_, pointer, &error);
  }

  // An array of numbers into out[0..n), n <= capacity (exactly `exact` if given; `unit` is added to the
  // expected count in the error, e.g. "(RGB)").
  int32_t numbers(const std::string& pointer, double* out, size_t capacity, size_t exact = 0,
                  const std::string& unit = "") const {
    const Value& v = at(pointer, Value::Type::Array);
    if ((exact && v.items.size() != exact) || v.items.size() > capacity || v.items.empty()) {
      fail(MVLM_BAD_FILE, what_ + " " + pointer + " has " + str(v.items.size()) + " entries, expected " +
                              (exact ? str(exact) : "1.." + str(capacity)) + (unit.empty() ? "" : " " + unit));
    }
    for (size_t i = 0; i < v.items.size(); ++i) out[i] = number(pointer + "/" + str(i));
    return static_cast<int32_t>(v.items.size());
  }

 private:
  const Value& root_;
  std::string what_;
};

}  // namespace minivlm::json
