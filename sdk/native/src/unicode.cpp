#include "unicode.hpp"

#include <algorithm>

namespace minivlm::unicode {
namespace {

uint8_t run_value(const Run* runs, size_t n, char32_t c) {
  // The last run starting at or before c (the first run starts at 0).
  const Run* it = std::upper_bound(runs, runs + n, c, [](char32_t v, const Run& r) { return v < r.start; });
  return it == runs ? 0 : (it - 1)->value;
}

const Mapping* find(const Mapping* table, size_t n, char32_t c) {
  const Mapping* it =
      std::lower_bound(table, table + n, c, [](const Mapping& m, char32_t v) { return m.code_point < v; });
  return it != table + n && it->code_point == c ? it : nullptr;
}

constexpr char32_t kHangulFirst = 0xAC00, kHangulLast = 0xD7A3;

}  // namespace

uint8_t flags(char32_t c) { return run_value(kFlagRuns, kNumFlagRuns, c); }

uint8_t combining_class(char32_t c) { return run_value(kCombiningRuns, kNumCombiningRuns, c); }

void append_nfd(char32_t c, std::u32string& out) {
  if (c >= kHangulFirst && c <= kHangulLast) {  // Unicode §3.12, conjoining jamo
    const char32_t s = c - kHangulFirst;
    out.push_back(0x1100 + s / 588);
    out.push_back(0x1161 + (s % 588) / 28);
    if (s % 28) out.push_back(0x11A7 + s % 28);
    return;
  }
  if (const Mapping* m = find(kDecompositions, kNumDecompositions, c)) {
    out.append(kDecompositionData + m->offset, m->length);
  } else {
    out.push_back(c);
  }
}

void canonical_order(std::u32string& s) {
  // Each maximal run of code points with a non-zero combining class is sorted stably by that class.
  size_t i = 0;
  while (i < s.size()) {
    if (combining_class(s[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < s.size() && combining_class(s[j]) != 0) ++j;
    if (j - i > 1) {
      std::stable_sort(s.begin() + static_cast<std::ptrdiff_t>(i), s.begin() + static_cast<std::ptrdiff_t>(j),
                       [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
    }
    i = j;
  }
}

void append_lower(char32_t c, std::u32string& out) {
  if (c < 0x80) {
    out.push_back(c >= 'A' && c <= 'Z' ? c + 32 : c);
  } else if (const Mapping* m = find(kLowercase, kNumLowercase, c)) {
    out.append(kLowercaseData + m->offset, m->length);
  } else {
    out.push_back(c);
  }
}

bool python_space(char32_t c) { return std::binary_search(kPythonSpace, kPythonSpace + kNumPythonSpace, c); }

size_t utf8_sequence(std::string_view bytes, char32_t* code_point) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  if (n == 0) return 0;
  const unsigned char b = p[0];
  if (b < 0x80) {
    *code_point = b;
    return 1;
  }
  size_t len;
  char32_t c;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b >= 0xC2 && b <= 0xDF) {
    len = 2, c = b & 0x1F;
  } else if (b >= 0xE0 && b <= 0xEF) {
    len = 3, c = b & 0x0F;
    if (b == 0xE0) lo = 0xA0;  // overlong
    if (b == 0xED) hi = 0x9F;  // surrogates
  } else if (b >= 0xF0 && b <= 0xF4) {
    len = 4, c = b & 0x07;
    if (b == 0xF0) lo = 0x90;  // overlong
    if (b == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    return 0;
  }
  if (n < len) return 0;
  for (size_t k = 1; k < len; ++k) {
    const unsigned char cont = p[k];
    if (cont < (k == 1 ? lo : 0x80) || cont > (k == 1 ? hi : 0xBF)) return 0;
    c = (c << 6) | (cont & 0x3F);
  }
  *code_point = c;
  return len;
}

bool decode_utf8(std::string_view bytes, std::u32string& out, size_t& bad_byte) {
  out.clear();
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    char32_t c = 0;
    const size_t len = utf8_sequence(bytes.substr(i), &c);
    if (len == 0) {
      bad_byte = i;
      return false;
    }
    out.push_back(c);
    i += len;
  }
  return true;
}

void append_utf8(char32_t c, std::string& out) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

std::string to_utf8(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) append_utf8(c, out);
  return out;
}

}  // namespace minivlm::unicode
