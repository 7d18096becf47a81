// Python's canonical JSON of a manifest, for its "manifest_sha256" (converters/manifest.py manifest_digest).
//
// json.loads turns a number without '.', 'e' or 'E' into an int (written back digit for digit, "-0" as "0")
// and any other into a float (written back as repr(float)); the JSON reader keeps each number's text
// (json::Value::string), so both come out as Python writes them. Floats: the shortest of %.{p}e's correctly
// rounded decimals (p = 1..17) that reads back as the same double, or its neighbour at that length when only
// the neighbour does (at a power of two the interval of doubles that read back is lopsided) - what Python's
// dtoa mode 0 returns. Strings keep non-ASCII as UTF-8 and escape '"', '\\' and control characters.
#include "manifest_digest.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iomanip>
#include <locale>
#include <sstream>
#include <vector>

#include "common.hpp"
#include "sha256.hpp"

namespace minivlm {
namespace {

double read_double(const std::string& text) {
  std::istringstream in(text);
  in.imbue(std::locale::classic());
  double out = 0.0;
  in >> out;
  // libc++ flags a subnormal result as a range error (and may not store it): strtod reads those.
  return in.fail() ? std::strtod(text.c_str(), nullptr) : out;
}

// x = 0.d1d2...dn x 10^decpt, for x > 0 finite, with p significant digits correctly rounded.
void scientific(double x, int p, std::string* digits, int* decpt) {
  std::ostringstream out;
  out.imbue(std::locale::classic());
  out << std::scientific << std::setprecision(p - 1) << x;
  const std::string s = out.str();  // "d.ddde+XX"
  const size_t e = s.find('e');
  digits->clear();
  for (size_t k = 0; k < e; ++k) {
    if (s[k] >= '0' && s[k] <= '9') digits->push_back(s[k]);
  }
  *decpt = std::stoi(s.substr(e + 1)) + 1;
}

std::string as_number(const std::string& digits, int decpt) {
  return "0." + digits + "e" + std::to_string(decpt);
}

// The p-digit decimal one unit of its last digit above (up) or below `digits` x 10^decpt.
void step(std::string* digits, int* decpt, bool up) {
  std::string& d = *digits;
  const size_t p = d.size();
  int k = static_cast<int>(p) - 1;
  if (up) {
    while (k >= 0 && d[k] == '9') d[k--] = '0';
    if (k < 0) {  // 99.9 -> 100: one more digit before the point, keep p digits
      d = "1" + d.substr(0, p - 1);
      ++*decpt;
    } else {
      ++d[k];
    }
  } else {
    while (k >= 0 && d[k] == '0') d[k--] = '9';
    --d[k];  // d[0] >= 1, so k >= 0 here
    if (d[0] == '0') {  // 100 -> 099 -> 99.9: keep p digits
      d = d.substr(1) + "9";
      --*decpt;
    }
  }
}

void write_string(const std::string& s, std::string& out) {
  static const char hex[] = "0123456789abcdef";
  out.push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out.push_back(hex[c >> 4]);
          out.push_back(hex[c & 0xf]);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
}

void write_number(const json::Value& v, std::string& out) {
  const std::string& text = v.string;
  const bool is_float = text.empty() || text.find_first_of(".eEIN") != std::string::npos;  // Infinity, NaN
  if (!is_float) {
    out += (text == "-0") ? "0" : text;
  } else {
    out += python_float_repr(v.number);
  }
}

void write(const json::Value& v, std::string& out, const std::string& skip_key) {
  switch (v.type) {
    case json::Value::Type::Null: out += "null"; return;
    case json::Value::Type::Bool: out += v.boolean ? "true" : "false"; return;
    case json::Value::Type::Number: write_number(v, out); return;
    case json::Value::Type::String: write_string(v.string, out); return;
    case json::Value::Type::Array:
      out.push_back('[');
      for (size_t k = 0; k < v.items.size(); ++k) {
        if (k) out.push_back(',');
        write(v.items[k], out, "");
      }
      out.push_back(']');
      return;
    case json::Value::Type::Object: {
      // A repeated key keeps its last value (a Python dict); keys sort by code point, which is UTF-8 byte order.
      std::vector<const json::Member*> members;
      for (const json::Member& m : v.members) {
        if (!skip_key.empty() && m.key == skip_key) continue;
        auto same = std::find_if(members.begin(), members.end(), [&](const json::Member* x) { return x->key == m.key; });
        if (same != members.end()) {
          *same = &m;
        } else {
          members.push_back(&m);
        }
      }
      std::sort(members.begin(), members.end(), [](const json::Member* a, const json::Member* b) { return a->key < b->key; });
      out.push_back('{');
      for (size_t k = 0; k < members.size(); ++k) {
        if (k) out.push_back(',');
        write_string(members[k]->key, out);
        out.push_back(':');
        write(members[k]->value, out, "");
      }
      out.push_back('}');
      return;
    }
  }
}

}  // namespace

std::string python_float_repr(double x) {
  if (std::isnan(x)) return "NaN";
  if (std::isinf(x)) return x > 0 ? "Infinity" : "-Infinity";
  const std::string sign = std::signbit(x) ? "-" : "";
  if (x == 0.0) return sign + "0.0";
  const double a = std::fabs(x);
  std::string digits;
  int decpt = 0;
  for (int p = 1; p <= 17; ++p) {
    scientific(a, p, &digits, &decpt);
    const double back = read_double(as_number(digits, decpt));
    if (back == a) break;
    std::string other = digits;
    int other_decpt = decpt;
    step(&other, &other_decpt, back < a);
    if (read_double(as_number(other, other_decpt)) == a) {
      digits = other;
      decpt = other_decpt;
      break;
    }
  }
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  const int n = static_cast<int>(digits.size());
  std::string out = sign;
  if (decpt > -4 && decpt <= 16) {
    if (decpt <= 0) {
      out += "0." + std::string(static_cast<size_t>(-decpt), '0') + digits;
    } else if (decpt >= n) {
      out += digits + std::string(static_cast<size_t>(decpt - n), '0') + ".0";
    } else {
      out += digits.substr(0, static_cast<size_t>(decpt)) + "." + digits.substr(static_cast<size_t>(decpt));
    }
  } else {
    const int e = decpt - 1;
    out += digits.substr(0, 1);
    if (n > 1) out += "." + digits.substr(1);
    const std::string exponent = std::to_string(std::abs(e));
    out += std::string(e < 0 ? "e-" : "e+") + (exponent.size() < 2 ? "0" : "") + exponent;
  }
  return out;
}

std::string python_canonical_json(const json::Value& value, const std::string& skip_key) {
  std::string out;
  write(value, out, skip_key);
  return out;
}

std::string manifest_digest(const json::Value& manifest) {
  const std::string text = python_canonical_json(manifest, "manifest_sha256");
  Sha256 digest;
  digest.update(text.data(), text.size());
  return digest.hex();
}

}  // namespace minivlm
